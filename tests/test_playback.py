"""回放: the box records a real clip on disk in segments; a `playback` command for a wall-clock range
comes back as an MP4 of that range (packets unchanged), uploaded and downloadable from the receiver."""

from __future__ import annotations

import io
import os
from datetime import UTC, datetime

import av
import pytest
from support.agent_harness import PersonEverywhere, Running, agent_config, uplink_to
from support.command_api import CommandApi
from support.footage import clip_1080p
from support.receiver_harness import receiver_config, receiver_with_box

from cloud_receiver.admin import auth
from cloud_receiver.appkeys import STORAGE
from devkit.localbroker import running_broker
from edge_agent.app.agent import PipelineTuning

pytestmark = pytest.mark.integration

DEV = "64050200001180000001"


async def test_playback_of_a_recorded_range_is_uploaded_as_mp4(tmp_path):
    """A 4 s range of the recording arrives as an MP4 of about that length; a range with no recording fails."""
    with running_broker(tmp_path / "broker") as broker:
        os.environ["BK_TEST_DEVICE_PASSWORD"] = ""
        cfg = agent_config(tmp_path, [{"id": "cam1", "source": {"type": "file", "url": str(clip_1080p("carphone_pristine.mp4"))}}],
                           uplink=uplink_to(broker),
                           recording={"segment_s": 2})
        async with receiver_with_box(receiver_config(tmp_path, broker), DEV) as client:
            storage = client.app[STORAGE]
            box = CommandApi(client, auth.create_token(storage.sql, "regulator", "640502", "reg"), DEV)
            with Running(cfg, detector=PersonEverywhere(), tuning=PipelineTuning(housekeeping_s=0.2)) as run:
                def recorder():
                    cp = run.agent.cameras.get("cam1")
                    return cp.worker.recorder if cp is not None else None
                run.wait_for(lambda: recorder() is not None and len(recorder().segments()) >= 4, 30,
                             "four finished 2 s segments")
                recorder = recorder()
                segs = recorder.segments()
                start = segs[1].start + 0.5
                body = {"name": "playback", "camera_id": "cam1", "ttl_s": 60,
                        "args": {"start": datetime.fromtimestamp(start, UTC).isoformat(),
                                 "end": datetime.fromtimestamp(start + 4, UTC).isoformat()}}
                def uploaded_or_failed(v: dict) -> bool:
                    return v["state"] == "failed" or bool((v["upload"] or {}).get("done"))
                view = await box.run(body, done=uploaded_or_failed, timeout=60)
                assert view["state"] == "ok", view
                assert view["upload"]["received_bytes"] == view["data"]["bytes"]
                r = await client.get(f"/api/v1/media/{view['data']['sha256']}", headers=box.headers)
                assert r.status == 200 and r.content_type == "video/mp4"
                with av.open(io.BytesIO(await r.read())) as clip:
                    stream = clip.streams.video[0]
                    frames = list(clip.decode(stream))
                    assert (stream.codec_context.width, stream.codec_context.height) == (1920, 1080)
                length = len(frames) / 25
                assert 4.0 <= length <= 4.0 + 2.5, f"{len(frames)} frames for a 4 s range (GOP up to 2 s earlier)"

                body["args"] = {"start": "2020-01-01T00:00:00+08:00", "end": "2020-01-01T00:01:00+08:00"}
                failed = await box.run(body)
                assert failed["state"] == "failed" and "no recording" in failed["error"]
                assert run.agent.uplink.telemetry_extras()["ring_hours"]["cam1"] > 0
