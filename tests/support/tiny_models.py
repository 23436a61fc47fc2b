"""Tiny detection models the tests build from scratch (no downloaded weights), with known outputs.

Every model computes g = the mean of its (normalised) input tensor, then each output as
`base + mask * g`: the box rows are constants (mask 0), the scores of the listed anchors rise
with the picture's brightness (mask GAIN), the rest stay at BACKGROUND. So what a model outputs for a frame is known exactly, and the boxes it
must give after decoding and the letterbox undo can be written down.

- ONNX (onnx.helper): Conv 1x1 with weights 1/3 (grey) -> GlobalAveragePool -> Reshape -> Mul -> Add.
- TFLite (the flatbuffer schema classes ai_edge_litert ships, no TensorFlow): MEAN -> RESHAPE -> MUL -> ADD.

Each builder writes the model and its manifest (sha256 included) and returns the model path.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SIZE = 64  # model input is SIZE x SIZE
LABELS = ["person", "no_hat"]
RULE_LABELS = {"no_hat": "no_chef_hat"}  # the contract's violation type for "no hat"
N_ANCHORS = 8
BACKGROUND = 0.01  # score of every anchor not listed below
GAIN = 0.4  # score rows add GAIN x the input mean


@dataclass(frozen=True)
class Anchor:
    cls: int
    cx: float  # input pixels
    cy: float
    w: float
    h: float
    base: float  # score (yolov8, ssd) or objectness (yolov5) before GAIN x mean


# inside the band a 16:9 frame takes in the letterboxed input (y 14..50), so nothing is clipped
ANCHORS = (
    Anchor(0, 20.0, 32.0, 16.0, 30.0, 0.60),  # a person
    Anchor(0, 21.0, 33.0, 16.0, 30.0, 0.45),  # the same person again, lower: class-wise NMS drops it
    Anchor(1, 40.0, 22.0, 12.0, 10.0, 0.50),  # a head without a hat
)


def input_boxes() -> list[tuple[int, tuple[float, float, float, float]]]:
    """(class, x1 y1 x2 y2 in input pixels) of each listed anchor."""
    return [(a.cls, (a.cx - a.w / 2, a.cy - a.h / 2, a.cx + a.w / 2, a.cy + a.h / 2)) for a in ANCHORS]


def _score_rows(family: str, n_labels: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, n_labels) base and mask of the class scores (yolov5: class probabilities 1/0, no gain)."""
    base = np.full((N_ANCHORS, n_labels), 0.0 if family == "yolov5" else BACKGROUND, np.float32)
    mask = np.zeros((N_ANCHORS, n_labels), np.float32)
    for i, a in enumerate(ANCHORS):
        base[i, a.cls] = 1.0 if family == "yolov5" else a.base
        mask[i, a.cls] = 0.0 if family == "yolov5" else GAIN
    return base, mask


def yolo_tensors(family: str, normalised: bool) -> tuple[np.ndarray, np.ndarray]:
    """(base, mask) of the one YOLO output, batch included: v8 (1, 4+nc, N), v5 (1, N, 5+nc)."""
    boxes = np.zeros((N_ANCHORS, 4), np.float32)
    boxes[:] = [SIZE / 2, SIZE / 2, 2.0, 2.0]
    for i, a in enumerate(ANCHORS):
        boxes[i] = [a.cx, a.cy, a.w, a.h]
    if normalised:
        boxes /= SIZE
    cls_base, cls_mask = _score_rows(family, len(LABELS))
    if family == "yolov8":
        base = np.concatenate([boxes, cls_base], axis=1).T[None]
        mask = np.concatenate([np.zeros_like(boxes), cls_mask], axis=1).T[None]
    else:
        obj, obj_mask = np.full((N_ANCHORS, 1), BACKGROUND, np.float32), np.zeros((N_ANCHORS, 1), np.float32)
        for i, a in enumerate(ANCHORS):
            obj[i], obj_mask[i] = a.base, GAIN
        base = np.concatenate([boxes, obj, cls_base], axis=1)[None]
        mask = np.concatenate([np.zeros_like(boxes), obj_mask, cls_mask], axis=1)[None]
    return np.ascontiguousarray(base, np.float32), np.ascontiguousarray(mask, np.float32)


