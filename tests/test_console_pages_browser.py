"""The console's login and home pages in Debian's Chromium, at desktop and phone size: a regulator logs in,
lands on the home page, opens the folded navigation on a phone and logs out; no console error, no CSP
violation, no request off the machine. Screenshots go to $BK_SCREENSHOTS (or the test's tmp_path)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.browser import chromium_browser, distinct_colours, open_page, screenshot, serve_app

from cloud_receiver.admin.accounts import create_user
from cloud_receiver.app.factory import create_app, open_configured_storage
from cloud_receiver.config import ReceiverConfig, StorageConfig

pytestmark = pytest.mark.system

PASSWORD = "correct-horse-battery"
# recorded before any page script runs (Playwright's init scripts are not subject to the page's CSP)
CSP_WATCH = ("window.__cspViolations = [];"
             "document.addEventListener('securitypolicyviolation',"
             " e => window.__cspViolations.push(e.violatedDirective + ' ' + e.blockedURI));")


@pytest.fixture(scope="module")
def browser():
    with chromium_browser() as b:
        yield b


@pytest.fixture
def base_url(tmp_path: Path) -> Iterator[str]:
    """A receiver (API and console, no MQTT) on a SQLite file with canteen C1 and regulator account `li`."""
    cfg = ReceiverConfig(storage=StorageConfig(path=tmp_path / "receiver.db", media_dir=tmp_path / "media"))
    storage = open_configured_storage(cfg)
    try:
        storage.add_canteen("C1", "第一中学食堂", "64050201")
        create_user(storage.sql, "li", "regulator", "640502", PASSWORD, "李监管")
    finally:
        storage.close()
    with serve_app(create_app(cfg, subscriber=False)) as url:
        yield url


def _no_horizontal_scroll(page) -> None:
    width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], f"the page is wider than the screen: {width}"


@pytest.mark.parametrize("viewport", ["desktop", "phone"])
def test_regulator_logs_in_and_out(browser, base_url: str, tmp_path: Path, viewport: str) -> None:
    """Login form, the home page with the regulator's navigation, the phone menu, and logout all work cleanly."""
    with open_page(browser, viewport) as (page, log):
        page.add_init_script(CSP_WATCH)
        page.goto(base_url + "/alerts")
        assert page.url == f"{base_url}/login?next=/alerts"
        assert page.title() == "登录 · 明厨亮灶智慧监管"
        assert page.evaluate("document.fonts.check('16px \"Noto Sans CJK SC\"')")
        assert page.locator(".topbar").evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(15, 45, 74)"
        _no_horizontal_scroll(page)
        login_png = screenshot(page, f"console-login-{viewport}", tmp_path)
        assert distinct_colours(login_png) > 50

        page.get_by_label("用户名").fill("li")
        page.get_by_label("密码").fill(PASSWORD)
        page.get_by_role("button", name="登录").click()
        page.wait_for_url(base_url + "/alerts")
        assert page.get_by_role("heading", level=1).inner_text() == "预警"
        nav = page.get_by_role("navigation", name="主导航")
        if viewport == "phone":
            assert not nav.is_visible()  # folded behind the menu button
            _no_horizontal_scroll(page)
            screenshot(page, f"console-home-{viewport}", tmp_path)
            page.get_by_role("button", name="菜单").click()
            assert page.get_by_role("button", name="菜单").get_attribute("aria-expanded") == "true"
        assert nav.is_visible()
        assert nav.get_by_role("link").all_inner_texts() == ["预警", "学校", "大数据"]  # no 管理 for a regulator
        assert page.get_by_text("李监管").is_visible()
        _no_horizontal_scroll(page)
        home_png = screenshot(page, f"console-home{'-menu' if viewport == 'phone' else ''}-{viewport}", tmp_path)
        assert distinct_colours(home_png) > 50

        page.get_by_role("button", name="退出").click()
        page.wait_for_url(base_url + "/login")
        page.goto(base_url + "/alerts")
        assert page.url.startswith(base_url + "/login")  # the session ended
        assert page.evaluate("window.__cspViolations") == []
        log.assert_clean()
