"""预警 pages: `/alerts` (the list, filtered, live) and `/alerts/{id}` (one alert and its 整改 → 复核 loop).

The list is rendered on the server from `workflow.queries.list_alerts` with the user's principal, so a
row outside the user's scope never reaches the page; new alerts arrive by the alert stream (SSE,
session cookie) and are added by static/alerts.js with a badge and a sound. The alert page shows the
snapshot with its boxes (drawn on a canvas by static/alert.js: no inline styles under the CSP), the
clip, camera and school, the full transition timeline and the actions the role may take; the actions
post to the JSON API (`/api/v1/alerts/{id}/…`) with the session's CSRF token and reload the page.
Push messages link here (`push.public_base_url` + `/alerts/{id}`). An alert outside the user's scope is a
403 page (a pushed link forwarded to the wrong person says why it does not open); an unknown id, 404.
The JSON API keeps answering 404 for both (no existence leak to machines).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import sqlalchemy as sa
from aiohttp import web

from bk_contract.violations import ALERT_TYPE_NAMES
from cloud_receiver.api.context import ctx
from cloud_receiver.storage.schema import alerts, cameras, canteens
from cloud_receiver.web.pages import PageError, render, require_user
from cloud_receiver.workflow import queries, rectify

TZ = timedelta(hours=8)  # China Standard Time: the dates people pick and read
PAGE_SIZE = 50
STATUS_CHOICES = [s.value for s in rectify.WorkflowStatus]


def _day(value: str | None, field: str) -> datetime | None:
    """A `YYYY-MM-DD` of a filter form as the UTC start of that local day."""
    if not value:
        return None
    try:
        day = datetime.strptime(value, "%Y-%m-%d")
    except ValueError as err:
        raise PageError(400, "筛选条件有误", f"{field}: 请用 年-月-日 格式, 例如 2024-05-01") from err
    return day.replace(tzinfo=UTC) - TZ


def local(ts: str | None) -> str:
    """A stored UTC timestamp as Beijing time for people (`2024-05-01 08:30`)."""
    if not ts:
        return ""
    return (datetime.fromisoformat(ts.replace("Z", "+00:00")) + TZ).strftime("%Y-%m-%d %H:%M")


def _filters(request: web.Request) -> tuple[queries.AlertFilter, dict[str, str]]:
    q = request.query
    shown = {k: q.get(k, "").strip() for k in ("since", "until", "canteen", "region", "type", "status")}
    types = tuple(t for t in shown["type"].split(",") if t)
    unknown = [t for t in types if t not in ALERT_TYPE_NAMES]
    if unknown:
        raise PageError(400, "筛选条件有误", f"type: 没有这种预警类型: {', '.join(unknown)}")
    if shown["status"] and shown["status"] not in STATUS_CHOICES:
        raise PageError(400, "筛选条件有误", f"status: 只能是 {'、'.join(STATUS_CHOICES)}")
    until = _day(shown["until"], "until")
    f = queries.AlertFilter(since=_day(shown["since"], "since"), until=until + timedelta(days=1) if until else None,
                            types=types, canteen_id=shown["canteen"] or None, status=shown["status"] or None,
                            region=shown["region"] or None)
    return f, shown


async def alerts_page(request: web.Request) -> web.Response:
    user, principal = require_user(request)
    c = ctx(request)
    f, shown = _filters(request)
    if principal.role == "canteen" and f.canteen_id not in (None, principal.scope):
        raise PageError(403, "无权访问", "食堂账号只能查看本食堂的预警。")
    try:
        rows, nxt = queries.list_alerts(c.storage.sql, principal, f, now=c.now(), limit=PAGE_SIZE,
                                        cursor=request.query.get("cursor") or None,
                                        default_hours=c.settings.default_deadline_hours)
    except queries.QueryError as err:
        raise PageError(400, "筛选条件有误", str(err)) from err
    schools = queries.list_canteens(c.storage.sql, principal)
    regions = sorted({s["jurisdiction"][:6] for s in schools if s["jurisdiction"]})
    for r in rows:
        r["started_local"], r["deadline_local"] = local(r["started_at"]), local(r["deadline"])
    base = {k: v for k, v in shown.items() if v}
    return render(request, "alerts.html", {
        "title": "预警", "rows": rows, "shown": shown, "schools": schools, "regions": regions,
        "types": sorted(ALERT_TYPE_NAMES.items()), "statuses": STATUS_CHOICES,
        "next_query": _query({**base, "cursor": nxt}) if nxt else None,
        "xlsx_query": _query(base), "filters": base})


def _query(params: dict[str, str | None]) -> str:
    return urlencode({k: v for k, v in params.items() if v})


async def alert_page(request: web.Request) -> web.Response:
    user, principal = require_user(request)
    c = ctx(request)
    try:
        row = queries.get_alert_row(c.storage.sql, principal, request.match_info["id"])
    except queries.NotFound as err:
        if _exists(c.storage.sql, request.match_info["id"]):  # someone else's: say so (the issue asks for 403)
            raise PageError(403, "无权查看", "这条预警不属于您的管辖范围, 您无权查看。如有疑问, 请联系管理员。") from err
        raise PageError(404, "未找到", "没有这条预警, 请核对链接。") from err
    alert = queries.alert_view(row, c.now(), c.settings.default_deadline_hours)
    camera = c.storage.sql.scalar(sa.select(cameras.c.name).where(cameras.c.device_id == row["device_id"],
                                                                   cameras.c.camera_id == row["camera_id"]))
    school = c.storage.sql.one(sa.select(canteens.c.name, canteens.c.jurisdiction)
                               .where(canteens.c.id == row["canteen_id"])) or {}
    timeline = queries.transitions_of(c.storage.sql, row["id"])
    for t in timeline:
        t["at_local"] = local(t["at"])
    status = alert["status"]
    actions = _actions(principal.role, status)
    frame = json.loads(row.get("frame_size_json") or "null")
    return render(request, "alert.html", {
        "title": f"预警 · {alert['type_name']}", "a": alert, "camera_name": camera or row["camera_id"],
        "school": school, "timeline": timeline, "actions": actions,
        "started_local": local(alert["started_at"]), "deadline_local": local(alert["deadline"]),
        "boxes": {"boxes": alert["boxes"], "frame": frame},  # to the page with `tojson` (escapes < > &)
        "min_deadline": (c.now() + TZ + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")})


def _exists(db, alert_id: str) -> bool:
    """Whether an alert of this id exists at all, whoever may see it."""
    return db.scalar(sa.select(alerts.c.id).where(alerts.c.id == alert_id)) is not None


def _actions(role: str, status: str) -> dict[str, bool]:
    """What the page offers: the workflow decides again on the server (rectify.apply)."""
    open_ = status in (rectify.WorkflowStatus.PENDING, rectify.WorkflowStatus.OVERDUE)
    reviewer = role in rectify.REVIEWERS
    return {"deadline": reviewer and open_, "review": reviewer and status == rectify.WorkflowStatus.SUBMITTED,
            "rectify": role == "canteen" and open_}


def register(app: web.Application) -> None:
    app.router.add_get("/alerts", alerts_page)
    app.router.add_get("/alerts/{id}", alert_page)

