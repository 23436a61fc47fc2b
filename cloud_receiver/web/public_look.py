"""看看后厨: the public page's short near-live look into the kitchen, made of fresh snapshots, faces blurred.

Live video cannot be blurred frame by frame here, so the public never gets it (`/api/v1/live` stays
401 for them). Instead, during the canteen's opening hours (`public_look.hours`, Beijing time), a
visitor starts a *look* and the page shows each of the canteen's online cameras as a still that is
refreshed every `refresh_s` seconds for `look_s` seconds:

- `GET /p/{canteen_id}/look` starts a look (JSON, `no-store`): `open` with the cameras (by name,
  never their ids) and their frame URLs; `closed` (403) outside the opening hours, with the hours;
  429 after `looks_per_window` looks of one address (an IPv6 /64) per `window_s`; 503 when
  `max_looks` looks run already (this receiver, all canteens) or no box can be reached;
- `GET /p/{canteen_id}/look/{look}/{n}.jpg` is camera `n`'s current frame, while the look lasts (410
  after it). A frame older than `refresh_s` is replaced: the box is sent `snapshot_now` on the command
  channel (the command is recorded, issuer `public-look`), its JPEG arrives as media and is blurred
  in one worker thread (`blurred_frame`: stricter than a public snapshot's copy, since a look is a
  stream of frames of people with no alert boxes: faces searched upright and turned, the previous
  frame's face regions obscured again, the result searched again as served, refused if faces
  remain). Only that blurred JPEG is kept (in memory) and served; the original stays with the media,
  readable by logged-in people only.

A camera is asked at most once per `refresh_s` however many people look (they share its frame), and
at most `max_looks` looks run at once, so the public can neither flood a box nor this receiver's CPU.
The limits live in this receiver's memory (a restart forgets them; several receivers each apply
their own). Policy and figures: docs/public.md.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import structlog
from aiohttp import web
from PIL import Image

from cloud_receiver.config import PublicLookConfig
from cloud_receiver.control import commands as control
from cloud_receiver.control.publisher import PublishFailed
from cloud_receiver.privacy.blur import Box, face_region, obscure, scaled
from cloud_receiver.privacy.faces import FaceFinder
from cloud_receiver.privacy.public_copy import NotAPicture, StillFaces, decode, encode
from cloud_receiver.storage.db import Db
from cloud_receiver.storage.schema import cameras, devices, media

log = structlog.get_logger(__name__)

ISSUER = "public-look"  # `commands.issuer` of the snapshots a look asks for
POLL_S = 0.1  # how often a refresh looks for the box's answer and upload
LOOK_GRACE_S = 5.0  # a frame asked for just after a look ended (a slow phone) is still served
FORGET_S = 300.0  # an ended look is remembered this long (its frames answer 410, not 404), then dropped
Camera = tuple[str, str]  # device id, camera id
SEARCH_LONG_SIDE = 800  # a frame is searched for faces at this size (the cascade misses soft faces when smaller)
TURNS = (0.0, -20.0, 20.0)  # degrees the frame is turned for the face search
MAX_PASSES = 3  # searches of the obscured frame before it is given up on


class LookUnavailable(RuntimeError):
    """No fresh frame: the box is not connected, did not answer in time, or the copy was refused."""


# -- pure: opening hours and the per-address window --------------------------------------------------
def parse_hours(text: str) -> tuple[int, int]:
    """`06:00-20:00` as minutes of the day (start, end); the end may be 24:00 (1440)."""
    start, end = text.split("-")
    h1, m1 = start.split(":")
    h2, m2 = end.split(":")
    return int(h1) * 60 + int(m1), int(h2) * 60 + int(m2)


def is_open(now: datetime, hours: str, tz_hours: int) -> bool:
    """Whether `now` (aware) is inside the opening `hours` of the local day; hours ending before they start
    run over midnight (`22:00-02:00`)."""
    local = now.astimezone(UTC) + timedelta(hours=tz_hours)
    minute = local.hour * 60 + local.minute
    start, end = parse_hours(hours)
    return start <= minute < end if start <= end else (minute >= start or minute < end)


def retry_after(starts: deque[float], now: float, limit: int, window_s: float) -> float | None:
    """Seconds until one more start is allowed, or None when it is allowed now (`starts`: monotonic times,
    oldest first; those out of the window are dropped)."""
    while starts and starts[0] <= now - window_s:
        starts.popleft()
    return None if len(starts) < limit else starts[0] + window_s - now


def unturned(box: Box, angle: float, turned_size: tuple[int, int], size: tuple[int, int]) -> Box:
    """A box found in the image turned by `angle` degrees (PIL's `rotate(angle, expand=True)`: counter-
    clockwise, about the centre) as the bounding box of its corners in the image before the turn."""
    t = math.radians(angle)
    (tcx, tcy), (cx, cy) = (turned_size[0] / 2, turned_size[1] / 2), (size[0] / 2, size[1] / 2)
    xs, ys = [], []
    for x, y in ((box.x1, box.y1), (box.x2, box.y1), (box.x1, box.y2), (box.x2, box.y2)):
        dx, dy = x - tcx, y - tcy
        xs.append(dx * math.cos(t) - dy * math.sin(t) + cx)
        ys.append(dx * math.sin(t) + dy * math.cos(t) + cy)
    return Box(min(xs), min(ys), max(xs), max(ys))


def turned_faces(finder: FaceFinder, image: Image.Image, *, sensitive: bool) -> list[Box]:
    """Faces upright and turned by `TURNS` (a cook bending over a counter tilts the head; the cascade only
    finds upright faces), in `image`'s pixels."""
    found: list[Box] = []
    for angle in TURNS:
        if angle == 0:
            found += finder.find(image, sensitive=sensitive)
            continue
        turned = image.rotate(angle, resample=Image.Resampling.BILINEAR, expand=True, fillcolor=(128, 128, 128))
        found += [unturned(b, angle, turned.size, image.size) for b in finder.find(turned, sensitive=sensitive)]
    return found


