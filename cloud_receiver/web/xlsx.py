"""Console lists as XLSX downloads: the workbook is `cloud_receiver.ledgers.xlsx.sheet_workbook`'s, sent
with a Content-Disposition naming the Chinese file (RFC 5987 `filename*`) beside an ASCII fallback."""

from __future__ import annotations

from aiohttp import web

from cloud_receiver.ledgers.xlsx import XLSX_TYPE, disposition


def response(body: bytes, filename: str, fallback: str) -> web.Response:
    return web.Response(body=body, content_type=XLSX_TYPE,
                        headers={"Content-Disposition": disposition(filename, fallback), "Cache-Control": "no-store",
                                 "X-Content-Type-Options": "nosniff"})
