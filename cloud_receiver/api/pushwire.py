"""Wiring of the push: the `webhooks` table → robots, the alert hub → per-robot queues.

`push_ctx` runs for the app's lifetime (entered by `setup_api`'s cleanup context);
`add_webhook` / `register_webhook_cli` configure robots.

The router takes the alerts announced in a burst together (`route_burst`): one read of the
`webhooks` table per burst (nothing else when no robot is configured), canteen and camera names
read once per burst. The table is read again for every burst, so a robot added by the CLI in
another process applies from the next alert on.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import aiohttp
import structlog

from cloud_receiver import rectify
from cloud_receiver.config import resolve_secret
from cloud_receiver.push import AlertNotice, Pusher, PushSettings, Robot

log = structlog.get_logger(__name__)


def robots_for(db: Any, canteen_id: str | None, jurisdiction: str | None) -> list[Robot]:
    """Robots configured for this canteen or for a jurisdiction prefix of its code.

    A DingTalk robot whose `secret_env` is not set in the environment is skipped with an error log.
    """
    rows = db.execute(
        "SELECT id, kind, url, secret_env FROM webhooks WHERE enabled = 1 AND ((scope_kind = 'canteen' AND scope = ?)"
        " OR (scope_kind = 'jurisdiction' AND substr(?, 1, length(scope)) = scope)) ORDER BY id",
        [canteen_id or "", jurisdiction or ""]).fetchall()
    robots = []
    for wid, kind, url, secret_env in rows:
        secret = resolve_secret(secret_env)
        if secret_env and secret is None:
            log.error("push_secret_missing", robot=wid, secret_env=secret_env)
            continue
        robots.append(Robot(wid, kind, url, secret))
    return robots


def notice_for(db: Any, row: dict[str, Any], settings: PushSettings,
               names: _Names | None = None) -> tuple[AlertNotice, str | None]:
    """The notice of a stored alert row, and its canteen's jurisdiction."""
    names = names or _Names(db)
    canteen = names.canteen(row.get("canteen_id"))
    camera = names.camera(row["device_id"], row["camera_id"])
    started = datetime.fromisoformat(row["started_at"].replace("Z", "+00:00"))
    stored = datetime.fromisoformat(row["deadline"].replace("Z", "+00:00")) if row.get("deadline") else None
    deadline = rectify.effective_deadline(stored, started, settings.default_deadline_hours)
    link = None
    if settings.public_base_url and row.get("snapshot_sha256"):
        link = f"{settings.public_base_url.rstrip('/')}/api/v1/media/{row['snapshot_sha256']}"
    notice = AlertNotice(row["id"], (canteen[0] if canteen else None) or row.get("canteen_id") or "未知食堂",
                         camera or row["camera_id"], row["type"], started, deadline, link)
    return notice, canteen[1] if canteen else None


class _Names:
    """Canteen (name, jurisdiction) and camera names, each read once (use one per burst)."""

    def __init__(self, db: Any) -> None:
        self.db = db
        self._canteens: dict[str | None, tuple[str, str] | None] = {}
        self._cameras: dict[tuple[str, str], str | None] = {}

    def canteen(self, canteen_id: str | None) -> tuple[str, str] | None:
        if canteen_id not in self._canteens:
            self._canteens[canteen_id] = self.db.execute("SELECT name, jurisdiction FROM canteens WHERE id = ?",
                                                         [canteen_id]).fetchone()
        return self._canteens[canteen_id]

    def camera(self, device_id: str, camera_id: str) -> str | None:
        key = (device_id, camera_id)
        if key not in self._cameras:
            found = self.db.execute("SELECT name FROM cameras WHERE device_id = ? AND camera_id = ?",
                                    [device_id, camera_id]).fetchone()
            self._cameras[key] = found[0] if found else None
        return self._cameras[key]


