"""自律台账 pages: `/ledgers` (the ledgers of a canteen; regulators pick one in their scope with ?canteen=),
`/ledgers/{kind}` (a ledger's entries, newest first, with the create form for the canteen),
`/ledgers/morning-checks/shift` (a whole shift's 晨检 on one screen) and `/ledgers/{kind}/{rid}` (an entry
with its revisions, the correction form and comments).

Pages read through `cloud_receiver.ledgers.store` with the user's principal (a canteen outside the scope is
a 404 page); every write is done by static/ledgers.js against the JSON API (/api/v1/canteens/{id}/…), so the
API's checks (400/422 naming the field) are the only ones, and their messages are shown next to the form.
The forms are generated from `FORMS`, a small field table per ledger kind; kinds without one list only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from cloud_receiver.admin.auth import Principal
from cloud_receiver.api.context import ctx
from cloud_receiver.ledgers import store
from cloud_receiver.ledgers.models import FEVER_C, KINDS
from cloud_receiver.web.pages import PageError, render, require_user
from cloud_receiver.workflow import queries
from cloud_receiver.workflow.queries import NotFound

TZ = timedelta(hours=8)
PAGE_SIZE = 50
WRITERS = ("canteen", "admin")


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    label: str
    type: str = "text"  # text, date, number, bool, select, datetime, staff (a select of active staff)
    required: bool = False
    options: tuple[str, ...] = ()
    step: str = "any"
    default: Any = None


def F(name: str, label: str, type: str = "text", required: bool = False, **kw: Any) -> Field:  # noqa: N802
    return Field(name, label, type, required, **kw)


FORMS: dict[str, tuple[Field, ...]] = {
    "staff": (F("name", "姓名", required=True), F("position", "岗位"),
              F("health_cert_no", "健康证编号", required=True), F("health_cert_issued", "健康证发证日期", "date", True),
              F("health_cert_expiry", "健康证有效期至", "date", True), F("active", "在岗", "bool", default=True)),
    "morning_checks": (F("day", "日期", "date", True), F("staff_id", "人员", "staff", True),
                       F("temperature_c", "体温 (℃)", "number", True, step="0.1", default=36.5),
                       F("hand_wound", "手部外伤", "bool"), F("diarrhea", "腹泻", "bool"), F("fever", "发热", "bool"),
                       F("cough", "咳嗽", "bool"), F("fit_to_work", "可上岗", "bool", default=True),
                       F("checked_by", "晨检人"), F("note", "备注")),
    "samples": (F("day", "日期", "date", True), F("meal", "餐次", "select", True, options=("早", "午", "晚")),
                F("dish", "菜品", required=True), F("weight_g", "留样量 (克, ≥125)", "number", True, default=125),
                F("kept_from", "留样时间", "datetime", True), F("kept_until", "计划保留至 (≥48 小时)", "datetime", True),
                F("kept_by", "留样人", required=True), F("note", "备注")),
    "suppliers": (F("name", "供货商名称", required=True), F("credit_code", "统一社会信用代码", required=True),
                  F("licence_no", "许可证编号", required=True), F("licence_expiry", "许可证有效期至", "date", True),
                  F("address", "地址"), F("contact", "联系人"), F("phone", "电话"), F("active", "合作中", "bool", default=True)),
    "disinfection": (F("day", "日期", "date", True), F("target", "消毒对象", required=True),
                     F("method", "消毒方式", "select", True, options=("热力", "化学", "紫外线", "其他")),
                     F("agent", "消毒剂及浓度"), F("duration_min", "时长 (分钟)", "number", True, step="1"),
                     F("operator", "操作人", required=True), F("note", "备注")),
    "waste": (F("day", "日期", "date", True),
              F("category", "类别", "select", True, options=("餐厨垃圾", "废弃油脂", "其他")),
              F("quantity_kg", "数量 (千克)", "number", True), F("collector", "收运人", required=True),
              F("company", "收运单位", required=True), F("note", "备注")),
}
OTHER_LABELS = {"day": "日期", "note": "备注", "active": "在用", "photo_sha256": "照片", "photo_sha256s": "照片",
                "health_cert_photo_sha256": "健康证照片", "licence_photo_sha256": "许可证照片",
                "discarded_at": "实际销毁时间", "discarded_by": "销毁人", "supplier_id": "供货商", "items": "品名",
                "certificate_photo_sha256s": "检验合格证明", "invoice_photo_sha256s": "票据", "name": "名称"}


def label_of(kind: str, name: str) -> str:
    return next((f.label for f in FORMS.get(kind, ()) if f.name == name), OTHER_LABELS.get(name, name))


def local(ts: str | None) -> str:
    if not ts:
        return ""
    return (datetime.fromisoformat(ts.replace("Z", "+00:00")) + TZ).strftime("%Y-%m-%d %H:%M")


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


def _fmt(field: Field | None, value: Any) -> str:
    if isinstance(value, bool):
        return "是" if value else "否"
    if value is None or value == "" or value == []:
        return "—"
    if field is not None and field.type == "datetime":
        return local(str(value))
    return str(value)


def _staff(request: web.Request, principal: Principal, canteen_id: str) -> list[dict[str, Any]]:
    items, _ = store.list_entries(ctx(request).storage.sql, principal, canteen_id, "staff", limit=store.LIMIT_MAX)
    return sorted(({"id": s["id"], **s["data"]} for s in items if s["data"].get("active", True)),
                  key=lambda s: s["name"])


def _summary(kind: str, data: dict[str, Any], names: dict[str, str]) -> str:
    fields = FORMS.get(kind)
    if fields is None:
        return "; ".join(f"{k}: {_fmt(None, v)}" for k, v in list(data.items())[:4])
    parts = []
    for f in fields[:5]:
        if f.name == "day" or f.name not in data:
            continue
        value = names.get(data[f.name], data[f.name]) if f.type == "staff" else data[f.name]
        parts.append(f"{f.label}: {_fmt(f, value)}")
    return "; ".join(parts)


async def index_page(request: web.Request) -> web.Response:
    user, principal = require_user(request)
    canteen = _canteen(request, principal, required=False)
    schools = [] if canteen else queries.list_canteens(ctx(request).storage.sql, principal)
    return render(request, "ledgers.html", {
        "title": "台账", "canteen": canteen, "schools": schools, "cq": _cq(canteen, principal) if canteen else "",
        "kinds": [(k.code, k.name) for k in KINDS.values()], "can_write": principal.role in WRITERS})


async def list_page(request: web.Request) -> web.Response:
    user, principal = require_user(request)
    kind = _kind(request)
    canteen = _canteen(request, principal)
    assert canteen is not None
    q = request.query
    shown = {k: q.get(k, "").strip() for k in ("since", "until")}
    try:
        items, nxt = store.list_entries(
            ctx(request).storage.sql, principal, canteen["id"], kind, limit=PAGE_SIZE, cursor=q.get("cursor") or None,
            day_from=datetime.strptime(shown["since"], "%Y-%m-%d").date() if shown["since"] else None,
            day_to=datetime.strptime(shown["until"], "%Y-%m-%d").date() if shown["until"] else None)
    except (ValueError, queries.QueryError) as err:
        raise PageError(400, "筛选条件有误", "日期请用 年-月-日 格式, 例如 2024-05-01。") from err
    staff = _staff(request, principal, canteen["id"])
    names = {s["id"]: s["name"] for s in staff}
    if kind == "morning_checks":  # inactive people's checks still show their names
        all_staff, _ = store.list_entries(ctx(request).storage.sql, principal, canteen["id"], "staff", limit=200)
        names = {s["id"]: s["data"]["name"] for s in all_staff}
    for e in items:
        e["summary"], e["created_local"] = _summary(kind, e["data"], names), local(e["created_at"])
    cq = _cq(canteen, principal)
    filters = {"canteen": canteen["id"] if cq else "", **shown}
    export = {"from": shown["since"], "to": shown["until"]}
    fields = FORMS.get(kind) if principal.role in WRITERS else None
    return render(request, "ledger_list.html", {
        "title": KINDS[kind].name, "kind": kind, "kind_name": KINDS[kind].name, "canteen": canteen, "cq": cq,
        "items": items, "shown": shown, "fields": fields, "staff": staff, "today": today(),
        "export_url": f"/api/v1/canteens/{canteen['id']}/ledgers/{kind}/export.xlsx?"
                      + urlencode({k: v for k, v in export.items() if v}),
        "next_query": urlencode({k: v for k, v in {**filters, "cursor": nxt}.items() if v}) if nxt else None,
        "form": {"canteen": canteen["id"], "kind": kind, "fields": [f.name for f in fields or ()]}})


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
    try:
        entry = store.get_entry(ctx(request).storage.sql, principal, canteen["id"], kind, request.match_info["rid"])
    except NotFound as err:
        raise PageError(404, "未找到", "没有这条台账记录, 或您无权查看。") from err
    fields = FORMS.get(kind)
    by_name = {f.name: f for f in fields or ()}
    names = {}
    if kind == "morning_checks":
        all_staff, _ = store.list_entries(ctx(request).storage.sql, principal, canteen["id"], "staff", limit=200)
        names = {s["id"]: s["data"]["name"] for s in all_staff}
    for rev in entry["revisions"]:
        rev["created_local"] = local(rev["created_at"])
        rev["edited_local"] = local(rev["edited_at"])
        rev["rows"] = [(label_of(kind, k), _fmt(by_name.get(k), names.get(v, v) if k == "staff_id" else v))
                       for k, v in rev["data"].items()]
    for c in entry["comments"]:
        c["at_local"] = local(c["at"])
    current = next(r for r in entry["revisions"] if r["current"])
    writer = principal.role in WRITERS
    return render(request, "ledger_entry.html", {
        "title": f"{KINDS[kind].name} · 记录", "kind": kind, "kind_name": KINDS[kind].name, "canteen": canteen,
        "cq": _cq(canteen, principal), "entry": entry, "current": current,
        "earlier": [r for r in reversed(entry["revisions"]) if not r["current"]],
        "fields": fields if writer else None, "staff": _staff(request, principal, canteen["id"]) if writer else [],
        "today": today(), "editable": writer and datetime.fromisoformat(
            entry["editable_until"].replace("Z", "+00:00")) > ctx(request).now(),
        "editable_local": local(entry["editable_until"]),
        "form": {"canteen": canteen["id"], "kind": kind, "rid": entry["id"], "data": current["data"],
                 "fields": [f.name for f in fields or ()]}})


def register(app: web.Application) -> None:
    app.router.add_get("/ledgers", index_page)
    app.router.add_get("/ledgers/morning-checks/shift", shift_page)
    app.router.add_get("/ledgers/{kind}", list_page)
    app.router.add_get("/ledgers/{kind}/{rid:[0-9A-Za-z_-]{1,64}}", entry_page)
