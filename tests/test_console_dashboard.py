"""大数据 dashboard through the real app on both engines: /dashboard/data.json equals the counts a plain Python
pass over the stored rows gives (local days, weekday × hour at UTC+8, rates), scopes (403 outside the
jurisdiction, 403 for canteens, 401 without a session), bad filters, and the alert export as XLSX."""

from __future__ import annotations

import io
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from urllib.parse import quote

import pytest
import sqlalchemy as sa
from openpyxl import load_workbook
from support.api_kit import DEVICES, add_console_users, add_user, login, make_world

from bk_contract import Status
from bk_contract.payloads import CameraHealth
from bk_contract.violations import type_name
from cloud_receiver.storage.db import iso
from cloud_receiver.storage.schema import alerts, cameras, canteens, devices
from cloud_receiver.web import dashboard

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("cheap_hashes")]

TZ = timedelta(hours=8)
DEFAULT_HOURS = 24.0  # ApiSettings.default_deadline_hours
TODAY = (datetime.now(UTC) + TZ).date()
FIRST, LAST = TODAY - timedelta(days=20), TODAY - timedelta(days=5)  # the custom period of most tests


def at_local(day: date, hour: int, minute: int = 0) -> datetime:
    """A UTC instant given as Beijing wall-clock time."""
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC) - TZ


@pytest.fixture
async def world(tmp_path, db_engine):
    w = await make_world(tmp_path, db_engine)
    add_console_users(w)
    add_user(w, "city1", "regulator", "6405")
    seed_alerts(w)
    yield w
    await w.close()


def seed_alerts(w) -> None:
    """Alerts on both sides of the period's local-midnight edges, over three canteens and four types, in every
    workflow state; C2's box reports a camera while offline, C3's box is online with one of two cameras up."""
    plan = [
        ("C1", FIRST - timedelta(days=1), 23, 59, "phone_use"),  # the evening before: outside
        ("C1", FIRST, 0, 0, "phone_use"),  # local midnight of the first day: inside (UTC: the day before)
        ("C1", FIRST, 7, 30, "animal"),
        ("C1", FIRST + timedelta(days=1), 12, 5, "phone_use"),
        ("C1", FIRST + timedelta(days=3), 22, 40, "crowding"),
        ("C1", LAST, 23, 59, "smoking"),  # the last minute of the last day: inside
        ("C1", LAST + timedelta(days=1), 0, 0, "phone_use"),  # after the period
        ("C2", FIRST + timedelta(days=2), 9, 15, "animal"),
        ("C2", FIRST + timedelta(days=2), 9, 45, "animal"),
        ("C2", FIRST + timedelta(days=9), 18, 0, "phone_use"),
        ("C2", LAST, 6, 0, "fire"),  # becomes a ledger alert (health_cert_expired) below
        ("C3", FIRST + timedelta(days=4), 11, 0, "phone_use"),
        ("C3", FIRST + timedelta(days=4), 11, 20, "crowding"),
        ("C3", LAST - timedelta(days=1), 3, 0, "animal"),
    ]
    rows = [w.add_alert(cid, started_at=at_local(day, h, m), type=t) for cid, day, h, m, t in plan]
    future = iso(datetime.now(UTC) + timedelta(days=3))
    changes = {rows[2]["id"]: {"status": "已整改"}, rows[3]["id"]: {"status": "复核通过"},
               rows[7]["id"]: {"status": "复核通过"}, rows[8]["id"]: {"deadline": future},  # open, not yet overdue
               rows[10]["id"]: {"type": "health_cert_expired"}, rows[11]["id"]: {"status": "已整改"}}
    with w.storage.sql.write() as conn:
        for alert_id, values in changes.items():
            conn.execute(alerts.update().where(alerts.c.id == alert_id).values(**values))
    now = datetime.now(UTC)
    w.storage.record_status(Status(device_id=DEVICES["C2"], online=False, ts=now,
                                   cameras=[CameraHealth(id="cam1", name="后厨", state="online")]), iso(now) or "")
    w.storage.record_status(Status(device_id=DEVICES["C3"], online=True, ts=now,
                                   cameras=[CameraHealth(id="cam1", state="online"),
                                            CameraHealth(id="cam2", state="offline")]), iso(now) or "")


