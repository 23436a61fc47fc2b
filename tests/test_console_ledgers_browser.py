"""自律台账 in Debian's Chromium on a phone: the canteen manager registers two people through the staff form
(a wrong 健康证 date is refused by the API and the message shows next to the form), records the whole
shift's 晨检 on one screen (可上岗 unticked by itself for a cough), sees the checks in the list; registers a
person whose 健康证 has expired and checks them → a `health_cert_expired` alert, which the regulator's
预警 list shows; an entry written 30 h ago (through the store with its clock) cannot be edited in place and
its correction keeps the old revision visible; a delivery with photos is recorded through the forms and traced on
the day page (按日追溯). Screenshots at phone size (and desktop for the new pages)."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support.browser import assert_fits, chromium_browser, log_in, open_page, screenshot, serve_app
from support.waiting import wait_for

from cloud_receiver.admin.accounts import create_user
from cloud_receiver.admin.auth import Principal
from cloud_receiver.app.factory import create_app
from cloud_receiver.appkeys import STORAGE
from cloud_receiver.config import ReceiverConfig, StorageConfig
from cloud_receiver.ledgers import store
from cloud_receiver.ledgers.models import MorningCheck, Sample, Staff

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


def kitchen_photo(path: Path, colour: tuple[int, int, int], label: str) -> Path:
    """A small picture (a 'document' on a coloured desk) saved as JPEG or PNG by `path`'s suffix."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (640, 480), colour)
    draw = ImageDraw.Draw(img)
    draw.rectangle((120, 60, 520, 420), fill=(250, 250, 245), outline=(40, 40, 40), width=4)
    for y in range(110, 400, 36):
        draw.line((160, y, 480, y), fill=(90, 90, 90), width=6)
    draw.ellipse((400, 320, 500, 400), outline=(200, 30, 30), width=8)  # a seal
    draw.text((140, 70), label, fill=(0, 0, 0))
    img.save(path)
    return path


def pick_photo(page, field_id: str, photo: Path, count: int) -> None:
    """Choose a photo for a form's photo field and wait until `count` thumbnails show there (uploaded)."""
    page.set_input_files(f"#{field_id}-file", str(photo))
    thumbs = page.locator(f".photo-field:has(#{field_id}) .photo-list img")
    wait_for(lambda: thumbs.count() == count and thumbs.nth(count - 1).evaluate("i => i.complete && i.naturalWidth > 0"),
             10, f"{count} uploaded photo(s) in {field_id}")


def loaded_images(page, selector: str) -> int:
    return page.evaluate("s => [...document.querySelectorAll(s)].filter(i => i.complete && i.naturalWidth > 0).length",
                         selector)


