"""ONNX models through onnxruntime (CPU), with the same small surface as `runtime.TfliteModel`.

onnxruntime is optional (`pip install brightkitchen[onnx]`): a box that only runs TFLite models
does not carry its ~80 MB. Library errors are translated here into `ModelError`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import structlog

from edge_agent.analysis.detector.manifest import ModelManifest, QuantParams
from edge_agent.analysis.detector.postprocess import Quant
from edge_agent.analysis.detector.runtime import OutputBinding
from edge_agent.errors import ModelError

log = structlog.get_logger(__name__)

_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(uint8)": "uint8",
              "tensor(int8)": "int8"}


def _quant(q: QuantParams | None) -> Quant:
    return Quant(q.scale, q.zero_point) if q is not None else Quant()


def _shape_matches(actual: list[Any], expected: list[int]) -> bool:
    """Symbolic dimensions (batch, anchors named as strings or None) match any size."""
    return len(actual) == len(expected) and all(not isinstance(a, int) or a == e for a, e in zip(actual, expected,
                                                                                                   strict=True))


def load_session(model_path: Path, num_threads: int = 1) -> Any:
    """An onnxruntime CPU session for model_path, or ModelError saying what is missing or wrong."""
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise ModelError("onnxruntime is not installed: pip install 'brightkitchen[onnx]' (or onnxruntime)") from err
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = num_threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # warnings about unused initialisers are not the operator's business
    try:
        return ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own pybind classes (InvalidProtobuf, Fail, ...)
        raise ModelError(f"{model_path}: onnxruntime cannot load the model: {err}") from err


class OnnxModel:
    """A session bound to its manifest: set one input, run, read the raw outputs (batch dimension dropped)."""

    backend = "onnxruntime"

    def __init__(self, model_path: Path, manifest: ModelManifest, num_threads: int = 1) -> None:
        self.path = model_path
        self.manifest = manifest
        self.session = load_session(model_path, num_threads)
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ModelError(f"{model_path}: expected one input tensor, found {len(inputs)}")
        inp = inputs[0]
        if not _shape_matches(list(inp.shape), manifest.input.shape):
            raise ModelError(f"{model_path}: input shape {list(inp.shape)} != manifest {manifest.input.shape}")
        dtype = _ORT_TYPES.get(inp.type)
        if dtype != manifest.input.dtype:
            raise ModelError(f"{model_path}: input type {inp.type} != manifest {manifest.input.dtype}")
        self.input_name: str = inp.name
        self.input_dtype = np.dtype(dtype)
        self.input_quant = _quant(manifest.input.quantization)
        by_name = {o.name: o for o in self.session.get_outputs()}
        self.outputs: list[OutputBinding] = []
        for i, spec in enumerate(manifest.outputs):
            out = by_name.get(spec.name)
            if out is None:
                raise ModelError(f"{model_path}: manifest output {spec.name!r} not in the model "
                                 f"(it has {sorted(by_name)})")
            if not _shape_matches(list(out.shape), spec.shape):
                raise ModelError(f"{model_path}: output {spec.name} shape {list(out.shape)} != manifest {spec.shape}")
            self.outputs.append(OutputBinding(i, spec.kind, spec.stride or 0, _quant(spec.quantization)))
        self._names = [o.name for o in manifest.outputs]
        log.info("model_loaded", model=str(model_path), backend=self.backend, threads=num_threads,
                 precision=manifest.precision)

    def invoke(self, tensor: np.ndarray) -> list[np.ndarray]:
        """Run on one prepared input tensor; raw outputs in manifest order."""
        try:
            outs = self.session.run(self._names, {self.input_name: tensor})
        except Exception as err:  # a model whose graph fails at run time (bad reshape, ...)
            raise ModelError(f"{self.path}: onnxruntime failed to run the model: {err}") from err
        return [np.asarray(o)[0] for o in outs]
