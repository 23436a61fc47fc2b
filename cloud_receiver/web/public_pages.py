"""The public pages (共治): what a parent reaches by scanning the QR code on the canteen's wall. No login.

- `GET /p/{canteen_id}`: the canteen's name, licences, 量化分级 rating, 抽检 results, rectification
  record (counts and completion rate only) and recent kitchen snapshots, and the 投诉/举报 form;
  phone-first, cacheable (public_render.py);
- `GET /p/{canteen_id}/snapshots/{sha256}.jpg`: a snapshot the canteen lists on its page, only as its
  blurred copy (faces and heads obscured, cloud_receiver/privacy), made once in a worker thread and
  cached under `media_dir/public/`; the original is never served to the public;
- `GET /p/{canteen_id}/qr.png`: the printable QR poster (public_qr.py);
- `POST /p/{canteen_id}/report`: the 投诉/举报 form (public_report.py);
- `GET /p/{canteen_id}/look` and `GET /p/{canteen_id}/look/{look}/{n}.jpg`: 看看后厨, a short look of
  fresh snapshots during opening hours, faces blurred (public_look.py).

An unknown canteen, or a snapshot it does not list, is a 404 page. Policy, limits and figures:
docs/public.md.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
import structlog
from aiohttp import web

from cloud_receiver.api.context import ctx
from cloud_receiver.appkeys import CONFIG, STORAGE
from cloud_receiver.privacy.faces import FaceFinder
from cloud_receiver.privacy.public_copy import NotAPicture, PersonBoxes, PublicCopies, StillFaces
from cloud_receiver.storage.media_store import HEX64
from cloud_receiver.storage.schema import alerts
from cloud_receiver.web.public_challenge import site_key
from cloud_receiver.web.public_look import LOOK_GRACE_S, PUBLIC_LOOKS, LookUnavailable, PublicLooks, public_cameras
from cloud_receiver.web.public_qr import qr_poster
from cloud_receiver.web.public_render import CHALLENGE_KEY, canteen_page, not_found, render_public, settings_of
from cloud_receiver.web.public_report import client_key, submit_report
from cloud_receiver.workflow import queries

log = structlog.get_logger(__name__)


class SnapshotCopies:
    """Blurred copies made off the event loop, one at a time (the face search is CPU-bound), each once:
    requests for a copy being made wait for that same work."""

    def __init__(self, media_dir: Path, finder: FaceFinder | None = None) -> None:
        self.copies = PublicCopies(media_dir, finder)
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="bk-public-copy")
        self.making: dict[str, asyncio.Future[Path]] = {}

    async def get(self, sha256: str, original: Path, people: list[PersonBoxes]) -> Path:
        cached = self.copies.cached(sha256)
        if cached is not None:
            return cached
        work = self.making.get(sha256)
        if work is None:
            work = asyncio.ensure_future(asyncio.get_running_loop().run_in_executor(
                self.pool, self.copies.make, sha256, original, people))
            self.making[sha256] = work
            work.add_done_callback(lambda _: self.making.pop(sha256, None))
        return await asyncio.shield(work)  # a visitor who leaves does not cancel the copy for the next

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


SNAPSHOT_COPIES = web.AppKey("public_snapshot_copies", SnapshotCopies)


async def public_page(request: web.Request) -> web.Response:
    row = ctx(request).storage.get_canteen(request.match_info["canteen_id"])
    if row is None:
        return not_found(request)
    return canteen_page(request, row, cache_s=settings_of(request).page_cache_s)


def _people(db: Any, canteen_id: str, sha256: str) -> list[PersonBoxes]:
    """The boxes of the canteen's alerts whose snapshot this is (their person heads are blurred too)."""
    out: list[PersonBoxes] = []
    for r in db.all(sa.select(alerts.c.boxes_json, alerts.c.frame_size_json)
                    .where(alerts.c.snapshot_sha256 == sha256, alerts.c.canteen_id == canteen_id)):
        try:
            boxes, frame = json.loads(r["boxes_json"] or "[]"), json.loads(r["frame_size_json"] or "null")
        except (ValueError, RecursionError):
            continue
        if isinstance(boxes, list):
            out.append((boxes, frame if isinstance(frame, list) else None))
    return out


async def public_snapshot(request: web.Request) -> web.StreamResponse:
    canteen_id, sha = request.match_info["canteen_id"], request.match_info["sha256"]
    c = ctx(request)
    row = queries.public_snapshot_media(c.storage.sql, sha, canteen_id) if HEX64.match(sha) else None
    if row is None:
        return not_found(request, "没有这张公示照片。")
    try:
        path = await request.app[SNAPSHOT_COPIES].get(sha, c.media_dir / row["path"], _people(c.storage.sql, canteen_id, sha))
    except (NotAPicture, StillFaces, OSError) as err:
        log.warning("public_copy_refused", canteen_id=canteen_id, sha256=sha, problem=f"{type(err).__name__}: {err}")
        return not_found(request, "这张照片暂时无法公示。")
    return web.FileResponse(path, headers={
        "Content-Type": "image/jpeg", "Content-Disposition": f'inline; filename="{sha}.jpg"',
        "Cache-Control": f"public, max-age={settings_of(request).snapshot_cache_s}"})


