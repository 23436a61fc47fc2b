"""大数据 `/dashboard` (admin, regulator): alert charts for a region and a period, drawn by Apache ECharts.

- `GET /dashboard?region=&days=7|30|90|365|custom&since=&until=` the page: the filter form and empty chart
  boxes; static/dashboard.js draws them from the JSON below.
- `GET /dashboard/data.json?region=&since=&until=` the numbers (web/dashboard_queries.py), session
  authenticated: 401 without a session, 403 for a canteen account or a region outside a regulator's
  jurisdiction, 400 for a bad date or code (JSON `{"error": {"code", "message"}}` as the API answers).
- `GET /dashboard/alerts.xlsx?…` the alerts behind the same filters (and /alerts' `type`, `canteen`,
  `status`), at most `XLSX_MAX_ROWS`; with no dates at all, the last 365 days (the /alerts page links here).

Dates are local days (UTC+8), `since` and `until` both included, as the /alerts page reads them; a click
on a chart opens /alerts with those parameters.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from bk_contract.violations import ALERT_TYPE_NAMES
from cloud_receiver.admin.auth import Principal
from cloud_receiver.api.context import ctx
from cloud_receiver.ledgers.xlsx import sheet_workbook
from cloud_receiver.web import dashboard_queries as dq
from cloud_receiver.web import xlsx
from cloud_receiver.web.pages import PageError, render, require_user
from cloud_receiver.web.sessions import current_session

ROLES = ("admin", "regulator")
PERIOD_DAYS = (7, 30, 90, 365)
DEFAULT_DAYS = 30
MAX_DAYS = 366
XLSX_MAX_ROWS = 50_000
ALERT_HEADERS = ("预警编号", "学校", "摄像头", "类型", "开始时间(北京时间)", "状态", "整改期限")
ALERT_WIDTHS = (30, 24, 16, 16, 20, 10, 20)
OUT_OF_SCOPE = "所选区域不在您的管辖范围内。"


@dataclass(frozen=True, slots=True)
class Filters:
    region: str
    period: dq.Period
    days: str  # "7", "30", "90", "365" or "custom": what the period menu shows

    def query(self, **more: str) -> str:
        """The filters as a query string of explicit dates (what data.json and the exports take)."""
        params = {"region": self.region, "since": self.period.first.isoformat(), "until": self.period.last.isoformat()}
        return urlencode({k: v for k, v in {**params, **more}.items() if v})


def _date(value: str | None, label: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value.strip())
    except ValueError as err:
        raise dq.FilterError(f"{label}: 请用 年-月-日 格式, 例如 2024-05-01") from err


def read_filters(query: Any, p: Principal, now: datetime, tz_hours: int, default_days: int = DEFAULT_DAYS) -> Filters:
    """Region and period from the query string: a preset `days` (`default_days` when nothing is given), or
    `since`/`until` dates (`days=custom` or no `days`); a preset period ends today. FilterError / OutOfScope
    for what cannot be shown."""
    region = dq.resolve_region(p, query.get("region"))
    today = (now + timedelta(hours=tz_hours)).date()
    days = (query.get("days") or "").strip()
    since, until = _date(query.get("since"), "开始日期"), _date(query.get("until"), "结束日期")
    if days == "custom" or (not days and (since or until)):
        last = until or today
        first = since or last - timedelta(days=default_days - 1)
        if first > last:
            raise dq.FilterError("开始日期不能晚于结束日期")
        if (last - first).days + 1 > MAX_DAYS:
            raise dq.FilterError(f"时间范围最长 {MAX_DAYS} 天")
        return Filters(region, dq.Period(first, last, tz_hours), "custom")
    days = days or str(default_days)
    if days not in {str(d) for d in PERIOD_DAYS}:
        raise dq.FilterError("时间范围只能是近 7、30、90、365 天或自定义日期")
    return Filters(region, dq.Period(today - timedelta(days=int(days) - 1), today, tz_hours), days)


def _page_filters(request: web.Request, p: Principal, default_days: int = DEFAULT_DAYS) -> Filters:
    c = ctx(request)
    try:
        return read_filters(request.query, p, c.now(), c.settings.tz_hours, default_days)
    except dq.OutOfScope as err:
        raise PageError(403, "无权访问", OUT_OF_SCOPE) from err
    except dq.FilterError as err:
        raise PageError(400, "筛选条件有误", str(err)) from err


def region_label(p: Principal, region: str) -> str:
    if not region:
        return "全部辖区"
    return f"{region} 全辖区" if p.role == "regulator" and region == p.scope else f"区县 {region}"


async def dashboard_page(request: web.Request) -> web.Response:
    _, p = require_user(request, roles=ROLES)
    f = _page_filters(request, p)
    regions = dq.regions_of(ctx(request).storage.sql, p)
    if f.region not in regions:
        regions.append(f.region)  # a finer code typed into the URL: keep it selectable
    return render(request, "dashboard.html", {
        "title": "大数据", "f": f, "regions": [(r, region_label(p, r)) for r in regions],
        "periods": [(str(d), f"近 {d} 天") for d in PERIOD_DAYS] + [("custom", "自定义")],
        "data_url": "/dashboard/data.json?" + f.query(), "alerts_xlsx": "/dashboard/alerts.xlsx?" + f.query(),
        "schools_xlsx": "/schools.xlsx?" + urlencode({"region": f.region} if f.region else {}),
        "region_text": region_label(p, f.region)})


def _json_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status,
                             headers={"Cache-Control": "no-store"})


async def dashboard_data(request: web.Request) -> web.Response:
    session = current_session(request)
    if session is None:
        return _json_error(401, "unauthorized", "请先登录。")
    if session.user.role not in ROLES:
        return _json_error(403, "forbidden", "您的账号没有查看大数据的权限。")
    c, p = ctx(request), session.user.principal
    try:
        f = read_filters(request.query, p, c.now(), c.settings.tz_hours)
    except dq.OutOfScope:
        return _json_error(403, "forbidden", OUT_OF_SCOPE)
    except dq.FilterError as err:
        return _json_error(400, "bad_request", str(err))
    data = await asyncio.to_thread(dq.dashboard_data, c.storage.sql, p, f.region, f.period, now=c.now(),
                                   default_hours=c.settings.default_deadline_hours)
    return web.json_response(data, headers={"Cache-Control": "no-store"})


def _alert_query(request: web.Request, f: Filters) -> dq.AlertQuery:
    q = request.query
    types = tuple(t for t in (q.get("type") or "").split(",") if t)
    unknown = [t for t in types if t not in ALERT_TYPE_NAMES]
    if unknown:
        raise PageError(400, "筛选条件有误", f"没有这种预警类型: {', '.join(unknown)}")
    return dq.AlertQuery(f.region, f.period, types, (q.get("canteen") or "").strip() or None,
                         (q.get("status") or "").strip() or None)


async def alerts_xlsx(request: web.Request) -> web.Response:
    _, p = require_user(request, roles=ROLES)
    c = ctx(request)
    f = _page_filters(request, p, default_days=max(PERIOD_DAYS))  # /alerts without dates: the last year
    aq = _alert_query(request, f)

    def build() -> bytes:
        rows = dq.alert_rows(c.storage.sql, p, aq, now=c.now(), default_hours=c.settings.default_deadline_hours,
                             limit=XLSX_MAX_ROWS)
        cells = ([r["id"], r["canteen_name"], r["camera"], r["type_name"], r["started_local"], r["status"],
                  r["deadline_local"]] for r in rows)
        return sheet_workbook("预警", ALERT_HEADERS, cells, widths=ALERT_WIDTHS)

    try:
        body = await asyncio.to_thread(build)
    except dq.TooMany as err:
        raise PageError(400, "导出条数过多", f"符合条件的预警超过 {XLSX_MAX_ROWS} 条, 请缩小时间范围或区域后再导出。") from err
    except dq.FilterError as err:
        raise PageError(400, "筛选条件有误", str(err)) from err
    first, last = f.period.first.isoformat(), f.period.last.isoformat()
    return xlsx.response(body, f"预警-{f.region or '全部'}-{first}至{last}.xlsx",
                         f"alerts-{f.region or 'all'}-{first}-{last}.xlsx")


def register(app: web.Application) -> None:
    app.router.add_get("/dashboard", dashboard_page)
    app.router.add_get("/dashboard/data.json", dashboard_data)
    app.router.add_get("/dashboard/alerts.xlsx", alerts_xlsx)
