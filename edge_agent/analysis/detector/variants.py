"""Pick the model variant (int8, fp32, ...) that is fastest on this CPU without losing accuracy.

int8 is ~5x faster than fp32 on CPUs with AVX-512 VNNI but about as fast on AVX2-only ones
(docs/models.md), where it only loses accuracy. So the agent times every variant at start and
`choose_variant` (pure) picks the fastest whose manifest accuracy is within the allowed loss.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_agent.analysis.detector.manifest import ModelManifest, load_manifest
from edge_agent.errors import ModelError


@dataclass(frozen=True, slots=True)
class VariantTiming:
    """One variant of a model, its measured detect() time and its recorded accuracy."""

    path: Path
    precision: str
    ms: float
    accuracy: float | None
    metric: str | None


@dataclass(frozen=True, slots=True)
class VariantChoice:
    chosen: VariantTiming
    timings: tuple[VariantTiming, ...]
    reason: str

    def as_dict(self) -> dict:
        """For the log, `agent.stats()` and doctor."""
        return {
            "variant": self.chosen.precision,
            "model": self.chosen.path.name,
            "ms": round(self.chosen.ms, 1),
            "reason": self.reason,
            "timings_ms": {t.precision: round(t.ms, 1) for t in self.timings},
            "accuracy": {t.precision: t.accuracy for t in self.timings},
        }


def find_variants(model_path: Path) -> list[tuple[Path, ModelManifest]]:
    """The model and the other files beside it with the same `variant_group` (configured one first)."""
    main = load_manifest(model_path)
    found = [(model_path, main)]
    for other in sorted([*model_path.parent.glob("*.tflite"), *model_path.parent.glob("*.onnx")]):
        if other.resolve() == model_path.resolve():
            continue
        try:
            manifest = load_manifest(other)
        except ModelError:
            continue  # a file without a valid manifest is not a variant to trust
        if manifest.variant_group == main.variant_group and manifest.labels == main.labels:
            found.append((other, manifest))
    return found


def time_detect_ms(model_path: Path, threads: int, runs: int) -> float:
    """Median ms of detect() (scaling, invoke, decoding) on a mid-grey 16:9 frame, after one warm-up."""
    from edge_agent.analysis.detector.family_detector import open_detector

    det = open_detector(model_path, num_threads=threads)
    w, h = det.input_size
    frame = np.full((h * 9 // 16, w, 3), 128, np.uint8)
    det.detect(frame)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        det.detect(frame)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


TIE_RATIO = 1.10  # times within 10 % are a tie (a few invokes on a busy box vary that much)


def choose_variant(timings: list[VariantTiming], max_loss: float, tie_ratio: float = TIE_RATIO) -> VariantChoice:
    """The fastest variant whose accuracy is within `max_loss` of the best recorded one.

    Variants no slower than `tie_ratio` x the fastest eligible one count as equally fast, and of
    those the most accurate wins: on a CPU without AVX-512 VNNI int8 is hardly faster than fp32
    and only loses accuracy. Variants with no recorded accuracy (or another metric) are only
    eligible when none records one.
    """
    if not timings:
        raise ValueError("choose_variant needs at least one timed variant")
    metric = next((t.metric for t in timings if t.accuracy is not None), None)
    scored = [t for t in timings if t.accuracy is not None and t.metric == metric]
    if scored:
        best = max(t.accuracy or 0.0 for t in scored)
        eligible = [t for t in scored if (t.accuracy or 0.0) >= best - max_loss - 1e-9]
        why = f"fastest with {metric} within {max_loss} of {best}"
    else:
        eligible = list(timings)
        why = "fastest (no variant records its accuracy)"
    fastest = min(t.ms for t in eligible)
    ties = [t for t in eligible if t.ms <= fastest * tie_ratio]
    chosen = max(ties, key=lambda t: (t.accuracy or 0.0, -t.ms))
    if len(ties) > 1:
        why += f"; within {round((tie_ratio - 1) * 100)} % of the fastest the most accurate"
    slower = [t.precision for t in timings if t is not chosen and t.ms < chosen.ms]
    if slower:
        why += f"; faster but less accurate: {', '.join(slower)}"
    return VariantChoice(chosen, tuple(timings), why)


def select_variant(
    model_path: Path,
    threads: int,
    max_loss: float,
    runs: int = 5,
    timer: Callable[[Path, int, int], float] = time_detect_ms,
) -> VariantChoice:
    """Time every variant of `model_path` with `timer` and choose one (see `choose_variant`)."""
    timings = [
        VariantTiming(
            path,
            manifest.precision,
            timer(path, threads, runs),
            manifest.accuracy.value if manifest.accuracy else None,
            manifest.accuracy.metric if manifest.accuracy else None,
        )
        for path, manifest in find_variants(model_path)
    ]
    return choose_variant(timings, max_loss)


def cpu_summary() -> str:
    """The CPU model and whether it has AVX-512 VNNI (the int8 model's speed depends on it)."""
    try:
        info = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return "unknown CPU"
    name = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "unknown CPU")
    return f"{name}, {'avx512_vnni' if 'avx512_vnni' in info else 'no avx512_vnni'}"
