"""Ledgers as XLSX: the workbook opens with openpyxl, has Chinese headers and one row per entry, on both engines."""

from __future__ import annotations

import io
import urllib.parse

import pytest
from openpyxl import load_workbook

from cloud_receiver.ledgers import xlsx
from cloud_receiver.ledgers.models import KINDS

pytestmark = pytest.mark.unit

SAMPLE = {"day": "2024-05-06", "meal": "午", "dish": "番茄炒蛋", "weight_g": 150, "kept_from": "2024-05-06T12:00:00+08:00",
          "kept_until": "2024-05-08T12:00:00+08:00", "kept_by": "李四"}


def _sheet(body: bytes):
    wb = load_workbook(io.BytesIO(body))
    return wb, wb.active


async def test_morning_checks_export(world):
    """Each check is a row under Chinese headers, the person by name and yes/no in Chinese."""
    r = await world.client.get("/api/v1/canteens/C1/ledgers/morning_checks/export.xlsx", headers=world.h("reg"))
    assert r.status == 200, await r.text()
    assert r.content_type == "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    assert urllib.parse.quote("每日晨检") in r.headers["Content-Disposition"]
    wb, ws = _sheet(await r.read())
    assert wb.sheetnames == ["每日晨检"]
    rows = list(ws.iter_rows(values_only=True))
    assert rows[0][0] == "第一中学食堂 每日晨检台账"
    head = rows[1]
    assert head[:4] == ("编号", "日期", "从业人员", "体温(℃)") and "可以上岗" in head and "更正原因" in head
    assert len(rows) == 3
    line = dict(zip(head, rows[2], strict=True))
    assert (line["编号"], line["日期"], line["从业人员"], line["可以上岗"], line["手部外伤"]) == (
        "seed-check", "2024-05-06", "王五", "是", "否")


async def test_samples_export_follows_the_day_range(world):
    """from/to pick the rows; an empty range gives the headers only; outside the scope the ledger is not found."""
    for day in ("2024-05-06", "2024-05-07"):
        r = await world.post("/canteens/C1/ledgers/samples", "c1", json={**SAMPLE, "day": day,
                                                                        "kept_from": f"{day}T12:00:00+08:00",
                                                                        "kept_until": "2024-05-10T12:00:00+08:00"})
        assert r.status == 200, await r.text()
    r = await world.get("/canteens/C1/ledgers/samples/export.xlsx?from=2024-05-07&to=2024-05-07", "c1")
    _, ws = _sheet(await r.read())
    rows = list(ws.iter_rows(values_only=True))
    head = rows[1]
    assert head[2:5] == ("餐次", "菜品", "重量(克)")
    assert [(row[1], row[2], row[4]) for row in rows[2:]] == [("2024-05-07", "午", 150)]
    empty = await world.get("/canteens/C1/ledgers/samples/export.xlsx?from=2020-01-01&to=2020-01-02", "c1")
    assert len(list(_sheet(await empty.read())[1].iter_rows())) == 2
    assert (await world.get("/canteens/C1/ledgers/samples/export.xlsx", "c3")).status == 404
    bad = await world.get("/canteens/C1/ledgers/samples/export.xlsx?from=2024-05-08&to=2024-05-07", "c1")
    assert bad.status == 422


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_ledger_has_chinese_headers(kind):
    """Every ledger's spreadsheet opens, is named in Chinese, and its headers are Chinese (no field names)."""
    wb, ws = _sheet(xlsx.workbook(kind, "测试食堂", [], {}))
    assert wb.sheetnames == [KINDS[kind].name]
    head = [c.value for c in next(ws.iter_rows(min_row=2, max_row=2))]
    assert head == xlsx.headers(kind)
    assert all(any("\u4e00" <= ch <= "\u9fff" for ch in h) for h in head), head
