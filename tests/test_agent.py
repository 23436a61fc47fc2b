"""The running Agent end to end: RTSP footage → real detector → events; camera loss; garbage cameras."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support.agent_harness import DEVICE, MODEL, PersonEverywhere, Running, agent_config, iou
from support.footage import clip_1080p, corrupted_copy, garbage_file
from support.rtsp_server import RtspServer

from bk_contract import Alert
from edge_agent.analysis.detector import create_detector
from edge_agent.app.agent import PipelineTuning
from edge_agent.outbox.store import Outbox

pytestmark = pytest.mark.system


def test_rtsp_footage_gives_events_whose_box_covers_the_person(tmp_path: Path) -> None:
    """carphone + bikes at 1080p over RTSP → real NanoDet → events; the alert's person box is where the person is."""
    carphone, bikes = clip_1080p("carphone_pristine.mp4"), clip_1080p("bikes.mp4")
    rule = {"type": "intrusion_off_hours", "persistence_s": 1.0, "min_score": 0.3, "cooldown_s": 600}
    with RtspServer(carphone) as s1, RtspServer(bikes) as s2:
        cfg = agent_config(tmp_path, [
            {"id": "carphone", "source": {"type": "rtsp", "url": s1.url, "transport": "tcp"}, "rules": [rule]},
            {"id": "bikes", "source": {"type": "rtsp", "url": s2.url, "transport": "udp"},
             "rules": [{**rule, "min_score": 0.55, "min_size": 0.02},
                       {"type": "crowding", "max_persons": 1, "persistence_s": 1.0, "min_score": 0.3}]},
        ])
        with Running(cfg) as run:
            run.wait_for(lambda: run.started("carphone", "intrusion_off_hours") and run.started("bikes", "crowding"),
                         30, "person events from both cameras")
            health = {h.id: h for h in run.agent.health()}
            stored = run.outbox.recent_events(20)
    assert health["carphone"].state == "online" and health["carphone"].fps > 10
    assert health["bikes"].state == "online"
    assert {e.id for e in run.events} <= {e.id for e in stored}
    detector = create_detector("tflite", MODEL, score_threshold=0.2)
    jpegs = {}
    for cam in ("carphone", "bikes"):
        alert = run.started(cam, "intrusion_off_hours")[0]
        assert alert.frame_size == [1920, 1080] and alert.snapshot is not None
        jpegs[cam] = alert
    # the snapshot bytes as stored in the outbox (media chunks), reassembled
    out = Outbox(tmp_path / "agent.db", device_id=DEVICE)
    try:
        for cam, alert in jpegs.items():
            data = _snapshot_bytes(out, alert)
            keep = Path(os.environ.get("BK_KEEP_SNAPSHOTS", tmp_path))  # to look at them by eye
            keep.mkdir(parents=True, exist_ok=True)
            (keep / f"{cam}.jpg").write_bytes(data)
            img = Image.open(io.BytesIO(data)).convert("RGB")
            assert img.size == (1920, 1080)
            persons = [b for b in alert.boxes if b.label == "person"]
            assert persons
            if cam == "carphone":
                # hand-checked: the man fills the frame from x≈0.14 to the right edge, y≈0.1 to the bottom
                best = max(iou(b.box, [0.14 * 1920, 0.10 * 1080, 1920, 1080]) for b in persons)
                assert best >= 0.5, (best, persons)
            # independently: the detector on the stored snapshot finds a person at the alert's box
            small = np.asarray(img.resize((640, 360)))
            found = [d.box.scaled(3, 3).as_list() for d in detector.detect(small) if d.label == "person"]
            assert found, f"no person found again in the {cam} snapshot"
            top = max(persons, key=lambda b: b.score)
            assert max(iou(top.box, f) for f in found) >= 0.5, (cam, top.box, found)
    finally:
        out.close()


def _snapshot_bytes(outbox: Outbox, alert: Alert) -> bytes:
    """Reassemble a snapshot from the outbox's queued media chunks and check its sha256."""
    import hashlib

    from bk_contract import decode_chunk

    rows = outbox.db.execute("SELECT payload FROM messages WHERE grp = ? ORDER BY seq", [alert.snapshot.id]).fetchall()
    parts = [decode_chunk(r[0]) for r in rows]
    data = b"".join(p[1] for p in sorted(parts, key=lambda p: p[0].index))
    assert hashlib.sha256(data).hexdigest() == alert.snapshot.sha256
    return data