def expected(w, scope: str, region: str, first: date, last: date) -> dict:
    """The dashboard's numbers computed in Python from every stored row (the oracle of these tests)."""
    db = w.storage.sql
    jur = {r["id"]: r["jurisdiction"] for r in db.all(sa.select(canteens))}
    names = {r["id"]: r["name"] for r in db.all(sa.select(canteens))}
    mine = {cid for cid, j in jur.items() if j.startswith(scope) and j.startswith(region)}
    now = datetime.now(UTC)
    picked = []
    for r in db.all(sa.select(alerts)):
        local = datetime.fromisoformat(r["started_at"].replace("Z", "+00:00")) + TZ
        if r["canteen_id"] in mine and first <= local.date() <= last:
            picked.append((r, local))
    by_type, by_school = Counter(r["type"] for r, _ in picked), Counter(r["canteen_id"] for r, _ in picked)
    heat = Counter((local.isoweekday() % 7, local.hour) for _, local in picked)

    def overdue(r) -> bool:
        started = datetime.fromisoformat(r["started_at"].replace("Z", "+00:00"))
        deadline = datetime.fromisoformat(r["deadline"].replace("Z", "+00:00")) if r["deadline"] else \
            started + timedelta(hours=DEFAULT_HOURS)
        return r["status"] == "待整改" and now > deadline

    open_ = Counter(r["canteen_id"] for r, _ in picked if r["status"] == "待整改")
    late = Counter(r["canteen_id"] for r, _ in picked if overdue(r))
    rectified = sum(r["status"] in ("已整改", "复核通过") for r, _ in picked)
    boxes = [d for d in db.all(sa.select(devices)) if d["canteen_id"] in mine]
    online_boxes = {d["id"] for d in boxes if d["online"]}
    cams = [c for c in db.all(sa.select(cameras)) if c["device_id"] in {d["id"] for d in boxes}]
    cams_up = sum(c["state"] == "online" and c["device_id"] in online_boxes for c in cams)
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    return {
        "total": len(picked),
        "by_type": [{"type": t, "name": type_name(t), "count": n}
                    for t, n in sorted(by_type.items(), key=lambda kv: (-kv[1], kv[0]))],
        "by_school": [{"canteen_id": c, "name": names[c], "count": n}
                      for c, n in sorted(by_school.items(), key=lambda kv: (-kv[1], kv[0]))],
        "by_day": [{"day": d.isoformat(), "count": sum(local.date() == d for _, local in picked)} for d in days],
        "heatmap": sorted([wd, h, n] for (wd, h), n in heat.items()),
        "workflow": {"total": len(picked), "rectified": rectified,
                     "rectification_rate": round(rectified / len(picked), 4) if picked else None,
                     "open": sum(open_.values()), "overdue": sum(late.values()),
                     "submitted": sum(r["status"] == "已整改" for r, _ in picked),
                     "approved": sum(r["status"] == "复核通过" for r, _ in picked)},
        "open_top": [{"canteen_id": c, "name": names[c], "open": n, "overdue": late[c]}
                     for c, n in sorted(open_.items(), key=lambda kv: (-kv[1], kv[0]))],
        "devices": {"total": len(boxes), "online": len(online_boxes),
                    "online_rate": round(len(online_boxes) / len(boxes), 4) if boxes else None},
        "cameras": {"total": len(cams), "online": cams_up, "online_rate": round(cams_up / len(cams), 4) if cams else None},
    }


async def data(w, **params):
    return await w.client.get("/dashboard/data.json", params=params)


@pytest.mark.parametrize(("who", "scope", "region"), [
    ("admin1", "", ""), ("admin1", "", "640521"), ("reg1", "640502", ""), ("reg1", "640502", "64050202"),
    ("city1", "6405", "640521"),
])
async def test_numbers_equal_a_pass_over_the_rows(world, who, scope, region):
    """Every count, rate and chart series of data.json equals the Python oracle over the stored rows."""
    await login(world.client, who)
    r = await data(world, region=region, since=FIRST.isoformat(), until=LAST.isoformat())
    assert r.status == 200
    body = await r.json()
    assert body["region"] == (region or scope) and (body["since"], body["until"]) == (FIRST.isoformat(), LAST.isoformat())
    want = expected(world, scope, region, FIRST, LAST)
    for key, value in want.items():
        assert body[key] == value, key
    assert body["total"] > 0 and len(body["by_day"]) == 16


