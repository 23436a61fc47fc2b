"""学校 `/schools` (admin, regulator, canteen; each sees the canteens in their scope) and `/schools.xlsx`.

A row per canteen: its boxes (online, last seen) and their cameras (state, a link to the live view
`/live/{device}/{camera}`), its open alerts (待整改, overdue included, with how many are overdue; a
link to `/alerts?canteen=…`) and its rating (A/B/C from its public page, `queries.public_profile`).
Filters: `region` (a jurisdiction prefix such as a 区县 code, within the user's scope: 403 outside it),
`online` (`1`: every box online; `0`: a box offline, or none) and `q` (part of the name, or the id).
On a phone the table becomes a stack of cards (static/dashboard.css). The export has the same filters.

A camera counts as online when it reports `online` and its box is online: a box that went away leaves
its cameras' last reported state behind.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import sqlalchemy as sa
from aiohttp import web

from cloud_receiver.admin.auth import Principal
from cloud_receiver.api.context import ctx
from cloud_receiver.ledgers.xlsx import sheet_workbook
from cloud_receiver.storage.db import Db, starts_with
from cloud_receiver.storage.schema import alerts, cameras, canteens, devices
from cloud_receiver.web import dashboard_queries as dq
from cloud_receiver.web import xlsx
from cloud_receiver.web.pages import PageError, render, require_user
from cloud_receiver.workflow import queries, rectify

ROLES = ("admin", "regulator", "canteen")
PAGE_SIZE = 100
XLSX_MAX_ROWS = 20_000
NAME_MAX = 64
CAMERA_STATES = {"online": "在线", "offline": "离线", "degraded": "不稳定", "starting": "启动中"}
SCHOOL_HEADERS = ("学校编号", "学校", "辖区代码", "评级", "状态", "盒子数", "在线盒子", "摄像头数", "在线摄像头",
                  "最后在线(北京时间)", "待整改预警", "其中逾期")
SCHOOL_WIDTHS = (14, 26, 12, 6, 10, 8, 10, 10, 12, 20, 12, 10)


@dataclass(frozen=True, slots=True)
class SchoolFilter:
    region: str = ""
    online: str = ""  # "1" every box online, "0" a box offline or none, "" all
    name: str = ""


def school_select(db: Db, p: Principal, f: SchoolFilter, *, now: datetime,
                  default_hours: float | None) -> sa.Select[Any]:
    """One row per visible canteen matching `f`, with its box, camera and open-alert counts."""
    c, d, cam, a = canteens.c, devices.c, cameras.c, alerts.c
    boxes_q = (sa.select(d.canteen_id.label("cid"), sa.func.count().label("n"), dq.count_if(d.online != 0, "online"),
                         sa.func.max(d.last_seen).label("last_seen"))
               .where(queries.visibility(p, d.canteen_id)).group_by(d.canteen_id).subquery("boxes"))
    cams_q = (sa.select(d.canteen_id.label("cid"), sa.func.count().label("n"),
                        dq.count_if(sa.and_(cam.state == "online", d.online != 0), "online"))
              .select_from(cameras.join(devices, devices.c.id == cam.device_id))
              .where(queries.visibility(p, d.canteen_id)).group_by(d.canteen_id).subquery("cams"))
    open_q = (sa.select(a.canteen_id.label("cid"), sa.func.count().label("n"),
                        dq.count_if(dq.overdue_condition(db, now, default_hours), "overdue"))
              .where(queries.visibility(p), a.status == rectify.WorkflowStatus.PENDING.value)
              .group_by(a.canteen_id).subquery("open"))
    boxes, boxes_online = sa.func.coalesce(boxes_q.c.n, 0), sa.func.coalesce(boxes_q.c.online, 0)
    conds = [queries.visibility(p, c.id)]
    if f.region:
        conds.append(starts_with(c.jurisdiction, f.region))
    if f.name:
        conds.append(sa.or_(c.name.contains(f.name, autoescape=True), c.id == f.name))
    all_online = sa.and_(boxes > 0, boxes_online == boxes)
    if f.online == "1":
        conds.append(all_online)
    elif f.online == "0":
        conds.append(sa.not_(all_online))
    return (sa.select(c.id, c.name, c.jurisdiction, c.public_json, boxes.label("boxes"),
                      boxes_online.label("boxes_online"), boxes_q.c.last_seen,
                      sa.func.coalesce(cams_q.c.n, 0).label("cameras"),
                      sa.func.coalesce(cams_q.c.online, 0).label("cameras_online"),
                      sa.func.coalesce(open_q.c.n, 0).label("open"), sa.func.coalesce(open_q.c.overdue, 0).label("overdue"))
            .select_from(canteens.outerjoin(boxes_q, boxes_q.c.cid == c.id).outerjoin(cams_q, cams_q.c.cid == c.id)
                         .outerjoin(open_q, open_q.c.cid == c.id))
            .where(*conds).order_by(c.jurisdiction, c.id))


def state_of(boxes: int, online: int) -> str:
    if boxes == 0:
        return "无设备"
    if online == boxes:
        return "在线"
    return "离线" if online == 0 else "部分离线"


def local_time(ts: str | None, tz_hours: int) -> str:
    """A stored UTC timestamp as local time for people (`2024-05-01 08:30`); "" for none."""
    parsed = queries.parse_ts(ts)
    return (parsed + timedelta(hours=tz_hours)).strftime("%Y-%m-%d %H:%M") if parsed else ""


def school_view(row: dict[str, Any], tz_hours: int) -> dict[str, Any]:
    boxes, boxes_online = int(row["boxes"]), int(row["boxes_online"])
    return {"id": row["id"], "name": row["name"] or row["id"], "jurisdiction": row["jurisdiction"],
            "rating": queries.public_profile(row)["rating"], "state": state_of(boxes, boxes_online),
            "boxes": boxes, "boxes_online": boxes_online, "cameras": int(row["cameras"]),
            "cameras_online": int(row["cameras_online"]), "last_seen": local_time(row["last_seen"], tz_hours),
            "open": int(row["open"]), "overdue": int(row["overdue"])}


def equipment_of(db: Db, canteen_ids: list[str], tz_hours: int) -> dict[str, list[dict[str, Any]]]:
    """The boxes of these canteens with their cameras, by canteen id."""
    if not canteen_ids:
        return {}
    d, cam = devices.c, cameras.c
    with db.read() as conn:
        boxes = db.all(sa.select(d.id, d.canteen_id, d.name, d.online, d.last_seen)
                       .where(d.canteen_id.in_(canteen_ids)).order_by(d.id), conn)
        cams = db.all(sa.select(cam.device_id, cam.camera_id, cam.name, cam.state)
                      .where(cam.device_id.in_([b["id"] for b in boxes])).order_by(cam.device_id, cam.camera_id), conn)
    out: dict[str, list[dict[str, Any]]] = {}
    for b in boxes:
        online = bool(b["online"])
        out.setdefault(b["canteen_id"], []).append({
            "id": b["id"], "name": b["name"] or b["id"], "online": online,
            "last_seen": local_time(b["last_seen"], tz_hours),
            "cameras": [{"id": c["camera_id"], "name": c["name"] or c["camera_id"],
                         "online": online and c["state"] == "online",
                         "state": CAMERA_STATES.get(c["state"] or "", c["state"] or "未知") if online else "离线",
                         "live": f"/live/{b['id']}/{c['camera_id']}"}
                        for c in cams if c["device_id"] == b["id"]]})
    return out


def _filter(request: web.Request, p: Principal) -> SchoolFilter:
    q = request.query
    try:
        region = dq.resolve_region(p, q.get("region")) if p.role != "canteen" else ""
    except dq.OutOfScope as err:
        raise PageError(403, "无权访问", "所选区域不在您的管辖范围内。") from err
    except dq.FilterError as err:
        raise PageError(400, "筛选条件有误", str(err)) from err
    online = (q.get("online") or "").strip()
    if online not in ("", "1", "0"):
        raise PageError(400, "筛选条件有误", "在线状态只能是 在线 或 离线")
    return SchoolFilter(region, online, (q.get("q") or "").strip()[:NAME_MAX])


def _query(f: SchoolFilter, **more: Any) -> str:
    params = {"region": f.region, "online": f.online, "q": f.name, **more}
    return urlencode({k: v for k, v in params.items() if v})


async def schools_page(request: web.Request) -> web.Response:
    _, p = require_user(request, roles=ROLES)
    c, f = ctx(request), _filter(request, p)
    try:
        page = max(1, int(request.query.get("page") or 1))
    except ValueError as err:
        raise PageError(400, "筛选条件有误", "页码应为正整数") from err
    db, tz = c.storage.sql, c.settings.tz_hours
    stmt = school_select(db, p, f, now=c.now(), default_hours=c.settings.default_deadline_hours)

    def read() -> tuple[int, list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
        total = int(db.scalar(sa.select(sa.func.count()).select_from(stmt.subquery())) or 0)
        rows = [school_view(r, tz) for r in db.all(stmt.limit(PAGE_SIZE).offset((page - 1) * PAGE_SIZE))]
        return total, rows, equipment_of(db, [r["id"] for r in rows], tz)

    total, rows, equipment = await asyncio.to_thread(read)
    regions = dq.regions_of(db, p) if p.role != "canteen" else []
    if f.region and f.region not in regions:
        regions.append(f.region)
    pages = max(1, -(-total // PAGE_SIZE))
    return render(request, "schools.html", {
        "title": "学校", "rows": rows, "equipment": equipment, "total": total, "f": f, "page": page,
        "regions": regions, "own_scope": p.scope if p.role == "regulator" else "",
        "prev_query": _query(f, page=page - 1) if page > 1 else None,
        "next_query": _query(f, page=page + 1) if page < pages else None, "pages": pages,
        "xlsx_url": "/schools.xlsx?" + _query(f)})


async def schools_xlsx(request: web.Request) -> web.Response:
    _, p = require_user(request, roles=ROLES)
    c, f = ctx(request), _filter(request, p)
    db, tz = c.storage.sql, c.settings.tz_hours
    stmt = school_select(db, p, f, now=c.now(), default_hours=c.settings.default_deadline_hours)

    def build() -> bytes | None:
        rows = db.all(stmt.limit(XLSX_MAX_ROWS + 1))
        if len(rows) > XLSX_MAX_ROWS:
            return None
        views = (school_view(r, tz) for r in rows)
        cells = ([v["id"], v["name"], v["jurisdiction"], v["rating"] or None, v["state"], v["boxes"], v["boxes_online"],
                  v["cameras"], v["cameras_online"], v["last_seen"] or None, v["open"], v["overdue"]] for v in views)
        return sheet_workbook("学校", SCHOOL_HEADERS, cells, widths=SCHOOL_WIDTHS)

    body = await asyncio.to_thread(build)
    if body is None:
        raise PageError(400, "导出条数过多", f"符合条件的学校超过 {XLSX_MAX_ROWS} 所, 请按区县筛选后再导出。")
    today = (c.now() + timedelta(hours=tz)).date().isoformat()
    return xlsx.response(body, f"学校-{f.region or '全部'}-{today}.xlsx", f"schools-{f.region or 'all'}-{today}.xlsx")


def register(app: web.Application) -> None:
    app.router.add_get("/schools", schools_page)
    app.router.add_get("/schools.xlsx", schools_xlsx)
