"""What the public pages (`/p/{canteen_id}`, 共治) stand on: their settings, the canteen's public facts,
and rendering without any account.

The public pages never look at a session: they render from `public_base.html` (no user, no CSRF
token, no navigation) so a page is the same for everyone and may be cached (`Cache-Control: public`);
answers that carry a fresh form (after a refused report) or a reporter's own text are `no-store`.
What is shown comes from `api.public_page.public_view` (name, licences, rating, sampling, snapshots:
the same checks as the JSON) and `rectification_record` (counts only) — never the jurisdiction, a
device, an alert id or a person's name. The 看看后厨 section (public_look.py) shows the opening hours and
whether the look is open at render time; the look itself is asked for by static/public.js.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp_jinja2
import sqlalchemy as sa
from aiohttp import web

from bk_contract.violations import PUBLIC_ALERT_NAMES
from cloud_receiver.api.context import ctx
from cloud_receiver.api.public_page import public_view
from cloud_receiver.storage.db import Db, iso
from cloud_receiver.storage.schema import alerts
from cloud_receiver.web.public_challenge import new_challenge
from cloud_receiver.web.public_look import PUBLIC_LOOKS
from cloud_receiver.workflow.rectify import WorkflowStatus

CST = timedelta(hours=8)  # what people read: Beijing time
RATINGS = {"A": "优秀", "B": "良好", "C": "一般"}  # 食品安全量化分级
RECORD_DAYS = (30, 90)


@dataclass(frozen=True, slots=True)
class PublicSettings:
    """Limits and cache times of the public pages (tests set them small)."""

    reports_per_window: int = 3  # accepted reports per client address per window
    report_window_s: float = 3600.0
    challenge_ttl_s: float = 7200.0  # how long a served form can be sent (longer than a page stays cached)
    text_max: int = 500  # characters of a report
    photo_max_bytes: int = 5 * 1024 * 1024
    page_cache_s: int = 60  # the canteen page: short, so a new rating shows soon
    snapshot_cache_s: int = 3600  # a blurred copy; a snapshot taken off the page is gone from caches within it
    poster_cache_s: int = 3600


PUBLIC_SETTINGS = web.AppKey("public_settings", PublicSettings)
CHALLENGE_KEY = web.AppKey("public_challenge_key", bytes)  # set at startup (public_pages.register)


def settings_of(request: web.Request) -> PublicSettings:
    return request.app.get(PUBLIC_SETTINGS) or PublicSettings()


def local_time(value: str | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    if not value:
        return ""
    return (datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC) + CST).strftime(fmt)


def rectification_record(db: Db, canteen_id: str, now: datetime) -> list[dict[str, Any]]:
    """For the last 30 and 90 days: the canteen's alerts (camera and ledger findings; not the public's own
    unverified reports), how many a regulator approved as rectified (复核通过), and that share."""
    a = alerts.c
    approved = a.status == WorkflowStatus.APPROVED.value
    cols = []
    for days in RECORD_DAYS:
        recent = a.started_at >= iso(now - timedelta(days=days))
        cols += [sa.func.coalesce(sa.func.sum(sa.case((recent, 1), else_=0)), 0).label(f"n{days}"),
                 sa.func.coalesce(sa.func.sum(sa.case((sa.and_(recent, approved), 1), else_=0)), 0).label(f"ok{days}")]
    row = db.one(sa.select(*cols).where(a.canteen_id == canteen_id, a.started_at >= iso(now - timedelta(days=max(RECORD_DAYS))),
                                        a.started_at <= iso(now), a.type.not_in(list(PUBLIC_ALERT_NAMES)))) or {}
    out = []
    for days in RECORD_DAYS:
        total, done = int(row.get(f"n{days}") or 0), int(row.get(f"ok{days}") or 0)
        out.append({"days": days, "total": total, "approved": done,
                    "rate": f"{done * 100 / total:.0f}%" if total else None})
    return out


def render_public(request: web.Request, template: str, context: dict[str, Any], *, status: int = 200,
                  cache_s: int = 0) -> web.Response:
    """A public page: `cache_s` > 0 lets browsers and proxies keep it (it holds nothing private)."""
    response = aiohttp_jinja2.render_template(template, request, context, status=status)
    response.headers["Cache-Control"] = f"public, max-age={cache_s}" if cache_s > 0 else "no-store"
    return response


def not_found(request: web.Request, message: str = "没有找到这个食堂的公示页面, 请核对二维码或网址。") -> web.Response:
    return render_public(request, "public_error.html", {"title": "页面不存在", "message": message}, status=404)


def canteen_page(request: web.Request, row: dict[str, Any], *, status: int = 200, cache_s: int = 0,
                 error: str = "", text: str = "") -> web.Response:
    """The canteen's public page; after a refused report, with the `error`, the reporter's `text` kept and a
    fresh challenge."""
    c, s = ctx(request), settings_of(request)
    now = c.now()
    view = public_view(c, row)
    sampling = sorted(view["sampling"], key=lambda x: x["date"], reverse=True)
    snapshots = [{**snap, "taken": local_time(snap["taken_at"])} for snap in view["snapshots"]]
    challenge = new_challenge(request.app[CHALLENGE_KEY], row["id"], now, s.challenge_ttl_s)
    looks = request.app.get(PUBLIC_LOOKS)
    look = looks.page_info(row["id"]) if looks is not None and looks.cfg.enabled else None
    return render_public(request, "public.html", {
        "title": view["name"] or "食堂公示", "canteen": view, "rating": view["rating"],
        "rating_name": RATINGS.get(view["rating"] or "", ""), "licences": view["licences"], "sampling": sampling,
        "snapshots": snapshots, "look": look, "record": rectification_record(c.storage.sql, row["id"], now),
        "challenge": challenge, "error": error, "text": text, "text_max": s.text_max,
        "photo_max_mb": s.photo_max_bytes // (1024 * 1024), "photo_max_bytes": s.photo_max_bytes,
        "reports_per_window": s.reports_per_window, "window_minutes": round(s.report_window_s / 60),
        "updated": local_time(iso(now)),
    }, status=status, cache_s=cache_s)
