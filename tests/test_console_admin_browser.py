"""The /admin pages in Debian's Chromium, at desktop and phone size: an admin logs in, adds a canteen (after a
refused jurisdiction code) and a device through the forms, reads the device's id and password on the show-once
page, and watches a command's state follow the box's answer on the device page (static/admin.js polling the
API); every admin page fits the screen. No console error, no CSP violation, no request off the machine.
Screenshots go to $BK_SCREENSHOTS (or the test's tmp_path)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from support.api_server import live_receiver
from support.browser import CSP_WATCH, assert_fits, csp_violations, distinct_colours, log_in, open_page, screenshot

from bk_contract import CommandResult
from cloud_receiver.admin.accounts import create_user
from cloud_receiver.app.factory import open_configured_storage
from cloud_receiver.config import ReceiverConfig
from cloud_receiver.control import commands as control
from cloud_receiver.storage.sqlite import iso

pytestmark = pytest.mark.system

PASSWORD = "correct-horse-battery"
REFUSAL = "config refused: config_push:3: cameras[0].source.type: Input should be 'rtsp' or 'file'"


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[str, ReceiverConfig]]:
    """A receiver (API and console, no MQTT) on a SQLite file with one admin account `wang`; (base URL, config)."""
    with live_receiver(tmp_path, lambda s: create_user(s.sql, "wang", "admin", "", PASSWORD, "王管理")) as served:
        yield served


def _forget_the_refusal(log, path: str) -> None:
    """A refused form is a 400 page by design: take its one failed request and Chrome's console line about it
    out of the log, so that anything else still fails the test."""
    refused = [r for r in log.failed_requests if r.endswith(f"{path}: HTTP 400")]
    noted = [e for e in log.console_errors if "status of 400" in e and f"{path}:" in e]
    assert len(refused) == 1 and len(noted) <= 1, (log.failed_requests, log.console_errors)
    log.failed_requests.remove(refused[0])
    for line in noted:
        log.console_errors.remove(line)


def _shot(page, name: str, tmp_path: Path) -> None:
    assert distinct_colours(screenshot(page, name, tmp_path)) > 50, f"{name} looks blank"


@pytest.mark.parametrize("viewport", ["desktop", "phone"])
def test_admin_adds_a_canteen_and_a_device(browser, receiver, tmp_path: Path, viewport: str) -> None:
    """Canteen and device forms work by touch and mouse; the secret page, the device page and its polling work cleanly."""
    base_url, cfg = receiver
    with open_page(browser, viewport) as (page, log):
        page.add_init_script(CSP_WATCH)
        log_in(page, base_url, "wang", PASSWORD, lands_on="/admin")
        assert page.get_by_role("heading", level=1).inner_text() == "系统管理"
        assert page.evaluate("document.fonts.check('16px \"Noto Sans CJK SC\"')")
        assert_fits(page)
        _shot(page, f"admin-home-{viewport}", tmp_path)

        page.get_by_role("navigation", name="管理导航").get_by_role("link", name="食堂").click()
        page.wait_for_url(base_url + "/admin/canteens")
        page.get_by_label("食堂编号").fill("canteen-0001")
        page.get_by_label("名称").fill("沙坡头区第一小学食堂")
        page.get_by_label("辖区代码").fill("6405")
        page.get_by_role("button", name="添加食堂").click()
        error = page.locator("#f-jurisdiction-error")
        error.wait_for()
        assert "6 位数字" in error.inner_text() and page.get_by_label("名称").input_value() == "沙坡头区第一小学食堂"
        assert_fits(page)
        _shot(page, f"admin-canteen-error-{viewport}", tmp_path)
        _forget_the_refusal(log, "/admin/canteens")
        page.get_by_label("辖区代码").fill("640502")
        page.get_by_role("button", name="添加食堂").click()
        page.wait_for_url(base_url + "/admin/canteens?done=canteen_saved")
        assert page.get_by_role("status").inner_text() == "食堂已保存。"
        assert page.get_by_role("cell", name="沙坡头区第一小学食堂").is_visible()
        assert_fits(page)
        _shot(page, f"admin-canteens-{viewport}", tmp_path)

        page.get_by_role("link", name="添加设备").click()
        page.wait_for_url(re.compile(r".*/admin/devices\?canteen=canteen-0001#device-form$"))
        assert page.get_by_label("所属食堂").input_value() == "canteen-0001"
        page.get_by_label("设备名称").fill("后厨边缘盒")
        page.get_by_label("仅保存, 不在 MQTT broker 上开通账号").check()
        page.get_by_role("button", name="添加设备并生成密码").click()
        page.wait_for_url(base_url + "/admin/devices")
        assert page.get_by_role("heading", level=1).inner_text() == "设备已添加"
        device_id = page.locator("#secret-1").inner_text()
        assert re.fullmatch(r"64050200001180\d{6}", device_id) and len(page.locator("#secret-2").inner_text()) >= 24
        assert_fits(page)
        _shot(page, f"admin-device-secret-{viewport}", tmp_path)

        storage = open_configured_storage(cfg)
        try:
            cmd = control.new_command("config_push", "wang", datetime.now(UTC), args={"config": "x", "version": "v2"})
            control.record(storage.sql, device_id, cmd)
            page.get_by_role("link", name="我已妥善保存, 继续").click()
            page.wait_for_url(f"{base_url}/admin/devices/{device_id}")
            badge = page.locator(f'td [data-poll-command="{cmd.id}"]')
            assert badge.inner_text() == "等待应答"
            storage.record_command_result(device_id, CommandResult(id=cmd.id, ok=False, error=REFUSAL),
                                          iso(datetime.now(UTC)))
        finally:
            storage.close()
        page.wait_for_function(f"() => document.querySelector('td [data-poll-command=\"{cmd.id}\"]')"
                               ".textContent === '失败'", timeout=15_000)
        assert "cameras[0].source.type" in page.locator(f'td[data-summary-for="{cmd.id}"]').inner_text()
        assert page.get_by_label("配置内容 (YAML, agent.yaml 全文)").is_visible()
        assert_fits(page)
        _shot(page, f"admin-device-page-{viewport}", tmp_path)

        for section in ("users", "tokens", "webhooks", "devices"):
            page.goto(f"{base_url}/admin/{section}")
            assert_fits(page)
            _shot(page, f"admin-{section}-{viewport}", tmp_path)
        assert page.get_by_role("link", name=device_id).is_visible()
        assert csp_violations(page) == []
        log.assert_clean()
