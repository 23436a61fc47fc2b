"""自律台账 pages: `/ledgers` (the ledgers of a canteen; regulators pick one in their scope with ?canteen=),
`/ledgers/{kind}` (a ledger's entries, newest first, with the create form for the canteen),
`/ledgers/morning-checks/shift` (a whole shift's 晨检 on one screen), `/ledgers/{kind}/{rid}` (an entry
with its revisions, the correction form and comments) and `/ledgers/day/{date}` (one day of the canteen for
tracing: `ledger_day`).

Pages read through `cloud_receiver.ledgers.store` with the user's principal (a canteen outside the scope is
a 404 page); every write is done by static/ledgers.js against the JSON API (/api/v1/canteens/{id}/…), so the
API's checks (400/422 naming the field) are the only ones, and their messages are shown next to the form.
The forms are generated from `ledger_forms.FORMS`, a small field table per ledger kind.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from cloud_receiver.admin.auth import Principal
from cloud_receiver.api.context import ctx
from cloud_receiver.appkeys import CONFIG
from cloud_receiver.ledgers import store, trace
from cloud_receiver.ledgers.models import FEVER_C, KINDS
from cloud_receiver.web.ledger_day import day_context
from cloud_receiver.web.ledger_forms import FORMS, ITEM_FIELDS, UNITS, local, photos_of, rows, summary
from cloud_receiver.web.pages import PageError, render, require_user
from cloud_receiver.workflow import queries
from cloud_receiver.workflow.queries import NotFound

TZ = timedelta(hours=8)
PAGE_SIZE = 50
WRITERS = ("canteen", "admin")


def today() -> str:
    return (datetime.now(UTC) + TZ).date().isoformat()


def _canteen(request: web.Request, principal: Principal, required: bool = True) -> dict[str, Any] | None:
    """The canteen the page is about: a canteen user's own; for others ?canteen= within their scope."""
    wanted = request.query.get("canteen", "").strip()
    if principal.role == "canteen":
        wanted = wanted or principal.scope
    if not wanted:
        if required:
            raise web.HTTPFound("/ledgers")
        return None
    try:
        return store.canteen_of(ctx(request).storage.sql, principal, wanted)
    except NotFound as err:
        raise PageError(404, "未找到", "没有这个食堂的台账, 或您无权查看。") from err


def _kind(request: web.Request) -> str:
    kind = request.match_info["kind"]
    if kind not in KINDS:
        raise PageError(404, "未找到", "没有这种台账。")
    return kind


def _cq(canteen: dict[str, Any], principal: Principal) -> str:
    """The `?canteen=` part of a link (none for a canteen user: the page knows its canteen)."""
    return "" if principal.role == "canteen" else "canteen=" + canteen["id"]


def _active(request: web.Request, principal: Principal, canteen_id: str, kind: str) -> list[dict[str, Any]]:
    """The active entries of the staff or suppliers ledger, by name: what a form's select offers."""
    items, _ = store.list_entries(ctx(request).storage.sql, principal, canteen_id, kind, limit=store.LIMIT_MAX)
    return sorted(({"id": s["id"], **s["data"]} for s in items if s["data"].get("active", True)),
                  key=lambda s: s["name"])


def _staff(request: web.Request, principal: Principal, canteen_id: str) -> list[dict[str, Any]]:
    return _active(request, principal, canteen_id, "staff")


def _form(request: web.Request, principal: Principal, canteen_id: str, kind: str) -> dict[str, Any]:
    """What a create or correction form of `kind` needs: its fields, the choices of its selects, the limits."""
    fields = FORMS.get(kind, ())
    types = {f.type for f in fields}
    return {"fields": fields, "units": UNITS, "item_fields": ITEM_FIELDS, "cq": "" if principal.role == "canteen"
            else "canteen=" + canteen_id,
            "choices": {"staff": _staff(request, principal, canteen_id) if "staff" in types else [],
                        "supplier": _active(request, principal, canteen_id, "suppliers") if "supplier" in types else []},
            "config": {"canteen": canteen_id, "kind": kind, "fields": [f.name for f in fields],
                       "types": {f.name: f.type for f in fields}, "photo_max_bytes": ctx(request).settings.photo_max_bytes}}


