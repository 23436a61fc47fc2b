"""Alert push to 企业微信 (WeCom) and 钉钉 (DingTalk) group robots.

Message text and DingTalk signing are pure functions. Delivery runs one asyncio task per robot:
both services accept at most 20 messages a minute per robot, so each robot has a rolling-window
limiter; when few sends are left in the window and several alerts wait, they are merged into one
summary message. A failed send (HTTP error, network error, or `errcode != 0`) is retried with
exponential back-off; its alerts go back to the front of the queue, so nothing is dropped. What a
notice owes is also kept in the database (`cloud_receiver/storage/push_outbox.py`): `on_sent` and `on_failed`
report each send's outbox rows, and what is still queued at shutdown is sent after the restart.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import hashlib
import hmac
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Literal

import aiohttp
import structlog

from bk_contract.violations import type_name

log = structlog.get_logger(__name__)

CHINA_TZ = timezone(timedelta(hours=8), "CST")
RobotKind = Literal["wecom", "dingtalk"]
TEXT_BYTES_MAX = 1800  # WeCom rejects text content over 2048 bytes; keep a margin


class PushError(Exception):
    """A robot refused or failed a message; retried with back-off."""


@dataclass(frozen=True, slots=True)
class Robot:
    id: str
    kind: RobotKind
    url: str
    secret: str | None = None  # DingTalk signing secret, resolved from the webhook's `secret_env`


@dataclass(frozen=True, slots=True)
class AlertNotice:
    """What a push message says about one alert."""

    alert_id: str
    canteen: str
    camera: str
    type: str
    started_at: datetime
    deadline: datetime | None = None
    link: str | None = None
    outbox_id: int | None = None  # its push_outbox row, marked sent once a robot accepted it


@dataclass(frozen=True, slots=True)
class PushSettings:
    limit: int = 20  # messages per robot per window
    window_s: float = 60.0
    merge_when_left: int = 5  # merge waiting alerts once this few sends are left in the window
    retry_base_s: float = 2.0
    retry_max_s: float = 300.0
    timeout_s: float = 10.0
    public_base_url: str = ""  # e.g. https://bk.example.gov.cn: pushes link to the console page of the alert
    default_deadline_hours: float | None = 24.0


def _fmt(t: datetime, tz: timezone) -> str:
    return t.astimezone(tz).strftime("%Y-%m-%d %H:%M")


def alert_text(n: AlertNotice, tz: timezone = CHINA_TZ) -> str:
    """One alert as a Simplified Chinese robot message."""
    text = f"【明厨亮灶预警】{n.canteen} {n.camera} 检测到 {type_name(n.type)}，时间 {_fmt(n.started_at, tz)}"
    text += f"，请于 {_fmt(n.deadline, tz)} 前整改。" if n.deadline else "，请尽快整改。"
    if n.link:
        text += f"查看：{n.link}"
    return text


def summary_text(notices: Sequence[AlertNotice], tz: timezone = CHINA_TZ,
                 max_bytes: int = TEXT_BYTES_MAX) -> str:
    """Several alerts merged into one message, listing as many as fit in `max_bytes`."""
    head = f"【明厨亮灶预警汇总】共 {len(notices)} 条预警，请及时整改："
    lines = [head]
    size = len(head.encode())
    shown = 0
    for i, n in enumerate(notices, 1):
        line = f"{i}. {n.canteen} {n.camera} {type_name(n.type)} {_fmt(n.started_at, tz)}"
        if n.deadline:
            line += f"（{_fmt(n.deadline, tz)} 前整改）"
        if size + len(line.encode()) + 80 > max_bytes:
            break
        lines.append(line)
        size += len(line.encode()) + 1
        shown += 1
    if shown < len(notices):
        lines.append(f"……另有 {len(notices) - shown} 条，请登录平台查看。")
    return "\n".join(lines)


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    """DingTalk robot signature: base64(HMAC-SHA256(secret, "timestamp\\nsecret")), URL-encoded."""
    digest = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256).digest()
    return urllib.parse.quote_plus(base64.b64encode(digest).decode())


def robot_url(robot: Robot, timestamp_ms: int) -> str:
    """The URL to post to: DingTalk robots with a secret get `timestamp=&sign=` appended."""
    if robot.kind != "dingtalk" or not robot.secret:
        return robot.url
    sep = "&" if "?" in robot.url else "?"
    return f"{robot.url}{sep}timestamp={timestamp_ms}&sign={dingtalk_sign(robot.secret, timestamp_ms)}"


def robot_payload(text: str) -> dict:
    """JSON body of a text message; WeCom and DingTalk robots share this shape."""
    return {"msgtype": "text", "text": {"content": text}}


class RateWindow:
    """At most `limit` events in any rolling `window_s` seconds."""

    def __init__(self, limit: int, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window_s, self.clock = limit, window_s, clock
        self._sent: collections.deque[float] = collections.deque()

    def _trim(self, now: float) -> None:
        while self._sent and now - self._sent[0] >= self.window_s:
            self._sent.popleft()

    def available(self) -> int:
        self._trim(self.clock())
        return self.limit - len(self._sent)

    def wait_s(self) -> float:
        """Seconds until one more event is allowed (0 if now)."""
        now = self.clock()
        self._trim(now)
        if len(self._sent) < self.limit:
            return 0.0
        return max(0.0, self._sent[0] + self.window_s - now)

    def record(self) -> None:
        self._sent.append(self.clock())


@dataclass(slots=True)
class RobotQueue:
    """Alerts waiting for one robot and the counters of what happened to them."""

    robot: Robot
    window: RateWindow
    pending: collections.deque[AlertNotice] = field(default_factory=collections.deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    inflight: int = 0
    sent_messages: int = 0
    delivered_alerts: int = 0
    failures: int = 0


class Pusher:
    """Queues alert notices per robot and delivers them within the robots' limits."""

    def __init__(self, session: aiohttp.ClientSession, settings: PushSettings = PushSettings(),
                 clock: Callable[[], float] = time.monotonic,
                 on_sent: Callable[[list[int]], None] | None = None,
                 on_failed: Callable[[list[int], str], None] | None = None) -> None:
        self.session, self.settings, self.clock = session, settings, clock
        self.on_sent, self.on_failed = on_sent, on_failed  # get the outbox ids of each send's notices
        self.queues: dict[str, RobotQueue] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def enqueue(self, robot: Robot, notice: AlertNotice) -> None:
        q = self.queues.get(robot.id)
        if q is None or q.robot != robot:
            if q is None:
                q = RobotQueue(robot, RateWindow(self.settings.limit, self.settings.window_s, self.clock))
                self.queues[robot.id] = q
            else:
                q.robot = robot  # configuration changed; keep queue and window
        q.pending.append(notice)
        q.wake.set()
        if robot.id not in self._tasks or self._tasks[robot.id].done():
            self._tasks[robot.id] = asyncio.create_task(self._run(q), name=f"push-{robot.id}")

    def pending_count(self) -> int:
        return sum(len(q.pending) + q.inflight for q in self.queues.values())

    async def drain(self, timeout_s: float) -> bool:
        """Wait until every queue is empty; True if it got there within `timeout_s`."""
        deadline = self.clock() + timeout_s
        while self.pending_count() and self.clock() < deadline:
            await asyncio.sleep(0.01)
        return self.pending_count() == 0

    async def close(self) -> None:
        """Stop the robot tasks; log what could not be delivered (never silently)."""
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()
        for q in self.queues.values():
            if q.pending:
                kept = sum(1 for n in q.pending if n.outbox_id is not None)
                log.warning("push_undelivered", robot=q.robot.id, kind=q.robot.kind, alerts=len(q.pending),
                            kept_for_restart=kept, alert_ids=[n.alert_id for n in q.pending][:50])

    async def _run(self, q: RobotQueue) -> None:
        attempt = 0
        while True:
            if not q.pending:
                q.wake.clear()
                await q.wake.wait()
                continue
            wait = q.window.wait_s()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            batch = self._take(q)
            text = alert_text(batch[0]) if len(batch) == 1 else summary_text(batch)
            q.window.record()
            q.inflight = len(batch)
            try:
                await self._post(q.robot, text)
            except (Exception, asyncio.CancelledError) as err:  # noqa: BLE001 - a bug must not end this robot's task
                q.pending.extendleft(reversed(batch))
                q.inflight = 0
                if isinstance(err, asyncio.CancelledError):
                    raise
                attempt += 1
                q.failures += 1
                delay = min(self.settings.retry_max_s, self.settings.retry_base_s * 2 ** (attempt - 1))
                if not isinstance(err, PushError):
                    log.exception("push_failed_unexpectedly", robot=q.robot.id)
                log.warning("push_failed", robot=q.robot.id, kind=q.robot.kind, error=str(err),
                            attempt=attempt, retry_in_s=delay, alerts=len(batch))
                self._report(self.on_failed, batch, str(err))
                await asyncio.sleep(delay)
                continue
            attempt = 0
            q.inflight = 0
            q.sent_messages += 1
            q.delivered_alerts += len(batch)
            log.info("push_sent", robot=q.robot.id, kind=q.robot.kind, alerts=len(batch))
            self._report(self.on_sent, batch)

    @staticmethod
    def _report(callback: Callable[..., None] | None, batch: list[AlertNotice], *extra: str) -> None:
        ids = [n.outbox_id for n in batch if n.outbox_id is not None]
        if callback is None or not ids:
            return
        try:
            callback(ids, *extra)
        except Exception:  # noqa: BLE001 - e.g. the database locked: the row stays pending (sent again after a restart)
            log.exception("push_outbox_update_failed", outbox_ids=ids[:50])

    def _take(self, q: RobotQueue) -> list[AlertNotice]:
        """One alert, or all waiting ones merged when the window is nearly used up."""
        left = q.window.available()
        if len(q.pending) > 1 and (left <= self.settings.merge_when_left or len(q.pending) > left):
            batch = list(q.pending)
            q.pending.clear()
            return batch
        return [q.pending.popleft()]

    async def _post(self, robot: Robot, text: str) -> None:
        url = robot_url(robot, int(time.time() * 1000))
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout_s)
        try:
            async with self.session.post(url, json=robot_payload(text), timeout=timeout) as resp:
                if resp.status != 200:
                    raise PushError(f"HTTP {resp.status}")
                body = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as err:
            # the URL carries the robot's access token: never let it reach a log line
            detail = str(err).replace(url, "<robot url>").replace(robot.url, "<robot url>")
            raise PushError(f"{type(err).__name__}: {detail}") from err
        if not isinstance(body, dict) or body.get("errcode") != 0:
            raise PushError(f"robot answered {body!r:.200}")

