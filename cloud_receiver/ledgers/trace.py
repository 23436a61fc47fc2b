"""Traceability (问题食品来源可溯、责任可查): one day of a canteen, and a purchase's supplier and licence.

`day_view` answers "what happened in this kitchen that day": who was checked and with what result
(so who worked), who of the active staff was not checked, the deliveries with their supplier and the
state of its licence on that day, the samples kept, disinfection, waste, gatherings, additives and
photos, and the ledger alerts raised during that day.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import sqlalchemy as sa

from cloud_receiver.admin.auth import Principal
from cloud_receiver.ledgers.rules import licence_state
from cloud_receiver.ledgers.runner import LEDGER_DEVICE
from cloud_receiver.ledgers.store import canteen_of, data_of, day_start, view
from cloud_receiver.storage.db import Db, iso
from cloud_receiver.storage.schema import alerts, ledger_records

R = ledger_records.c
OTHER_KINDS = ("samples", "disinfection", "waste", "gatherings", "additives", "photos")


def supplier_of(suppliers: dict[str, dict[str, Any]], supplier_id: str | None, on: date,
                warn_days: int) -> dict[str, Any] | None:
    """A purchase's supplier as the day view and the purchase view show it, with its licence state on `on`."""
    row = suppliers.get(supplier_id or "")
    if row is None:
        return None
    d = data_of(row)
    return {"id": row["entry_id"], "name": d.get("name"), "credit_code": d.get("credit_code"),
            "licence_no": d.get("licence_no"), "licence_expiry": d.get("licence_expiry"),
            "licence_photo_sha256": d.get("licence_photo_sha256"), "active": d.get("active", True),
            "licence_state": licence_state(d.get("licence_expiry"), on, warn_days)}


def _current(db: Db, canteen_id: str, kinds: tuple[str, ...], day: date | None = None) -> list[dict[str, Any]]:
    stmt = sa.select(ledger_records).where(R.canteen_id == canteen_id, R.kind.in_(kinds), R.is_current == 1)
    if day is not None:
        stmt = stmt.where(R.day == day.isoformat())
    return db.all(stmt.order_by(R.entry_id))


def suppliers_by_id(db: Db, canteen_id: str) -> dict[str, dict[str, Any]]:
    return {r["entry_id"]: r for r in _current(db, canteen_id, ("suppliers",))}


def with_suppliers(db: Db, views: list[dict[str, Any]], warn_days: int) -> list[dict[str, Any]]:
    """Entry views, purchases with their supplier and its licence state on the delivery day (one read)."""
    purchases = [v for v in views if v["kind"] == "purchases"]
    if not purchases:
        return views
    suppliers = suppliers_by_id(db, purchases[0]["canteen_id"])
    return [{**v, "supplier": supplier_of(suppliers, v["data"].get("supplier_id"), date.fromisoformat(v["day"]),
                                          warn_days)} if v["kind"] == "purchases" else v for v in views]


def day_view(db: Db, p: Principal, canteen_id: str, day: date, warn_days: int, tz_hours: int) -> dict[str, Any]:
    canteen = canteen_of(db, p, canteen_id)
    staff = {r["entry_id"]: r for r in _current(db, canteen_id, ("staff",))}
    rows = _current(db, canteen_id, ("morning_checks", "purchases", *OTHER_KINDS), day)
    checks, checked = [], set()
    for r in (r for r in rows if r["kind"] == "morning_checks"):
        d = data_of(r)
        checked.add(d.get("staff_id"))
        person = staff.get(d.get("staff_id") or "")
        pd = data_of(person) if person else {}
        checks.append({**view(r), "staff": None if person is None else {
            "id": person["entry_id"], "name": pd.get("name"), "position": pd.get("position"),
            "health_cert_no": pd.get("health_cert_no"), "health_cert_expiry": pd.get("health_cert_expiry"),
            "health_cert_state": licence_state(pd.get("health_cert_expiry"), day, warn_days)}})
    not_checked = [{"id": sid, "name": data_of(s).get("name"), "position": data_of(s).get("position")}
                   for sid, s in staff.items()
                   if sid not in checked and data_of(s).get("active", True) and s["day"] <= day.isoformat()]
    suppliers = suppliers_by_id(db, canteen_id)
    purchases = [{**view(r), "supplier": supplier_of(suppliers, data_of(r).get("supplier_id"), day, warn_days)}
                 for r in rows if r["kind"] == "purchases"]
    a = alerts.c
    start = day_start(day, tz_hours)
    raised = db.all(sa.select(a.id, a.type, a.detail, a.status, a.started_at).where(
        a.canteen_id == canteen_id, a.device_id == LEDGER_DEVICE, a.started_at >= iso(start),
        a.started_at < iso(start + timedelta(days=1))).order_by(a.started_at, a.id))
    out: dict[str, Any] = {
        "canteen": {"id": canteen["id"], "name": canteen["name"]}, "day": day.isoformat(),
        "morning_checks": checks,
        "working": [c["staff"]["name"] for c in checks if c["data"].get("fit_to_work") and c["staff"]],
        "not_checked": not_checked, "purchases": purchases, "alerts": raised}
    for kind in OTHER_KINDS:
        out[kind] = [view(r) for r in rows if r["kind"] == kind]
    return out


def names_of(db: Db, canteen_id: str) -> dict[str, str]:
    """Entry id -> name of the canteen's staff and suppliers (for showing what an entry refers to)."""
    return {r["entry_id"]: str(data_of(r).get("name", "")) for r in _current(db, canteen_id, ("staff", "suppliers"))}
