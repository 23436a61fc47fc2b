"""`edge-agent model check`: a broken manifest is named down to the field (exit 2); good models print ms and,
with --labelled COCO or YOLO labels, precision and recall at the manifest thresholds (exit 0)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support import tiny_models as tm

from edge_agent.analysis.detector.evaluate import evaluate_set, match_boxes
from edge_agent.analysis.types import Box, Detection
from edge_agent.app.cli import main
from edge_agent.app.model_check import load_labelled
from edge_agent.assets import MODELS_DIR

pytestmark = pytest.mark.unit

KITCHEN_COCO = Path(__file__).parent / "data" / "kitchen_coco"


def test_broken_manifest_exits_2_naming_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """input.layout CHWN: exit 2, stderr names the manifest file and `input.layout`."""
    model = tm.build_yolo_onnx(tmp_path)
    manifest = model.with_suffix(".json")
    raw = json.loads(manifest.read_text())
    raw["input"]["layout"] = "CHWN"
    manifest.write_text(json.dumps(raw))
    assert main(["model", "check", str(model)]) == 2
    err = capsys.readouterr().err
    assert "模型清单无效" in err and f"{manifest}: invalid manifest: input.layout:" in err and "'NCHW'" in err


def test_wrong_sha256_and_missing_model_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A model file that is not the one its manifest describes, or no file at all, fails with exit 2."""
    model = tm.build_yolo_onnx(tmp_path)
    model.write_bytes(model.read_bytes() + b"\0")
    assert main(["model", "check", str(model)]) == 2
    assert "sha256" in capsys.readouterr().err
    assert main(["model", "check", str(tmp_path / "absent.onnx")]) == 2
    assert "model file not found" in capsys.readouterr().err


def test_onnx_model_prints_ms_and_labels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The tiny ONNX model: manifest summary with no_hat→no_chef_hat, onnxruntime, ms per detect and the CPU."""
    model = tm.build_yolo_onnx(tmp_path)
    assert main(["model", "check", str(model), "--runs", "3"]) == 0
    out = capsys.readouterr().out
    assert "输出家族 yolov8, 运行时 onnx" in out and "no_hat→no_chef_hat" in out
    assert "加载成功: onnxruntime" in out
    ms = float(out.split("每帧检测中位数 ")[1].split(" ms")[0])
    assert 0 < ms < 1000 and "CPU: " in out and "结果: 通过" in out


def _yolo_set(folder: Path) -> None:
    """Two 128x72 grey frames: one labelled where the tiny model sees its no_hat (and a person it misses),
    one with a YOLO label the model never finds."""
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    for name in ("a", "b"):
        Image.fromarray(np.full((72, 128, 3), 128, np.uint8)).save(folder / "images" / f"{name}.png")
    # the no_hat anchor: input (34, 17)-(46, 27) -> frame x 68..92, y 6..26 (scale 0.5, 14 px bars)
    (folder / "labels" / "a.txt").write_text("1 0.625 0.2222 0.1875 0.2778\n")
    (folder / "labels" / "b.txt").write_text("1 0.1 0.8 0.1 0.2\n")
    (folder / "classes.txt").write_text("person\nno_hat\n")


def test_yolo_labelled_set_gives_precision_and_recall(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """YOLO txt labels (images/ + labels/): no_chef_hat found once of two labelled, one false alarm on b."""
    model = tm.build_yolo_onnx(tmp_path)
    _yolo_set(tmp_path / "set")
    assert main(["model", "check", str(model), "--runs", "1", "--labelled", str(tmp_path / "set")]) == 0
    out = capsys.readouterr().out
    assert "2 张图像" in out
    assert "no_chef_hat: 召回率 0.500 (1/2), 精确率 0.500 (1/2), 阈值 0.35" in out
    assert "person:" not in out  # not labelled in this set: not scored


def test_shipped_nanodet_on_the_kitchen_photos(capsys: pytest.CaptureFixture[str]) -> None:
    """The shipped int8 NanoDet on the two COCO kitchen photos: 3 of 4 persons, no false person, at 0.25."""
    model = MODELS_DIR / "nanodet-coco-int8.tflite"
    assert main(["model", "check", str(model), "--runs", "2", "--labelled", str(KITCHEN_COCO)]) == 0
    out = capsys.readouterr().out
    assert "输出家族 nanodet, 运行时 tflite, 精度 int8" in out and "加载成功: ai_edge_litert" in out
    assert "person: 召回率 0.750 (3/4), 精确率 1.000 (3/3), 阈值 0.25" in out


def test_unreadable_labelled_folder_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Images without any labels, and a COCO file without categories for a 2-label model, each exit 2."""
    model = tm.build_yolo_onnx(tmp_path)
    empty = tmp_path / "unlabelled"
    empty.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(empty / "x.png")
    assert main(["model", "check", str(model), "--runs", "1", "--labelled", str(empty)]) == 2
    assert "no COCO .json and no YOLO .txt" in capsys.readouterr().err
    coco = tmp_path / "coco"
    shutil.copytree(KITCHEN_COCO, coco)
    assert main(["model", "check", str(model), "--runs", "1", "--labelled", str(coco)]) == 2
    assert "no `categories`" in capsys.readouterr().err


