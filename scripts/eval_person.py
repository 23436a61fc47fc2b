#!/usr/bin/env python3
"""Person recall and precision of a shipped detector on hand-labelled frames of real footage.

    python scripts/eval_person.py /work/shared/data/one-by-one-person-detection.mp4
    python scripts/eval_person.py VIDEO --model models/nanodet-coco-fp32.tflite --pipeline old
    python scripts/eval_person.py --coco tests/data/kitchen_coco/person_boxes_coco.json

Labels: scripts/data/one-by-one-labels.json (frame index in decode order -> person boxes in
pixels of the original video). A detection matches a label at IoU >= 0.5, one-to-one, best
score first. Prints recall/precision at the chosen threshold (default: the manifest's person
threshold) and a small threshold sweep.

--pipeline new (default) scales each frame once with area averaging (libswscale) to its size in
the letterboxed model input, as the agent does now; --pipeline old reproduces the previous path
(bilinear to --size, default 640x360, then a nearest-neighbour gather into the input).
--coco JSON evaluates the images a COCO annotation file names (beside it) instead of a video.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import av
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge_agent.analysis.detector import (  # noqa: E402
    create_detector,
    default_model_path,
)
from edge_agent.analysis.detector.bench import time_detect  # noqa: E402
from edge_agent.analysis.detector.evaluate import LabelCounts, match_boxes  # noqa: E402
from edge_agent.analysis.detector.postprocess import content_size  # noqa: E402
from edge_agent.analysis.types import Box, Detection  # noqa: E402
from edge_agent.capture.sampler import fit_size  # noqa: E402

DEFAULT_LABELS = Path(__file__).with_name("data") / "one-by-one-labels.json"
SWEEP = (0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6)


def scores_at(per_frame: dict[int, tuple[list[Detection], list[Box]]], thr: float) -> LabelCounts:
    """Person counts over all frames, keeping detections scored at or above `thr`."""
    counts = LabelCounts()
    for dets, truth in per_frame.values():
        tp, fp, fn = match_boxes([d for d in dets if d.score >= thr], truth)
        counts.tp, counts.fp, counts.fn = counts.tp + tp, counts.fp + fp, counts.fn + fn
    return counts


def rates(c: LabelCounts) -> tuple[float, float]:
    """(recall, precision), 1.0 where nothing was labelled or found."""
    return (1.0 if c.recall is None else c.recall), (1.0 if c.precision is None else c.precision)


def nearest_gather(img: np.ndarray, w: int, h: int) -> np.ndarray:
    """The old preprocessing: nearest-neighbour pick of each output pixel's centre."""
    src_h, src_w = img.shape[:2]
    cols = np.clip(np.floor((np.arange(w) + 0.5) * src_w / w).astype(np.intp), 0, src_w - 1)
    rows = np.clip(np.floor((np.arange(h) + 0.5) * src_h / h).astype(np.intp), 0, src_h - 1)
    return img[rows][:, cols]


def prepare(frame: av.VideoFrame, det, pipeline: str, size: tuple[int, int]) -> np.ndarray:
    """The RGB frame the detector gets, as the new or the old pipeline made it."""
    if pipeline == "new":
        w, h = fit_size(frame.width, frame.height, *det.input_size)
        return frame.reformat(width=w, height=h, format="rgb24", interpolation="AREA").to_ndarray()
    img = frame.reformat(width=size[0], height=size[1], format="rgb24").to_ndarray()
    return nearest_gather(img, *content_size(det.input_map(size[0], size[1])))


def read_video(args, det, truth_of: dict[int, list]) -> list[tuple[av.VideoFrame, list[Box]]]:
    out = []
    with av.open(str(args.video)) as container:
        stream = container.streams.video[0]
        for index, frame in enumerate(container.decode(stream)):
            if index in truth_of:
                out.append((frame, [Box(*b) for b in truth_of[index]]))
            if index >= max(truth_of):
                break
    if len(out) != len(truth_of):
        raise SystemExit(f"{args.video}: some labelled frames are not in the video")
    return out


