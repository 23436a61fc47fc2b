"""看看后厨 in Debian's Chromium as a parent on a phone: outside opening hours the button says the kitchen
is closed; during them the frame of the real edge agent's camera (carphone footage, a man's face) shows
and refreshes, and every image the page loads has 0 faces for the detector. Screenshots at phone
(390x844) and desktop (1280x800) size."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from support.agent_harness import DEVICE, PersonEverywhere, Running, agent_config, uplink_to
from support.browser import chromium_browser, open_page, screenshot_dir, serve_app
from support.footage import clip_1080p
from support.receiver_harness import receiver_config
from support.waiting import wait_for

from cloud_receiver.app.factory import create_app
from cloud_receiver.appkeys import STORAGE, SUBSCRIBER
from cloud_receiver.config import PublicLookConfig
from cloud_receiver.privacy.faces import FaceFinder
from cloud_receiver.privacy.public_copy import decode
from cloud_receiver.storage.schema import cameras
from cloud_receiver.web.public_look import PUBLIC_LOOKS, turned_faces
from devkit.localbroker import running_broker
from edge_agent.app.agent import PipelineTuning

pytestmark = pytest.mark.system

NOON = datetime(2026, 5, 6, 4, 0, tzinfo=UTC)  # 12:00 in Beijing: open
NIGHT = datetime(2026, 5, 6, 14, 30, tzinfo=UTC)  # 22:30 in Beijing: closed
PAGE = {"licences": [{"name": "食品经营许可证", "number": "JY16405020000001", "valid_until": "2028-06-30"}],
        "rating": "A", "sampling": [{"date": "2024-04-20", "item": "餐具", "result": "合格"}]}
FRAMES = 3  # refreshes the phone must see


def _shot(page, name: str, tmp_path) -> None:
    """The screen as the visitor sees it, the look in view (not the whole long page)."""
    out = screenshot_dir(tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    page.locator("#look").scroll_into_view_if_needed()
    page.evaluate("document.getElementById('look').scrollIntoView({block: 'start'})")
    page.screenshot(path=str(out / f"{name}.png"))


def test_a_parent_takes_a_short_blurred_look_into_the_kitchen(tmp_path):
    """Closed at night with the hours; at noon the frame refreshes on a phone; every image served has 0 faces."""
    finder = FaceFinder()
    with running_broker(tmp_path / "broker") as broker:
        cfg = receiver_config(tmp_path, broker).model_copy(
            update={"public_look": PublicLookConfig(refresh_s=2.0, look_s=60)})
        app = create_app(cfg)
        os.environ["BK_TEST_DEVICE_PASSWORD"] = ""
        agent_cfg = agent_config(tmp_path, [{"id": "cam1", "name": "后厨操作间",
                                             "source": {"type": "file", "url": str(clip_1080p("carphone_pristine.mp4"))}}],
                                 uplink=uplink_to(broker, telemetry_s=0.5))
        with serve_app(app) as base, chromium_browser() as browser:
            wait_for(lambda: SUBSCRIBER in app and app[SUBSCRIBER].subscribed.is_set(), 10, "the receiver to subscribe")
            storage = app[STORAGE]
            storage.add_canteen("C1", "第一中学食堂", "64050201")
            storage.add_device(DEVICE, "C1", "后厨边缘盒")
            storage.set_public_json("C1", json.dumps(PAGE, ensure_ascii=False))
            looks = app[PUBLIC_LOOKS]
            with Running(agent_cfg, detector=PersonEverywhere(), tuning=PipelineTuning(housekeeping_s=0.2)):
                wait_for(lambda: storage.sql.all(sa.select(cameras.c.camera_id).where(cameras.c.state == "online")),
                         30, "the box to report its camera online")

                looks.clock = lambda: NIGHT
                with open_page(browser, "phone") as (page, log):
                    page.goto(f"{base}/p/C1")
                    assert "现在不在开放时间" in page.locator("#look-state").inner_text()
                    page.click("#look-start")
                    page.wait_for_function("() => document.getElementById('look-state').textContent"
                                           ".includes('06:00–20:00 (北京时间) 开放')")
                    assert page.locator("#look-view").is_hidden() and page.locator("#look-start").is_enabled()
                    _shot(page, "public-look-closed-phone", tmp_path)
                    log.assert_offline()  # the refused start is a 403: expected, not a page problem
                assert looks.looks == {} and looks.snapshots_asked == 0

                looks.clock = lambda: NOON
                for viewport, name in (("phone", "public-look-phone"), ("desktop", "public-look-desktop")):
                    with open_page(browser, viewport) as (page, log):
                        if viewport == "desktop":
                            page.set_viewport_size({"width": 1280, "height": 800})
                        images: list[tuple[str, bytes]] = []
                        page.on("response", lambda r, images=images: images.append((r.url, r.body()))
                                if r.request.resource_type == "image" and r.status == 200 else None)
                        page.goto(f"{base}/p/C1")
                        assert page.context.cookies() == []
                        page.click("#look-start")
                        want = FRAMES if viewport == "phone" else 1
                        page.wait_for_function(f"() => window.bkLook.frames >= {want}", timeout=60_000)
                        src = page.locator("#look-frame").get_attribute("src")
                        assert src.startswith("/p/C1/look/") and "?n=" in src
                        caption = page.locator("#look-caption").inner_text()
                        assert "画面更新于" in caption and "还可看" in caption
                        assert page.evaluate("document.getElementById('look-frame').naturalWidth") > 0
                        _shot(page, name, tmp_path)
                        page.wait_for_timeout(200)  # the last response bodies are read on their events
                        frames = [body for url, body in images if "/look/" in url]
                        assert len(frames) >= want
                        if viewport == "phone":
                            assert len(set(frames)) >= 2, "the frame never changed"
                        faces = {url: len(finder.find(decode(body))) for url, body in images if url.startswith(base)}
                        assert faces and set(faces.values()) == {0}, faces
                        turned = [len(turned_faces(finder, decode(body), sensitive=False)) for body in frames]
                        assert set(turned) == {0}, turned
                        log.assert_clean()
                        log.assert_offline()
            assert looks.snapshots_asked >= FRAMES
