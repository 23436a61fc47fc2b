#!/usr/bin/env python3
"""Person recall and precision of a shipped detector on hand-labelled frames of real footage.

    python scripts/eval_person.py /work/shared/data/one-by-one-person-detection.mp4
    python scripts/eval_person.py VIDEO --model models/nanodet-coco-fp32.tflite --size 640x360

Labels: scripts/data/one-by-one-labels.json (frame index in decode order -> person boxes in
pixels of the original video). A detection matches a label at IoU >= 0.5, one-to-one, best
score first. Prints recall/precision at the chosen threshold and a small threshold sweep.
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
    DEFAULT_SCORE_THRESHOLD,
    create_detector,
    default_model_path,
)
from edge_agent.analysis.detector.bench import time_detect  # noqa: E402
from edge_agent.analysis.types import Box, Detection  # noqa: E402

DEFAULT_LABELS = Path(__file__).with_name("data") / "one-by-one-labels.json"
SWEEP = (0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6)


def match(dets: list[Detection], truth: list[Box], iou: float = 0.5) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives) of one frame, greedy by score."""
    free = list(truth)
    tp = 0
    for det in sorted(dets, key=lambda d: -d.score):
        best = max(free, key=det.box.iou, default=None)
        if best is not None and det.box.iou(best) >= iou:
            free.remove(best)
            tp += 1
    return tp, len(dets) - tp, len(free)


def scores_at(per_frame: dict[int, tuple[list[Detection], list[Box]]], thr: float) -> dict:
    tp = fp = fn = 0
    for dets, truth in per_frame.values():
        a, b, c = match([d for d in dets if d.score >= thr], truth)
        tp, fp, fn = tp + a, fp + b, fn + c
    return {
        "threshold": thr,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "recall": tp / (tp + fn) if tp + fn else 1.0,
        "precision": tp / (tp + fp) if tp + fp else 1.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video", type=Path)
    parser.add_argument("--labels", type=Path, default=DEFAULT_LABELS)
    parser.add_argument("--model", type=Path, default=default_model_path("int8"))
    parser.add_argument("--threshold", type=float, default=DEFAULT_SCORE_THRESHOLD)
    parser.add_argument("--resize", choices=("stretch", "letterbox"), default="letterbox")
    parser.add_argument("--size", help="scale frames first (as the pipeline does), e.g. 640x360")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("-v", "--verbose", action="store_true", help="print every frame")
    args = parser.parse_args()

    labels = json.loads(args.labels.read_text())
    frames_truth = {int(k): v for k, v in labels["frames"].items()}
    low = min(SWEEP + (args.threshold,))
    det = create_detector(
        "tflite",
        args.model,
        score_threshold=low,
        resize=args.resize,
        classes=["person"],
        num_threads=args.threads,
    )
    per_frame: dict[int, tuple[list[Detection], list[Box]]] = {}
    images: list[np.ndarray] = []
    with av.open(str(args.video)) as container:
        stream = container.streams.video[0]
        src_w, src_h = stream.codec_context.width, stream.codec_context.height
        dst_w, dst_h = (int(v) for v in args.size.split("x")) if args.size else (src_w, src_h)
        sx, sy = dst_w / src_w, dst_h / src_h
        for index, frame in enumerate(container.decode(stream)):
            if index not in frames_truth:
                continue
            img = frame.reformat(width=dst_w, height=dst_h, format="rgb24").to_ndarray()
            images.append(img)
            truth = [Box(*b).scaled(sx, sy) for b in frames_truth[index]]
            per_frame[index] = (det.detect(img), truth)
            if index >= max(frames_truth):
                break
    missing = sorted(set(frames_truth) - set(per_frame))
    if missing:
        raise SystemExit(f"{args.video}: labelled frames {missing} not in the video")

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
        f"frame size {dst_w}x{dst_h}  resize {args.resize}"
    )
    main_row = scores_at(per_frame, args.threshold)
    print(
        f"at threshold {args.threshold}: recall {main_row['recall']:.3f}  "
        f"precision {main_row['precision']:.3f}  (tp {main_row['tp']}, fp {main_row['fp']}, "
        f"fn {main_row['fn']})"
    )
    print("threshold  recall  precision  tp  fp  fn")
    for thr in SWEEP:
        r = scores_at(per_frame, thr)
        print(f"{thr:9.2f}  {r['recall']:6.3f}  {r['precision']:9.3f}  {r['tp']:2d}  {r['fp']:2d}  {r['fn']:2d}")
    det.score_threshold = args.threshold
    timing = time_detect(det, images, n=len(images))
    print(
        f"detect {timing['detect_ms']:.1f} ms  invoke {timing['invoke_ms']:.1f} ms  "
        f"ratio {timing['ratio']:.2f}  ({det.backend}, {args.threads} thread)"
    )


if __name__ == "__main__":
    main()