def route_burst(db: Any, rows: list[dict[str, Any]], settings: PushSettings, pusher: Pusher) -> int:
    """Queue the notices of new alerts among `rows` for their robots; returns how many were queued.

    Same matching as `robots_for` (canteen scope, or a jurisdiction prefix), with the enabled robots
    read once for the whole burst; with no robot configured nothing else is read.
    """
    new = [r for r in rows if r.get("received_at") == r.get("updated_at")]  # later revisions are not pushed again
    if not new:
        return 0
    hooks = db.execute("SELECT id, scope_kind, scope, kind, url, secret_env FROM webhooks WHERE enabled = 1"
                       " ORDER BY id").fetchall()
    if not hooks:
        return 0
    robots: list[tuple[str, str, Robot]] = []
    for wid, scope_kind, scope, kind, url, secret_env in hooks:
        secret = resolve_secret(secret_env)
        if secret_env and secret is None:
            log.error("push_secret_missing", robot=wid, secret_env=secret_env)
            continue
        robots.append((scope_kind, scope, Robot(wid, kind, url, secret)))
    names = _Names(db)
    queued = 0
    for row in new:
        try:
            notice, jurisdiction = notice_for(db, row, settings, names)
            canteen_id, code = row.get("canteen_id") or "", jurisdiction or ""
            for scope_kind, scope, robot in robots:
                if (scope_kind == "canteen" and scope == canteen_id) or (
                        scope_kind == "jurisdiction" and code.startswith(scope)):
                    pusher.enqueue(robot, notice)
                    queued += 1
        except Exception:  # noqa: BLE001 - one bad row must not stop the push of the others
            log.exception("push_route_failed", alert_id=row.get("id"))
    return queued


@contextlib.asynccontextmanager
async def push_ctx(context: Any, settings: PushSettings) -> AsyncIterator[Pusher | None]:
    """Route every new alert from `context.hub` to its robots while the app runs.

    `context` has `storage` (with `.db`) and `hub`; the running Pusher is also set as `context.pusher`.
    """
    if context.hub is None:
        yield None
        return
    queue = context.hub.subscribe()
    async with aiohttp.ClientSession() as session:
        pusher = Pusher(session, settings)
        context.pusher = pusher

        async def route() -> None:
            while True:
                rows = [await queue.get()]
                while not queue.empty():  # the rest of the burst
                    rows.append(queue.get_nowait())
                try:
                    route_burst(context.storage.db, rows, settings, pusher)
                except Exception:  # noqa: BLE001 - e.g. the database locked: log, keep routing later bursts
                    log.exception("push_route_failed", alerts=len(rows))

        task = asyncio.create_task(route(), name="push-router")
        try:
            yield pusher
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            context.hub.unsubscribe(queue)
            await pusher.close()


def add_webhook(db: Any, webhook_id: str, scope_kind: str, scope: str, kind: str, url: str,
                secret_env: str | None = None) -> None:
    """Configure a robot (idempotent on id). The URL carries the robot's token: keep the DB private."""
    if scope_kind not in ("canteen", "jurisdiction") or kind not in ("wecom", "dingtalk"):
        raise ValueError("scope_kind must be canteen|jurisdiction and kind wecom|dingtalk")
    if not url.startswith(("https://", "http://")):
        raise ValueError("url must be an http(s) URL")
    with db.conn:
        db.execute("INSERT OR REPLACE INTO webhooks (id, scope_kind, scope, kind, url, secret_env, enabled)"
                   " VALUES (?, ?, ?, ?, ?, ?, 1)", [webhook_id, scope_kind, scope, kind, url, secret_env])
    log.info("webhook_configured", id=webhook_id, scope_kind=scope_kind, scope=scope, kind=kind)


def register_webhook_cli(subparsers: Any) -> None:
    """Add `webhook add` to an argparse subparsers object; sets `func(args, db)` like `token`."""
    hook = subparsers.add_parser("webhook", help="WeCom / DingTalk group robots for alert push")
    sub = hook.add_subparsers(dest="webhook_command", required=True)
    add = sub.add_parser("add", help="add or replace a robot")
    add.add_argument("--id", required=True)
    add.add_argument("--scope-kind", required=True, choices=("canteen", "jurisdiction"))
    add.add_argument("--scope", required=True, help="canteen id or jurisdiction code prefix")
    add.add_argument("--kind", required=True, choices=("wecom", "dingtalk"))
    add.add_argument("--url", required=True, help="robot webhook URL (contains its access token)")
    add.add_argument("--secret-env", default=None, help="environment variable holding the DingTalk signing secret")
    add.set_defaults(func=_cli_add)


def _cli_add(args: Any, db: Any) -> int:
    try:
        add_webhook(db, args.id, args.scope_kind, args.scope, args.kind, args.url, args.secret_env)
    except ValueError as err:
        print(f"错误 (error): {err}")
        return 2
    print(f"推送机器人已保存: {args.id}")
    return 0
