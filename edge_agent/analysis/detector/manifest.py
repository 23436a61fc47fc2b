"""Model manifests: what a model file is, where it came from, and how to feed and read it.

A manifest sits next to its model (.tflite or .onnx) as `<name>.json` (see docs/models.md).
Loading validates it and checks the model file's sha256, so a truncated or swapped model is
refused with a `ModelError` that names the file, the manifest field and what is wrong. The
`family` (nanodet, yolov5, yolov8, ssd) says how the outputs are decoded; the `runtime`
(tflite, onnx) what runs the file.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edge_agent.analysis.detector.families import FAMILIES, Family, check_outputs
from edge_agent.errors import ModelError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class QuantParams(_Strict):
    """Affine quantization of one tensor: real = (q - zero_point) * scale."""

    scale: float = Field(gt=0)
    zero_point: int


class InputSpec(_Strict):
    """The model input tensor and how to fill it from an RGB uint8 frame."""

    name: str
    shape: list[int] = Field(min_length=4, max_length=4)
    dtype: Literal["float32", "int8", "uint8"]
    quantization: QuantParams | None = None
    layout: Literal["NCHW", "NHWC"]
    height: int = Field(gt=0)
    width: int = Field(gt=0)
    color: Literal["RGB", "BGR"]
    normalisation: str = ""  # in words, for people; `mean` and `std` are what is applied
    # value = (pixel - mean) / std per channel (in `color` order), pixel 0..255; default pixel / 255
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = Field((255.0, 255.0, 255.0))

    @model_validator(mode="after")
    def _positive_std(self) -> InputSpec:
        if min(self.std) <= 0:
            raise ValueError(f"std: every channel must be > 0, got {list(self.std)}")
        if self.shape[0] != 1:
            raise ValueError(f"shape: batch must be 1, got {self.shape}")
        hw = self.shape[2:] if self.layout == "NCHW" else self.shape[1:3]
        channels = self.shape[1] if self.layout == "NCHW" else self.shape[3]
        if hw != [self.height, self.width] or channels != 3:
            raise ValueError(f"shape: {self.shape} is not {self.layout} with 3 channels of {self.height}x{self.width}")
        return self


class OutputSpec(_Strict):
    """One output tensor: a NanoDet level's scores or box logits, a YOLO head, or one SSD output."""

    name: str
    kind: Literal["scores", "box_distribution", "predictions", "boxes", "classes", "count"]
    stride: int | None = Field(None, gt=0)  # NanoDet levels only
    shape: list[int] = Field(min_length=1, max_length=4)
    dtype: Literal["float32", "int8", "uint8"]
    quantization: QuantParams | None = None


class DecodeSpec(_Strict):
    """How to read the outputs: NanoDet head parameters, YOLO box units, SSD class offset."""

    strides: list[int] = Field(default_factory=list)  # nanodet
    bins: int | None = Field(None, gt=1)  # nanodet
    center_offset: float = 0.5  # nanodet
    box_units: Literal["pixels", "normalised"] = "pixels"  # yolo: cx, cy, w, h in input pixels or 0..1
    class_offset: int = 0  # ssd: class output value minus this is the index into `labels`
    scores: str = ""
    boxes: str = ""


class Licence(_Strict):
    spdx: str
    text: str


class ScoreThresholds(_Strict):
    """Per-class score thresholds: `per_class` names the exceptions to `default`."""

    default: float = Field(ge=0.0, le=1.0)
    per_class: dict[str, float] = Field(default_factory=dict)
    tuned_on: str = ""


class Accuracy(_Strict):
    """A measured accuracy figure of this file, so variants of one model can be compared."""

    metric: str
    value: float = Field(ge=0.0, le=1.0)
    measured_on: str
    method: str