def test_coco_loader_uses_categories_and_skips_crowds(tmp_path: Path) -> None:
    """COCO bbox x, y, w, h becomes corners; names come from `categories`; iscrowd boxes are left out."""
    Image.fromarray(np.zeros((10, 20, 3), np.uint8)).save(tmp_path / "k.jpg")
    (tmp_path / "set.json").write_text(json.dumps({
        "images": [{"id": 7, "file_name": "k.jpg"}],
        "categories": [{"id": 3, "name": "no_hat"}],
        "annotations": [{"image_id": 7, "category_id": 3, "bbox": [1, 2, 3, 4]},
                        {"image_id": 7, "category_id": 3, "bbox": [0, 0, 9, 9], "iscrowd": 1}]}))
    (image,) = load_labelled(tmp_path, ["person", "no_hat"])
    assert image.path == tmp_path / "k.jpg" and image.boxes == (("no_hat", Box(1, 2, 4, 6)),)


def test_matching_is_one_to_one_by_score() -> None:
    """Two detections on one labelled box: the better-scored one matches, the other is a false positive."""
    truth = [Box(0, 0, 10, 10)]
    dets = [Detection("a", 0.6, Box(0, 0, 10, 9)), Detection("a", 0.9, Box(1, 0, 10, 10)),
            Detection("b", 0.9, Box(0, 0, 10, 10))]
    assert match_boxes(dets[:2], truth) == (1, 1, 0)
    counts = evaluate_set([(dets, [("a", truth[0])]), ([], [("a", Box(50, 50, 60, 60))])])
    assert list(counts) == ["a"]  # b is not labelled anywhere: not scored
    assert (counts["a"].tp, counts["a"].fp, counts["a"].fn) == (1, 1, 1)
    assert counts["a"].recall == 0.5 and counts["a"].precision == 0.5


def test_unloadable_model_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Bytes that are no ONNX model, with a manifest that matches them: loading fails, exit 2."""
    model = tm.build_yolo_onnx(tmp_path)
    model.write_bytes(b"not a protobuf at all")
    manifest = model.with_suffix(".json")
    raw = json.loads(manifest.read_text())
    raw.update(sha256=hashlib.sha256(model.read_bytes()).hexdigest(), bytes=model.stat().st_size)
    manifest.write_text(json.dumps(raw))
    assert main(["model", "check", str(model)]) == 2
    err = capsys.readouterr().err
    assert "模型无法加载" in err and "onnxruntime cannot load the model" in err


def test_config_check_accepts_a_rule_on_a_mapped_label(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A no_chef_hat rule passes `config check` with a model whose no_hat maps to it, and fails without the map."""
    model = tm.build_yolo_onnx(tmp_path)
    config = tmp_path / "agent.yaml"
    config.write_text(f"""device: {{id: "64050200001180000001"}}
uplink: {{enabled: false}}
detector: {{type: auto, model: {model}}}
cameras:
  - id: kitchen
    source: {{type: file, url: kitchen.mp4}}
    rules: [{{type: no_chef_hat}}]
""")
    assert main(["config", "check", str(config)]) == 0
    assert "OK" in capsys.readouterr().out
    raw = json.loads(model.with_suffix(".json").read_text())
    raw["rule_labels"] = {}
    model.with_suffix(".json").write_text(json.dumps(raw))
    assert main(["config", "check", str(config)]) == 1
    assert "lacks the labels no_chef_hat" in capsys.readouterr().err
