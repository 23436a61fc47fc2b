"""Console lists as XLSX downloads (openpyxl, write-only mode: rows stream into the file, so 50,000 alerts
need little memory): one sheet, a bold Chinese header row, times as real spreadsheet dates, and a
Content-Disposition with the Chinese file name (RFC 5987 `filename*`) beside an ASCII fallback."""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import quote

from aiohttp import web
from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Font
from openpyxl.utils import get_column_letter

XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def workbook(sheet: str, headers: Sequence[str], rows: Iterable[Sequence[Any]],
             widths: Sequence[int] | None = None) -> bytes:
    """An XLSX file of one sheet: `headers` in bold, then `rows`; datetimes (naive, local) become dates."""
    wb = Workbook(write_only=True)
    ws = wb.create_sheet(sheet[:31])  # Excel's limit on sheet names
    for i, width in enumerate(widths or ()):
        ws.column_dimensions[get_column_letter(i + 1)].width = width
    ws.freeze_panes = "A2"
    bold = Font(bold=True)
    ws.append([_cell(ws, h, bold) for h in headers])
    for row in rows:
        ws.append(row)  # a datetime gets openpyxl's date format by itself: no styled cell per value (slow)
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


def _cell(ws: Any, value: Any, font: Font) -> WriteOnlyCell:
    cell = WriteOnlyCell(ws, value=value)
    cell.font = font
    return cell


def disposition(filename: str, fallback: str) -> str:
    """`attachment` named `filename` (Chinese welcome) in `filename*`, with `fallback` for browsers that
    read only the plain `filename` (anything but letters, digits, `.`, `_` and `-` becomes `_`)."""
    plain = re.sub(r"[^A-Za-z0-9._-]+", "_", fallback) or "export.xlsx"
    return f"attachment; filename=\"{plain}\"; filename*=UTF-8''{quote(filename, safe='')}"


def response(body: bytes, filename: str, fallback: str) -> web.Response:
    return web.Response(body=body, content_type=XLSX_TYPE,
                        headers={"Content-Disposition": disposition(filename, fallback), "Cache-Control": "no-store",
                                 "X-Content-Type-Options": "nosniff"})