def _day_or_404(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError as err:
        raise PageError(404, "未找到", "日期请用 年-月-日 格式, 例如 2024-05-01。") from err


async def index_page(request: web.Request) -> web.Response:
    user, principal = require_user(request)
    canteen = _canteen(request, principal, required=False)
    schools = [] if canteen else queries.list_canteens(ctx(request).storage.sql, principal)
    return render(request, "ledgers.html", {
        "title": "台账", "canteen": canteen, "schools": schools, "cq": _cq(canteen, principal) if canteen else "",
        "kinds": [(k.code, k.name) for k in KINDS.values()], "can_write": principal.role in WRITERS,
        "today": today()})


async def list_page(request: web.Request) -> web.Response:
    user, principal = require_user(request)
    kind = _kind(request)
    canteen = _canteen(request, principal)
    assert canteen is not None
    q, db = request.query, ctx(request).storage.sql
    shown = {k: q.get(k, "").strip() for k in ("since", "until")}
    try:
        items, nxt = store.list_entries(
            db, principal, canteen["id"], kind, limit=PAGE_SIZE, cursor=q.get("cursor") or None,
            day_from=datetime.strptime(shown["since"], "%Y-%m-%d").date() if shown["since"] else None,
            day_to=datetime.strptime(shown["until"], "%Y-%m-%d").date() if shown["until"] else None)
    except (ValueError, queries.QueryError) as err:
        raise PageError(400, "筛选条件有误", "日期请用 年-月-日 格式, 例如 2024-05-01。") from err
    names = trace.names_of(db, canteen["id"])  # inactive people and suppliers keep their names
    for e in items:
        e["summary"], e["created_local"] = summary(kind, e["data"], names), local(e["created_at"])
        e["photos"] = photos_of(kind, e["data"])[:3]
    cq = _cq(canteen, principal)
    filters = {"canteen": canteen["id"] if cq else "", **shown}
    export = {"from": shown["since"], "to": shown["until"]}
    writer = principal.role in WRITERS and kind in FORMS
    return render(request, "ledger_list.html", {
        "title": KINDS[kind].name, "kind": kind, "kind_name": KINDS[kind].name, "canteen": canteen, "cq": cq,
        "items": items, "shown": shown, "today": today(), "form": _form(request, principal, canteen["id"], kind)
        if writer else None,
        "export_url": f"/api/v1/canteens/{canteen['id']}/ledgers/{kind}/export.xlsx?"
                      + urlencode({k: v for k, v in export.items() if v}),
        "next_query": urlencode({k: v for k, v in {**filters, "cursor": nxt}.items() if v}) if nxt else None})


async def shift_page(request: web.Request) -> web.Response:
    user, principal = require_user(request, roles=WRITERS)
    canteen = _canteen(request, principal)
    assert canteen is not None
    return render(request, "ledger_shift.html", {
        "title": "晨检 · 整班录入", "canteen": canteen, "cq": _cq(canteen, principal),
        "staff": _staff(request, principal, canteen["id"]), "today": today(), "checker": user.shown_name,
        "shift": {"canteen": canteen["id"], "fever": FEVER_C}})


async def entry_page(request: web.Request) -> web.Response:
    user, principal = require_user(request)
    kind = _kind(request)
    canteen = _canteen(request, principal)
    assert canteen is not None
    db = ctx(request).storage.sql
    try:
        entry = store.get_entry(db, principal, canteen["id"], kind, request.match_info["rid"])
    except NotFound as err:
        raise PageError(404, "未找到", "没有这条台账记录, 或您无权查看。") from err
    names = trace.names_of(db, canteen["id"])
    for rev in entry["revisions"]:
        rev["created_local"] = local(rev["created_at"])
        rev["edited_local"] = local(rev["edited_at"])
        rev["rows"] = rows(kind, rev["data"], names)
    for c in entry["comments"]:
        c["at_local"] = local(c["at"])
    current = next(r for r in entry["revisions"] if r["current"])
    form = _form(request, principal, canteen["id"], kind) if principal.role in WRITERS and kind in FORMS else None
    if form:
        form["config"].update(rid=entry["id"], data=current["data"])
    supplier_id = current["data"].get("supplier_id")
    return render(request, "ledger_entry.html", {
        "title": f"{KINDS[kind].name} · 记录", "kind": kind, "kind_name": KINDS[kind].name, "canteen": canteen,
        "cq": _cq(canteen, principal), "entry": entry, "current": current, "form": form,
        "earlier": [r for r in reversed(entry["revisions"]) if not r["current"]], "today": today(),
        "has_day": "day" in current["data"], "supplier_id": supplier_id if supplier_id in names else None,
        "editable": form is not None and datetime.fromisoformat(
            entry["editable_until"].replace("Z", "+00:00")) > ctx(request).now(),
        "editable_local": local(entry["editable_until"])})


async def day_pick(request: web.Request) -> web.Response:
    """`/ledgers/day?day=…` (the day page's date picker), or today: to `/ledgers/day/{date}`."""
    user, principal = require_user(request)
    canteen = _canteen(request, principal)
    assert canteen is not None
    day = _day_or_404(request.query.get("day", "").strip() or today())
    cq = _cq(canteen, principal)
    raise web.HTTPFound(f"/ledgers/day/{day.isoformat()}" + (f"?{cq}" if cq else ""))


async def day_page(request: web.Request) -> web.Response:
    """One day of a canteen for tracing (按日追溯): who worked and was checked, what was served and sampled, …"""
    user, principal = require_user(request)
    canteen = _canteen(request, principal)
    assert canteen is not None
    day = _day_or_404(request.match_info["day"])
    db, cfg = ctx(request).storage.sql, request.app[CONFIG].ledgers
    try:
        view = trace.day_view(db, principal, canteen["id"], day, cfg.health_cert_warn_days, cfg.tz_hours)
    except NotFound as err:
        raise PageError(404, "未找到", "没有这个食堂的台账, 或您无权查看。") from err
    return render(request, "ledger_day.html", {
        "title": f"按日追溯 · {day.isoformat()}", "canteen": canteen, "cq": _cq(canteen, principal),
        "day": day.isoformat(), "today": today(), "prev_day": (day - timedelta(days=1)).isoformat(),
        "next_day": (day + timedelta(days=1)).isoformat() if day.isoformat() < today() else None,
        "api_url": f"/api/v1/canteens/{canteen['id']}/days/{day.isoformat()}",
        **day_context(view, trace.names_of(db, canteen["id"]))})


def register(app: web.Application) -> None:
    app.router.add_get("/ledgers", index_page)
    app.router.add_get("/ledgers/morning-checks/shift", shift_page)
    app.router.add_get("/ledgers/day", day_pick)  # before /ledgers/{kind}: `day` is no ledger
    app.router.add_get("/ledgers/day/{day:[0-9]{4}-[0-9]{2}-[0-9]{2}}", day_page)
    app.router.add_get("/ledgers/{kind}", list_page)
    app.router.add_get("/ledgers/{kind}/{rid:[0-9A-Za-z_-]{1,64}}", entry_page)
