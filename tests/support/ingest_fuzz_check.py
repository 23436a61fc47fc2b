"""Running ingest fuzz cases through a real broker into a running receiver, and judging the result
(no tests here; tests/test_ingest_fuzz.py and scripts/fuzz_ingest.py use it).

- `OutcomeLog`: while entered, records what `Ingestor.handle_batch` returned for every message of
  every committed batch (topic, payload, result), in order. It changes nothing.
- `publish(broker, cases)`: one device-side paho v5 client publishes every case (QoS 1, pipelined)
  and returns the PUBACK reason codes.
- `judge(cases, maker, log, storage, media_dir)`: a `Verdict` listing every difference from what the
  cases expect: crashes (a message that broke ingest and was recorded as `internal error`), wrong
  outcomes, messages lost or handled twice, rejects without their row in `rejects`, valid messages
  not in the database as sent, stored media whose file does not match its sha256.
"""

from __future__ import annotations

import hashlib
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bk_contract import Status, Telemetry
from cloud_receiver.ingest.handler import Ingestor
from support.ingest_fuzz import Case, CaseMaker

CRASH_EVENTS = ("batch failed unexpectedly; storing its messages one by one", "ingest failed unexpectedly",
                "subscriber connection failed unexpectedly; reconnecting", "broker broke the protocol; reconnecting",
                "receiver disconnected", "storage failed")


class OutcomeLog:
    """Spy on `Ingestor.handle_batch` (class-wide, restored on exit): the results of committed batches."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, bytes, Any]] = []
        self._lock = threading.Lock()
        self._real = Ingestor.handle_batch

    def __enter__(self) -> OutcomeLog:
        real, entries, lock = self._real, self.entries, self._lock

        def spy(ingestor: Ingestor, messages: Any) -> Any:
            results = real(ingestor, messages)
            with lock:
                entries.extend((t, p, r) for (t, p), r in zip(messages, results, strict=True))
            return results

        Ingestor.handle_batch = spy  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        Ingestor.handle_batch = self._real  # type: ignore[method-assign]

    def __len__(self) -> int:
        with self._lock:
            return len(self.entries)


def publish(broker: Any, cases: list[Case], client_id: str = "fuzz-device", timeout: float = 60.0) -> list[int]:
    """Publish every case's message in order (QoS 1, up to 50 in flight); the PUBACK reason codes, in order."""
    codes: dict[int, int] = {}
    done = threading.Condition()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    c.max_inflight_messages_set(50)
    c.max_queued_messages_set(0)

    def on_publish(_c: Any, _u: Any, mid: int, reason: Any, _p: Any) -> None:
        with done:
            codes[mid] = reason.value
            done.notify_all()

    connected = threading.Event()
    c.on_publish = on_publish
    c.on_connect = lambda *_a: connected.set()
    c.connect(broker.host, broker.port)
    c.loop_start()
    try:
        assert connected.wait(10), "fuzz publisher could not connect"
        mids = [c.publish(case.topic, case.payload, qos=1).mid for case in cases]
        with done:
            assert done.wait_for(lambda: len(codes) >= len(mids), timeout), f"{len(codes)} of {len(mids)} PUBACKs"
        return [codes[m] for m in mids]
    finally:
        c.disconnect()
        c.loop_stop()


def settled(cases: list[Case], log: OutcomeLog, storage: Any, rejects_before: int = 0) -> bool:
    """Whether every case has been handled: committed (in the log) or recorded as an internal error."""
    crashed = storage.db.execute("SELECT count(*) FROM rejects WHERE id > ? AND reason LIKE 'internal error%'",
                                 [rejects_before]).fetchone()[0]
    return len(log) + crashed >= len(cases)


@dataclass
class Verdict:
    problems: dict[str, list[str]] = field(default_factory=dict)
    outcomes: Counter = field(default_factory=Counter)  # (expect, outcome) -> messages
    labels: Counter = field(default_factory=Counter)  # label -> messages

    def add(self, kind: str, text: str) -> None:
        self.problems.setdefault(kind, []).append(text)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self, limit: int = 8) -> str:
        """Each kind of problem with its count, the reasons it came with (counted) and its first examples."""
        lines = []
        for kind, items in self.problems.items():
            reasons = Counter(t.rsplit(" -> ", 1)[1].split("(")[0][:70] for t in items if " -> " in t)
            lines.append(f"{kind}: {len(items)}" + (f" {dict(reasons.most_common(6))}" if reasons else "")
                         + "".join(f"\n    {t}" for t in items[:limit]))
        return "\n".join(lines) or "no problems"


def _show(case: Case) -> str:
    return f"[{case.label}] {case.topic[:90]!r} {case.payload[:80]!r}{'…' if len(case.payload) > 80 else ''}"


