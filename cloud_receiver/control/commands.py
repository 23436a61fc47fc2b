"""Commands to boxes (`bk/v1/{device_id}/cmd`): who may send which, the row kept of each, its result.

A command is stored (table `commands`) before it is published, so the console can show it and its
result (`command_results`, written by ingest from `cmd/result`) whichever receiver gets the answer.
The box checks expiry, replay and origin itself (`edge_agent/app/commands.py`).
"""

from __future__ import annotations

import asyncio
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from bk_contract import COMMAND_NAMES, Command, topic
from cloud_receiver.admin.auth import Principal
from cloud_receiver.control.publisher import PublishFailed
from cloud_receiver.storage.db import Db, iso
from cloud_receiver.storage.schema import command_results, commands, devices, media, media_chunks

# who may send what (the authorization matrix tests these through the API)
VIEWING = frozenset({"status", "snapshot_now", "live_start", "live_stop", "playback"})
MAY_SEND: dict[str, frozenset[str]] = {
    "admin": frozenset(COMMAND_NAMES),
    "regulator": VIEWING | {"collect_mark"},  # of boxes in their jurisdiction; collect_mark: an alert judged a false alarm
    "canteen": VIEWING,  # of their own boxes
}
TTL_DEFAULT_S = 60
TTL_MAX_S = 3600


class CommandRefused(Exception):
    """The caller may not send this command (the message says why)."""


@dataclass(frozen=True, slots=True)
class Issued:
    command: Command
    row: dict[str, Any]


def new_command(name: str, issuer: str, now: datetime, *, camera_id: str | None = None,
                args: dict[str, Any] | None = None, ttl_s: int = TTL_DEFAULT_S) -> Command:
    """A fresh command (random id) valid for `ttl_s` seconds (pure but for the id)."""
    return Command(id=f"c{secrets.token_hex(12)}", name=name, issuer=issuer[:64], issued_at=now,
                   expires_at=now + timedelta(seconds=ttl_s), camera_id=camera_id, args=args or {})


def check_may_send(p: Principal, name: str) -> None:
    if name not in MAY_SEND.get(p.role, frozenset()):
        raise CommandRefused(f"role {p.role} may not send {name!r}")


def record(db: Db, device_id: str, cmd: Command) -> dict[str, Any]:
    """Keep the command before it is published."""
    row = {"device_id": device_id, "id": cmd.id, "name": cmd.name, "camera_id": cmd.camera_id,
           "args_json": json.dumps(cmd.args, ensure_ascii=False), "issuer": cmd.issuer,
           "issued_at": iso(cmd.issued_at), "expires_at": iso(cmd.expires_at)}
    with db.write() as conn:
        conn.execute(commands.insert().values(**row))
    return row


def published(db: Db, device_id: str, command_id: str, at: datetime, error: str | None = None) -> None:
    """The broker acknowledged the command (or refused it: `error`)."""
    values = {"publish_error": error[:500]} if error else {"published_at": iso(at)}
    with db.write() as conn:
        conn.execute(commands.update().where(commands.c.device_id == device_id, commands.c.id == command_id)
                     .values(**values))


async def deliver(db: Db, publisher: Any, device_id: str, cmd: Command) -> None:
    """Record the command, publish it (the broker's PUBACK awaited off the event loop) and record that;
    raises PublishFailed (recorded as the command's `publish_error`) when the broker did not take it."""
    record(db, device_id, cmd)
    try:
        await asyncio.get_running_loop().run_in_executor(
            None, publisher.publish, topic(device_id, "cmd"), cmd.model_dump_json().encode())
    except PublishFailed as err:
        published(db, device_id, cmd.id, datetime.now(UTC), error=str(err))
        raise
    published(db, device_id, cmd.id, datetime.now(UTC))


class NotConnected(PublishFailed):
    """This receiver has no MQTT connection to send commands through."""


async def send(db: Db, publisher: Any, p: Principal, device_id: str, name: str, now: datetime, *,
               camera_id: str | None = None, args: dict[str, Any] | None = None, ttl_s: int = TTL_DEFAULT_S) -> Command:
    """Send a command as `p` (the caller checked that `p` may see the device): CommandRefused when its role
    may not send it, NotConnected without a publisher, PublishFailed when the broker did not take it."""
    check_may_send(p, name)
    if publisher is None:
        raise NotConnected("this receiver has no MQTT connection to send commands through")
    cmd = new_command(name, p.name, now, camera_id=camera_id, args=args, ttl_s=ttl_s)
    await deliver(db, publisher, device_id, cmd)
    return cmd


def device_canteen(db: Db, device_id: str) -> str | None:
    """The canteen of a device; raises LookupError for an unknown device."""
    row = db.one(sa.select(devices.c.canteen_id).where(devices.c.id == device_id))
    if row is None:
        raise LookupError(device_id)
    return row["canteen_id"]


def view(db: Db, device_id: str, command_id: str, now: datetime) -> dict[str, Any] | None:
    """A command with its state: pending, ok, failed, expired (no answer in time) or not_sent."""
    c, r = commands.c, command_results.c
    row = db.one(sa.select(commands, r.ok, r.error, r.data_json, r.at.label("answered_at"))
                 .select_from(commands.outerjoin(command_results, sa.and_(r.device_id == c.device_id,
                                                                          r.command_id == c.id)))
                 .where(c.device_id == device_id, c.id == command_id))
    if row is None:
        return None
    if row["ok"] is not None:
        state = "ok" if row["ok"] else "failed"
    elif row["publish_error"]:
        state = "not_sent"
    elif row["expires_at"] <= (iso(now) or ""):
        state = "expired"
    else:
        state = "pending"
    data = json.loads(row["data_json"]) if row["data_json"] else {}
    return {"id": row["id"], "device_id": row["device_id"], "name": row["name"], "camera_id": row["camera_id"],
            "args": json.loads(row["args_json"] or "{}"), "issuer": row["issuer"], "issued_at": row["issued_at"],
            "expires_at": row["expires_at"], "published_at": row["published_at"], "state": state,
            "error": row["error"] or row["publish_error"] or "", "answered_at": row["answered_at"],
            "data": data, "upload": upload_progress(db, device_id, data)}


def upload_progress(db: Db, device_id: str, data: dict[str, Any]) -> dict[str, Any] | None:
    """For a command that produced media (snapshot_now, playback): how much of it the receiver has."""
    media_id, sha = data.get("media_id"), data.get("sha256")
    if not isinstance(media_id, str) or not isinstance(sha, str):
        return None
    done = db.one(sa.select(media.c.bytes).where(media.c.device_id == device_id, media.c.id == media_id))
    if done is not None:
        return {"done": True, "received_bytes": done["bytes"], "bytes": data.get("bytes"), "sha256": sha}
    got = db.one(sa.select(sa.func.count().label("n"), sa.func.coalesce(sa.func.sum(sa.func.length(media_chunks.c.data)), 0)
                           .label("size")).where(media_chunks.c.device_id == device_id,
                                                 media_chunks.c.media_id == media_id))
    return {"done": False, "received_bytes": int(got["size"]) if got else 0, "bytes": data.get("bytes"), "sha256": sha}
