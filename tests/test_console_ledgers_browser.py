"""自律台账 in Debian's Chromium on a phone: the canteen manager registers two people through the staff form
(a wrong 健康证 date is refused by the API and the message shows next to the form), records the whole
shift's 晨检 on one screen (可上岗 unticked by itself for a cough), sees the checks in the list; registers a
person whose 健康证 has expired and checks them → a `health_cert_expired` alert, which the regulator's
预警 list shows; an entry written 30 h ago (through the store with its clock) cannot be edited in place and
its correction keeps the old revision visible. Screenshots at phone size."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta

import pytest
from support.browser import chromium_browser, log_in, open_page, screenshot, serve_app
from support.waiting import wait_for

from cloud_receiver.admin.accounts import create_user
from cloud_receiver.admin.auth import Principal
from cloud_receiver.app.factory import create_app
from cloud_receiver.appkeys import STORAGE
from cloud_receiver.config import ReceiverConfig, StorageConfig
from cloud_receiver.ledgers import store
from cloud_receiver.ledgers.models import Staff

pytestmark = pytest.mark.system

PASSWORD = "ledger-test-password-1"


def add_staff(page, name: str, cert: str, issued: str, expiry: str) -> None:
    page.fill("#new-name", name)
    page.fill("#new-position", "厨师")
    page.fill("#new-health_cert_no", cert)
    page.fill("#new-health_cert_issued", issued)
    page.fill("#new-health_cert_expiry", expiry)
    page.click("#create-form button[type=submit]")


def test_canteen_records_ledgers_on_a_phone(tmp_path):
    cfg = ReceiverConfig(storage=StorageConfig(path=tmp_path / "receiver.db", media_dir=tmp_path / "media"))
    app = create_app(cfg, subscriber=False)
    local_today = (datetime.now(UTC) + timedelta(hours=8)).date()
    today, issued = local_today.isoformat(), (local_today - timedelta(days=300)).isoformat()
    with serve_app(app) as base, chromium_browser() as browser, contextlib.ExitStack() as stack:
        storage = app[STORAGE]
        storage.add_canteen("C1", "第一中学食堂", "64050201")
        create_user(storage.sql, "reg1", "regulator", "640502", PASSWORD, "沙坡头区监管员")
        create_user(storage.sql, "c1", "canteen", "C1", PASSWORD, "第一中学食堂管理员")

        can, can_log = stack.enter_context(open_page(browser, "phone"))
        log_in(can, base, "c1", PASSWORD, "/ledgers")
        can.click("text=从业人员")
        can.wait_for_url(f"{base}/ledgers/staff")
        # a 健康证 that expires before it was issued: the API's 422 names the field, shown by the form
        add_staff(can, "张三", "NX-001", issued, "2000-01-10")
        error = can.locator("#create-form .form-error")
        error.wait_for(state="visible")
        assert "health_cert_expiry" in error.inner_text()
        assert can.locator("#new-health_cert_expiry").get_attribute("aria-invalid") == "true"
        screenshot(can, "ledger-staff-error-phone", tmp_path)
        can_log.failed_requests = [r for r in can_log.failed_requests if "HTTP 422" not in r]
        can_log.console_errors = [e for e in can_log.console_errors if "422" not in e]
        can.fill("#new-health_cert_expiry", "2099-01-10")
        can.click("#create-form button[type=submit]")
        can.wait_for_selector("#ledger-rows tr[data-id] >> text=张三")
        add_staff(can, "李四", "NX-002", issued, "2099-01-10")
        can.wait_for_selector("#ledger-rows tr[data-id] >> text=李四")

        # the whole shift on one screen
        can.goto(f"{base}/ledgers/morning-checks/shift")
        people = can.locator(".shift-person")
        assert people.count() == 2
        li = can.locator(".shift-person", has_text="李四")
        assert li.locator('[name="fit_to_work"]').is_checked()
        li.locator('[name="cough"]').check()
        assert not li.locator('[name="fit_to_work"]').is_checked()
        zhang = can.locator(".shift-person", has_text="张三")
        zhang.locator('[name="temperature_c"]').fill("36.8")
        screenshot(can, "ledger-shift-phone", tmp_path)
        can.click(".shift-submit")
        can.locator("#shift-done").wait_for(state="visible")
        assert "2 人" in can.locator("#shift-done").inner_text()
        screenshot(can, "ledger-shift-done-phone", tmp_path)
        can.goto(f"{base}/ledgers/morning_checks?since={today}&until={today}")
        rows = can.locator("#ledger-rows tr[data-id]")
        assert rows.count() == 2
        text = can.locator("#ledger-rows").inner_text()
        assert "张三" in text and "李四" in text and "36.8" in text
        screenshot(can, "ledger-checks-list-phone", tmp_path)

        # an expired 健康证, then that person's 晨检 (the single form) → the alert
        can.goto(f"{base}/ledgers/staff")
        add_staff(can, "王过期", "NX-003", "2020-01-01", "2021-01-01")
        can.wait_for_selector("#ledger-rows tr[data-id] >> text=王过期")
        can.goto(f"{base}/ledgers/morning_checks")
        can.select_option("#new-staff_id", label="王过期 (厨师)")
        can.click("#create-form button[type=submit]")
        can.wait_for_selector("#ledger-rows tr[data-id] >> text=王过期")
        wait_for(lambda: [r["type"] for r in storage.sql.rows("SELECT type FROM alerts")] == ["health_cert_expired"],
                 10, "the health_cert_expired alert")

        reg, reg_log = stack.enter_context(open_page(browser, "phone"))
        log_in(reg, base, "reg1", PASSWORD, "/alerts")
        assert "健康证过期" in reg.locator("#alert-rows").inner_text()
        screenshot(reg, "ledger-alert-regulator-phone", tmp_path)
        reg.goto(f"{base}/ledgers?canteen=C1")
        reg.click("text=从业人员")
        assert reg.locator("#create-form").count() == 0 and reg.locator("#ledger-rows tr[data-id]").count() == 3

        # written 30 h ago (the store's clock): no in-place edit, a correction keeps the old revision
        p = Principal("canteen", "C1", "c1")
        old = Staff(name="赵六", position="帮厨", health_cert_no="NX-OLD", health_cert_issued="2025-01-01",
                    health_cert_expiry="2099-01-01")
        store.create(storage.sql, p, "C1", "staff", [old], now=datetime.now(UTC) - timedelta(hours=30), tz_hours=8,
                     entry_ids=["old-staff"])
        can.goto(f"{base}/ledgers/staff/old-staff")
        assert can.locator("#not-editable").is_visible() and can.locator("#edit-in-place").count() == 0
        assert can.input_value("#fix-name") == "赵六"
        can.fill("#fix-name", "赵陆")
        can.click("#correct-form button[type=submit]")  # no reason: refused on the page
        assert "更正原因" in can.locator("#correct-form .form-error").inner_text()
        can.fill("#fix-reason", "姓名录入错误")
        can.click("#correct-form button[type=submit]")
        can.wait_for_selector("#earlier-revisions")
        assert "赵陆" in can.locator("#current-revision").inner_text()
        earlier = can.locator("#earlier-revisions").inner_text()
        assert "赵六" in earlier and "第 1 版" in earlier
        assert "姓名录入错误" in can.locator("#current-revision").inner_text()
        screenshot(can, "ledger-corrected-phone", tmp_path)

        reg.goto(f"{base}/ledgers/staff/old-staff?canteen=C1")
        reg.fill("#comment-text", "请补充健康证照片")
        reg.click(".comment-form button")
        reg.wait_for_selector("#comments >> text=请补充健康证照片")
        for log in (can_log, reg_log):
            log.assert_clean()
            log.assert_offline()