class ModelManifest(_Strict):
    """Everything the runtime needs to know about a shipped model, validated at load."""

    schema_version: Literal[1]
    name: str
    file: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(gt=0)
    task: Literal["object_detection"]
    architecture: str = Field(min_length=1)  # e.g. nanodet, yolov8n, yolo11s, ssd_mobilenet_v2
    family: Family  # how outputs are decoded; defaults to `architecture` when that is a family name
    runtime: Literal["tflite", "onnx"]  # defaults from the file's suffix
    precision: Literal["fp32", "fp16", "int8"]
    labels: list[str] = Field(min_length=1)
    # model label -> the label rules see, e.g. {"no_hat": "no_chef_hat"} for a model trained on "no_hat"
    rule_labels: dict[str, str] = Field(default_factory=dict)
    input: InputSpec
    outputs: list[OutputSpec] = Field(min_length=1)
    decode: DecodeSpec = Field(default_factory=DecodeSpec)
    source: dict[str, object]
    licence: Licence
    conversion: dict[str, object] = Field(default_factory=dict)  # or how it was trained and exported
    score_thresholds: ScoreThresholds | None = None
    accuracy: Accuracy | None = None

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, raw: Any) -> Any:
        if isinstance(raw, dict):
            raw = dict(raw)
            if "family" not in raw and raw.get("architecture") in FAMILIES:
                raw["family"] = raw["architecture"]
            if "runtime" not in raw and isinstance(raw.get("file"), str):
                raw["runtime"] = "onnx" if raw["file"].endswith(".onnx") else "tflite"
        return raw

    @property
    def reported_labels(self) -> list[str]:
        """The labels detections carry: `labels` with `rule_labels` applied."""
        return [self.rule_labels.get(label, label) for label in self.labels]

    @property
    def variant_group(self) -> str:
        """The model's name without its precision suffix: files of one group are variants of one model."""
        suffix = f"-{self.precision}"
        return self.name[: -len(suffix)] if self.name.endswith(suffix) else self.name

    @model_validator(mode="after")
    def _consistent(self) -> ModelManifest:
        if self.family == "nanodet":
            self._nanodet_outputs()
        else:
            check_outputs(self.family, [(o.kind, o.shape) for o in self.outputs], len(self.labels))
        for i, out in enumerate(self.outputs):
            if out.dtype != "float32" and out.quantization is None:
                raise ValueError(f"outputs[{i}].quantization: output {out.name} is {out.dtype} but has none")
        unknown_rule = sorted(set(self.rule_labels) - set(self.labels))
        if unknown_rule:
            raise ValueError(f"rule_labels: names labels the model lacks: {unknown_rule}")
        if self.score_thresholds is not None:
            unknown = sorted(set(self.score_thresholds.per_class) - set(self.labels))
            if unknown:
                raise ValueError(f"score_thresholds.per_class names labels the model lacks: {unknown}")
            bad = sorted(k for k, v in self.score_thresholds.per_class.items() if not 0.0 <= v <= 1.0)
            if bad:
                raise ValueError(f"score_thresholds.per_class outside 0..1: {bad}")
        if self.input.dtype != "float32" and self.input.quantization is None:
            raise ValueError("input.quantization: a quantized input needs quantization parameters")
        return self

    def _nanodet_outputs(self) -> None:
        if not self.decode.strides or self.decode.bins is None:
            raise ValueError("decode: nanodet needs `strides` and `bins`")
        for stride in self.decode.strides:
            kinds = sorted(o.kind for o in self.outputs if o.stride == stride)
            if kinds != ["box_distribution", "scores"]:
                raise ValueError(f"outputs: stride {stride} needs one scores and one box_distribution output")
        for i, out in enumerate(self.outputs):
            if out.kind not in ("scores", "box_distribution") or out.stride is None:
                raise ValueError(f"outputs[{i}]: nanodet outputs are `scores` or `box_distribution` with a stride")
            grid = (self.input.height // out.stride) * (self.input.width // out.stride)
            channels = len(self.labels) if out.kind == "scores" else 4 * self.decode.bins
            if out.shape != [1, grid, channels]:
                raise ValueError(f"outputs[{i}].shape: output {out.name} shape {out.shape} != [1, {grid}, {channels}]")


_LEADING_FIELD = re.compile(r"^[a-z_]+(\[\d+\])*(\.[a-z_]+(\[\d+\])*)*: ")


def validation_problems(err: ValidationError) -> str:
    """'input.layout: Input should be ...; outputs[0].shape: ...' — each problem led by its field."""
    problems = []
    for e in err.errors():
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e["loc"]).lstrip(".")
        msg = e["msg"].removeprefix("Value error, ")
        if _LEADING_FIELD.match(msg):  # a model-level check names the field inside its model
            problems.append(f"{loc}.{msg}" if loc else msg)
        else:
            problems.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(problems)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def manifest_path_for(model_path: Path) -> Path:
    """`models/x.tflite` (or `.onnx`) -> `models/x.json`."""
    return model_path.with_suffix(".json")


def load_manifest(model_path: str | Path, manifest_path: str | Path | None = None) -> ModelManifest:
    """Read and validate the manifest of `model_path` and verify the model file's sha256."""
    model_path = Path(model_path)
    manifest_path = Path(manifest_path) if manifest_path else manifest_path_for(model_path)
    if not model_path.is_file():
        raise ModelError(f"{model_path}: model file not found")
    try:
        raw = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise ModelError(f"{manifest_path}: manifest not found for model {model_path}") from err
    except json.JSONDecodeError as err:
        raise ModelError(f"{manifest_path}: not valid JSON (line {err.lineno}): {err.msg}") from err
    try:
        manifest = ModelManifest.model_validate(raw)
    except ValidationError as err:
        raise ModelError(f"{manifest_path}: invalid manifest: {validation_problems(err)}") from err
    if manifest.file != model_path.name:
        raise ModelError(f"{manifest_path}: describes {manifest.file!r}, not the model file {model_path.name!r}")
    actual = sha256_of(model_path)
    if actual != manifest.sha256:
        raise ModelError(
            f"{model_path}: sha256 {actual} does not match manifest {manifest_path} "
            f"({manifest.sha256}); the file is corrupt or not the model the manifest describes"
        )
    return manifest