def _long_side(image: Image.Image, long_side: int) -> Image.Image:
    factor = long_side / max(image.size)
    if abs(factor - 1.0) < 1e-3:
        return image
    return image.resize((max(1, round(image.width * factor)), max(1, round(image.height * factor))),
                        Image.Resampling.LANCZOS)


def blurred_frame(original: bytes, finder: FaceFinder, long_side: int,
                  previous: Sequence[Box] = ()) -> tuple[bytes, list[Box]]:
    """The public frame of a box's snapshot and the face regions obscured in it (search pixels).

    Stricter than a public snapshot's copy, because a look is a stream of frames of people at work with
    no alert boxes (so no head rule): the frame is searched at `SEARCH_LONG_SIDE` upright and turned
    (`turned_faces`, sensitive), the regions obscured in the camera's previous frame are obscured again
    (a face missed in one frame is often found in the one before); then it is scaled to `long_side`,
    encoded and searched again as it will be served (upright and turned), what is found obscured too,
    up to `MAX_PASSES` times (StillFaces when faces remain). NotAPicture for anything not a JPEG."""
    work = _long_side(decode(original), SEARCH_LONG_SIDE)
    found = [face_region(f) for f in turned_faces(finder, work, sensitive=True)]
    work = obscure(work, [*found, *previous])
    for _ in range(MAX_PASSES):
        served = encode(_long_side(work, long_side))
        shown = decode(served)
        again = turned_faces(finder, shown, sensitive=False)  # in served pixels
        if not again:
            return served, found
        up = work.width / shown.width
        regions = [face_region(scaled(f, up, up)) for f in again]
        found += regions
        work = obscure(work, regions)
    raise StillFaces(f"faces still found after {MAX_PASSES} searches of a look's frame")


# -- the state of the looks ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Look:
    canteen_id: str
    cameras: tuple[Camera, ...]
    ends: float  # monotonic


@dataclass(slots=True)
class Frame:
    jpeg: bytes
    made: float  # monotonic
    taken_at: datetime
    regions: list[Box] = field(default_factory=list)  # obscured, in search pixels: obscured again next time


