"""Choosing the model variant from timings on this CPU, and the channel planner that uses the time."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edge_agent.analysis.detector.variants import VariantTiming, choose_variant, find_variants, select_variant
from edge_agent.analysis.planner import CameraDemand, plan_channels
from edge_agent.assets import MODELS_DIR

pytestmark = pytest.mark.unit

INT8 = MODELS_DIR / "nanodet-coco-int8.tflite"


def timer_of(ms: dict[str, float]):
    """A stand-in for time_detect_ms: fixed ms per precision, read from the file name."""
    return lambda path, threads, runs: ms[path.stem.rsplit("-", 1)[1]]


def test_shipped_variants_are_found_with_their_accuracy() -> None:
    """The int8 model's variants are itself (first) and fp32; both manifests record person recall."""
    found = find_variants(INT8)
    assert [m.precision for _, m in found] == ["int8", "fp32"]
    assert all(m.accuracy is not None and m.accuracy.metric == "person_recall_iou50" for _, m in found)


@pytest.mark.parametrize(
    ("ms", "chosen"),
    [
        ({"int8": 10.0, "fp32": 50.0}, "int8"),  # a VNNI CPU: int8 5x faster, within the allowed loss
        ({"int8": 60.0, "fp32": 50.0}, "fp32"),  # int8 slower than fp32: the choice flips
        ({"int8": 52.0, "fp32": 56.0}, "fp32"),  # AVX2 only: a tie within 10 %, the more accurate wins
    ],
)
def test_choice_follows_the_timings(ms: dict[str, float], chosen: str) -> None:
    """Injected timings decide between the shipped int8 and fp32 files."""
    choice = select_variant(INT8, threads=1, max_loss=0.05, runs=1, timer=timer_of(ms))
    assert choice.chosen.precision == chosen
    assert choice.as_dict()["timings_ms"] == ms
    assert choice.chosen.path.name == f"nanodet-coco-{chosen}.tflite"


def test_a_faster_variant_losing_too_much_accuracy_is_not_chosen() -> None:
    """With an allowed loss below int8's, fp32 is used even when int8 is 5x faster."""
    choice = select_variant(INT8, threads=1, max_loss=0.01, runs=1, timer=timer_of({"int8": 10.0, "fp32": 50.0}))
    assert choice.chosen.precision == "fp32" and "int8" in choice.reason


def test_without_recorded_accuracy_the_fastest_wins() -> None:
    """Variants that record no accuracy are compared by speed only."""
    a = VariantTiming(Path("a-int8.tflite"), "int8", 30.0, None, None)
    b = VariantTiming(Path("a-fp32.tflite"), "fp32", 60.0, None, None)
    assert choose_variant([b, a], 0.0).chosen is a


def test_a_file_of_another_model_is_not_a_variant(tmp_path: Path) -> None:
    """A model beside the configured one with another name is ignored."""
    for name in ("nanodet-coco-int8", "other-fp32"):
        shutil.copy(MODELS_DIR / f"{name.replace('other', 'nanodet-coco')}.tflite", tmp_path / f"{name}.tflite")
        manifest = json.loads((MODELS_DIR / f"{name.replace('other', 'nanodet-coco')}.json").read_text())
        manifest.update(name=name, file=f"{name}.tflite")
        (tmp_path / f"{name}.json").write_text(json.dumps(manifest))
    assert [p.name for p, _ in find_variants(tmp_path / "nanodet-coco-int8.tflite")] == ["nanodet-coco-int8.tflite"]


def test_planner_capacity_and_channels() -> None:
    """50 ms on 2 workers with 20 % headroom: 32 detections/s, so 6 channels at 5/s."""
    plan = plan_channels(50.0, [CameraDemand("a", 5.0, False)], parallel=2)
    assert plan.capacity_dps == pytest.approx(32.0)
    assert plan.channels_at(5.0) == 6 and plan.sustained and plan.per_camera == {"a": 5.0}


def test_planner_serves_motion_gated_cameras_first_then_shares_fairly() -> None:
    """12 detections/s for 2 gated and 3 other cameras at 5/s: gated get 5 each, the rest 2/3 each."""
    cams = [CameraDemand("g1", 5.0, True), CameraDemand("n1", 5.0, False), CameraDemand("g2", 5.0, True),
            CameraDemand("n2", 5.0, False), CameraDemand("n3", 5.0, False)]
    plan = plan_channels(1000.0 / 15.0, cams, parallel=1, headroom=0.8)  # 15/s * 0.8 = 12/s
    assert plan.per_camera["g1"] == plan.per_camera["g2"] == pytest.approx(5.0)
    assert plan.per_camera["n1"] == plan.per_camera["n2"] == plan.per_camera["n3"] == pytest.approx(2 / 3)
    assert not plan.sustained and sum(plan.per_camera.values()) == pytest.approx(12.0)


def test_planner_water_fills_and_never_blinds_a_camera() -> None:
    """A camera asking less than the fair share keeps its ask; with almost no capacity all get min_fps."""
    plan = plan_channels(100.0, [CameraDemand("slow", 1.0, False), CameraDemand("a", 10.0, False),
                                 CameraDemand("b", 10.0, False)], parallel=1, headroom=1.0)
    assert plan.per_camera == pytest.approx({"slow": 1.0, "a": 4.5, "b": 4.5})
    starved = plan_channels(10_000.0, [CameraDemand(c, 5.0, True) for c in "abc"], parallel=1)
    assert set(starved.per_camera.values()) == {0.2}
    with pytest.raises(ValueError):
        plan_channels(0.0, [], parallel=1)