def test_rtsp_server_restart_gives_camera_offline_and_back(tmp_path: Path) -> None:
    """Server killed → offline health and a camera_offline start; restarted → online and the event ends."""
    clip = clip_1080p("carphone_pristine.mp4")
    srv = RtspServer(clip).start()
    try:
        cfg = agent_config(tmp_path, [{
            "id": "door", "source": {"type": "rtsp", "url": srv.url}, "open_timeout_s": 5, "read_timeout_s": 2,
            "reconnect_min_s": 0.2, "reconnect_max_s": 1.0, "offline_after_s": 1.0}])
        with Running(cfg, detector=PersonEverywhere(), tuning=PipelineTuning(housekeeping_s=0.2)) as run:
            # the first frame comes one GOP (2 s) after connecting, later than offline_after_s: a
            # start-up camera_offline is reported and ends when the camera is online. Only then kill.
            run.wait_for(lambda: run.state("door") == "online" and not run.offline_open("door"), 15,
                         "camera online, any start-up camera_offline ended")
            before = len(run.events)
            srv.stop()
            t_kill = time.monotonic()
            run.wait_for(lambda: run.state("door") == "offline", 10, "camera offline")
            assert time.monotonic() - t_kill < 10
            run.wait_for(lambda: run.offline_open("door"), 10, "camera_offline event")
            srv.start()
            run.wait_for(lambda: not run.offline_open("door"), 20, "camera_offline end")
            h = run.agent.health()[0]
            offline = [e for e in run.events[before:] if e.type == "camera_offline"]
    finally:
        srv.stop()
    assert [e.state for e in offline] == ["start", "end"]
    assert offline[0].id == offline[1].id and offline[1].rev == 1
    assert h.state == "online" and h.reconnects >= 1


def test_garbage_cameras_do_not_affect_a_good_one(tmp_path: Path) -> None:
    """A corrupted mp4 and a file of pure garbage log errors; the good camera keeps producing frames and events."""
    good = clip_1080p("carphone_pristine.mp4")
    bad = corrupted_copy(good, tmp_path / "corrupt.mp4", length=150_000)
    junk = garbage_file(tmp_path / "junk.mp4")
    rule = [{"type": "intrusion_off_hours", "persistence_s": 0.5, "min_score": 0.5}]
    common = {"reconnect_min_s": 0.2, "reconnect_max_s": 0.5, "offline_after_s": 1.0}
    cfg = agent_config(tmp_path, [
        {"id": "good", "source": {"type": "file", "url": str(good)}, "rules": rule, **common},
        {"id": "corrupt", "source": {"type": "file", "url": str(bad)}, "rules": rule, **common},
        {"id": "junk", "source": {"type": "file", "url": str(junk)}, "rules": rule, **common},
    ])
    import structlog

    with structlog.testing.capture_logs() as logs, \
            Running(cfg, detector=PersonEverywhere(), tuning=PipelineTuning(housekeeping_s=0.2)) as run:
        run.wait_for(lambda: run.started("good", "intrusion_off_hours") and run.started("junk", "camera_offline"),
                     15, "good camera event and junk camera offline")
        before = run.agent.stats()["cameras"]["good"]["detect_frames"]
        time.sleep(1.5)
        stats = run.agent.stats()["cameras"]
        health = {h.id: h for h in run.agent.health()}
    assert stats["good"]["detect_frames"] >= before + 5  # still sampling ~5 fps
    assert health["good"].state == "online" and health["good"].fps > 15
    assert health["junk"].state == "offline" and "InvalidData" in health["junk"].error
    assert health["junk"].reconnects >= 2
    assert stats["corrupt"]["decoded"] > 0
    assert any(e["event"] == "decode_error" and "corrupt" in e.get("stream", "") for e in logs)
    assert any(e["event"] == "stream_offline" and "junk" in e.get("stream", "") for e in logs)
    assert not run.started("good", "camera_offline")
