"""MQTT ingest fuzz (seeded): mutated messages of every kind through a real Mosquitto into the running receiver.

The cases and what each must get come from tests/support/ingest_fuzz.py; the run is judged by
tests/support/ingest_fuzz_check.py. `scripts/fuzz_ingest.py` runs the same without a seed, for longer.
"""

from __future__ import annotations

import asyncio
import random

import pytest
import structlog
from support.ingest_fuzz import DEV_A, DEV_B, LIMITS, REGISTERED, CaseMaker
from support.ingest_fuzz_check import CRASH_EVENTS, OutcomeLog, judge, publish, settled
from support.receiver_harness import RunningReceiver, receiver_config
from support.waiting import async_wait_for

from cloud_receiver.appkeys import SUBSCRIBER
from devkit.localbroker import running_broker

pytestmark = pytest.mark.integration

SEED = 9_2026_0301
MESSAGES = 3000


def register(storage) -> None:
    """The two fuzzed devices, in two canteens of two jurisdictions."""
    storage.add_canteen("fuzz-1", "第一中学食堂", "64050201")
    storage.add_canteen("fuzz-2", "中宁一中食堂", "64052101")
    storage.add_device(DEV_A, "fuzz-1", "box A")
    storage.add_device(DEV_B, "fuzz-2", "box B")


async def test_fuzzed_messages_are_rejected_with_a_reason_and_valid_ones_stored_once(tmp_path):
    """~3,200 seeded messages (alerts, status, telemetry, command results, media chunks; mutated sizes, types,
    unicode, devices, topics, chunk order, overlap, sha256): no crash, every invalid one rejected and recorded
    with its reason, every valid one interleaved with them stored exactly once, ingest still going at the end."""
    maker = CaseMaker(random.Random(SEED))
    cases = maker.round(MESSAGES, edges=True)
    cases += [maker.valid() for _ in range(5)]  # the last messages: ingest still works after everything above
    with running_broker(tmp_path / "broker") as broker, OutcomeLog() as log, \
            structlog.testing.capture_logs() as logs:
        cfg = receiver_config(tmp_path, broker, **LIMITS)
        rx = await RunningReceiver(cfg).start()
        try:
            register(rx.storage)
            sub = rx.app[SUBSCRIBER]
            codes = await asyncio.get_running_loop().run_in_executor(None, publish, broker, cases)
            await async_wait_for(lambda: settled(cases, log, rx.storage), 20, "every message handled")
            verdict = judge(cases, maker, log, rx.storage, cfg.storage.media_dir)
            assert sub.connected.is_set() and sum(sub.counts.values()) == len(cases), sub.counts
        finally:
            await rx.stop()
    assert set(codes) == {0}, "the broker refused a message: the fuzz must reach the receiver"
    crashes = [f"{e['event']} {e.get('topic', '')} {e.get('error') or e.get('reason') or ''}" for e in logs
               if e["event"] in CRASH_EVENTS]
    assert verdict.ok, verdict.summary()
    assert crashes == []
    # the fuzz reached what it is about: every kind, valid and invalid, and the media rules
    kinds = {(c.topic.split("/")[3] if c.topic.count("/") >= 3 else "?", c.expect) for c in cases}
    for kind in ("alert", "status", "telemetry", "cmd", "media"):
        assert {(kind, "stored"), (kind, "rejected")} <= kinds, (kind, sorted(kinds))
    assert verdict.outcomes[("rejected", "rejected")] >= MESSAGES // 5, verdict.outcomes
    assert verdict.outcomes[("stored", "stored")] >= MESSAGES // 5, verdict.outcomes
    for how in ("overlap", "sha lie", "not its type", "disagree", "reuse id", "bad type", "malformed"):
        assert any(label.startswith(f"media: {how}") for label in verdict.labels), how
    assert {d for d, _ in maker.done_media} == set(REGISTERED)
