"""Push wiring: the push outbox → robots, woken by the alert hub.

`push_ctx` runs for the app's lifetime (entered by `setup_api`'s cleanup context);
`add_webhook` / `register_webhook_cli` configure robots.

What is owed is decided when an alert is stored: the storage writes one `push_outbox` row per
responsible robot in the alert's own transaction (`cloud_receiver/storage/push_outbox.py`). The router
here only delivers: when it starts it takes every unsent row of this receiver (so pushes owed
before a stop or a crash go out after the restart), and after that, woken by each burst of
announced alerts (at most every `ROUTE_GAP_S`), the rows added since (`Router.route`: one read of the
outbox, one of the robots, one of the alerts per burst; canteen and camera names read once per
burst). A row is marked sent when its robot accepted the message.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import sqlalchemy as sa
import structlog

from bk_common.logs import say
from cloud_receiver.config import resolve_secret
from cloud_receiver.push.robots import AlertNotice, Pusher, PushSettings, Robot
from cloud_receiver.storage.db import Db
from cloud_receiver.storage.push_outbox import LEASE_S, Owed, claim, mark_failed, mark_sent, robot_matches
from cloud_receiver.storage.schema import alerts as alerts_table
from cloud_receiver.storage.schema import cameras, canteens, webhooks
from cloud_receiver.storage.sqlite import utc_now
from cloud_receiver.workflow import rectify

log = structlog.get_logger(__name__)


def _robot(wid: str, kind: str, url: str, secret_env: str | None) -> Robot | None:
    """A configured robot; None (with an error log) when its DingTalk secret is not in the environment."""
    secret = resolve_secret(secret_env)
    if secret_env and secret is None:
        log.error("push_secret_missing", robot=wid, secret_env=secret_env)
        return None
    return Robot(wid, kind, url, secret)


def robots_for(db: Db, canteen_id: str | None, jurisdiction: str | None) -> list[Robot]:
    """Enabled robots responsible for this canteen (its id, or a prefix of its jurisdiction code).

    A DingTalk robot whose `secret_env` is not set in the environment is skipped with an error log.
    """
    w = webhooks.c
    rows = db.all(sa.select(w.id, w.scope_kind, w.scope, w.kind, w.url, w.secret_env).where(w.enabled == 1)
                  .order_by(w.id))
    found = (_robot(r["id"], r["kind"], r["url"], r["secret_env"]) for r in rows
             if robot_matches(r["scope_kind"], r["scope"], canteen_id, jurisdiction))
    return [r for r in found if r is not None]


def notice_for(db: Db, row: dict[str, Any], settings: PushSettings, names: _Names | None = None) -> AlertNotice:
    """The notice of a stored alert row."""
    names = names or _Names(db)
    canteen = names.canteen(row.get("canteen_id"))
    camera = names.camera(row["device_id"], row["camera_id"])
    started = datetime.fromisoformat(row["started_at"].replace("Z", "+00:00"))
    stored = datetime.fromisoformat(row["deadline"].replace("Z", "+00:00")) if row.get("deadline") else None
    deadline = rectify.effective_deadline(stored, started, settings.default_deadline_hours)
    link = None
    if settings.public_base_url:  # the alert's console page (after login, back to the alert)
        link = f"{settings.public_base_url.rstrip('/')}/alerts/{row['id']}"
    return AlertNotice(row["id"], canteen or row.get("canteen_id") or "未知食堂",
                       camera or row["camera_id"], row["type"], started, deadline, link)


class _Names:
    """Canteen and camera names, each read once (use one per burst)."""

    def __init__(self, db: Db) -> None:
        self.db = db
        self._canteens: dict[str | None, str | None] = {}
        self._cameras: dict[tuple[str, str], str | None] = {}

    def canteen(self, canteen_id: str | None) -> str | None:
        if canteen_id not in self._canteens:
            self._canteens[canteen_id] = self.db.scalar(sa.select(canteens.c.name).where(canteens.c.id == canteen_id))
        return self._canteens[canteen_id]

    def camera(self, device_id: str, camera_id: str) -> str | None:
        key = (device_id, camera_id)
        if key not in self._cameras:
            self._cameras[key] = self.db.scalar(sa.select(cameras.c.name).where(
                cameras.c.device_id == device_id, cameras.c.camera_id == camera_id))
        return self._cameras[key]


RESCAN_S = 60.0  # how often everything still owed is looked at again (robots re-enabled, failed reads,
# rows whose receiver died: their lease runs out and this receiver claims them); at most a quarter of the
# lease, so the claims this receiver holds are renewed well before they run out


ROUTE_GAP_S = 0.2  # at most this often a look at the rows added since (one claim per gap under a flood of alerts:
# a claim per burst took half the event loop's time at 8,000 alerts/s; robots take 20 messages a minute anyway)


def rescan_s(lease_s: float) -> float:
    return min(RESCAN_S, lease_s / 4)


@dataclasses.dataclass
class Router:
    """Hands owed pushes to the pusher, each once while it is in the pusher's hands.

    `route(after_id)` claims the rows above `after_id` (a burst's new rows; 0 = everything still
    owed: this receiver's, and those whose claim ran out) and returns the highest id it read. A row is `handed` until its robot accepts it
    (`sent`); a row that cannot be routed now (robot disabled or removed or without its secret, a
    bad alert row) is logged once and looked at again by the next full scan.
    """

    storage: Any
    settings: PushSettings
    pusher: Any
    lease_s: float = LEASE_S  # how long a claim lasts unless renewed (config push.claim_lease_s)
    handed: set[int] = dataclasses.field(default_factory=set)
    reported: set[int] = dataclasses.field(default_factory=set)

    def route(self, after_id: int = 0) -> int:
        db = self.storage.sql
        while owed := claim(db, self.storage.push_owner, datetime.now(UTC), after_id, lease_s=self.lease_s):
            after_id = owed[-1].id
            todo = [o for o in owed if o.id not in self.handed]
            if todo:
                self._hand(db, todo)
            if len(owed) < 1000:
                break
        return after_id

    def _hand(self, db: Db, owed: list[Owed]) -> None:
        w = webhooks.c
        hooks = db.all(sa.select(w.id, w.kind, w.url, w.secret_env)
                       .where(w.enabled == 1, w.id.in_(sorted({o.robot_id for o in owed}))))
        robots = {h["id"]: _robot(h["id"], h["kind"], h["url"], h["secret_env"]) for h in hooks}
        found = db.all(sa.select(alerts_table).where(alerts_table.c.id.in_(sorted({o.alert_id for o in owed}))))
        alerts = {r["id"]: r for r in found}
        names = _Names(db)
        for o in owed:
            robot, row = robots.get(o.robot_id), alerts.get(o.alert_id)
            try:
                if robot is None or row is None:
                    raise LookupError("robot disabled, removed or without its secret" if row else "alert missing")
                notice = notice_for(db, row, self.settings, names)
            except Exception as err:  # noqa: BLE001 - one bad row must not stop the push of the others
                if o.id not in self.reported:
                    self.reported.add(o.id)
                    log.error("push_not_routable", outbox_id=o.id, robot=o.robot_id, alert_id=o.alert_id,
                              reason=str(err) if isinstance(err, LookupError) else repr(err),
                              retry_every_s=rescan_s(self.lease_s))
                continue
            self.handed.add(o.id)
            self.pusher.enqueue(robot, dataclasses.replace(notice, outbox_id=o.id))

    def sent(self, ids: list[int]) -> None:
        self.handed.difference_update(ids)
        mark_sent(self.storage.sql, ids, utc_now())

    def failed(self, ids: list[int], error: str) -> None:
        mark_failed(self.storage.sql, ids, error)  # still handed: the pusher retries them itself


@contextlib.asynccontextmanager
async def push_ctx(context: Any, settings: PushSettings, lease_s: float = LEASE_S) -> AsyncIterator[Pusher | None]:
    """Route every new alert from `context.hub` to its robots while the app runs.

    `context` has `storage` (with `.sql`) and `hub`; the running Pusher is also set as `context.pusher`.
    `lease_s`: how long this receiver's claims last unless renewed (every `rescan_s(lease_s)`).
    """
    if context.hub is None:
        yield None
        return
    sub = context.hub.subscribe()
    storage = context.storage
    async with aiohttp.ClientSession() as session:
        router = Router(storage, settings, None, lease_s=lease_s)
        every = rescan_s(lease_s)
        pusher = Pusher(session, settings, on_sent=router.sent, on_failed=router.failed)
        router.pusher = pusher
        context.pusher = pusher

        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()

        async def first_of(timeout: float, *waits: asyncio.Future[Any]) -> set[asyncio.Future[Any]]:
            """Wait up to `timeout` for the first of `waits`, or for stopping; what is done (the rest is cancelled).
            asyncio.wait, not wait_for: Python 3.11's wait_for loses a cancellation that meets a finished get()."""
            futures = {*waits, asyncio.ensure_future(stopping.wait())}
            try:
                done, _ = await asyncio.wait(futures, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for future in futures:
                    future.cancel()
            return done

        async def woken(timeout: float) -> bool:
            """Whether an announcement came within `timeout` (False at once when stopping)."""
            get = asyncio.ensure_future(sub.queue.get())
            return get in await first_of(timeout, get)

        async def route() -> None:
            high = 0  # the highest outbox id read; 0 first: everything still owed
            full_scan = False
            last_full = last_route = loop.time()
            while not stopping.is_set():
                # a full scan at least every `every` seconds, even under a steady flood of new alerts: it renews
                # this receiver's claims and takes over rows whose receiver died
                full_scan = full_scan or loop.time() - last_full >= every
                try:
                    high = max(high, router.route(0 if full_scan else high))
                    if full_scan:
                        last_full = loop.time()
                except Exception:  # noqa: BLE001 - e.g. the database locked: log, try again later
                    log.exception("push_route_failed", after_id=0 if full_scan else high)
                last_route = loop.time()
                # The rows themselves are in the outbox: an announcement is only the wake-up.
                full_scan = not await woken(every)  # quiet for a while: look at everything still owed
                if not full_scan and (gap := ROUTE_GAP_S - (loop.time() - last_route)) > 0:
                    await first_of(gap)  # the rest of the burst comes meanwhile
                while not sub.queue.empty():  # the rest of the burst: one read of the outbox for all of it
                    sub.queue.get_nowait()

        task = asyncio.create_task(route(), name="push-router")
        try:
            yield pusher
        finally:
            stopping.set()
            await asyncio.wait({task}, timeout=5)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            context.hub.unsubscribe(sub)
            await pusher.close()


def add_webhook(db: Db, webhook_id: str, scope_kind: str, scope: str, kind: str, url: str,
                secret_env: str | None = None) -> None:
    """Configure a robot (idempotent on id). The URL carries the robot's token: keep the DB private."""
    if scope_kind not in ("canteen", "jurisdiction") or kind not in ("wecom", "dingtalk"):
        raise ValueError("scope_kind must be canteen|jurisdiction and kind wecom|dingtalk")
    if not url.startswith(("https://", "http://")):
        raise ValueError("url must be an http(s) URL")
    values = {"scope_kind": scope_kind, "scope": scope, "kind": kind, "url": url, "secret_env": secret_env, "enabled": 1}
    with db.write() as conn:
        if conn.execute(webhooks.update().where(webhooks.c.id == webhook_id).values(**values)).rowcount == 0:
            conn.execute(webhooks.insert().values(id=webhook_id, **values))
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
        say(f"错误 (error): {err}")
        return 2
    say(f"推送机器人已保存: {args.id}")
    return 0