async def test_seeded_edges_are_counted_as_people_read_them(world):
    """Spot checks of the oracle itself: local midnight is the first day, 23:59 the last, the weekday of 00:00."""
    await login(world.client, "admin1")
    body = await (await data(world, since=FIRST.isoformat(), until=LAST.isoformat())).json()
    assert body["total"] == 12  # 14 seeded, one the evening before, one the morning after
    assert body["by_day"][0] == {"day": FIRST.isoformat(), "count": 2}
    assert body["by_day"][-1] == {"day": LAST.isoformat(), "count": 2}
    assert [FIRST.isoweekday() % 7, 0, 1] in body["heatmap"]
    assert body["workflow"]["rectified"] == 4 and body["workflow"]["rectification_rate"] == round(4 / 12, 4)
    assert body["workflow"]["overdue"] == body["workflow"]["open"] - 1  # one open alert has a later deadline
    assert body["devices"] == {"total": 3, "online": 2, "online_rate": round(2 / 3, 4)}
    assert body["cameras"] == {"total": 4, "online": 2, "online_rate": 0.5}  # C2's offline box: its camera is down
    assert {"type": "health_cert_expired", "name": "健康证过期", "count": 1} in body["by_type"]


async def test_preset_periods_end_today(world):
    """days=7 is the last seven local days up to today; no filter at all is the last 30 days."""
    await login(world.client, "reg1")
    for params, length in (({"days": "7"}, 7), ({}, 30), ({"days": "365"}, 365)):
        body = await (await data(world, **params)).json()
        today = (datetime.now(UTC) + TZ).date()
        assert body["until"] in (today.isoformat(), (today - timedelta(days=1)).isoformat())
        assert len(body["by_day"]) == length
        assert date.fromisoformat(body["since"]) == date.fromisoformat(body["until"]) - timedelta(days=length - 1)


async def test_region_outside_scope_is_refused(world):
    """A regulator of 640502 asking for 640521 (or the whole city) gets 403 on the data, the page and the export."""
    await login(world.client, "reg1")
    for region in ("640521", "6405"):
        r = await data(world, region=region)
        assert r.status == 403 and (await r.json())["error"]["code"] == "forbidden"
        page = await world.client.get("/dashboard", params={"region": region})
        assert page.status == 403 and "管辖范围" in await page.text()
        export = await world.client.get("/dashboard/alerts.xlsx", params={"region": region})
        assert export.status == 403


async def test_canteen_account_and_strangers_are_refused(world):
    """A canteen account gets 403 (page, data, export); without a session data.json is 401 and the page redirects."""
    r = await data(world)
    assert r.status == 401 and (await r.json())["error"]["code"] == "unauthorized"
    page = await world.client.get("/dashboard", allow_redirects=False)
    assert page.status == 302 and page.headers["Location"].startswith("/login?next=")
    await login(world.client, "kitchen1")
    assert (await data(world)).status == 403
    assert (await world.client.get("/dashboard")).status == 403
    assert (await world.client.get("/dashboard/alerts.xlsx")).status == 403


@pytest.mark.parametrize("params", [
    {"since": "2024-05-10", "until": "2024-05-01"}, {"since": "2024-13-01"}, {"days": "5"},
    {"since": "2023-01-01", "until": "2024-05-01"}, {"region": "64-05"}, {"days": "custom", "until": "yesterday"},
])
async def test_bad_filters_are_400(world, params):
    """Reversed or malformed dates, an unknown preset, more than 366 days or a bad code: 400 with a Chinese reason."""
    await login(world.client, "admin1")
    r = await data(world, **params)
    assert r.status == 400
    message = (await r.json())["error"]["message"]
    assert any("\u4e00" <= ch <= "\u9fff" for ch in message), message
    assert (await world.client.get("/dashboard", params=params)).status == 400


