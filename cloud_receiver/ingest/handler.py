"""Validation and idempotent storage of MQTT messages, independent of the MQTT client.

`Ingestor.handle(topic, payload)` returns once the message is either stored (or recognised as a
repeat) or rejected and recorded in `rejects`; in all three cases the caller acknowledges it.
`Ingestor.handle_batch(messages)` does the same for several messages in ONE transaction (group
commit): each message still ends stored, duplicate or rejected on its own, but nothing is
committed, counted or announced until the whole batch has committed. Its valid alerts are stored
in groups of `ALERT_GROUP` (`Storage.start_alerts`: one statement for the new ones on PostgreSQL,
which inserts a group while the next one is validated).
A StorageError (or an unexpected exception) escapes: then nothing of the batch was stored and
its messages must stay unacknowledged, so the broker delivers them again.
`store_with_retries` is the policy around it that the MQTT subscriber uses: retries after a
storage error, and one message at a time when a batch breaks unexpectedly.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import structlog
from pydantic import BaseModel, ValidationError

from bk_common.jsondepth import nests_deeper
from bk_contract import Alert, CommandResult, Status, Telemetry, TopicError, decode_chunk, parse_topic
from bk_contract.chunks import ChunkError
from cloud_receiver.config import LimitsConfig
from cloud_receiver.errors import Rejected, StorageError, validation_problem
from cloud_receiver.storage.media_store import MediaAssembler
from cloud_receiver.storage.sqlite import Storage, utc_now

log = structlog.get_logger(__name__)

CHUNK_HEADER_MAX = 53 + 255  # fixed part of bk_contract's chunk header + longest content type
JSON_KINDS: dict[str, type[BaseModel]] = {"alert": Alert, "status": Status, "telemetry": Telemetry,
                                          "cmd/result": CommandResult}


@dataclass(frozen=True, slots=True)
class IngestResult:
    outcome: Literal["stored", "duplicate", "rejected"]
    kind: str | None = None
    device_id: str | None = None
    reason: str | None = None


JSON_MAX_DEPTH = 32  # contract payloads nest 4 deep at most
ALERT_GROUP = 25  # valid alerts sent to the database together; PostgreSQL stores a group while the next is validated


NUL_ESCAPE = b"\\u0000"  # how JSON writes a NUL character (a raw one is not JSON)


def nul_at(payload: bytes) -> str | None:
    """Where a JSON text holds a NUL character, as `a.0.b` (NULs written `\\u0000`); None for nowhere or not JSON.

    PostgreSQL's text cannot hold a NUL and SQLite's can: refused on both, alike, before a store sees it."""
    if NUL_ESCAPE not in payload:  # the common case: one substring search
        return None
    try:
        data = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None  # not JSON: the parse below names that

    def walk(value: Any, path: tuple[str, ...]) -> tuple[str, ...] | None:
        if isinstance(value, str):
            return path if "\x00" in value else None
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        for key, item in items:
            if isinstance(key, str) and "\x00" in key:
                return (*path, key)
            found = walk(item, (*path, str(key)))
            if found is not None:
                return found
        return None

    found = walk(data, ())
    return None if found is None else ".".join(found).replace("\x00", "\\u0000") or "(payload)"


def parse_json_payload(kind: str, payload: bytes, max_bytes: int) -> BaseModel:
    """Size check, JSON parse and contract validation; raises Rejected naming the problem."""
    if len(payload) > max_bytes:
        raise Rejected(f"{kind} payload of {len(payload)} bytes exceeds the limit of {max_bytes}")
    if (where := nul_at(payload)) is not None:
        raise Rejected(f"schema: {where}: holds a NUL character (\\u0000), which no text may")
    try:  # fast path: pydantic parses the JSON itself (half the cost of json.loads + model_validate)
        return JSON_KINDS[kind].model_validate_json(payload)
    except ValidationError:
        pass  # a bad message: the steps below name its problem, as they always did
    if nests_deeper(payload, JSON_MAX_DEPTH):  # before json.loads, which would recurse until it fails
        raise Rejected(f"not JSON the contract allows: nested deeper than {JSON_MAX_DEPTH} levels")
    try:
        data = json.loads(payload.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise Rejected(f"not JSON: not UTF-8 ({err.reason} at byte {err.start})") from err
    except json.JSONDecodeError as err:
        raise Rejected(f"not JSON: {err}") from err
    try:
        return JSON_KINDS[kind].model_validate(data)
    except ValidationError as err:
        raise Rejected(f"schema: {validation_problem(err, '(payload)')}") from err



class Ingestor:
    """Validates and stores messages. Not thread-safe: one Ingestor per thread (it owns `storage`)."""

    def __init__(self, storage: Storage, media_dir: Path, limits: LimitsConfig,
                 on_alert: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.storage = storage
        self.limits = limits
        self.on_alert = on_alert
        self.media = MediaAssembler(storage, media_dir, chunk_data_bytes=limits.chunk_data_bytes,
                                    media_max_bytes=limits.media_max_bytes)
        self.counts: dict[str, int] = {"stored": 0, "duplicate": 0, "rejected": 0}
        # devices seen in the database; devices are never removed, and one added later (by the CLI,
        # in another process) is a cache miss, looked up again before a message is rejected
        self._known_devices: set[str] = set()
        self._announce: list[dict[str, Any]] = []  # alert rows of the open batch, announced after commit
        self._now = ""  # receipt time of the open batch (one per batch: a batch spans milliseconds)
        self._debug = False  # whether per-message debug lines are wanted (checked once per batch)
        self._pending: list[tuple[int, str, Alert]] = []  # valid alerts of the open group: (position, topic, alert)
        self._started: list[tuple[list[tuple[int, str, Alert]], Callable[[], list[Any]]]] = []  # groups sent

    def handle(self, topic: str, payload: bytes) -> IngestResult:
        """One message in its own transaction."""
        return self.handle_batch([(topic, payload)])[0]

    def handle_batch(self, messages: Sequence[tuple[str, bytes]]) -> list[IngestResult]:
        """Several messages in one transaction; results in order. Counts and announcements follow the commit."""
        self._announce = []
        self._now = utc_now()
        self._debug = log.bind().is_enabled_for(logging.DEBUG)
        self._pending, self._started = [], []
        try:
            with self.storage.batch():
                found: list[IngestResult | None] = []
                for i, (topic, payload) in enumerate(messages):
                    found.append(self._handle_one(i, topic, payload))
                    if len(self._pending) >= ALERT_GROUP:
                        self._start_alerts()
                results = self._store_alerts(found)
            rows = self._announce
        finally:
            self._announce, self._pending, self._started = [], [], []
        if self.on_alert is not None:  # announced before counted: whoever sees the count can expect the row
            for row in rows:
                self.on_alert(row)
        for result in results:
            self.counts[result.outcome] += 1
        return results

    def _start_alerts(self) -> None:
        """Send the open group of valid alerts to the database; its outcomes are read by `_store_alerts`."""
        group, self._pending = self._pending, []
        if group:
            self._started.append((group, self.storage.start_alerts([alert for _, _, alert in group], self._now)))

    def _store_alerts(self, found: list[IngestResult | None]) -> list[IngestResult]:
        """Finish storing the batch's valid alerts, group by group in order, and put their outcomes in their
        places (None in `found`)."""
        self._start_alerts()
        started, self._started = self._started, []
        for group, finish in started:
            for (position, topic, msg), write in zip(group, finish(), strict=True):
                found[position] = self._alert_outcome(topic, msg, write)
        return found  # type: ignore[return-value] - every placeholder is filled

    def _alert_outcome(self, topic: str, msg: Alert, write: Any) -> IngestResult:
        device_id = msg.device_id
        if write.outcome == "unchanged" and write.row["device_id"] != device_id:
            reason = f"alert id {msg.id} belongs to another device; a device cannot change another's alert"
            self.storage.record_reject(device_id, topic, reason, utc_now())
            log.warning("message rejected", topic=topic, device_id=device_id, reason=reason)
            return IngestResult("rejected", "alert", device_id, reason)
        if write.outcome == "unchanged":
            if self._debug:
                log.debug("alert repeat", alert_id=msg.id, device_id=device_id, rev=msg.rev)
            return IngestResult("duplicate", "alert", device_id)
        if self._debug:  # debug, not info: a line per alert cost a good part of ingest; see "ingest summary"
            log.debug("alert stored", alert_id=msg.id, device_id=device_id, type=msg.type, rev=msg.rev,
                      outcome=write.outcome)
        self._announce.append(write.row)
        return IngestResult("stored", "alert", device_id)

    def _device_known(self, device_id: str) -> bool:
        if device_id in self._known_devices:
            return True
        if self.storage.get_device(device_id) is None:
            return False
        self._known_devices.add(device_id)
        return True

    def _handle_one(self, position: int, topic: str, payload: bytes) -> IngestResult | None:
        """The message's outcome, or None for a valid alert, stored with its group (`_start_alerts`)."""
        device_id = None
        kind = None
        try:
            parsed = parse_topic(topic)
            device_id, kind = parsed.device_id, parsed.kind
            if not self._device_known(device_id):
                raise Rejected(f"unknown device {device_id}")
            return self._dispatch(position, topic, parsed, payload)
        except (Rejected, TopicError) as err:
            reason = (err.reason if isinstance(err, Rejected) else f"topic: {err}").replace("\x00", "\\u0000")
            self.storage.record_reject(device_id, topic, reason, utc_now())
            log.warning("message rejected", topic=topic, device_id=device_id, reason=reason, bytes=len(payload))
            return IngestResult("rejected", kind, device_id, reason)

    def _dispatch(self, position: int, topic: str, parsed: Any, payload: bytes) -> IngestResult | None:
        device_id, kind = parsed.device_id, parsed.kind
        now = self._now
        if kind == "media":
            return self._media(parsed, payload, now)
        if kind not in JSON_KINDS:
            raise Rejected(f"the receiver does not accept {kind!r} messages")
        msg = parse_json_payload(kind, payload, self.limits.alert_json_bytes)
        payload_device = getattr(msg, "device_id", device_id)
        if payload_device != device_id:
            raise Rejected(f"payload device_id {payload_device} differs from topic device {device_id}")
        if isinstance(msg, Alert):
            self._check_media_refs(msg)
            self._pending.append((position, topic, msg))
            return None
        if isinstance(msg, Status):
            self.storage.record_status(msg, now)
        elif isinstance(msg, Telemetry):
            self.storage.record_telemetry(msg, now)
        elif isinstance(msg, CommandResult):
            self.storage.record_command_result(device_id, msg, now)
        return IngestResult("stored", kind, device_id)

    def _check_media_refs(self, alert: Alert) -> None:
        """An alert may name only media its own device uploads: content that another device uploaded and
        this one did not (finished, or chunks under the same media id) is refused. Media not stored yet
        is accepted (alerts travel before their media); the API serves media by uploader, never by alert."""
        for what, ref in (("snapshot", alert.snapshot), ("clip", alert.clip)):
            if ref is None:
                continue
            uploaders = self.storage.media_uploaders(ref.sha256)
            if not uploaders or alert.device_id in uploaders:
                continue
            if any(c["sha256"] == ref.sha256 for c in self.storage.chunk_headers(alert.device_id, ref.id)):
                continue
            raise Rejected(f"{what} {ref.sha256} was uploaded by another device, not by {alert.device_id}")

    def _media(self, parsed: Any, payload: bytes, now: str) -> IngestResult:
        limit = self.limits.chunk_data_bytes + CHUNK_HEADER_MAX
        if len(payload) > limit:
            raise Rejected(f"media chunk of {len(payload)} bytes exceeds the limit of {limit}")
        try:
            header, data = decode_chunk(payload)
        except ChunkError as err:
            raise Rejected(f"chunk: {err}") from err
        out = self.media.accept(parsed.device_id, parsed.media_id, parsed.seq, header, data, now)
        if out.state == "complete":
            log.info("media stored", device_id=parsed.device_id, media_id=parsed.media_id, bytes=header.size,
                     sha256=header.sha256, path=out.path)
        return IngestResult("duplicate" if out.state == "duplicate" else "stored", "media", parsed.device_id)