def test_purchase_with_photos_traced_to_its_day(tmp_path):
    """On a phone the manager registers a supplier with its licence photo, records a delivery (two item rows, a PNG
    certificate and a JPEG invoice photo) and a 图片台帐 entry; the list shows them with thumbnails, and the day page
    shows the delivery with its supplier, licence and photos next to who worked. Screenshots, phone and desktop."""
    cfg = ReceiverConfig(storage=StorageConfig(path=tmp_path / "receiver.db", media_dir=tmp_path / "media"))
    app = create_app(cfg, subscriber=False)
    today = (datetime.now(UTC) + timedelta(hours=8)).date().isoformat()
    licence = kitchen_photo(tmp_path / "licence.jpg", (70, 120, 170), "licence")
    cert = kitchen_photo(tmp_path / "certificate.png", (90, 150, 90), "certificate")
    invoice = kitchen_photo(tmp_path / "invoice.jpg", (180, 140, 80), "invoice")
    with serve_app(app) as base, chromium_browser() as browser, contextlib.ExitStack() as stack:
        storage = app[STORAGE]
        storage.add_canteen("C1", "第一中学食堂", "64050201")
        create_user(storage.sql, "c1", "canteen", "C1", PASSWORD, "第一中学食堂管理员")
        create_user(storage.sql, "reg1", "regulator", "640502", PASSWORD, "沙坡头区监管员")
        p, now = Principal("canteen", "C1", "c1"), datetime.now(UTC)
        store.create(storage.sql, p, "C1", "staff", [Staff(
            name="王五", position="厨师", health_cert_no="NX-001", health_cert_issued="2025-01-02",
            health_cert_expiry="2099-01-01")], now=now, tz_hours=8, entry_ids=["wang"])
        store.create(storage.sql, p, "C1", "morning_checks", [MorningCheck(
            day=today, staff_id="wang", temperature_c=36.6, hand_wound=False, diarrhea=False, fever=False, cough=False,
            fit_to_work=True, checked_by="李主管")], now=now, tz_hours=8)
        store.create(storage.sql, p, "C1", "staff", [Staff(
            name="赵六", position="帮厨", health_cert_no="NX-002", health_cert_issued="2025-01-02",
            health_cert_expiry="2099-01-01")], now=now, tz_hours=8)  # not checked that day
        store.create(storage.sql, p, "C1", "samples", [Sample(
            day=today, meal="午", dish="番茄炒蛋", weight_g=150, kept_from=now, kept_until=now + timedelta(hours=48),
            kept_by="李主管")], now=now, tz_hours=8)

        can, can_log = stack.enter_context(open_page(browser, "phone"))
        log_in(can, base, "c1", PASSWORD, "/ledgers/suppliers")
        can.fill("#new-name", "宁夏放心粮油有限公司")
        can.fill("#new-credit_code", "91640500MA76A1B2CE")
        can.fill("#new-licence_no", "JY16405020000009")
        can.fill("#new-licence_expiry", "2099-12-31")
        pick_photo(can, "new-licence_photo_sha256", licence, 1)
        can.click("#create-form button[type=submit]")
        can.wait_for_selector("#ledger-rows tr[data-id] >> text=宁夏放心粮油有限公司")
        can.wait_for_load_state("networkidle")  # thumbnails loaded: leaving would abort them (a failed request)

        can.goto(f"{base}/ledgers/purchases")
        assert can.locator("#new-supplier_id option").all_inner_texts() == ["宁夏放心粮油有限公司"]
        row = can.locator(".item-row").nth(0)
        row.locator('[data-item="name"]').fill("大米")
        row.locator('[data-item="quantity"]').fill("50")
        row.locator('[data-item="batch"]').fill("B240501")
        can.click(".item-add")
        row = can.locator(".item-row").nth(1)
        row.locator('[data-item="name"]').fill("菜籽油")
        row.locator('[data-item="quantity"]').fill("4")
        row.locator('[data-item="unit"]').select_option("桶")
        pick_photo(can, "new-certificate_photo_sha256s", cert, 1)  # a PNG: sent as a JPEG by the page
        pick_photo(can, "new-invoice_photo_sha256s", invoice, 1)
        assert_fits(can)
        screenshot(can, "ledger-purchase-form-phone", tmp_path)
        can.click("#create-form button[type=submit]")
        can.wait_for_selector("#ledger-rows tr[data-id] >> text=大米 50 千克")
        entry = can.locator("#ledger-rows tr[data-id]").first
        assert "宁夏放心粮油有限公司" in entry.inner_text() and "菜籽油 4 桶" in entry.inner_text()
        wait_for(lambda: loaded_images(can, "#ledger-rows tr[data-id] img") == 2, 10, "the list's thumbnails")
        screenshot(can, "ledger-purchases-list-phone", tmp_path)

        can.goto(f"{base}/ledgers/photos")
        pick_photo(can, "new-photo_sha256s", licence, 1)
        pick_photo(can, "new-photo_sha256s", invoice, 2)
        can.fill("#new-category", "后厨")
        can.fill("#new-caption", "收货验收")
        can.click("#create-form button[type=submit]")
        can.wait_for_selector("#ledger-rows tr[data-id] >> text=收货验收")
        can.wait_for_load_state("networkidle")

        can.goto(f"{base}/ledgers/purchases")
        can.click(f"#ledger-rows a.day-link >> text={today}")
        can.wait_for_url(f"{base}/ledgers/day/{today}")
        bought = can.locator("#day-purchases").inner_text()
        assert "宁夏放心粮油有限公司" in bought and "JY16405020000009" in bought and "有效" in bought
        assert "大米 50 千克 (批号 B240501)" in bought and "菜籽油 4 桶" in bought
        wait_for(lambda: loaded_images(can, "#day-purchases img") == 3, 10, "licence, certificate and invoice photos")
        assert "王五" in can.locator("#day-staff").inner_text() and "可上岗" in can.locator("#day-staff").inner_text()
        assert "收货验收" in can.locator("#day-other").inner_text()
        assert "赵六" in can.locator("#not-checked").inner_text() and "番茄炒蛋" in can.locator("#day-samples").inner_text()
        assert_fits(can)
        can.wait_for_load_state("networkidle")
        screenshot(can, "ledger-day-phone", tmp_path)
        can.click("#day-purchases .entry-open")  # the purchase's page: its correction form starts from it
        can.wait_for_selector("#correct-form .item-row")
        names = can.locator('#correct-form .item-row [data-item="name"]')
        assert [names.nth(i).input_value() for i in range(names.count())] == ["大米", "菜籽油"]
        wait_for(lambda: loaded_images(can, "#correct-form .photo-list img") == 2, 10, "the form's photos")
        can.wait_for_load_state("networkidle")
        can.go_back()
        can.click("#day-purchases h3 a >> text=宁夏放心粮油有限公司")
        assert "JY16405020000009" in can.locator("#current-revision").inner_text()
        wait_for(lambda: loaded_images(can, "#current-revision img") == 1, 10, "the licence photo")
        can.wait_for_load_state("networkidle")

        for kind in ("gatherings", "additives", "photos"):
            can.goto(f"{base}/ledgers/{kind}")
            assert_fits(can)
            screenshot(can, f"ledger-{kind}-form-phone", tmp_path)

        desk, desk_log = stack.enter_context(open_page(browser, "desktop"))
        desk.set_viewport_size({"width": 1280, "height": 800})
        log_in(desk, base, "reg1", PASSWORD, "/ledgers")
        desk.goto(f"{base}/ledgers/day/{today}?canteen=C1")
        assert "宁夏放心粮油有限公司" in desk.locator("#day-purchases").inner_text()
        wait_for(lambda: loaded_images(desk, "#day-purchases img") == 3, 10, "the regulator sees the photos")
        assert_fits(desk)
        screenshot(desk, "ledger-day-desktop", tmp_path)
        form, form_log = stack.enter_context(open_page(browser, "desktop"))
        form.set_viewport_size({"width": 1280, "height": 800})
        log_in(form, base, "c1", PASSWORD, "/ledgers/purchases")
        form.locator('.item-row [data-item="name"]').fill("鸡蛋")
        form.locator('.item-row [data-item="quantity"]').fill("30")
        form.click(".item-add")
        pick_photo(form, "new-certificate_photo_sha256s", cert, 1)
        assert_fits(form)
        screenshot(form, "ledger-purchase-form-desktop", tmp_path)
        for kind in ("gatherings", "additives", "photos"):
            form.goto(f"{base}/ledgers/{kind}")
            form.wait_for_load_state("networkidle")
            assert_fits(form)
            screenshot(form, f"ledger-{kind}-form-desktop", tmp_path)
        for log in (can_log, desk_log, form_log):
            log.assert_clean()
            log.assert_offline()
