"""The box's side of the command channel: checking a command (pure) and the dispatcher on a real outbox."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from bk_contract import Command, CommandResult, topic
from edge_agent.app.commands import CommandDispatcher, CommandFailed, Refusal, check
from edge_agent.outbox.priority import Priority
from edge_agent.outbox.store import Outbox

pytestmark = pytest.mark.unit

DEV = "64050200001180000001"
NOW = datetime(2026, 12, 5, 8, 0, tzinfo=UTC)


def cmd(**kw) -> bytes:
    base = {"id": "c1", "name": "status", "issuer": "ops", "issued_at": NOW, "expires_at": NOW + timedelta(seconds=60)}
    return Command.model_validate(base | kw).model_dump_json().encode()


def raw(**kw) -> bytes:
    base = {"v": 1, "id": "c1", "name": "status", "issuer": "ops", "issued_at": NOW.isoformat(),
            "expires_at": (NOW + timedelta(seconds=60)).isoformat()}
    return json.dumps(base | kw).encode()


def test_a_fresh_command_passes():
    """A command issued now and valid for a minute is accepted as it is."""
    got = check(cmd(), NOW)
    assert isinstance(got, Command) and got.id == "c1" and got.name == "status"


@pytest.mark.parametrize(("payload", "reason"), [
    (cmd(expires_at=NOW - timedelta(seconds=1)), "expired"),
    (cmd(expires_at=NOW), "expired"),
    (cmd(issued_at=NOW + timedelta(minutes=5), expires_at=NOW + timedelta(minutes=6)), "issued in the future"),
    (cmd(expires_at=NOW + timedelta(days=2)), "valid for longer"),
    (raw(name="format_disk"), "invalid command: name"),
    (raw(issuer=""), "invalid command: issuer"),
    (raw(extra=1), "invalid command: extra"),
])
def test_bad_commands_are_refused_with_the_reason(payload, reason):
    """Expired, future, over-long, unknown and malformed commands are refused, naming what is wrong."""
    got = check(payload, NOW)
    assert isinstance(got, Refusal) and got.command_id == "c1" and reason in got.reason


def test_unreadable_payload_has_no_id_to_answer():
    """Bytes that are not JSON, or lack a well-formed id, are refused without an id."""
    assert check(b"\xff\x00", NOW) == Refusal(None, check(b"\xff\x00", NOW).reason)
    assert check(raw(id="bad id!"), NOW).command_id is None


@pytest.fixture
def outbox(tmp_path):
    box = Outbox(tmp_path / "agent.db", device_id=DEV)
    yield box
    box.close()


def _results(outbox: Outbox) -> list[tuple[CommandResult, int]]:
    rows = outbox.db.execute("SELECT payload, priority FROM messages WHERE topic = ? ORDER BY seq",
                             [topic(DEV, "cmd/result")]).fetchall()
    return [(CommandResult.model_validate_json(p), prio) for p, prio in rows]


def test_dispatcher_answers_runs_and_refuses_replays(outbox):
    """A command runs once; its result is queued at alert priority; the same id again is a replay."""
    calls = []
    d = CommandDispatcher(DEV, outbox, {"status": lambda c: calls.append(c.id) or {"cameras": 2}}, clock=lambda: NOW)
    first = d.handle(cmd())
    again = d.handle(cmd())
    assert calls == ["c1"]
    assert first == CommandResult(id="c1", ok=True, data={"cameras": 2})
    assert again is not None and not again.ok and "replayed" in again.error
    assert [(r.ok, p) for r, p in _results(outbox)] == [(True, Priority.ALERT), (False, Priority.ALERT)]


def test_replay_is_refused_after_a_restart(outbox, tmp_path):
    """The ids seen are kept in the outbox database: a new dispatcher on it refuses the replay."""
    CommandDispatcher(DEV, outbox, {"status": lambda c: {}}, clock=lambda: NOW).handle(cmd())
    outbox.close()
    reopened = Outbox(tmp_path / "agent.db", device_id=DEV)
    try:
        d = CommandDispatcher(DEV, reopened, {"status": lambda c: {}}, clock=lambda: NOW)
        got = d.handle(cmd())
        assert got is not None and "replayed" in got.error
    finally:
        reopened.close()


def test_unsupported_and_failing_commands_say_why(outbox):
    """A name without a handler lists what the box supports; a handler's failure is reported as its message."""
    def broken(c):
        raise CommandFailed("camera cam9 is offline")

    d = CommandDispatcher(DEV, outbox, {"status": lambda c: {}, "snapshot_now": broken}, clock=lambda: NOW)
    unsupported = d.handle(cmd(id="c2", name="live_start"))
    failed = d.handle(cmd(id="c3", name="snapshot_now", camera_id="cam9"))
    assert unsupported is not None and "does not support 'live_start'" in unsupported.error
    assert "snapshot_now, status" in unsupported.error
    assert failed == CommandResult(id="c3", ok=False, error="camera cam9 is offline")
    assert d.counts == {"received": 0, "done": 0, "failed": 1, "refused": 1}


def test_ids_are_forgotten_once_expired(outbox):
    """The replay list does not grow forever: an id is dropped once its command has expired."""
    assert outbox.first_sight("old", NOW.timestamp() + 10, NOW.timestamp())
    assert outbox.first_sight("new", NOW.timestamp() + 100, NOW.timestamp() + 20)
    assert [r[0] for r in outbox.db.execute("SELECT id FROM commands_seen")] == ["new"]


def test_worker_thread_handles_submitted_payloads(outbox):
    """Payloads submitted from another thread are handled by the dispatcher's own thread, in order."""
    d = CommandDispatcher(DEV, outbox, {"status": lambda c: {"n": int(c.id[1:])}}, clock=lambda: NOW)
    d.start()
    for n in range(5):
        d.submit(cmd(id=f"c{n}"))
    d.stop(5)
    assert [r.data["n"] for r, _ in _results(outbox)] == list(range(5))
    assert d.counts["received"] == 5 and d.counts["done"] == 5