def store_with_retries(ingestor: Ingestor, messages: Sequence[tuple[str, bytes]], *, retries: int, retry_s: float,
                       wait: Callable[[float], object]) -> tuple[int, bool]:
    """Store `messages` in one transaction (group commit), trying again after a storage error.

    Returns (how many messages, from the first, are done and may be acknowledged; whether storage
    gave up, leaving the rest unacknowledged). All or nothing, unless a message breaks ingest
    unexpectedly (a bug): then they are stored one by one, each in its own transaction, and the one
    that breaks is recorded in `rejects` as `internal error: …`, so it cannot hold back the others.
    `wait(seconds)` is the pause between attempts (the subscriber's interruptible stop wait).
    """
    for attempt in range(retries + 1):
        try:
            ingestor.handle_batch(messages)
            return len(messages), False
        except StorageError as err:
            log.error("storage failed", messages=len(messages), first_topic=messages[0][0], attempt=attempt + 1,
                      error=str(err))
            if attempt == retries:
                return 0, True
            wait(retry_s)
        except Exception:  # noqa: BLE001 - one bad message must not hold back the rest of its batch
            log.exception("batch failed unexpectedly; storing its messages one by one", messages=len(messages))
            return _one_by_one(ingestor, messages, retries, retry_s, wait)
    return 0, True  # not reached: the last attempt returns


def _one_by_one(ingestor: Ingestor, messages: Sequence[tuple[str, bytes]], retries: int, retry_s: float,
                wait: Callable[[float], object]) -> tuple[int, bool]:
    for done, (topic, payload) in enumerate(messages):
        for attempt in range(retries + 1):
            try:
                ingestor.handle(topic, payload)
                break
            except StorageError as err:
                log.error("storage failed", topic=topic, attempt=attempt + 1, error=str(err))
                if attempt == retries:
                    return done, True  # this one and the rest stay unacknowledged
                wait(retry_s)
            except Exception as err:  # noqa: BLE001 - a bug must not stop ingest; keep the evidence
                log.exception("ingest failed unexpectedly", topic=topic)
                try:
                    ingestor.storage.record_reject(None, topic, f"internal error: {err!r}"[:500], utc_now())
                except StorageError:
                    return done, True
                ingestor.counts["rejected"] += 1
                break
    return len(messages), False
