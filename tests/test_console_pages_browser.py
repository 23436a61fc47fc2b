"""The console's login and home pages in Debian's Chromium, at desktop and phone size: a regulator logs in,
lands on the home page, opens the folded navigation on a phone and logs out; no console error, no CSP
violation, no request off the machine. Screenshots go to $BK_SCREENSHOTS (or the test's tmp_path)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.api_server import live_receiver
from support.browser import (
    CSP_WATCH,
    assert_fits,
    csp_violations,
    distinct_colours,
    open_page,
    screenshot,
    submit_login,
)

from cloud_receiver.admin.accounts import create_user
from cloud_receiver.storage.sqlite import Storage

pytestmark = pytest.mark.system

PASSWORD = "correct-horse-battery"


def _seed(storage: Storage) -> None:
    storage.add_canteen("C1", "第一中学食堂", "64050201")
    create_user(storage.sql, "li", "regulator", "640502", PASSWORD, "李监管")


@pytest.fixture
def base_url(tmp_path: Path) -> Iterator[str]:
    """A receiver (API and console, no MQTT) on a SQLite file with canteen C1 and regulator account `li`."""
    with live_receiver(tmp_path, _seed) as (url, _):
        yield url


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
        assert_fits(page)
        login_png = screenshot(page, f"console-login-{viewport}", tmp_path)
        assert distinct_colours(login_png) > 50

        submit_login(page, "li", PASSWORD)
        page.wait_for_url(base_url + "/alerts")
        assert page.get_by_role("heading", level=1).inner_text() == "预警"
        nav = page.get_by_role("navigation", name="主导航")
        if viewport == "phone":
            assert not nav.is_visible()  # folded behind the menu button
            assert_fits(page)
            screenshot(page, f"console-home-{viewport}", tmp_path)
            page.get_by_role("button", name="菜单").click()
            assert page.get_by_role("button", name="菜单").get_attribute("aria-expanded") == "true"
        assert nav.is_visible()
        assert nav.get_by_role("link").all_inner_texts() == ["预警", "学校", "台账", "大数据"]  # no 管理 for a regulator
        assert page.get_by_text("李监管").is_visible()
        assert_fits(page)
        home_png = screenshot(page, f"console-home{'-menu' if viewport == 'phone' else ''}-{viewport}", tmp_path)
        assert distinct_colours(home_png) > 50

        page.get_by_role("button", name="退出").click()
        page.wait_for_url(base_url + "/login")
        page.goto(base_url + "/alerts")
        assert page.url.startswith(base_url + "/login")  # the session ended
        assert csp_violations(page) == []
        log.assert_clean()
