"""What the 自律台账 forms hold and how an entry's values are shown: `FORMS`, a small field table per ledger
kind (the inputs templates/ledger_macros.html renders and static/ledgers.js reads by `data-type`), and the
formatting of values for lists, entry pages and the day page.

Field types: text, date, number, bool, select (of `options`), datetime, staff (a select of active staff),
supplier (a select of active suppliers), lines (a textarea, one value a line → a list), items (a purchase's
rows: name, quantity, unit …), photo (one uploaded JPEG's sha256) and photos (a list of them). Photos are
uploaded by the page's script to `POST /api/v1/canteens/{id}/ledger-photos` as they are picked; the form
sends their sha256s.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cloud_receiver.ledgers.models import MEALS

TZ = timedelta(hours=8)
NAMED = ("staff", "supplier")  # field types whose value is an entry id, shown by that entry's name
PHOTO_TYPES = ("photo", "photos")


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    label: str
    type: str = "text"
    required: bool = False
    options: tuple[str, ...] = ()
    step: str = "any"
    default: Any = None


def F(name: str, label: str, type: str = "text", required: bool = False, **kw: Any) -> Field:  # noqa: N802
    return Field(name, label, type, required, **kw)


DAY = F("day", "日期", "date", True)
NOTE = F("note", "备注")
MEAL = F("meal", "餐次", "select", True, options=MEALS)

FORMS: dict[str, tuple[Field, ...]] = {
    "staff": (F("name", "姓名", required=True), F("position", "岗位"),
              F("health_cert_no", "健康证编号", required=True), F("health_cert_issued", "健康证发证日期", "date", True),
              F("health_cert_expiry", "健康证有效期至", "date", True), F("active", "在岗", "bool", default=True),
              F("health_cert_photo_sha256", "健康证照片", "photo")),
    "morning_checks": (DAY, F("staff_id", "人员", "staff", True),
                       F("temperature_c", "体温 (℃)", "number", True, step="0.1", default=36.5),
                       F("hand_wound", "手部外伤", "bool"), F("diarrhea", "腹泻", "bool"), F("fever", "发热", "bool"),
                       F("cough", "咳嗽", "bool"), F("fit_to_work", "可上岗", "bool", default=True),
                       F("checked_by", "晨检人"), NOTE),
    "samples": (DAY, MEAL, F("dish", "菜品", required=True),
                F("weight_g", "留样量 (克, ≥125)", "number", True, default=125),
                F("kept_from", "留样时间", "datetime", True), F("kept_until", "计划保留至 (≥48 小时)", "datetime", True),
                F("kept_by", "留样人", required=True), F("photo_sha256", "留样照片", "photo"), NOTE),
    "suppliers": (F("name", "供货商名称", required=True), F("credit_code", "统一社会信用代码", required=True),
                  F("licence_no", "许可证编号", required=True), F("licence_expiry", "许可证有效期至", "date", True),
                  F("address", "地址"), F("contact", "联系人"), F("phone", "电话"),
                  F("active", "合作中", "bool", default=True), F("licence_photo_sha256", "许可证照片", "photo")),
    "purchases": (DAY, F("supplier_id", "供货商", "supplier", True), F("items", "品名及数量", "items", True),
                  F("certificate_photo_sha256s", "检验合格证明照片", "photos"),
                  F("invoice_photo_sha256s", "票据照片", "photos"), NOTE),
    "disinfection": (DAY, F("target", "消毒对象", required=True),
                     F("method", "消毒方式", "select", True, options=("热力", "化学", "紫外线", "其他")),
                     F("agent", "消毒剂及浓度"), F("duration_min", "时长 (分钟)", "number", True, step="1"),
                     F("operator", "操作人", required=True), F("photo_sha256s", "照片", "photos"), NOTE),
    "waste": (DAY, F("category", "类别", "select", True, options=("餐厨垃圾", "废弃油脂", "其他")),
              F("quantity_kg", "数量 (千克)", "number", True), F("collector", "收运人", required=True),
              F("company", "收运单位", required=True), F("photo_sha256s", "照片", "photos"), NOTE),
    "gatherings": (DAY, MEAL, F("occasion", "聚餐事由", required=True),
                   F("headcount", "人数", "number", True, step="1"), F("organizer", "组织人", required=True),
                   F("dishes", "菜品", "lines"), F("reported_to", "报备单位"), NOTE),
    "additives": (DAY, F("name", "添加剂名称", required=True), F("amount_g", "用量 (克)", "number", True),
                  F("dish", "用于菜品"), F("purpose", "用途"), F("operator", "使用人", required=True),
                  F("supplier_id", "供货商", "supplier"), NOTE),
    "photos": (DAY, F("photo_sha256s", "照片", "photos", True), F("category", "类别"), F("caption", "说明")),
}
ITEM_FIELDS = (F("name", "品名", required=True), F("quantity", "数量", "number", True),
               F("unit", "单位", required=True, default="千克"), F("batch", "批号"),
               F("shelf_life_days", "保质期 (天)", "number", step="1"), F("production_date", "生产日期", "date"))
UNITS = ("千克", "斤", "克", "升", "箱", "袋", "件", "瓶", "桶")
OTHER_LABELS = {"day": "日期", "note": "备注", "active": "在用", "photo_sha256": "照片", "photo_sha256s": "照片",
                "health_cert_photo_sha256": "健康证照片", "licence_photo_sha256": "许可证照片",
                "discarded_at": "实际销毁时间", "discarded_by": "销毁人", "supplier_id": "供货商", "items": "品名",
                "certificate_photo_sha256s": "检验合格证明", "invoice_photo_sha256s": "票据", "name": "名称"}


def field_of(kind: str, name: str) -> Field | None:
    return next((f for f in FORMS.get(kind, ()) if f.name == name), None)


def label_of(kind: str, name: str) -> str:
    f = field_of(kind, name)
    return f.label if f else OTHER_LABELS.get(name, name)


def local(ts: str | None) -> str:
    """An RFC 3339 time as Beijing time, minutes."""
    if not ts:
        return ""
    return (datetime.fromisoformat(ts.replace("Z", "+00:00")) + TZ).strftime("%Y-%m-%d %H:%M")


def shas(value: Any) -> list[str]:
    """The photo sha256s a field's value names (one, a list, or none)."""
    if isinstance(value, str) and value:
        return [value]
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def item_text(item: Mapping[str, Any]) -> str:
    """A purchase item as one line: 白菜 20 千克 (批号 B1, 生产日期 2024-05-01, 保质期 3 天)."""
    extra = [f"{label} {item[key]}" for key, label in (("batch", "批号"), ("production_date", "生产日期"))
             if item.get(key)]
    if item.get("shelf_life_days") is not None:
        extra.append(f"保质期 {item['shelf_life_days']} 天")
    text = f"{item.get('name', '')} {number(item.get('quantity', ''))} {item.get('unit', '')}"
    return text + (f" ({', '.join(extra)})" if extra else "")


