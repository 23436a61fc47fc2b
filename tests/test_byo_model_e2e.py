"""A deployment's own model end to end: tiny models built here (YOLO on ONNX and TFLite, SSD on TFLite) in
the real Agent on a real clip drive rules on their labels to alerts whose box is the model's box in 1080p."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import tiny_models as tm
from support.agent_harness import Running, agent_config, iou
from support.footage import clip_1080p

from edge_agent.analysis.detector import load_manifest
from edge_agent.app.agent import PipelineTuning
from edge_agent.config import check_rules_against_labels

pytestmark = pytest.mark.system

BUILDERS = {"onnx-yolov8": tm.build_yolo_onnx, "tflite-yolov8": tm.build_yolo_tflite}


def no_hat_box_1080p() -> list[float]:
    """The model's `no_hat` anchor in a 1920x1080 frame: 16:9 sits in the 64x64 input at scale 1/30, 14 px down."""
    cls, (x1, y1, x2, y2) = tm.input_boxes()[2]
    assert tm.LABELS[cls] == "no_hat"
    scale, pad_y = tm.SIZE / 1920, (tm.SIZE - round(1080 * tm.SIZE / 1920)) // 2
    return [x1 / scale, (y1 - pad_y) / scale, x2 / scale, (y2 - pad_y) / scale]




def run_clip(tmp_path: Path, model: Path, rule: dict, violation: str):  # noqa: ANN201 - the alert
    """The agent on the carphone clip with `model` and `rule` until the first `violation` start; that alert."""
    cfg = agent_config(
        tmp_path,
        [{"id": "kitchen", "source": {"type": "file", "url": str(clip_1080p("carphone_pristine.mp4"))},
          "rules": [rule]}],
        detector={"type": "auto", "model": str(model), "workers": 1, "variant_runs": 2},
        motion={"enabled": False},
    )
    assert check_rules_against_labels(cfg, set(load_manifest(model).reported_labels), "agent.yaml") == []
    with Running(cfg, tuning=PipelineTuning(housekeeping_s=0.2)) as run:
        run.wait_for(lambda: run.started("kitchen", violation), 30, f"a {violation} alert")
        variant = run.agent.variant
    assert variant is not None and variant.chosen.path == model  # timed at start like a shipped model
    alert = run.started("kitchen", violation)[0]
    assert alert.frame_size == [1920, 1080] and alert.snapshot is not None
    return alert


def test_own_ssd_model_rat_label_raises_an_animal_alert(tmp_path: Path) -> None:
    """An SSD TFLite model with a `rat` label drives an `animal` rule listing it; the alert box is the model's."""
    (tmp_path / "model").mkdir()
    model = tm.build_ssd_tflite(tmp_path / "model", labels=["person", "rat"], rule_labels={})
    rule = {"type": "animal", "labels": ["rat"], "persistence_s": 1.0, "min_score": 0.5}
    alert = run_clip(tmp_path, model, rule, "animal")
    rats = [b for b in alert.boxes if b.label == "rat"]
    assert rats and iou(rats[0].box, no_hat_box_1080p()) >= 0.97, (alert.boxes, no_hat_box_1080p())
    assert 0.5 < alert.score < 0.5 + tm.GAIN  # 0.50 + GAIN x mean input: carphone is neither black nor white


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_own_model_raises_a_no_chef_hat_alert(tmp_path: Path, kind: str) -> None:
    """Manifest label no_hat -> rule label no_chef_hat: config check passes, the agent alerts with the model's box."""
    (tmp_path / "model").mkdir()
    model = BUILDERS[kind](tmp_path / "model")
    raw_labels = agent_config(tmp_path, [{"id": "k", "source": {"type": "file", "url": "x.mp4"},
                                          "rules": [{"type": "no_chef_hat"}]}])
    assert check_rules_against_labels(raw_labels, set(tm.LABELS), "agent.yaml")  # `no_hat` alone would not do
    rule = {"type": "no_chef_hat", "persistence_s": 1.0, "min_score": 0.5, "cooldown_s": 600}
    alert = run_clip(tmp_path, model, rule, "no_chef_hat")
    marks = [b for b in alert.boxes if b.label == "no_chef_hat"]
    assert marks and iou(marks[0].box, no_hat_box_1080p()) >= 0.97, (alert.boxes, no_hat_box_1080p())
    assert 0.5 < alert.score < 0.5 + tm.GAIN