async def test_page_carries_the_filters_to_its_script(world):
    """The page names the data URL with explicit dates, loads the vendored ECharts and its own files, under the CSP."""
    await login(world.client, "city1")
    r = await world.client.get("/dashboard", params={"region": "640502", "days": "90"})
    html = await r.text()
    assert r.status == 200 and "script-src 'self'" in r.headers["Content-Security-Policy"]
    first = TODAY - timedelta(days=89)
    assert f'data-src="/dashboard/data.json?region=640502&amp;since={first.isoformat()}' in html or \
        f'data-src="/dashboard/data.json?region=640502&amp;since={(first + timedelta(days=1)).isoformat()}' in html
    assert '/static/vendor/echarts/echarts.min.js?v=' in html and "/static/dashboard.js?v=" in html
    assert '<link rel="stylesheet" href="/static/dashboard.css?v=' in html
    assert '<option value="90" selected>' in html and '<option value="640521">' in html
    assert "<script>" not in html and "style=" not in html


async def test_alert_export_is_a_workbook_with_chinese_headers(world):
    """alerts.xlsx opens with openpyxl: Chinese headers, one row per alert of the filters, Beijing times, Chinese name."""
    await login(world.client, "reg1")
    r = await world.client.get("/dashboard/alerts.xlsx", params={"since": FIRST.isoformat(), "until": LAST.isoformat()})
    assert r.status == 200 and r.content_type == dashboard.xlsx.XLSX_TYPE
    name = quote(f"预警-640502-{FIRST.isoformat()}至{LAST.isoformat()}.xlsx", safe="")
    assert r.headers["Content-Disposition"] == (f'attachment; filename="alerts-640502-{FIRST.isoformat()}-'
                                                f"{LAST.isoformat()}.xlsx\"; filename*=UTF-8''{name}")
    ws = load_workbook(io.BytesIO(await r.read()), read_only=True).active
    rows = list(ws.iter_rows(values_only=True))
    assert rows[0] == dashboard.ALERT_HEADERS
    want = expected(world, "640502", "", FIRST, LAST)
    assert len(rows) - 1 == want["total"] == 9
    by_id = {row[0]: row for row in rows[1:]}
    first_c1 = world.storage.sql.one(sa.select(alerts).where(alerts.c.canteen_id == "C1", alerts.c.type == "animal"))
    row = by_id[first_c1["id"]]
    assert row[1:4] == ("第一中学食堂", "后厨1", "动物/鼠患")
    assert row[4] == datetime.combine(FIRST, datetime.min.time()).replace(hour=7, minute=30)  # Beijing wall clock
    assert row[5] == "已整改" and row[6] == row[4] + timedelta(hours=DEFAULT_HOURS)
    assert {r[5] for r in rows[1:]} <= {"逾期", "待整改", "已整改", "复核通过"} and "逾期" in {r[5] for r in rows[1:]}
    assert [r[4] for r in rows[1:]] == sorted((r[4] for r in rows[1:]), reverse=True)  # newest first


async def test_alert_export_takes_the_alert_list_filters(world):
    """type, canteen and status narrow the export as they narrow /alerts; an unknown type is a 400 page."""
    await login(world.client, "admin1")
    span = {"since": FIRST.isoformat(), "until": LAST.isoformat()}
    r = await world.client.get("/dashboard/alerts.xlsx", params={**span, "type": "animal,crowding", "canteen": "C3"})
    rows = list(load_workbook(io.BytesIO(await r.read()), read_only=True).active.iter_rows(values_only=True))[1:]
    assert sorted(row[3] for row in rows) == ["人员聚集", "动物/鼠患"]
    r = await world.client.get("/dashboard/alerts.xlsx", params={**span, "status": "逾期"})
    rows = list(load_workbook(io.BytesIO(await r.read()), read_only=True).active.iter_rows(values_only=True))[1:]
    assert len(rows) == expected(world, "", "", FIRST, LAST)["workflow"]["overdue"] and {r[5] for r in rows} == {"逾期"}
    assert (await world.client.get("/dashboard/alerts.xlsx", params={"type": "nope"})).status == 400


async def test_alert_export_refuses_more_than_its_limit(world, monkeypatch):
    """Past XLSX_MAX_ROWS the export is a 400 page asking for a narrower range, not a cut-off file."""
    monkeypatch.setattr(dashboard, "XLSX_MAX_ROWS", 3)
    await login(world.client, "admin1")
    r = await world.client.get("/dashboard/alerts.xlsx", params={"since": FIRST.isoformat(), "until": LAST.isoformat()})
    assert r.status == 400 and "超过 3 条" in await r.text()
    r = await world.client.get("/dashboard/alerts.xlsx", params={"since": LAST.isoformat(), "until": LAST.isoformat()})
    assert r.status == 200