def fmt(f: Field | None, value: Any, names: Mapping[str, str] | None = None) -> str:
    """A value as people read it (an entry id by its name, a list of photos by how many)."""
    if isinstance(value, bool):
        return "是" if value else "否"
    if value is None or value == "" or value == []:
        return "—"
    kind = f.type if f else ""
    if kind in NAMED:
        return (names or {}).get(value, value)
    if kind == "datetime":
        return local(str(value))
    if kind in PHOTO_TYPES:
        return f"{len(shas(value))} 张"
    if kind == "items" and isinstance(value, list):
        return "、".join(item_text(i) for i in value if isinstance(i, dict))
    if isinstance(value, list):
        return "、".join(str(v) for v in value)
    return number(value)


def summary(kind: str, data: Mapping[str, Any], names: Mapping[str, str]) -> str:
    """What a list row says about an entry: its first few fields (not the day, not its photos)."""
    fields = FORMS.get(kind)
    if fields is None:
        return "; ".join(f"{k}: {fmt(None, v)}" for k, v in list(data.items())[:4])
    shown = [f for f in fields if f.name != "day" and f.type not in PHOTO_TYPES
             and data.get(f.name) not in (None, "", [])][:4]
    return "; ".join(f"{f.label}: {fmt(f, data[f.name], names)}" for f in shown)


def photos_of(kind: str, data: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(label, sha256) of every photo an entry names, in the form's order."""
    names = [f.name for f in FORMS.get(kind, ()) if f.type in PHOTO_TYPES]
    names += [k for k in data if k.endswith(("_sha256", "_sha256s")) and k not in names]
    return [(label_of(kind, n), sha) for n in names for sha in shas(data.get(n))]


def rows(kind: str, data: Mapping[str, Any], names: Mapping[str, str]) -> list[tuple[str, str, list[str]]]:
    """(label, text, photo sha256s) of each field of an entry, as its page lists them."""
    out = []
    for key, value in data.items():
        f = field_of(kind, key)
        if f is None and key in ("supplier_id", "staff_id"):
            f = Field(key, label_of(kind, key), "supplier" if key == "supplier_id" else "staff")
        if f is None and key.endswith(("_sha256", "_sha256s")):
            f = Field(key, label_of(kind, key), "photos")
        out.append((label_of(kind, key), fmt(f, value, names), shas(value) if f and f.type in PHOTO_TYPES else []))
    return out