def ssd_tensors() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, base, mask) of the four detection-postprocess outputs; class values offset by 1."""
    n = len(ANCHORS) + 1  # one padding row past `count`
    boxes = np.zeros((1, n, 4), np.float32)
    classes = np.zeros((1, n), np.float32)
    scores = np.zeros((1, n), np.float32)
    for i, a in enumerate(ANCHORS):
        boxes[0, i] = [(a.cy - a.h / 2) / SIZE, (a.cx - a.w / 2) / SIZE, (a.cy + a.h / 2) / SIZE,
                       (a.cx + a.w / 2) / SIZE]
        classes[0, i] = a.cls + 1
        scores[0, i] = a.base
    boxes[0, -1] = [0.0, 0.0, 1.0, 1.0]  # past count: must be ignored
    scores[0, -1] = 0.99
    count = np.array([len(ANCHORS)], np.float32)
    zero = np.zeros_like
    return [("boxes", boxes, zero(boxes)), ("classes", classes, zero(classes)),
            ("scores", scores, np.where(scores > 0, GAIN, 0).astype(np.float32)), ("count", count, zero(count))]


def expected_input_mean(rgb_value: int, frame_w: int, frame_h: int) -> float:
    """g for a uniform frame letterboxed into the input (bars are black = 0 after pixel / 255)."""
    scale = min(SIZE / frame_w, SIZE / frame_h)
    content = round(frame_w * scale) * round(frame_h * scale)
    return rgb_value / 255.0 * content / (SIZE * SIZE)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_manifest(model: Path, *, family: str, layout: str, outputs: list[dict], decode: dict | None = None,
                   labels: list[str] = LABELS, rule_labels: dict[str, str] = RULE_LABELS, **extra: object) -> Path:
    """The manifest beside `model` (float32 input, pixel / 255, per-class thresholds; `extra` keys added or replaced)."""
    shape = [1, 3, SIZE, SIZE] if layout == "NCHW" else [1, SIZE, SIZE, 3]
    manifest = {
        "schema_version": 1, "name": model.stem, "file": model.name, "sha256": _sha256(model),
        "bytes": model.stat().st_size, "task": "object_detection", "architecture": f"tiny-{family}",
        "family": family, "precision": "fp32", "labels": labels, "rule_labels": rule_labels,
        "input": {"name": "images", "shape": shape, "dtype": "float32", "layout": layout, "height": SIZE,
                  "width": SIZE, "color": "RGB", "normalisation": "pixel / 255"},
        "outputs": [{"dtype": "float32", **o} for o in outputs],
        "decode": decode or {},
        "source": {"built_by": "tests/support/tiny_models.py", "weights": "constants, no training"},
        "licence": {"spdx": "Apache-2.0", "text": "Built by the BrightKitchen test suite."},
        "score_thresholds": {"default": 0.3, "per_class": {labels[1]: 0.35}, "tuned_on": "not tuned"},
        **extra,
    }
    path = model.with_suffix(".json")
    path.write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return path


# --- ONNX ------------------------------------------------------------------------------------------

def _onnx_graph(outputs: list[tuple[str, np.ndarray, np.ndarray]]):  # noqa: ANN202 - onnx.ModelProto
    from onnx import TensorProto, helper, numpy_helper

    init = [numpy_helper.from_array(np.full((1, 3, 1, 1), 1 / 3, np.float32), "grey_w")]
    nodes = [helper.make_node("Conv", ["images", "grey_w"], ["grey"]),
             helper.make_node("GlobalAveragePool", ["grey"], ["g4"])]
    outs = []
    for name, base, mask in outputs:
        init += [numpy_helper.from_array(np.ones(base.ndim, np.int64), f"{name}_shape"),
                 numpy_helper.from_array(mask, f"{name}_mask"), numpy_helper.from_array(base, f"{name}_base")]
        nodes += [helper.make_node("Reshape", ["g4", f"{name}_shape"], [f"{name}_g"]),
                  helper.make_node("Mul", [f"{name}_g", f"{name}_mask"], [f"{name}_gated"]),
                  helper.make_node("Add", [f"{name}_gated", f"{name}_base"], [name])]
        outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(base.shape)))
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                                                           [1, 3, SIZE, SIZE])], outs, init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="bk-tests")
    model.ir_version = 8  # what onnxruntime releases of the last years all read
    return model


def build_yolo_onnx(dest: Path, family: str = "yolov8", *, normalised: bool = False, **extra: object) -> Path:
    """A YOLOv8- (or v5-) shaped ONNX model, NCHW float32 input; boxes in pixels unless `normalised`."""
    import onnx

    base, mask = yolo_tensors(family, normalised)
    model = _onnx_graph([("output0", base, mask)])
    onnx.checker.check_model(model)
    path = dest / f"tiny-{family}.onnx"
    onnx.save(model, str(path))
    write_manifest(path, family=family, layout="NCHW", decode={"box_units": "normalised" if normalised else "pixels"},
                   outputs=[{"name": "output0", "kind": "predictions", "shape": list(base.shape)}], **extra)
    return path


# --- TFLite ----------------------------------------------------------------------------------------

def _tflite_bytes(outputs: list[tuple[str, np.ndarray, np.ndarray]]) -> bytes:
    from ai_edge_litert import schema_py_generated as fb
    from ai_edge_litert.tools.flatbuffer_utils import convert_object_to_bytearray

    buffers = [fb.BufferT()]  # buffer 0 is the empty one by convention
    tensors: list = []

    def tensor(name: str, shape: tuple[int, ...], data: np.ndarray | None = None) -> int:
        buf = fb.BufferT()
        if data is not None:
            buf.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8)
        buffers.append(buf)
        t = fb.TensorT()
        t.name, t.shape, t.buffer = name, list(shape), len(buffers) - 1
        t.type = fb.TensorType.INT32 if data is not None and data.dtype == np.int32 else fb.TensorType.FLOAT32
        tensors.append(t)
        return len(tensors) - 1

    codes = [fb.BuiltinOperator.MEAN, fb.BuiltinOperator.RESHAPE, fb.BuiltinOperator.MUL, fb.BuiltinOperator.ADD]
    opts = [(fb.BuiltinOptions.ReducerOptions, fb.ReducerOptionsT()), (fb.BuiltinOptions.ReshapeOptions, None),
            (fb.BuiltinOptions.MulOptions, fb.MulOptionsT()), (fb.BuiltinOptions.AddOptions, fb.AddOptionsT())]
    ops = []

    def op(code: int, inputs: list[int], output: int) -> None:
        o = fb.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = codes.index(code), inputs, [output]
        kind, options = opts[o.opcodeIndex]
        if code == fb.BuiltinOperator.RESHAPE:
            options = fb.ReshapeOptionsT()
            options.newShape = list(tensors[output].shape)
        o.builtinOptionsType, o.builtinOptions = kind, options
        ops.append(o)

    images = tensor("images", (1, SIZE, SIZE, 3))
    g = tensor("g", (1,))
    op(fb.BuiltinOperator.MEAN, [images, tensor("axes", (3,), np.array([1, 2, 3], np.int32))], g)
    out_ids = []
    for name, base, mask in outputs:
        ones = (1,) * base.ndim
        g_r = tensor(f"{name}_g", ones)
        op(fb.BuiltinOperator.RESHAPE, [g, tensor(f"{name}_shape", (base.ndim,), np.ones(base.ndim, np.int32))], g_r)
        gated = tensor(f"{name}_gated", base.shape)
        op(fb.BuiltinOperator.MUL, [g_r, tensor(f"{name}_mask", base.shape, mask.astype(np.float32))], gated)
        out = tensor(name, base.shape)
        op(fb.BuiltinOperator.ADD, [gated, tensor(f"{name}_base", base.shape, base.astype(np.float32))], out)
        out_ids.append(out)
    sub = fb.SubGraphT()
    sub.name, sub.tensors, sub.inputs, sub.outputs, sub.operators = "main", tensors, [images], out_ids, ops
    model = fb.ModelT()
    model.version, model.subgraphs, model.buffers, model.description = 3, [sub], buffers, "bk test model"
    model.operatorCodes = []
    for code in codes:
        oc = fb.OperatorCodeT()
        oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = code, min(code, 127), 1
        model.operatorCodes.append(oc)
    return bytes(convert_object_to_bytearray(model))


def build_yolo_tflite(dest: Path, family: str = "yolov8", *, normalised: bool = True, **extra: object) -> Path:
    """A YOLOv8-shaped TFLite model like an Ultralytics export: NHWC float32 input, normalised boxes."""
    base, mask = yolo_tensors(family, normalised)
    path = dest / f"tiny-{family}.tflite"
    path.write_bytes(_tflite_bytes([("output0", base, mask)]))
    write_manifest(path, family=family, layout="NHWC", decode={"box_units": "normalised" if normalised else "pixels"},
                   outputs=[{"name": "output0", "kind": "predictions", "shape": list(base.shape)}], **extra)
    return path


def build_ssd_tflite(dest: Path, **extra: object) -> Path:
    """A TFLite model with the four outputs of the detection postprocess (class values start at 1)."""
    outputs = ssd_tensors()
    path = dest / "tiny-ssd.tflite"
    path.write_bytes(_tflite_bytes(outputs))
    write_manifest(path, family="ssd", layout="NHWC", decode={"class_offset": 1},
                   outputs=[{"name": n, "kind": n, "shape": list(b.shape)} for n, b, _ in outputs], **extra)
    return path
