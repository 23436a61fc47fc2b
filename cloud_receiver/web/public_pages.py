"""The public pages (共治): what a parent reaches by scanning the QR code on the canteen's wall. No login.

- `GET /p/{canteen_id}`: the canteen's name, licences, 量化分级 rating, 抽检 results, rectification
  record (counts and completion rate only) and recent kitchen snapshots, and the 投诉/举报 form;
  phone-first, cacheable (public_render.py);
- `GET /p/{canteen_id}/snapshots/{sha256}.jpg`: a snapshot the canteen lists on its page, only as its
  blurred copy (faces and heads obscured, cloud_receiver/privacy), made once in a worker thread and
  cached under `media_dir/public/`; the original is never served to the public;
- `GET /p/{canteen_id}/qr.png`: the printable QR poster (public_qr.py);
- `POST /p/{canteen_id}/report`: the 投诉/举报 form (public_report.py).

An unknown canteen, or a snapshot it does not list, is a 404 page. Policy, limits and figures:
docs/public.md.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

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
from cloud_receiver.web.public_qr import qr_poster
from cloud_receiver.web.public_render import CHALLENGE_KEY, canteen_page, not_found, settings_of
from cloud_receiver.web.public_report import submit_report
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


async def _public_ctx(app: web.Application) -> AsyncIterator[None]:
    """At startup: the report form's key (shared through the database) and the blurred-copy worker."""
    app[CHALLENGE_KEY] = site_key(app[STORAGE].sql)
    copies = SnapshotCopies(app[CONFIG].storage.media_dir)
    app[SNAPSHOT_COPIES] = copies
    yield
    copies.close()


def register(app: web.Application) -> None:
    app.router.add_get("/p/{canteen_id}", public_page)
    app.router.add_get("/p/{canteen_id}/snapshots/{sha256}.jpg", public_snapshot)
    app.router.add_get("/p/{canteen_id}/qr.png", qr_poster)
    app.router.add_post("/p/{canteen_id}/report", submit_report)
    app.cleanup_ctx.append(_public_ctx)