def read_coco(path: Path) -> list[tuple[av.VideoFrame, list[Box]]]:
    coco = json.loads(path.read_text())
    out = []
    for im in coco["images"]:
        with av.open(str(path.parent / im["file_name"])) as c:
            frame = next(c.decode(video=0))
        boxes = [a["bbox"] for a in coco["annotations"] if a["image_id"] == im["id"] and a["category_id"] == 1]
        out.append((frame, [Box(x, y, x + w, y + h) for x, y, w, h in boxes]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video", type=Path, nargs="?")
    parser.add_argument("--coco", type=Path, help="COCO person boxes JSON, images beside it")
    parser.add_argument("--labels", type=Path, default=DEFAULT_LABELS)
    parser.add_argument("--model", type=Path, default=default_model_path("int8"))
    parser.add_argument("--threshold", type=float, help="default: the manifest's person threshold")
    parser.add_argument("--resize", choices=("stretch", "letterbox"), default="letterbox")
    parser.add_argument("--pipeline", choices=("new", "old"), default="new")
    parser.add_argument("--size", default="640x360", help="--pipeline old: the scaled frame size")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("-v", "--verbose", action="store_true", help="print every frame")
    args = parser.parse_args()
    if (args.video is None) == (args.coco is None):
        parser.error("give a VIDEO or --coco JSON")

    det = create_detector("auto", args.model, resize=args.resize, classes=["person"], num_threads=args.threads)
    if args.threshold is None:
        args.threshold = float(det.thresholds[det.labels.index("person")])
    det.score_threshold = min(SWEEP + (args.threshold,))
    if args.coco is not None:
        samples = read_coco(args.coco)
    else:
        labels = json.loads(args.labels.read_text())
        samples = read_video(args, det, {int(k): v for k, v in labels["frames"].items()})
    size = tuple(int(v) for v in args.size.split("x"))
    per_frame: dict[int, tuple[list[Detection], list[Box]]] = {}
    images: list[np.ndarray] = []
    for index, (frame, truth) in enumerate(samples):
        img = prepare(frame, det, args.pipeline, size)
        images.append(img)
        sx, sy = frame.width / img.shape[1], frame.height / img.shape[0]
        dets = [Detection(d.label, d.score, d.box.scaled(sx, sy)) for d in det.detect(img)]
        per_frame[index] = (dets, truth)
    dst_w, dst_h = images[0].shape[1], images[0].shape[0]

    if args.verbose:
        for index, (dets, truth) in sorted(per_frame.items()):
            kept = [d for d in dets if d.score >= args.threshold]
            print(
                index,
                "truth",
                [b.as_list() for b in truth],
                "det",
                [(round(d.score, 2), d.box.as_list()) for d in kept],
            )
    n_boxes = sum(len(t) for _, t in per_frame.values())
    print(
        f"model {args.model.name}  frames {len(per_frame)}  labelled persons {n_boxes}  "
        f"detector frame {dst_w}x{dst_h}  pipeline {args.pipeline}  resize {args.resize}"
    )
    main_row = scores_at(per_frame, args.threshold)
    recall, precision = rates(main_row)
    print(
        f"at threshold {args.threshold}: recall {recall:.3f}  precision {precision:.3f}  "
        f"(tp {main_row.tp}, fp {main_row.fp}, fn {main_row.fn})"
    )
    print("threshold  recall  precision  tp  fp  fn")
    for thr in SWEEP:
        r = scores_at(per_frame, thr)
        recall, precision = rates(r)
        print(f"{thr:9.2f}  {recall:6.3f}  {precision:9.3f}  {r.tp:2d}  {r.fp:2d}  {r.fn:2d}")
    det.score_threshold = args.threshold
    timing = time_detect(det, images, n=len(images))
    print(
        f"detect {timing['detect_ms']:.1f} ms  invoke {timing['invoke_ms']:.1f} ms  "
        f"ratio {timing['ratio']:.2f}  ({det.backend}, {args.threads} thread, {cpu_line()})"
    )


def cpu_line() -> str:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "?")
    return f"{name}, {'avx512_vnni' if 'avx512_vnni' in info else 'no avx512_vnni'}"


if __name__ == "__main__":
    main()
