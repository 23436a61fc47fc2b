"""Bring-your-own-model detectors: YOLO v5/v8 and SSD decoders against their reference formulas, the
manifest's family checks, input filling, and the plugins on tiny ONNX and TFLite models built here."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from support import tiny_models as tm

from edge_agent.analysis.detector import FamilyDetector, TfliteDetector, create_detector, load_manifest
from edge_agent.analysis.detector.frame_input import FrameInput
from edge_agent.analysis.detector.manifest import InputSpec
from edge_agent.analysis.detector.postprocess import Quant
from edge_agent.analysis.detector.ssd import decode_ssd
from edge_agent.analysis.detector.variants import find_variants, time_detect_ms
from edge_agent.analysis.detector.yolo import decode_yolov5, decode_yolov8
from edge_agent.assets import MODELS_DIR
from edge_agent.errors import ModelError

pytestmark = pytest.mark.unit

THR = np.array([0.5, 0.7, 0.3])


def as_set(decoded: tuple[np.ndarray, np.ndarray, np.ndarray]) -> list[tuple]:
    boxes, scores, classes = decoded
    return sorted((int(c), float(s), tuple(float(v) for v in b)) for b, s, c in zip(boxes, scores, classes, strict=True))


def assert_same(got: list[tuple], want: list[tuple]) -> None:
    """Same (class, score, box) entries, scores and boxes to float32 precision."""
    assert [g[0] for g in got] == [w[0] for w in want]
    for (_, s, box), (_, ws, wbox) in zip(got, want, strict=True):
        assert s == pytest.approx(ws, abs=1e-5) and box == pytest.approx(wbox, abs=1e-3)


def ref_yolov8(pred: np.ndarray, thr: np.ndarray, sx: float = 1.0, sy: float = 1.0) -> list[tuple]:
    """Ultralytics v8 head, one anchor at a time: column n = cx, cy, w, h, class scores."""
    found = []
    for n in range(pred.shape[1]):
        cx, cy, w, h = (float(v) for v in pred[:4, n])
        for c in range(pred.shape[0] - 4):
            s = float(pred[4 + c, n])
            if s >= thr[c]:
                box = ((cx - w / 2) * sx, (cy - h / 2) * sy, (cx + w / 2) * sx, (cy + h / 2) * sy)
                found.append((c, s, box))
    return sorted(found)


def ref_yolov5(pred: np.ndarray, thr: np.ndarray) -> list[tuple]:
    """YOLOv5 head, one anchor at a time: row = cx, cy, w, h, objectness, class probabilities; conf = obj x cls."""
    found = []
    for row in pred.astype(np.float64):
        cx, cy, w, h, obj = row[:5]
        for c, p in enumerate(row[5:]):
            if obj * p >= thr[c]:
                found.append((c, float(obj * p), (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)))
    return sorted(found)


def ref_ssd(boxes, classes, scores, count, w, h, thr, offset) -> list[tuple]:
    """TFLite detection postprocess rows: the first `count`, label = class - offset, box ymin, xmin, ymax, xmax of 1."""
    found = []
    for i in range(int(count)):
        c = int(classes[i]) - offset
        if 0 <= c < len(thr) and scores[i] >= thr[c]:
            ymin, xmin, ymax, xmax = (float(v) for v in boxes[i])
            found.append((c, float(scores[i]), (xmin * w, ymin * h, xmax * w, ymax * h)))
    return sorted(found)


def random_head(rng: np.random.Generator, n: int, extra: int) -> np.ndarray:
    """(n, 4 + extra) rows: boxes in pixels of a 64x64 input, then values in 0..1."""
    boxes = np.column_stack([rng.uniform(0, 64, (n, 2)), rng.uniform(2, 30, (n, 2))])
    return np.column_stack([boxes, rng.uniform(0, 1, (n, extra))]).astype(np.float32)


def test_yolov8_decoder_matches_the_reference_formula() -> None:
    """v8 (4+nc, N): every (anchor, class) at its class threshold, cx,cy,w,h turned into corners."""
    pred = random_head(np.random.default_rng(1), 40, 3).T.copy()
    got = as_set(decode_yolov8(pred, score_threshold=THR))
    assert len(got) > 5
    assert_same(got, ref_yolov8(pred, THR))


def test_yolov8_normalised_boxes_scale_by_the_input_size() -> None:
    """Normalised v8 boxes times (input w, input h) are the pixel boxes."""
    pred = random_head(np.random.default_rng(2), 20, 3).T.copy()
    pred[:4] /= 64.0
    got = as_set(decode_yolov8(pred, score_threshold=THR, box_scale=(64.0, 48.0)))
    assert got
    assert_same(got, ref_yolov8(pred, THR, 64.0, 48.0))


def test_yolov5_decoder_multiplies_objectness() -> None:
    """v5 (N, 5+nc): conf = objectness x class probability, against its threshold."""
    pred = random_head(np.random.default_rng(3), 60, 4)
    got = as_set(decode_yolov5(pred, score_threshold=THR))
    assert len(got) > 3
    assert_same(got, ref_yolov5(pred, THR))


@pytest.mark.parametrize("family", ["yolov5", "yolov8"])
def test_quantized_heads_decode_like_their_float_values(family: str) -> None:
    """An int8 head with its Quant gives what the dequantized float head gives."""
    q = Quant(scale=0.5, zero_point=-20)
    rng = np.random.default_rng(4)
    extra = 4 if family == "yolov5" else 3
    raw = rng.integers(-128, 128, (30, 4 + extra), dtype=np.int8)
    raw[:, 4:] = rng.integers(-20, -18, (30, extra), dtype=np.int8)  # values 0 .. 0.5 after dequantizing
    if family == "yolov8":
        raw = raw.T.copy()
    decode = decode_yolov5 if family == "yolov5" else decode_yolov8
    thr = np.array([0.5, 0.2, 0.25])
    got = as_set(decode(raw, score_threshold=thr, quant=q))
    assert got and got == as_set(decode(q.dequantize(raw), score_threshold=thr))


def test_class_mask_keeps_only_wanted_classes() -> None:
    """A class mask drops other classes in both YOLO decoders."""
    rng = np.random.default_rng(5)
    v5, v8 = random_head(rng, 30, 4), random_head(rng, 30, 3).T.copy()  # v5: objectness + 3 classes
    mask = np.array([False, True, False])
    for decoded in (decode_yolov5(v5, score_threshold=0.05, class_mask=mask),
                    decode_yolov8(v8, score_threshold=0.05, class_mask=mask)):
        assert decoded[2].size and set(decoded[2].tolist()) == {1}


def test_ssd_rows_match_the_reference() -> None:
    """SSD: rows past `count`, background and unknown class values are dropped; boxes become x1 y1 x2 y2 pixels."""
    rng = np.random.default_rng(6)
    n = 12
    y0, x0 = rng.uniform(0, 0.5, n), rng.uniform(0, 0.5, n)
    boxes = np.column_stack([y0, x0, y0 + 0.3, x0 + 0.4]).astype(np.float32)
    classes = np.array([1, 2, 3, 0, 4, 1, 2, 3, 1, 2, 3, 1], np.float32)  # offset 1: 0 is background, 4 unknown
    scores = rng.uniform(0, 1, n).astype(np.float32)
    got = as_set(decode_ssd(boxes, classes, scores, np.array([9.0]), input_size=(300, 200), num_classes=3,
                            score_threshold=THR, class_offset=1))
    assert got
    assert_same(got, ref_ssd(boxes, classes, scores, 9, 300, 200, THR, 1))
    assert all(c in (0, 1, 2) for c, _, _ in got)


def _spec(**kw: object) -> InputSpec:
    base = {"name": "x", "shape": [1, 4, 4, 3], "dtype": "float32", "layout": "NHWC", "height": 4, "width": 4,
            "color": "RGB"}
    return InputSpec.model_validate({**base, **kw})


def test_frame_input_applies_mean_std_and_bgr() -> None:
    """NHWC BGR input: tensor[y, x, c] = (frame[y, x, 2 - c] - mean[c]) / std[c]."""
    spec = _spec(color="BGR", mean=[10, 20, 30], std=[2, 4, 8])
    frame = np.random.default_rng(7).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    tensor, m = FrameInput(spec, np.dtype(np.float32), Quant()).fill(frame)
    expected = (frame[:, :, ::-1].astype(np.float64) - [10, 20, 30]) / [2, 4, 8]
    assert np.allclose(tensor[0], expected) and (m.scale_x, m.pad_y) == (1.0, 0)


def test_frame_input_letterboxes_into_quantized_nchw() -> None:
    """A uniform 8x4 frame into a uint8 NCHW 4x4 input: content rows 1..2 quantized, black bars above and below."""
    spec = _spec(shape=[1, 3, 4, 4], layout="NCHW", dtype="uint8", mean=[127.5] * 3, std=[127.5] * 3,
                 quantization={"scale": 1 / 128, "zero_point": 128})
    frame = np.zeros((4, 8, 3), np.uint8)
    frame[:] = (200, 100, 50)
    tensor, m = FrameInput(spec, np.dtype(np.uint8), Quant(1 / 128, 128)).fill(frame)

    def q(p: float) -> int:
        return int(np.clip(np.round((p - 127.5) / 127.5 * 128 + 128), 0, 255))

    assert (m.pad_y, m.scale_x) == (1, 0.5)
    for c, value in enumerate((200, 100, 50)):
        assert (tensor[0, c, 1:3] == q(value)).all()
        assert (tensor[0, c, [0, 3]] == q(0)).all()


def _edit_manifest(model: Path, edit) -> None:
    path = model.with_suffix(".json")
    raw = json.loads(path.read_text())
    edit(raw)
    path.write_text(json.dumps(raw))


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda m: m["outputs"][0].update(shape=[1, 7, 8]), "outputs[0].shape"),
        (lambda m: m["input"].update(layout="CHWN"), "input.layout"),
        (lambda m: m.update(family="yolov9"), "family"),
        (lambda m: m.pop("family"), "family"),
        (lambda m: m.update(rule_labels={"hat": "no_chef_hat"}), "rule_labels"),
        (lambda m: m["input"].update(std=[0, 1, 1]), "input.std"),
        (lambda m: m["input"].update(shape=[1, 3, 32, 64]), "input.shape"),
        (lambda m: m["decode"].update(box_units="percent"), "decode.box_units"),
        (lambda m: m.update(outputs=[]), "outputs"),
    ],
)
def test_broken_byo_manifest_names_the_field(tmp_path: Path, edit, field: str) -> None:
    """Each broken manifest is a ModelError that names the manifest file and the field."""
    model = tm.build_yolo_onnx(tmp_path)
    _edit_manifest(model, edit)
    with pytest.raises(ModelError) as err:
        load_manifest(model)
    assert f"{field}:" in str(err.value) and str(model.with_suffix(".json")) in str(err.value)


def test_ssd_manifest_needs_all_four_outputs(tmp_path: Path) -> None:
    """An SSD manifest without `count` is refused naming the outputs."""
    model = tm.build_ssd_tflite(tmp_path)
    _edit_manifest(model, lambda m: m.update(outputs=m["outputs"][:3]))
    with pytest.raises(ModelError, match=r"outputs: ssd needs one each of boxes, classes, scores, count"):
        load_manifest(model)


def test_manifest_defaults_family_and_runtime(tmp_path: Path) -> None:
    """The shipped NanoDet manifest reads as family nanodet on tflite; an .onnx file defaults to runtime onnx."""
    shipped = load_manifest(MODELS_DIR / "nanodet-coco-int8.tflite")
    assert (shipped.family, shipped.runtime, shipped.reported_labels[0]) == ("nanodet", "tflite", "person")
    model = tm.build_yolo_onnx(tmp_path)
    _edit_manifest(model, lambda m: m.pop("runtime", None))
    m = load_manifest(model)
    assert (m.family, m.runtime, m.reported_labels) == ("yolov8", "onnx", ["person", "no_chef_hat"])


BUILDERS = {
    "onnx-yolov8-pixels": lambda d: tm.build_yolo_onnx(d, "yolov8"),
    "onnx-yolov5-normalised": lambda d: tm.build_yolo_onnx(d, "yolov5", normalised=True),
    "tflite-yolov8-normalised": lambda d: tm.build_yolo_tflite(d, "yolov8"),
    "tflite-ssd": tm.build_ssd_tflite,
}


def expected_frame_detections(frame_w: int, frame_h: int, value: int) -> list[tuple[str, float, tuple]]:
    """What the tiny models must report for a uniform frame: anchors through the letterbox undo, NMS applied."""
    scale = min(tm.SIZE / frame_w, tm.SIZE / frame_h)
    pad_x = (tm.SIZE - round(frame_w * scale)) // 2
    pad_y = (tm.SIZE - round(frame_h * scale)) // 2
    g = tm.expected_input_mean(value, frame_w, frame_h)
    labels = [tm.RULE_LABELS.get(x, x) for x in tm.LABELS]
    out = []
    for i, (cls, (x1, y1, x2, y2)) in enumerate(tm.input_boxes()):
        if i == 1:
            continue  # the duplicate person, suppressed by NMS
        box = ((x1 - pad_x) / scale, (y1 - pad_y) / scale, (x2 - pad_x) / scale, (y2 - pad_y) / scale)
        out.append((labels[cls], tm.ANCHORS[i].base + tm.GAIN * g, box))
    return sorted(out)


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_built_models_give_the_expected_boxes(tmp_path: Path, kind: str) -> None:
    """Each tiny model through its plugin: the known boxes in frame pixels, scores = base + GAIN x input mean."""
    model = BUILDERS[kind](tmp_path)
    det = create_detector("auto", model)
    assert isinstance(det, FamilyDetector)
    assert det.backend == ("onnxruntime" if kind.startswith("onnx") else "ai_edge_litert")
    frame = np.full((72, 128, 3), 128, np.uint8)
    got = sorted((d.label, d.score, d.box.as_list()) for d in det.detect(frame))
    want = expected_frame_detections(128, 72, 128)
    assert [g[0] for g in got] == [w[0] for w in want] == ["no_chef_hat", "person"]
    for (_, score, box), (_, wscore, wbox) in zip(got, want, strict=True):
        assert score == pytest.approx(wscore, abs=1e-4)
        assert box == pytest.approx(list(wbox), abs=0.05)
    assert det.last_timing is not None and det.last_timing.invoke_ms > 0


def test_thresholds_and_classes_filter(tmp_path: Path) -> None:
    """A threshold above every score finds nothing; `classes` keeps only the named (rule) label."""
    model = tm.build_yolo_onnx(tmp_path)
    frame = np.full((64, 64, 3), 255, np.uint8)  # g = 1: scores 1.0 (person), 0.9 (no_chef_hat)
    assert [d.label for d in create_detector("onnx", model, classes=["no_chef_hat"]).detect(frame)] == ["no_chef_hat"]
    assert create_detector("onnx", model, score_threshold=0.95).detect(frame)[0].label == "person"
    assert create_detector("onnx", model, score_threshold=1.01).detect(frame) == []
    with pytest.raises(ModelError, match="unicorn"):
        create_detector("onnx", model, classes=["unicorn"])


def test_runtime_mismatch_and_missing_onnxruntime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """type tflite on an ONNX model names the runtime; without onnxruntime loading says what to install."""
    model = tm.build_yolo_onnx(tmp_path)
    with pytest.raises(ModelError, match="runtime 'onnx', not 'tflite'"):
        create_detector("tflite", model)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ModelError, match=r"brightkitchen\[onnx\]"):
        create_detector("auto", model)


def test_nanodet_still_gets_its_own_detector() -> None:
    """The shipped NanoDet goes to TfliteDetector through every type that accepts TFLite."""
    for kind in ("tflite", "auto"):
        assert isinstance(create_detector(kind, MODELS_DIR / "nanodet-coco-int8.tflite"), TfliteDetector)


def test_variant_timing_runs_an_onnx_model(tmp_path: Path) -> None:
    """variants.py finds and times an ONNX model like a TFLite one."""
    model = tm.build_yolo_onnx(tmp_path)
    assert [p for p, _ in find_variants(model)] == [model]
    assert time_detect_ms(model, threads=1, runs=2) > 0
