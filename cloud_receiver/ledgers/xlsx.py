"""XLSX workbooks (openpyxl): the one-sheet writer every export uses, and a ledger as such a workbook.

`sheet_workbook` writes in write-only mode (rows stream into the file, so 50,000 alerts need little
memory): one sheet, a bold frozen header row, times as real spreadsheet dates. A ledger's workbook is
one sheet named after the ledger, Chinese headers, one row per entry (its current revision), for
printing and for inspectors who work in spreadsheets. The console's lists (cloud_receiver/web/xlsx.py)
and the API's ledger export use the same writer and `disposition`.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from urllib.parse import quote

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Font
from openpyxl.utils import get_column_letter

from cloud_receiver.ledgers.models import KINDS

XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

Cell = Callable[[dict[str, Any], dict[str, str]], Any]  # (entry data, names of referenced entries) -> value


def _field(name: str) -> Cell:
    def get(d: dict[str, Any], _names: dict[str, str]) -> Any:
        value = d.get(name)
        if isinstance(value, bool):
            return "是" if value else "否"
        if isinstance(value, list):
            return "\n".join(str(v) for v in value)
        return value
    return get


def _ref(name: str) -> Cell:
    return lambda d, names: names.get(d.get(name) or "", d.get(name))


def _items(d: dict[str, Any], _names: dict[str, str]) -> str:
    return "；".join(f"{i.get('name')} {i.get('quantity'):g} {i.get('unit')}" for i in d.get("items", []))


F = _field
COLUMNS: dict[str, tuple[tuple[str, Cell], ...]] = {
    "suppliers": (("供货商名称", F("name")), ("统一社会信用代码", F("credit_code")), ("许可证编号", F("licence_no")),
                  ("许可证有效期至", F("licence_expiry")), ("地址", F("address")), ("联系人", F("contact")),
                  ("联系电话", F("phone")), ("在用", F("active")), ("许可证照片", F("licence_photo_sha256"))),
    "purchases": (("供货商", _ref("supplier_id")), ("品名及数量", _items), ("检验合格证明", F("certificate_photo_sha256s")),
                  ("票据", F("invoice_photo_sha256s")), ("备注", F("note"))),
    "staff": (("姓名", F("name")), ("岗位", F("position")), ("健康证编号", F("health_cert_no")),
              ("发证日期", F("health_cert_issued")), ("有效期至", F("health_cert_expiry")), ("在岗", F("active")),
              ("健康证照片", F("health_cert_photo_sha256"))),
    "morning_checks": (("从业人员", _ref("staff_id")), ("体温(℃)", F("temperature_c")), ("手部外伤", F("hand_wound")),
                       ("腹泻", F("diarrhea")), ("发热", F("fever")), ("咳嗽", F("cough")), ("可以上岗", F("fit_to_work")),
                       ("检查人", F("checked_by")), ("备注", F("note"))),
    "disinfection": (("消毒对象", F("target")), ("消毒方式", F("method")), ("消毒剂及浓度", F("agent")),
                     ("时长(分钟)", F("duration_min")), ("操作人", F("operator")), ("照片", F("photo_sha256s")),
                     ("备注", F("note"))),
    "waste": (("种类", F("category")), ("数量(千克)", F("quantity_kg")), ("收运人", F("collector")),
              ("收运单位", F("company")), ("照片", F("photo_sha256s")), ("备注", F("note"))),
    "samples": (("餐次", F("meal")), ("菜品", F("dish")), ("重量(克)", F("weight_g")), ("留样时间", F("kept_from")),
                ("留样至", F("kept_until")), ("留样人", F("kept_by")), ("处置时间", F("discarded_at")),
                ("处置人", F("discarded_by")), ("照片", F("photo_sha256")), ("备注", F("note"))),
    "gatherings": (("餐次", F("meal")), ("聚餐事由", F("occasion")), ("人数", F("headcount")), ("组织人", F("organizer")),
                   ("菜品", F("dishes")), ("报备单位", F("reported_to")), ("备注", F("note"))),
    "additives": (("添加剂名称", F("name")), ("用途", F("purpose")), ("使用菜品", F("dish")), ("用量(克)", F("amount_g")),
                  ("使用人", F("operator")), ("供货商", _ref("supplier_id")), ("备注", F("note"))),
    "photos": (("类别", F("category")), ("说明", F("caption")), ("照片", F("photo_sha256s"))),
}
HEAD = ("编号", "日期")
TAIL = ("录入人", "录入时间", "版本", "更正原因", "最后修改人", "最后修改时间")


def headers(kind: str) -> list[str]:
    return [*HEAD, *(h for h, _ in COLUMNS[kind]), *TAIL]


def workbook(kind: str, canteen_name: str, entries: Iterable[dict[str, Any]], names: dict[str, str]) -> bytes:
    """The entries (API views) of one ledger as XLSX bytes; `names` maps referenced entry ids to names."""
    rows = ([e["id"], e["day"], *(cell(e["data"], names) for _, cell in COLUMNS[kind]), e["created_by"],
             e["created_at"], e["revision"], e["reason"] or "", e["edited_by"] or "", e["edited_at"] or ""]
            for e in entries)
    return sheet_workbook(KINDS[kind].name, headers(kind), rows, title=f"{canteen_name} {KINDS[kind].name}台账")


def sheet_workbook(sheet: str, headers: Sequence[str], rows: Iterable[Sequence[Any]], *, title: str | None = None,
                   widths: Sequence[int] | None = None) -> bytes:
    """An XLSX file of one sheet: an optional `title` line, `headers` in bold (frozen), then `rows`;
    datetimes (naive, local) become dates."""
    wb = Workbook(write_only=True)
    ws = wb.create_sheet(sheet[:31])  # Excel's limit on sheet names
    for i, width in enumerate(widths or ()):
        ws.column_dimensions[get_column_letter(i + 1)].width = width
    ws.freeze_panes = "A3" if title else "A2"
    if title:
        ws.append([title])
    bold = Font(bold=True)
    ws.append([_bold(ws, h, bold) for h in headers])
    for row in rows:
        ws.append(row)  # a datetime gets openpyxl's date format by itself: no styled cell per value (slow)
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


def _bold(ws: Any, value: Any, font: Font) -> WriteOnlyCell:
    cell = WriteOnlyCell(ws, value=value)
    cell.font = font
    return cell


def disposition(filename: str, fallback: str) -> str:
    """`attachment` named `filename` (Chinese welcome) in `filename*` (RFC 5987), with `fallback` for browsers
    that read only the plain `filename` (anything but letters, digits, `.`, `_` and `-` becomes `_`)."""
    plain = re.sub(r"[^A-Za-z0-9._-]+", "_", fallback) or "export.xlsx"
    return f"attachment; filename=\"{plain}\"; filename*=UTF-8''{quote(filename, safe='')}"
