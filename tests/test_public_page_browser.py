"""The public page in Debian's Chromium at phone size, as a parent who scanned the QR code: no cookie, the
rating and licences visible, kitchen snapshots whose faces the detector no longer finds, a report sent
through the form (the challenge read off the page), no console error, CSP violation or outside request."""

from __future__ import annotations

import hashlib
import json

import pytest
import sqlalchemy as sa
from support.api_kit import add_media
from support.browser import chromium_browser, open_page, screenshot, serve_app
from test_public_page import kitchen_jpeg  # the astronaut's head (public domain, in scikit-image) in a kitchen

from cloud_receiver.app.factory import create_app
from cloud_receiver.appkeys import STORAGE
from cloud_receiver.config import ReceiverConfig, StorageConfig
from cloud_receiver.privacy.faces import FaceFinder
from cloud_receiver.privacy.public_copy import decode
from cloud_receiver.storage.schema import alerts

pytestmark = pytest.mark.system

DEV = "64050200001180000031"
PAGE = {"licences": [{"name": "食品经营许可证", "number": "JY16405020000031", "valid_until": "2028-06-30"}],
        "rating": "A", "sampling": [{"date": "2024-04-20", "item": "餐具", "result": "合格"},
                                    {"date": "2024-03-02", "item": "凉拌菜", "result": "合格"}]}


def test_a_parent_sees_the_kitchen_blurred_and_sends_a_report(tmp_path):
    """Phone, no cookie: rating and licences shown, every image served has 0 faces, the report arrives."""
    cfg = ReceiverConfig(storage=StorageConfig(path=tmp_path / "receiver.db", media_dir=tmp_path / "media"))
    app = create_app(cfg, subscriber=False)
    finder = FaceFinder()
    with serve_app(app) as base, chromium_browser() as browser:
        storage = app[STORAGE]
        storage.add_canteen("C1", "第一中学食堂", "64050201")
        storage.add_device(DEV, "C1", "后厨边缘盒")
        pictures = [kitchen_jpeg([(300, 120, 90), (820, 160, 60)]), kitchen_jpeg([(560, 90, 120)])]
        shas = [add_media(storage, cfg.storage.media_dir, p, f"snap{i}", DEV) for i, p in enumerate(pictures)]
        assert all(len(finder.find(decode(p))) >= 1 for p in pictures)  # the originals do show faces
        snaps = [{"sha256": s, "taken_at": f"2024-05-0{i + 1}T03:00:00Z", "caption": ("切配间", "烹饪区")[i]}
                 for i, s in enumerate(shas)]
        storage.set_public_json("C1", json.dumps({**PAGE, "snapshots": snaps}, ensure_ascii=False))

        with open_page(browser, "phone") as (page, log):
            images: list[tuple[str, bytes]] = []
            page.on("response", lambda r: images.append((r.url, r.body()))
                    if r.request.resource_type == "image" and r.status == 200 else None)
            page.goto(f"{base}/p/C1")
            assert page.context.cookies() == []
            rating = page.locator("#rating")
            assert rating.is_visible() and "A 级 · 优秀" in rating.inner_text()
            assert "JY16405020000031" in page.locator("#licences").inner_text()
            for img in page.locator(".pub-shot img").all():
                img.scroll_into_view_if_needed()
            page.wait_for_function("() => [...document.querySelectorAll('.pub-shot img')]"
                                   ".every(i => i.complete && i.naturalWidth > 0)", timeout=120_000)
            page.locator("#rating").scroll_into_view_if_needed()
            screenshot(page, "public-page-phone", tmp_path)

            page.wait_for_timeout(200)  # the last response bodies are read on their events
            served = [(url, body) for url, body in images if url.startswith(base)]
            assert len(served) == len(shas), [u for u, _ in images]
            assert {url: len(finder.find(decode(body))) for url, body in served} == {u: 0 for u, _ in served}

            question = page.locator("#challenge-question").inner_text()
            a, op, b = question.replace("等于多少?", "").split()
            photo = tmp_path / "seen.jpg"
            photo.write_bytes(kitchen_jpeg([]))
            page.set_input_files("#report-photo", str(photo))
            assert page.locator("#photo-name").inner_text() == "seen.jpg"
            page.fill("#report-text", "今天午餐的凉拌菜有异味, 请核查。")
            screenshot(page, "public-report-form-phone", tmp_path)
            page.fill("#report-answer", str(int(a) + int(b) if op == "加" else int(a) - int(b)))
            page.click(".pub-form button[type=submit]")
            page.wait_for_selector("#report-done")
            assert "已收到您的投诉举报" in page.locator("#report-done").inner_text()
            screenshot(page, "public-report-done-phone", tmp_path)
            log.assert_clean()
        rows = storage.sql.all(sa.select(alerts.c.type, alerts.c.canteen_id, alerts.c.detail, alerts.c.snapshot_sha256)
                               .where(alerts.c.type == "public_report"))
        assert [(r["type"], r["canteen_id"], r["detail"]) for r in rows] == [
            ("public_report", "C1", "今天午餐的凉拌菜有异味, 请核查。")]
        assert rows[0]["snapshot_sha256"] == hashlib.sha256(photo.read_bytes()).hexdigest()
