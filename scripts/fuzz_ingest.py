#!/usr/bin/env python3
"""MQTT ingest fuzz, the long seed-free run: rounds of generated and mutated messages through a real
Mosquitto into one running receiver, each round judged, counts printed.

    python scripts/fuzz_ingest.py                     # 120 s of rounds of ~3,000 messages each
    python scripts/fuzz_ingest.py --seconds 600 --messages 5000
    python scripts/fuzz_ingest.py --seed 123456 --rounds 1   # repeat one round a run printed

Each round takes a fresh seed (printed, so a failing round can be replayed with --seed) and makes its
messages with tests/support/ingest_fuzz.py: valid alerts, status, telemetry, command results and
media sets of the two registered devices interleaved with mutated ones (sizes, types, unicode,
topic/device mismatch, unknown devices, malformed topics, chunk order, overlap, sha256 and size that
lie, bytes that are not their content type, headers that disagree), plus the systematic edge cases.
One paho client publishes them (QoS 1) to a Mosquitto without authentication; the receiver is the
real app (tests/support/receiver_harness.py: storage and MQTT subscriber, SQLite in a temp folder).
tests/support/ingest_fuzz_check.py judges every round: crashes (messages recorded as `internal
error`), invalid messages not rejected, valid ones rejected or not stored exactly once, rejects
without their row, lost or doubled messages, media files that do not match their sha256. The
receiver runs on across rounds: the last round shows ingest still going. Exit status 1 if any round
had a problem.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT, ROOT / "tests", ROOT / "scripts"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import bench_machine  # noqa: E402
import structlog  # noqa: E402
from support.ingest_fuzz import DEV_A, DEV_B, LIMITS, CaseMaker  # noqa: E402
from support.ingest_fuzz_check import CRASH_EVENTS, OutcomeLog, Verdict, judge, publish, settled  # noqa: E402
from support.receiver_harness import RunningReceiver, receiver_config  # noqa: E402

from cloud_receiver.appkeys import SUBSCRIBER  # noqa: E402
from devkit.localbroker import running_broker  # noqa: E402


async def run(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="fuzz-ingest-"))
    maker = CaseMaker(random.Random(0))
    totals: Counter = Counter()
    outcome_totals: Counter = Counter()
    bad_rounds: list[int] = []
    crash_lines = 0
    started = time.monotonic()
    try:
        with running_broker(work / "broker") as broker, OutcomeLog() as log, \
                structlog.testing.capture_logs() as logs:
            cfg = receiver_config(work, broker, **LIMITS)
            rx = await RunningReceiver(cfg).start()
            try:
                rx.storage.add_canteen("fuzz-1", "第一中学食堂", "64050201")
                rx.storage.add_canteen("fuzz-2", "中宁一中食堂", "64052101")
                rx.storage.add_device(DEV_A, "fuzz-1", "box A")
                rx.storage.add_device(DEV_B, "fuzz-2", "box B")
                sub = rx.app[SUBSCRIBER]
                n = 0
                while (args.rounds and n < args.rounds) or (not args.rounds and time.monotonic() - started < args.seconds):
                    n += 1
                    seed = args.seed if args.seed is not None and n == 1 else random.SystemRandom().randrange(2**40)
                    maker.rng = random.Random(seed)
                    cases = maker.round(args.messages, edges=True) + [maker.valid() for _ in range(3)]
                    log.entries.clear()
                    logs.clear()
                    rejects_before = rx.storage.db.execute("SELECT COALESCE(MAX(id), 0) FROM rejects").fetchone()[0]
                    t0 = time.monotonic()
                    codes = await asyncio.get_running_loop().run_in_executor(None, publish, broker, cases)
                    deadline = time.monotonic() + 60
                    while not settled(cases, log, rx.storage, rejects_before) and time.monotonic() < deadline:
                        await asyncio.sleep(0.02)
                    seconds = time.monotonic() - t0
                    verdict = judge(cases, maker, log, rx.storage, cfg.storage.media_dir, rejects_before)
                    crashed = [e for e in logs if e["event"] in CRASH_EVENTS]
                    if not sub.connected.is_set():
                        verdict.add("receiver not connected after the round", str(sub.counts))
                    if set(codes) != {0}:
                        verdict.add("PUBACK not success", str(Counter(codes)))
                    if crashed:
                        verdict.add("crash log lines", str(Counter(e["event"] for e in crashed)))
                        crash_lines += len(crashed)
                    report_round(n, seed, cases, verdict, seconds)
                    totals["rounds"] += 1
                    totals["messages"] += len(cases)
                    outcome_totals.update(verdict.outcomes)
                    if not verdict.ok:
                        bad_rounds.append(seed)
            finally:
                await rx.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_totals(totals, outcome_totals, bad_rounds, crash_lines, time.monotonic() - started)
    return 1 if bad_rounds else 0


def report_round(n: int, seed: int, cases: list, verdict: Verdict, seconds: float) -> None:
    o = verdict.outcomes
    rejected = sum(v for (_e, got), v in o.items() if got == "rejected")
    stored = sum(v for (_e, got), v in o.items() if got in ("stored", "duplicate"))
    crashes = sum(v for (_e, got), v in o.items() if got == "crash")
    print(f"round {n:>3} seed {seed:>13}: {len(cases):>5} messages in {seconds:5.1f} s "
          f"({len(cases) / max(seconds, 1e-9):6.0f}/s); rejected {rejected:>5}, stored {stored:>5} "
          f"(repeats {sum(v for (_e, g), v in o.items() if g == 'duplicate')}), crashes {crashes}, "
          f"problems {sum(len(v) for v in verdict.problems.values())}", flush=True)
    if not verdict.ok:
        print("    " + verdict.summary(limit=3).replace("\n", "\n    "), flush=True)


def print_totals(totals: Counter, outcomes: Counter, bad_rounds: list[int], crash_lines: int, seconds: float) -> None:
    print(f"\n{bench_machine.cpu_line()}")
    print(f"{totals['rounds']} rounds, {totals['messages']} messages in {seconds:.0f} s")
    print(f"{'expected':<10} {'got':<10} {'messages':>9}")
    for (expect, got), count in sorted(outcomes.items()):
        print(f"{expect:<10} {got:<10} {count:>9}")
    wrong = sum(c for (e, g), c in outcomes.items() if (e == "rejected" and g != "rejected")
                or (e == "stored" and g not in ("stored", "duplicate")) or g == "crash")
    print(f"crashes (internal error): {sum(c for (_e, g), c in outcomes.items() if g == 'crash')}; "
          f"crash log lines: {crash_lines}; wrong outcomes: {wrong}; rounds with problems: {len(bad_rounds)}"
          + (f" (seeds {bad_rounds[:10]})" if bad_rounds else ""))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=120.0, help="run rounds for this long (unless --rounds)")
    ap.add_argument("--rounds", type=int, default=0, help="run exactly this many rounds")
    ap.add_argument("--messages", type=int, default=3000, help="generated messages per round (plus the edge cases)")
    ap.add_argument("--seed", type=int, default=None, help="seed of the first round (to replay one)")
    args = ap.parse_args(argv)
    return asyncio.run(run(args))


if __name__ == "__main__":
    raise SystemExit(main())
