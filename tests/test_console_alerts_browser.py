"""The 预警 → 整改 → 复核 loop in Debian's Chromium: a box's alert reaches a regulator's open list live
(real broker, real ingest, the alert stream), the regulator sets a deadline, the canteen manager submits
a rectification with a photo from a phone, the regulator approves it; screenshots at desktop and phone size."""

from __future__ import annotations

import contextlib
import io
from datetime import UTC, datetime, timedelta

import pytest
from PIL import Image
from support.browser import chromium_browser, log_in, open_page, screenshot, serve_app
from support.receiver_harness import DeviceClient, make_alert, receiver_config
from support.waiting import wait_for

from cloud_receiver.admin.accounts import create_user
from cloud_receiver.app.factory import create_app
from cloud_receiver.appkeys import STORAGE, SUBSCRIBER
from devkit.localbroker import running_broker

pytestmark = pytest.mark.system

DEV = "64050200001180000021"
PASSWORD = "loop-test-password-1"


def test_alert_loop_in_the_browser(tmp_path):
    """Live arrival with a badge, deadline, rectification with a photo, approval: each step visible on the page."""
    photo = tmp_path / "fixed.jpg"
    img = Image.new("RGB", (640, 480), (40, 120, 200))
    buf = io.BytesIO()
    img.save(buf, "JPEG")
    photo.write_bytes(buf.getvalue())
    with running_broker(tmp_path / "broker") as broker:
        app = create_app(receiver_config(tmp_path, broker))
        with serve_app(app) as base, chromium_browser() as browser, contextlib.ExitStack() as stack:
            wait_for(lambda: SUBSCRIBER in app and app[SUBSCRIBER].subscribed.is_set(), 10, "the receiver to subscribe")
            storage = app[STORAGE]
            storage.add_canteen("C1", "第一中学食堂", "64050201")
            storage.add_device(DEV, "C1", "后厨边缘盒")
            create_user(storage.sql, "reg1", "regulator", "640502", PASSWORD, "沙坡头区监管员")
            create_user(storage.sql, "c1", "canteen", "C1", PASSWORD, "第一中学食堂管理员")

            reg, reg_log = stack.enter_context(open_page(browser, "desktop"))
            log_in(reg, base, "reg1", PASSWORD, "/alerts")
            reg.wait_for_function("() => document.getElementById('live-state').textContent.includes('已连接')")
            alert = make_alert(DEV, 1).model_copy(update={"started_at": datetime.now(UTC) - timedelta(minutes=1)})
            device = DeviceClient(broker, DEV)
            try:
                assert device.publish_alert(alert) == 0
            finally:
                device.close()
            reg.wait_for_selector(f'tr[data-id="{alert.id}"].fresh', timeout=10_000)
            assert reg.locator("#new-badge").is_visible() and "新 1" in reg.locator("#new-badge").inner_text()
            screenshot(reg, "alerts-live-desktop", tmp_path)

            reg.click(f'tr[data-id="{alert.id}"] a >> nth=0')
            reg.wait_for_url(f"**/alerts/{alert.id}")
            due = (datetime.now(UTC) + timedelta(days=2, hours=8)).strftime("%Y-%m-%dT%H:%M")
            reg.fill("#deadline", due)
            reg.fill("#deadline-note", "请两天内整改")
            reg.click('form[data-action="deadline"] button')
            reg.wait_for_function(f"() => document.body.textContent.includes('{due.replace('T', ' ')}')")
            screenshot(reg, "alert-deadline-desktop", tmp_path)

            can, can_log = stack.enter_context(open_page(browser, "phone"))
            log_in(can, base, "c1", PASSWORD, f"/alerts/{alert.id}")
            can.fill("#rectify-note", "已批评教育, 手机统一存放")
            can.set_input_files("#rectify-photo", str(photo))
            can.click('form[data-action="rectify"] button')
            can.wait_for_selector(".pill-已整改")
            assert can.locator(".timeline").inner_text().count("已整改") >= 1
            screenshot(can, "alert-rectified-phone", tmp_path)

            reg.reload()
            reg.fill("#approve-note", "整改到位")
            reg.click('form[data-action="approve"] button')
            reg.wait_for_selector("h1 .pill-复核通过")
            timeline = reg.locator(".timeline").inner_text()
            assert "整改到位" in timeline and "已批评教育" in timeline
            screenshot(reg, "alert-approved-desktop", tmp_path)
            for log in (reg_log, can_log):
                log.assert_clean()
                log.assert_offline()
