"""Live view in Debian's Chromium: the real agent encodes a real 1080p clip, the real broker and
receiver relay it, and three console users watch it through Media Source Extensions."""

from __future__ import annotations

import contextlib
import os
import time
from datetime import UTC, datetime, timedelta

import pytest
from support.agent_harness import PersonEverywhere, Running, agent_config, uplink_to
from support.browser import (
    chromium_browser,
    distinct_colours,
    log_in,
    open_page,
    screenshot,
    seed_two_canteens,
    serve_app,
)
from support.footage import clip_1080p
from support.receiver_harness import receiver_config
from support.waiting import wait_for

from cloud_receiver.app.factory import create_app
from cloud_receiver.appkeys import LIVE_RELAY, STORAGE, SUBSCRIBER
from devkit.localbroker import running_broker
from edge_agent.app.agent import PipelineTuning

pytestmark = pytest.mark.system

DEV = "64050200001180000001"
PASSWORD = "live-test-password-1"


def _login_and_watch(page, base: str) -> int:
    """Log in (coming back to the live page), click 观看直播; the ms from the click to the first frame."""
    log_in(page, base, "reg1", PASSWORD, f"/live/{DEV}/cam1")
    page.click("#live-start")
    page.wait_for_function("() => window.bkLive.firstFrameMs !== null || window.bkLive.error !== null",
                           timeout=20_000)
    assert page.evaluate("window.bkLive.error") is None
    return int(page.evaluate("window.bkLive.firstFrameMs"))


def test_three_viewers_share_one_live_stream(tmp_path):
    """The video plays (time advances, the frame is not black) for three viewers; the box sends one stream."""
    clip = clip_1080p("carphone_pristine.mp4")
    with running_broker(tmp_path / "broker") as broker:
        app = create_app(receiver_config(tmp_path, broker))
        with serve_app(app) as base:
            wait_for(lambda: SUBSCRIBER in app and app[SUBSCRIBER].subscribed.is_set(), 10, "the receiver to subscribe")
            storage = app[STORAGE]
            seed_two_canteens(storage, DEV, PASSWORD, ("reg1",))
            os.environ["BK_TEST_DEVICE_PASSWORD"] = ""
            cfg = agent_config(tmp_path, [{"id": "cam1", "source": {"type": "file", "url": str(clip)}}],
                               uplink=uplink_to(broker))
            with Running(cfg, detector=PersonEverywhere(), tuning=PipelineTuning(housekeeping_s=0.2)) as run, \
                    chromium_browser() as browser, contextlib.ExitStack() as pages:
                run.wait_for(lambda: run.agent.uplink.health()["state"] == "connected", 20, "the box to connect")
                run.wait_for(lambda: run.agent.cameras["cam1"].worker.latest_detect is not None, 20, "a decoded frame")
                times, opened = [], []
                for i in range(3):
                    page, log = pages.enter_context(open_page(browser, "desktop" if i < 2 else "phone"))
                    times.append(_login_and_watch(page, base))
                    opened.append((page, log))
                print(f"\nclick to first frame: first viewer {times[0]} ms, then {times[1]} ms and {times[2]} ms")
                for page, log in opened:
                    start = page.evaluate("document.getElementById('live-video').currentTime")
                    page.wait_for_function(f"() => document.getElementById('live-video').currentTime > {start} + 1.0",
                                           timeout=10_000)
                    log.assert_clean()
                    log.assert_offline()
                page, _ = opened[0]
                shot = screenshot(page, "live-desktop", tmp_path)
                frame = tmp_path / "frame.png"
                page.locator("#live-video").screenshot(path=str(frame))
                assert distinct_colours(frame) > 200, "the video frame is blank or black"
                screenshot(opened[2][0], "live-phone", tmp_path)
                # 回放 of the last seconds, from the same page: progress, then the clip plays
                now = datetime.now(UTC) + timedelta(hours=8)
                page.fill("#playback-form input[name=start]", (now - timedelta(seconds=4)).strftime("%Y-%m-%dT%H:%M:%S"))
                page.fill("#playback-form input[name=end]", (now - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S"))
                page.click("#playback-form button")
                page.wait_for_function("() => !document.getElementById('playback-video').hidden", timeout=60_000)
                page.wait_for_function("() => document.getElementById('playback-video').duration > 1", timeout=20_000)
                page.wait_for_function("() => document.getElementById('playback-video').readyState >= 2", timeout=20_000)
                screenshot(page, "playback-desktop", tmp_path)
                assert shot.exists()
                assert run.agent.live is not None and run.agent.live.sessions_started == 1  # one stream for three
                stats = app[LIVE_RELAY].stats()[f"{DEV}/cam1"]
                assert stats["viewers"] == 3 and stats["codec"].startswith("avc1.")
                telemetry = run.agent.uplink.telemetry_extras()
                assert 100_000 < telemetry["live_bps"]["cam1"] < 600_000  # the box reports what it sends
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and app[LIVE_RELAY].stats()[f"{DEV}/cam1"]["viewers"]:
                time.sleep(0.05)
            assert app[LIVE_RELAY].stats()[f"{DEV}/cam1"]["viewers"] == 0  # pages closed: viewers gone