@dataclass
class PublicLooks:
    """The running looks, the limits and the latest blurred frame of each camera being looked at."""

    cfg: PublicLookConfig
    finder: FaceFinder = field(default_factory=FaceFinder)
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))  # opening hours (tests move it)
    looks: dict[str, Look] = field(default_factory=dict)
    starts: dict[str, deque[float]] = field(default_factory=dict)  # client key -> monotonic start times
    frames: dict[Camera, Frame] = field(default_factory=dict)
    asked: dict[Camera, float] = field(default_factory=dict)  # camera -> when it was last asked (monotonic)
    refreshing: dict[Camera, asyncio.Task[Frame]] = field(default_factory=dict)
    snapshots_asked: int = 0

    def __post_init__(self) -> None:
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="bk-public-look")

    async def aclose(self) -> None:
        """Cancel the refreshes under way and wait for them; stop the blurring worker."""
        tasks = list(self.refreshing.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.pool.shutdown(wait=False, cancel_futures=True)

    def hours_of(self, canteen_id: str) -> str:
        return self.cfg.canteen_hours.get(canteen_id, self.cfg.hours)

    def open_now(self, canteen_id: str) -> bool:
        return is_open(self.clock(), self.hours_of(canteen_id), self.cfg.tz_hours)

    def running(self, now: float) -> int:
        """Looks not yet ended (ended ones are forgotten after `FORGET_S`)."""
        for look_id in [k for k, v in self.looks.items() if v.ends + FORGET_S <= now]:
            del self.looks[look_id]
        return sum(1 for v in self.looks.values() if v.ends > now)

    def page_info(self, canteen_id: str) -> dict[str, Any]:
        """What the public page says of the look: hours, open now, length and refresh."""
        return {"hours": self.hours_of(canteen_id).replace("-", "–"), "open": self.open_now(canteen_id),
                "seconds": round(self.cfg.look_s), "refresh_s": round(self.cfg.refresh_s)}

    def client_wait(self, client: str, now: float) -> float | None:
        return retry_after(self.starts.setdefault(client, deque()), now, self.cfg.looks_per_window, self.cfg.window_s)

    def start(self, client: str, canteen_id: str, cams: list[Camera], now: float) -> str:
        """Record a look (the caller checked hours, address and cap); its id."""
        self.starts.setdefault(client, deque()).append(now)
        for key in [k for k, v in self.starts.items() if not v or v[-1] <= now - self.cfg.window_s]:
            del self.starts[key]  # addresses are not kept past their window
        look_id = secrets.token_urlsafe(12)
        self.looks[look_id] = Look(canteen_id, tuple(cams), now + self.cfg.look_s)
        return look_id

    async def frame(self, db: Db, publisher: Any, media_dir: Path, cam: Camera) -> Frame:
        """The camera's blurred frame, asking the box for a fresh one when the last is `refresh_s` old; the
        previous frame (if younger than a look) when the box does not deliver in time; else LookUnavailable."""
        now = time.monotonic()
        current = self.frames.get(cam)
        if current is not None and now - current.made < self.cfg.refresh_s:
            return current
        fallback = current if current is not None and now - current.made < self.cfg.look_s else None  # never an old one
        work = self.refreshing.get(cam)
        if work is None:
            if now - self.asked.get(cam, -1e9) < self.cfg.refresh_s:  # asked lately and failed: no new ask yet
                if fallback is not None:
                    return fallback
                raise LookUnavailable("the camera did not deliver a frame lately")
            self.asked[cam] = now
            work = asyncio.create_task(self._fresh(db, publisher, media_dir, cam), name=f"bk-public-look-{cam[0]}-{cam[1]}")
            self.refreshing[cam] = work
            work.add_done_callback(lambda done: self._refreshed(cam, done))
        try:
            return await asyncio.wait_for(asyncio.shield(work), self.cfg.frame_timeout_s)
        except (LookUnavailable, TimeoutError):
            if fallback is not None:
                return fallback
            raise

    def _refreshed(self, cam: Camera, done: asyncio.Task[Frame]) -> None:
        self.refreshing.pop(cam, None)
        if done.cancelled():
            return
        err = done.exception()
        if err is None:
            self.frames[cam] = done.result()
        else:
            log.warning("public_look_frame_failed", device_id=cam[0], camera_id=cam[1], problem=f"{type(err).__name__}: {err}")

    async def _fresh(self, db: Db, publisher: Any, media_dir: Path, cam: Camera) -> Frame:
        device_id, camera_id = cam
        if publisher is None:
            raise LookUnavailable("this receiver has no MQTT connection")
        cmd = control.new_command("snapshot_now", ISSUER, datetime.now(UTC), camera_id=camera_id,
                                  ttl_s=max(5, round(self.cfg.frame_timeout_s * 2)))
        self.snapshots_asked += 1
        try:
            await control.deliver(db, publisher, device_id, cmd)
        except PublishFailed as err:
            raise LookUnavailable(f"the box did not take the command: {err}") from err
        deadline = time.monotonic() + self.cfg.frame_timeout_s * 2  # a late frame still serves the next visitor
        while True:
            view = control.view(db, device_id, cmd.id, datetime.now(UTC)) or {}
            if view.get("state") in ("failed", "expired", "not_sent"):
                raise LookUnavailable(f"snapshot_now {view.get('state')}: {view.get('error')}")
            if (view.get("upload") or {}).get("done"):
                break
            if time.monotonic() > deadline:
                raise LookUnavailable("the box's snapshot did not arrive in time")
            await asyncio.sleep(POLL_S)
        row = db.one(sa.select(media.c.path).where(media.c.device_id == device_id, media.c.id == view["data"]["media_id"]))
        if row is None:
            raise LookUnavailable("the snapshot's media row is missing")
        original = media_dir / row["path"]
        before = self.frames.get(cam)
        previous = before.regions if before is not None else []
        try:
            jpeg, regions = await asyncio.get_running_loop().run_in_executor(
                self.pool, lambda: blurred_frame(original.read_bytes(), self.finder, self.cfg.long_side, previous))
        except (NotAPicture, StillFaces, OSError) as err:
            raise LookUnavailable(f"no public copy of the snapshot: {type(err).__name__}: {err}") from err
        return Frame(jpeg, time.monotonic(), datetime.now(UTC), regions)


PUBLIC_LOOKS = web.AppKey("public_looks", PublicLooks)


def public_cameras(db: Db, canteen_id: str) -> list[dict[str, str]]:
    """The canteen's cameras a look shows: those its boxes last reported online, in a stable order. (There
    is no per-camera public flag yet: every online camera of the canteen is shown.)"""
    rows = db.all(sa.select(cameras.c.device_id, cameras.c.camera_id, cameras.c.name)
                  .select_from(cameras.join(devices, devices.c.id == cameras.c.device_id))
                  .where(devices.c.canteen_id == canteen_id, cameras.c.state == "online")
                  .order_by(cameras.c.device_id, cameras.c.camera_id))
    return [dict(r) for r in rows]