def judge(cases: list[Case], maker: CaseMaker, log: OutcomeLog, storage: Any, media_dir: Path,
          rejects_before: int = 0) -> Verdict:
    """Compare what ingest did (the outcome log, the database, the media files) with what the cases expect."""
    v = Verdict()
    rejects = storage.db.query("SELECT topic, reason FROM rejects WHERE id > ? ORDER BY id", [rejects_before])
    rejects = list(rejects)
    internal = [r for r in rejects if r["reason"].startswith("internal error")]
    recorded = [(r["topic"], r["reason"]) for r in rejects if not r["reason"].startswith("internal error")]
    entries = list(log.entries)
    j = k = 0
    stored_rejects: list[tuple[str, str]] = []
    last_json: dict[tuple[str, str], bytes] = {}
    for case in cases:
        v.labels[case.label] += 1
        if j < len(entries) and entries[j][0] == case.topic and entries[j][1] == case.payload:
            result = entries[j][2]
            j += 1
        elif k < len(internal) and internal[k]["topic"] == case.topic[:512]:
            v.add("crashes (recorded as internal error)", f"{_show(case)} -> {internal[k]['reason'][:160]}")
            v.outcomes[(case.expect, "crash")] += 1
            k += 1
            continue
        else:
            v.add("lost (never handled)", _show(case))
            continue
        v.outcomes[(case.expect, result.outcome)] += 1
        if result.outcome == "rejected":
            stored_rejects.append((case.topic[:512], (result.reason or "")[:1000]))
            if not result.reason:
                v.add("rejected without a reason", _show(case))
            if case.expect == "stored":
                v.add("valid message rejected", f"{_show(case)} -> {result.reason}")
        elif case.expect == "rejected":
            v.add("invalid message not rejected", f"{_show(case)} -> {result.outcome}")
        elif result.outcome == "stored" and case.topic.endswith(("/status", "/telemetry")):
            last_json[(case.topic.split("/")[2], case.topic.rsplit("/", 1)[1])] = case.payload
        if case.anchor is not None and result.outcome != "stored":
            v.add("valid message not stored as new", f"{_show(case)} -> {result.outcome}")
    if j < len(entries):
        v.add("handled but not sent, or handled twice", f"{len(entries) - j} entries, first {entries[j][0][:90]!r}")
    # each reject recorded once with its reason; not necessarily in message order: an alert refused for
    # naming another device's alert id is found when its batch's alerts are stored, after the batch's other messages
    if Counter(stored_rejects) != Counter(recorded):
        v.add("rejects not recorded as they happened", f"{len(stored_rejects)} rejected, {len(recorded)} rows in rejects")
    _check_anchors(v, cases, storage, last_json)
    _check_media(v, maker, storage, media_dir)
    return v


def _check_anchors(v: Verdict, cases: list[Case], storage: Any, last_json: dict[tuple[str, str], bytes]) -> None:
    for case in cases:
        if case.anchor is None:
            continue
        kind, device, ident, columns = case.anchor
        if kind == "alert":
            row = storage.get_alert(ident)
            if row is None or row["device_id"] != device:
                v.add("valid alert missing", _show(case))
            elif any(row.get(k) != want for k, want in columns.items()):
                v.add("alert row not as sent", f"{_show(case)} -> {({k: row.get(k) for k in columns})}")
        elif kind == "cmd/result" and storage.db.execute(
                "SELECT count(*) FROM command_results WHERE device_id = ? AND command_id = ?", [device, ident]).fetchone()[0] != 1:
            v.add("valid command result missing", _show(case))
    for (device, kind), payload in last_json.items():
        if kind == "status":
            got = storage.db.execute("SELECT status_json FROM devices WHERE id = ?", [device]).fetchone()
            want = Status.model_validate_json(payload).model_dump_json()
        else:
            got = storage.db.execute("SELECT data_json FROM telemetry WHERE device_id = ?", [device]).fetchone()
            want = Telemetry.model_validate_json(payload).model_dump_json()
        if got is None or got[0] != want:
            v.add(f"last {kind} not what was stored last", f"{device}: {str(got)[:120]}")


def _check_media(v: Verdict, maker: CaseMaker, storage: Any, media_dir: Path) -> None:
    for (device, media_id), sha in maker.done_media.items():
        row = storage.get_media(device, media_id)
        if row is None or row["sha256"] != sha:
            v.add("valid media not stored", f"{device}/{media_id} -> {row and row['sha256']}")
    for device, media_id in maker.absent_media:
        if storage.get_media(device, media_id) is not None:
            v.add("broken media stored", f"{device}/{media_id}")
    for row in storage.db.query("SELECT device_id, id, sha256, bytes, path FROM media"):
        path = media_dir / row["path"]
        data = path.read_bytes() if path.is_file() else None
        if data is None or hashlib.sha256(data).hexdigest() != row["sha256"] or len(data) != row["bytes"]:
            v.add("stored media file does not match its row", f"{row['device_id']}/{row['id']} {row['path']}")
