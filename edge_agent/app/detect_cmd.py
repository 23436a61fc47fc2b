"""`edge-agent detect IMAGE|VIDEO`: what the detector sees, for installers checking a camera's view."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
from PIL import Image, UnidentifiedImageError

from bk_common.logs import say
from edge_agent.analysis.detector import create_detector, default_model_path
from edge_agent.analysis.types import Detection
from edge_agent.errors import NeedsHuman
from edge_agent.events.snapshot import render_snapshot
from edge_agent.rules.engine import Mark

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def _image_frames(path: Path) -> Iterator[tuple[str, np.ndarray]]:
    try:
        with Image.open(path) as img:
            yield path.name, np.asarray(img.convert("RGB"))
    except (OSError, UnidentifiedImageError) as err:
        raise NeedsHuman(f"{path}: cannot read the image: {err}") from err


def _video_frames(path: Path, every_s: float, max_frames: int) -> Iterator[tuple[str, np.ndarray]]:
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as err:
        raise NeedsHuman(f"{path}: cannot open the video: {err}") from err
    with container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        next_t, taken = 0.0, 0
        try:
            for frame in container.decode(stream):
                t = float(frame.time or 0.0)
                if t + 1e-6 < next_t:
                    continue
                yield f"t={t:.2f}s", frame.to_ndarray(format="rgb24")
                taken += 1
                next_t = t + every_s
                if taken >= max_frames:
                    return
        except av.error.FFmpegError as err:
            say(f"warning: {path}: decoding stopped: {err}", err=True)


def format_detection(where: str, d: Detection) -> str:
    b = d.box
    return f"{where}\t{d.label}\t{d.score:.2f}\t{b.x1:.0f},{b.y1:.0f},{b.x2:.0f},{b.y2:.0f}"


def run_detect(args: argparse.Namespace) -> int:
    path: Path = args.input
    if not path.is_file():
        raise NeedsHuman(f"{path}: no such file")
    model = args.model or default_model_path("int8")
    detector = create_detector("auto", model, score_threshold=args.threshold, num_threads=args.threads)
    is_image = path.suffix.lower() in IMAGE_SUFFIXES
    frames = _image_frames(path) if is_image else _video_frames(path, args.every, args.max_frames)
    out = args.out or path.with_name(path.stem + ".detected.jpg")
    best: tuple[int, str, np.ndarray, list[Detection]] | None = None
    total = 0
    for where, rgb in frames:
        found = detector.detect(rgb)
        total += len(found)
        for d in found:
            say(format_detection(where, d))
        if best is None or len(found) > best[0]:
            best = (len(found), where, rgb, found)
    if best is None:
        raise NeedsHuman(f"{path}: no frame could be decoded")
    _, where, rgb, found = best
    marks = [Mark(d.label, d.score, d.box) for d in found]
    out.write_bytes(render_snapshot(rgb, marks, None).jpeg)
    say(f"{total} detection(s); annotated {where} written to {out}", err=True)
    return 0