def _look_answer(body: dict[str, Any], status: int = 200, retry_after_s: float | None = None) -> web.Response:
    headers = {"Cache-Control": "no-store"}
    if retry_after_s is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after_s)))
    return web.json_response(body, status=status, headers=headers, dumps=lambda o: json.dumps(o, ensure_ascii=False))


async def look_start(request: web.Request) -> web.Response:
    """Start a look (看看后厨) of the canteen's cameras, if open, allowed for this address and not over the cap."""
    c, canteen_id = ctx(request), request.match_info["canteen_id"]
    looks = request.app[PUBLIC_LOOKS]
    if c.storage.get_canteen(canteen_id) is None or not looks.cfg.enabled:
        return _look_answer({"state": "not_found", "message": "这个食堂暂未开放看看后厨。"}, 404)
    info = looks.page_info(canteen_id)
    if not info["open"]:
        return _look_answer({"state": "closed", "hours": info["hours"], "message":
                             f"现在不在开放时间。看看后厨每天 {info['hours']} (北京时间) 开放, 欢迎届时再来。"}, 403)
    now, client = time.monotonic(), client_key(request.remote)
    wait = looks.client_wait(client, now)
    if wait is not None:
        return _look_answer({"state": "too_many", "message": f"您观看得太频繁了, 请 {max(1, math.ceil(wait / 60))} 分钟后再试。"},
                            429, wait)
    if looks.running(now) >= looks.cfg.max_looks:
        return _look_answer({"state": "busy", "message": "现在观看的人较多, 请稍后再试。"}, 503, looks.cfg.look_s)
    cams = public_cameras(c.storage.sql, canteen_id)
    if not cams or c.publisher is None:
        return _look_answer({"state": "offline", "message": "后厨摄像头暂时不在线, 请稍后再试。"}, 503, looks.cfg.look_s)
    look_id = looks.start(client, canteen_id, [(cam["device_id"], cam["camera_id"]) for cam in cams], now)
    log.info("public_look_started", canteen_id=canteen_id, cameras=len(cams), running=looks.running(now))
    base = f"/p/{quote(canteen_id, safe='')}/look/{look_id}"
    return _look_answer({"state": "open", "seconds": info["seconds"], "refresh_s": info["refresh_s"],
                         "hours": info["hours"], "cameras": [{"name": cam["name"] or f"摄像头 {i + 1}", "frame": f"{base}/{i}.jpg"}
                                                             for i, cam in enumerate(cams)]})


async def look_frame(request: web.Request) -> web.StreamResponse:
    """Camera `n`'s current blurred frame of a running look; 410 once the look has ended."""
    c, canteen_id = ctx(request), request.match_info["canteen_id"]
    looks = request.app[PUBLIC_LOOKS]
    look = looks.looks.get(request.match_info["look"])
    n = int(request.match_info["n"])
    if look is None or look.canteen_id != canteen_id or n >= len(look.cameras):
        return not_found(request, "没有这次观看, 请回到食堂公示页重新点击“看看后厨”。")
    if time.monotonic() > look.ends + LOOK_GRACE_S:
        return render_public(request, "public_error.html", {
            "title": "观看已结束", "message": "本次观看已结束, 请回到食堂公示页重新点击“看看后厨”。"}, status=410)
    try:
        frame = await looks.frame(c.storage.sql, c.publisher, c.media_dir, look.cameras[n])
    except LookUnavailable:
        response = render_public(request, "public_error.html", {
            "title": "暂时无法获取画面", "message": "后厨摄像头暂时没有传回画面, 请稍后再试。"}, status=503)
        response.headers["Retry-After"] = str(math.ceil(looks.cfg.refresh_s))
        return response
    return web.Response(body=frame.jpeg, headers={"Content-Type": "image/jpeg", "Cache-Control": "no-store",
                                                  "Content-Disposition": "inline"})


async def _public_ctx(app: web.Application) -> AsyncIterator[None]:
    """At startup: the report form's key (shared through the database), the blurred-copy worker and the looks."""
    app[CHALLENGE_KEY] = site_key(app[STORAGE].sql)
    copies = SnapshotCopies(app[CONFIG].storage.media_dir)
    app[SNAPSHOT_COPIES] = copies
    looks = PublicLooks(app[CONFIG].public_look, finder=copies.copies.finder)
    app[PUBLIC_LOOKS] = looks
    yield
    await looks.aclose()
    copies.close()


def register(app: web.Application) -> None:
    app.router.add_get("/p/{canteen_id}", public_page)
    app.router.add_get("/p/{canteen_id}/snapshots/{sha256}.jpg", public_snapshot)
    app.router.add_get("/p/{canteen_id}/qr.png", qr_poster)
    app.router.add_post("/p/{canteen_id}/report", submit_report)
    app.router.add_get("/p/{canteen_id}/look", look_start)
    app.router.add_get(r"/p/{canteen_id}/look/{look}/{n:\d+}.jpg", look_frame)
    app.cleanup_ctx.append(_public_ctx)
