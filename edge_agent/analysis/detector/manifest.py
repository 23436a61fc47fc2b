"""Model manifests: what a .tflite file is, where it came from, and how to feed and read it.

A manifest sits next to its model as `<name>.json` (see docs/models.md). Loading validates it
and checks the model file's sha256, so a truncated or swapped model is refused with a
`ModelError` that names the file and what is wrong.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

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
    normalisation: str


class OutputSpec(_Strict):
    """One output tensor of one detection level."""

    name: str
    kind: Literal["scores", "box_distribution"]
    stride: int = Field(gt=0)
    shape: list[int] = Field(min_length=3, max_length=3)
    dtype: Literal["float32", "int8", "uint8"]
    quantization: QuantParams | None = None


class DecodeSpec(_Strict):
    """NanoDet head parameters."""

    strides: list[int]
    bins: int = Field(gt=1)
    center_offset: float = 0.5
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
    architecture: Literal["nanodet"]
    precision: Literal["fp32", "int8"]
    labels: list[str] = Field(min_length=1)
    input: InputSpec
    outputs: list[OutputSpec]
    decode: DecodeSpec
    source: dict[str, object]
    licence: Licence
    conversion: dict[str, object]
    score_thresholds: ScoreThresholds | None = None
    accuracy: Accuracy | None = None

    @property
    def variant_group(self) -> str:
        """The model's name without its precision suffix: files of one group are variants of one model."""
        suffix = f"-{self.precision}"
        return self.name[: -len(suffix)] if self.name.endswith(suffix) else self.name

    @model_validator(mode="after")
    def _consistent(self) -> ModelManifest:
        for stride in self.decode.strides:
            kinds = sorted(o.kind for o in self.outputs if o.stride == stride)
            if kinds != ["box_distribution", "scores"]:
                raise ValueError(f"stride {stride} needs one scores and one box_distribution output")
        for out in self.outputs:
            grid = (self.input.height // out.stride) * (self.input.width // out.stride)
            channels = len(self.labels) if out.kind == "scores" else 4 * self.decode.bins
            if out.shape[1:] != [grid, channels]:
                raise ValueError(f"output {out.name} shape {out.shape} != [1, {grid}, {channels}]")
            if out.dtype != "float32" and out.quantization is None:
                raise ValueError(f"output {out.name} is {out.dtype} but has no quantization")
        if self.score_thresholds is not None:
            unknown = sorted(set(self.score_thresholds.per_class) - set(self.labels))
            if unknown:
                raise ValueError(f"score_thresholds.per_class names labels the model lacks: {unknown}")
            bad = sorted(k for k, v in self.score_thresholds.per_class.items() if not 0.0 <= v <= 1.0)
            if bad:
                raise ValueError(f"score_thresholds.per_class outside 0..1: {bad}")
        if self.input.dtype != "float32" and self.input.quantization is None:
            raise ValueError("quantized input needs quantization parameters")
        return self


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def manifest_path_for(model_path: Path) -> Path:
    """`models/x.tflite` -> `models/x.json`."""
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
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in err.errors())
        raise ModelError(f"{manifest_path}: invalid manifest: {problems}") from err
    if manifest.file != model_path.name:
        raise ModelError(f"{manifest_path}: describes {manifest.file!r}, not the model file {model_path.name!r}")
    actual = sha256_of(model_path)
    if actual != manifest.sha256:
        raise ModelError(
            f"{model_path}: sha256 {actual} does not match manifest {manifest_path} "
            f"({manifest.sha256}); the file is corrupt or not the model the manifest describes"
        )
    return manifest
