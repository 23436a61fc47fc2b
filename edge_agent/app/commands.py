"""Commands from the cloud (`bk/v1/{device_id}/cmd`) and their results (`cmd/result`), docs/mqtt.md.

Only the receivers may publish to a box's `cmd` topic (the broker's ACL, `cloud_receiver/admin/dynsec.py`):
that is the command's proof of origin. On top of it the box refuses, with the reason on `cmd/result`:
a payload that is not a `Command`, one past its `expires_at` or valid for longer than `MAX_TTL_S`,
one issued in the future (beyond `CLOCK_SKEW_S`), a replay (the id was seen before; ids are kept in
the outbox database until they expire, so a restart does not forget them), and a name this box has
no handler for. `check` is the pure part; `CommandDispatcher` runs handlers on its own thread (the
MQTT thread only hands payloads over) and queues each result in the outbox at alert priority.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import structlog
from pydantic import Field, TypeAdapter, ValidationError

import bk_contract
from bk_contract import Command, CommandResult
from edge_agent.outbox.priority import Priority

log = structlog.get_logger(__name__)

MAX_TTL_S = 24 * 3600.0  # a command valid for longer is refused: a leaked one must not live for long
CLOCK_SKEW_S = 30.0  # how far in the future `issued_at` may be (the box's clock may lag the cloud's)
QUEUE_MAX = 64  # commands waiting for the worker; more are refused at once ("busy")

Handler = Callable[[Command], dict[str, Any]]


class CommandFailed(Exception):
    """A handler could not do what was asked; the message goes back to the cloud."""


@dataclass(frozen=True, slots=True)
class Refusal:
    command_id: str | None  # None when the payload has no readable id (then nothing can be answered)
    reason: str


def check(raw: bytes, now: datetime) -> Command | Refusal:
    """Parse and check the timing of one command payload (pure; replay and name are checked later)."""
    try:
        cmd = Command.model_validate_json(raw)
    except ValidationError as err:
        problem = err.errors()[0]
        where = ".".join(str(p) for p in problem["loc"]) or "payload"
        return Refusal(_loose_id(raw), f"invalid command: {where}: {problem['msg']}")
    if cmd.expires_at <= now:
        return Refusal(cmd.id, f"expired at {cmd.expires_at.isoformat()}")
    if cmd.issued_at - now > timedelta(seconds=CLOCK_SKEW_S):
        return Refusal(cmd.id, f"issued in the future ({cmd.issued_at.isoformat()}); check the clocks")
    if cmd.expires_at - max(cmd.issued_at, now) > timedelta(seconds=MAX_TTL_S):
        return Refusal(cmd.id, f"valid for longer than {int(MAX_TTL_S)} s")
    return cmd


_ID = TypeAdapter(Annotated[str, Field(pattern=r"^[0-9A-Za-z_-]{1,64}$")])


def _loose_id(raw: bytes) -> str | None:
    """The `id` of a payload that failed validation, if it has a well-formed one (to answer it)."""
    try:
        value = json.loads(raw).get("id")
        return _ID.validate_python(value)
    except (ValueError, AttributeError, RecursionError, ValidationError):
        return None


class CommandDispatcher:
    """Receives `cmd` payloads (any thread), runs the handler of each on its own thread, answers on `cmd/result`."""

    def __init__(self, device_id: str, outbox: Any, handlers: dict[str, Handler],
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.device_id = device_id
        self.outbox = outbox
        self.handlers = dict(handlers)
        self.clock = clock
        self.counts = {"received": 0, "done": 0, "failed": 0, "refused": 0}
        self._queue: queue.Queue[bytes | None] = queue.Queue(QUEUE_MAX)
        self._thread: threading.Thread | None = None
        self._log = log.bind(device=device_id)

    def submit(self, raw: bytes) -> None:
        """Hand a payload over (from the MQTT thread); never blocks."""
        self.counts["received"] += 1
        try:
            self._queue.put_nowait(raw)
        except queue.Full:
            self._answer(check(raw, self.clock()), ok=False, error="busy: too many commands waiting")

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="bk-commands", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)

    def _run(self) -> None:
        while (raw := self._queue.get()) is not None:
            try:
                self.handle(raw)
            except Exception:  # noqa: BLE001 - one bad command must not stop the worker
                self._log.exception("command_crashed")

    def handle(self, raw: bytes) -> CommandResult | None:
        """Check, run and answer one command; returns the result queued (None: nothing to answer)."""
        now = self.clock()
        found = check(raw, now)
        if isinstance(found, Refusal):
            return self._answer(found, ok=False, error=found.reason)
        cmd = found
        if not self.outbox.first_sight(cmd.id, cmd.expires_at.timestamp(), now.timestamp()):
            return self._answer(Refusal(cmd.id, "replay"), ok=False, error=f"replayed: command {cmd.id} was already received")
        handler = self.handlers.get(cmd.name)
        if handler is None:
            return self._answer(Refusal(cmd.id, "unknown"), ok=False,
                                error=f"this box does not support {cmd.name!r} (it supports {', '.join(sorted(self.handlers))})")
        self._log.info("command_received", id=cmd.id, name=cmd.name, issuer=cmd.issuer, camera=cmd.camera_id)
        try:
            data = handler(cmd)
        except CommandFailed as err:
            self.counts["failed"] += 1
            self._log.warning("command_failed", id=cmd.id, name=cmd.name, error=str(err))
            return self._queue_result(CommandResult(id=cmd.id, ok=False, error=str(err)[:500]))
        self.counts["done"] += 1
        return self._queue_result(CommandResult(id=cmd.id, ok=True, data=data))

    def _answer(self, refusal: Refusal, *, ok: bool, error: str) -> CommandResult | None:
        self.counts["refused"] += 1
        self._log.warning("command_refused", id=refusal.command_id, reason=error)
        if refusal.command_id is None:
            return None
        return self._queue_result(CommandResult(id=refusal.command_id, ok=ok, error=error[:500]))

    def _queue_result(self, result: CommandResult) -> CommandResult:
        self.outbox.add_message(bk_contract.topic(self.device_id, "cmd/result"), result.model_dump_json().encode(),
                                qos=1, priority=Priority.ALERT)
        return result
