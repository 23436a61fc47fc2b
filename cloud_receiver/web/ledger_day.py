"""The day page of a canteen (`/ledgers/day/{date}`, 按日追溯): `trace.day_view` turned into what the template
shows — who was checked and worked, who was not checked, what was served and sampled, the deliveries with
their supplier, licence and photos, the other ledgers of that day and the ledger alerts raised.

Pure functions over the day view (no I/O); the handler is `ledger_pages.day_page`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bk_contract.violations import ALERT_TYPE_NAMES
from cloud_receiver.ledgers.models import KINDS
from cloud_receiver.web.ledger_forms import fmt, item_text, local, photos_of, summary

STATES = {"valid": "有效", "expiring": "即将过期", "expired": "已过期", "unknown": "无记录"}
SIGNS = (("hand_wound", "手部外伤"), ("diarrhea", "腹泻"), ("fever", "发热"), ("cough", "咳嗽"))
# the ledgers the page lists after checks, purchases and samples, each as entries with a summary
SECTIONS = ("gatherings", "disinfection", "waste", "additives", "photos")


def check_row(check: Mapping[str, Any]) -> dict[str, Any]:
    d, person = check["data"], check.get("staff") or {}
    signs = [label for key, label in SIGNS if d.get(key)]
    return {"id": check["id"], "name": person.get("name") or d.get("staff_id"), "position": person.get("position"),
            "staff_id": person.get("id"), "temperature": fmt(None, d.get("temperature_c")),
            "signs": "、".join(signs) or "无", "fit": bool(d.get("fit_to_work")), "checked_by": d.get("checked_by"),
            "cert_expiry": person.get("health_cert_expiry"),
            "cert_state": person.get("health_cert_state", "unknown"),
            "cert_state_name": STATES[person.get("health_cert_state", "unknown")]}


def purchase_row(purchase: Mapping[str, Any]) -> dict[str, Any]:
    d, s = purchase["data"], purchase.get("supplier")
    supplier = None
    if s:
        supplier = {**s, "state_name": STATES[s["licence_state"]]}
    return {"id": purchase["id"], "supplier": supplier, "supplier_id": d.get("supplier_id"),
            "items": [item_text(i) for i in d.get("items", [])], "note": d.get("note"),
            "photos": photos_of("purchases", d)}


def sample_row(sample: Mapping[str, Any]) -> dict[str, Any]:
    d = sample["data"]
    return {"id": sample["id"], "meal": d.get("meal"), "dish": d.get("dish"), "weight": fmt(None, d.get("weight_g")),
            "kept_by": d.get("kept_by"), "kept_from": local(d.get("kept_from")), "kept_until": local(d.get("kept_until")),
            "photos": photos_of("samples", d)}


def entry_row(kind: str, entry: Mapping[str, Any], names: Mapping[str, str]) -> dict[str, Any]:
    return {"id": entry["id"], "summary": summary(kind, entry["data"], names), "photos": photos_of(kind, entry["data"])}


def day_context(view: Mapping[str, Any], names: Mapping[str, str]) -> dict[str, Any]:
    """The template's data for one day of one canteen (`view` from `trace.day_view`)."""
    checks = [check_row(c) for c in view["morning_checks"]]
    samples = sorted((sample_row(s) for s in view["samples"]), key=lambda s: ("早午晚".find(s["meal"] or ""), s["dish"]))
    gathering_dishes = [dish for g in view["gatherings"] for dish in g["data"].get("dishes", [])]
    return {
        "checks": sorted(checks, key=lambda c: (not c["fit"], c["name"] or "")),
        "working": view["working"], "not_checked": view["not_checked"],
        "purchases": [purchase_row(p) for p in view["purchases"]],
        "samples": samples, "served": sorted({s["dish"] for s in samples if s["dish"]} | set(gathering_dishes)),
        "sections": [(kind, KINDS[kind].name, [entry_row(kind, e, names) for e in view[kind]])
                     for kind in SECTIONS if view[kind]],
        "empty_sections": [KINDS[kind].name for kind in SECTIONS if not view[kind]],
        "alerts": [{**a, "type_name": ALERT_TYPE_NAMES.get(a["type"], a["type"]), "at": local(a["started_at"])}
                   for a in view["alerts"]],
        "counts": {"checks": len(checks), "working": len(view["working"]), "not_checked": len(view["not_checked"]),
                   "purchases": len(view["purchases"]), "samples": len(samples), "alerts": len(view["alerts"])},
    }

