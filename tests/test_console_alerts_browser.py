"""The 预警 → 整改 → 复核 loop in Debian's Chromium: a box's alert with its snapshot and clip reaches a
regulator's open list live (real broker, real ingest, the alert stream); the snapshot shows and the clip
plays; the regulator sets a deadline, the canteen manager submits a rectification with a photo from a
phone, the regulator rejects it, the canteen submits again, the regulator approves; another canteen's
manager can neither open nor list it. Screenshots at desktop and phone size."""

from __future__ import annotations

import contextlib
import io
from datetime import UTC, datetime, timedelta

import av
import numpy as np
import pytest
from PIL import Image
from support.browser import chromium_browser, log_in, open_page, screenshot, seed_two_canteens, serve_app
from support.receiver_harness import DeviceClient, make_alert, receiver_config
from support.waiting import wait_for

from bk_contract import MediaRef, split_media
from cloud_receiver.app.factory import create_app
from cloud_receiver.appkeys import STORAGE, SUBSCRIBER
from devkit.localbroker import running_broker

pytestmark = pytest.mark.system

DEV = "64050200001180000021"
PASSWORD = "loop-test-password-1"


def jpeg(colour: tuple[int, int, int], size: tuple[int, int] = (640, 480)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "JPEG")
    return buf.getvalue()


def clip_mp4() -> bytes:
    """Two seconds of H.264 in MP4, made here (a moving bar)."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        s = out.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 320, 240, "yuv420p"
        for i in range(20):
            img = np.zeros((240, 320, 3), np.uint8)
            img[:, i * 15:i * 15 + 30] = 230
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            for p in s.encode(frame):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return buf.getvalue()


def upload(device: DeviceClient, data: bytes, content_type: str) -> MediaRef:
    sha, chunks = split_media(data, content_type, 16 * 1024)
    assert set(device.publish_media(sha[:32], chunks)) == {0}
    return MediaRef(id=sha[:32], sha256=sha, bytes=len(data), content_type=content_type)


def rectify(page, note: str, photo) -> None:
    page.fill("#rectify-note", note)
    page.set_input_files("#rectify-photo", str(photo))
    page.click('form[data-action="rectify"] button')
    page.wait_for_selector(".pill-已整改")


def test_alert_loop_in_the_browser(tmp_path):
    """Live arrival with a badge, snapshot and clip, deadline, rectification, rejection, resubmission,
    approval: each step visible on the page and the end state in the API; other canteens see nothing."""
    photo, photo2 = tmp_path / "fixed.jpg", tmp_path / "fixed-again.jpg"
    photo.write_bytes(jpeg((40, 120, 200)))
    photo2.write_bytes(jpeg((40, 200, 120)))
    with running_broker(tmp_path / "broker") as broker:
        app = create_app(receiver_config(tmp_path, broker))
        with serve_app(app) as base, chromium_browser() as browser, contextlib.ExitStack() as stack:
            wait_for(lambda: SUBSCRIBER in app and app[SUBSCRIBER].subscribed.is_set(), 10, "the receiver to subscribe")
            storage = app[STORAGE]
            seed_two_canteens(storage, DEV, PASSWORD)

            reg, reg_log = stack.enter_context(open_page(browser, "desktop"))
            log_in(reg, base, "reg1", PASSWORD, "/alerts")
            reg.wait_for_function("() => document.getElementById('live-state').textContent.includes('已连接')")
            device = DeviceClient(broker, DEV)
            try:
                snapshot = upload(device, jpeg((200, 80, 40), (1280, 720)), "image/jpeg")
                clip = upload(device, clip_mp4(), "video/mp4")
                alert = make_alert(DEV, 1).model_copy(update={
                    "started_at": datetime.now(UTC) - timedelta(minutes=1), "snapshot": snapshot, "clip": clip})
                assert device.publish_alert(alert) == 0
            finally:
                device.close()
            reg.wait_for_selector(f'tr[data-id="{alert.id}"].fresh', timeout=10_000)
            assert reg.locator("#new-badge").is_visible() and "新 1" in reg.locator("#new-badge").inner_text()
            screenshot(reg, "alerts-live-desktop", tmp_path)

            reg.click(f'tr[data-id="{alert.id}"] a >> nth=0')
            reg.wait_for_url(f"**/alerts/{alert.id}")
            reg.wait_for_function("() => document.getElementById('snapshot').naturalWidth === 1280")
            reg.evaluate("() => { const v = document.querySelector('.clip video'); v.muted = true; return v.play(); }")
            reg.wait_for_function("() => document.querySelector('.clip video').currentTime > 0.5", timeout=10_000)
            due = (datetime.now(UTC) + timedelta(days=2, hours=8)).strftime("%Y-%m-%dT%H:%M")
            reg.fill("#deadline", due)
            reg.fill("#deadline-note", "请两天内整改")
            reg.click('form[data-action="deadline"] button')
            reg.wait_for_function(f"() => document.body.textContent.includes('{due.replace('T', ' ')}')")
            screenshot(reg, "alert-deadline-desktop", tmp_path)

            can, can_log = stack.enter_context(open_page(browser, "phone"))
            log_in(can, base, "c1", PASSWORD, f"/alerts/{alert.id}")
            rectify(can, "已批评教育, 手机统一存放", photo)
            screenshot(can, "alert-rectified-phone", tmp_path)

            reg.reload()
            reg.fill("#reject-note", "照片看不清手机存放柜")
            reg.fill("#reject-deadline", due)
            reg.click('form[data-action="reject"] button')
            reg.wait_for_selector("h1 .pill-待整改")
            can.reload()
            rectify(can, "已补拍存放柜照片", photo2)

            reg.reload()
            reg.fill("#approve-note", "整改到位")
            reg.click('form[data-action="approve"] button')
            reg.wait_for_selector("h1 .pill-复核通过")
            timeline = reg.locator(".timeline").inner_text()
            assert all(t in timeline for t in ("已批评教育", "照片看不清", "已补拍", "整改到位"))
            screenshot(reg, "alert-approved-desktop", tmp_path)
            row = storage.sql.rows("SELECT status FROM alerts WHERE id = :id", id=alert.id)[0]
            assert row["status"] == "复核通过"

            other, other_log = stack.enter_context(open_page(browser, "phone"))
            log_in(other, base, "c2", PASSWORD, "/alerts")
            assert other.locator(f'tr[data-id="{alert.id}"]').count() == 0
            answer = other.goto(f"{base}/alerts/{alert.id}")
            assert answer is not None and answer.status == 403 and "无权查看" in other.content()
            for log in (reg_log, can_log):
                log.assert_clean()
                log.assert_offline()
            other_log.assert_offline()
