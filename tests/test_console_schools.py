"""学校 list through the real app on both engines: who sees which canteens, the region, online and name filters,
boxes and cameras with live links, open-alert counts, ratings, paging, and the same list as XLSX."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest
from openpyxl import load_workbook
from support.api_kit import DEVICES, add_console_users, ago, login, make_world

from bk_contract import Status
from bk_contract.payloads import CameraHealth
from cloud_receiver.storage.db import iso
from cloud_receiver.storage.schema import alerts
from cloud_receiver.web import schools

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("cheap_hashes")]


@pytest.fixture
async def world(tmp_path, db_engine):
    """C1 online with cam1 (seed), C2's box offline with a camera it reported before, C3's box never seen;
    C1 has two open alerts (one overdue), one approved; C3 one open alert."""
    w = await make_world(tmp_path, db_engine)
    add_console_users(w)
    now = datetime.now(UTC)
    w.storage.record_status(Status(device_id=DEVICES["C2"], online=False, ts=now,
                                   cameras=[CameraHealth(id="cam7", name="操作间", state="online")]), iso(now) or "")
    late = w.add_alert("C1", started_at=ago(days=3))
    fresh = w.add_alert("C1", started_at=ago(hours=1))
    done = w.add_alert("C1", started_at=ago(days=2), type="animal")
    w.add_alert("C3", started_at=ago(days=1, hours=1))
    with w.storage.sql.write() as conn:
        conn.execute(alerts.update().where(alerts.c.id == done["id"]).values(status="复核通过"))
    assert late["id"] != fresh["id"]
    yield w
    await w.close()


def school_ids(html: str) -> list[str]:
    return re.findall(r'<tr data-id="([^"]+)"', html)


def row_of(html: str, canteen_id: str) -> str:
    found = re.search(rf'<tr data-id="{canteen_id}">(.*?)</tr>', html, re.S)
    assert found, f"no row for {canteen_id}"
    return found.group(1)


@pytest.mark.parametrize(("who", "seen"), [("admin1", ["C1", "C2", "C3"]), ("reg1", ["C1", "C2"]), ("kitchen1", ["C1"])])
async def test_each_role_sees_its_canteens(world, who, seen):
    """Admin sees every canteen, a regulator those of their jurisdiction, a canteen account only its own."""
    await login(world.client, who)
    r = await world.client.get("/schools")
    html = await r.text()
    assert r.status == 200 and school_ids(html) == seen
    assert f"共 {len(seen)} 所学校" in html


async def test_a_row_shows_boxes_cameras_alerts_and_rating(world):
    """C1: online box, cam1 linked to its live page, 2 open alerts of which 1 overdue linked to /alerts, rating A."""
    await login(world.client, "reg1")
    html = await (await world.client.get("/schools")).text()
    c1, c2 = row_of(html, "C1"), row_of(html, "C2")
    assert f'href="/live/{DEVICES["C1"]}/cam1"' in c1 and "后厨1" in c1
    assert '<span class="state state-在线">在线</span>' in c1 and "盒子 1/1 · 摄像头 1/1" in c1
    assert re.search(r'href="/alerts\?canteen=C1" class="open-count open-some">2</a>', c1)
    assert "逾期 1" in c1 and 'rating-A' in c1
    assert '<span class="state state-离线">离线</span>' in c2 and "未评级" in c2
    assert f'href="/live/{DEVICES["C2"]}/cam7"' in c2 and "cam-off" in c2  # its box is offline: so is the camera
    assert re.search(r'class="open-count">0</a>', c2) and "逾期" not in c2


@pytest.mark.parametrize(("params", "seen"), [
    ({"online": "1"}, ["C1"]), ({"online": "0"}, ["C2", "C3"]), ({"region": "640521"}, ["C3"]),
    ({"region": "64050202"}, ["C2"]), ({"q": "第二"}, ["C2"]), ({"q": "C3"}, ["C3"]), ({"q": "%"}, []),
    ({"region": "640502", "online": "0"}, ["C2"]),
])
async def test_filters(world, params, seen):
    """Online (every box up) or offline (a box down, or none), a region prefix, and a name or id narrow the list."""
    await login(world.client, "admin1")
    r = await world.client.get("/schools", params=params)
    assert r.status == 200 and school_ids(await r.text()) == seen


async def test_region_outside_scope_and_bad_filters(world):
    """A regulator's region outside their scope is 403; a malformed code or online value is 400; no session: login."""
    r = await world.client.get("/schools", allow_redirects=False)
    assert r.status == 302 and r.headers["Location"].startswith("/login")
    await login(world.client, "reg1")
    assert (await world.client.get("/schools", params={"region": "640521"})).status == 403
    assert (await world.client.get("/schools.xlsx", params={"region": "640521"})).status == 403
    assert (await world.client.get("/schools", params={"region": "abc"})).status == 400
    assert (await world.client.get("/schools", params={"online": "yes"})).status == 400
    assert (await world.client.get("/schools", params={"page": "x"})).status == 400


async def test_canteen_account_cannot_widen_its_view(world):
    """A canteen account's region filter changes nothing: it still sees only its own canteen."""
    await login(world.client, "kitchen1")
    r = await world.client.get("/schools", params={"region": "640521"})
    assert r.status == 200 and school_ids(await r.text()) == ["C1"]
    ws = load_workbook(io.BytesIO(await (await world.client.get("/schools.xlsx")).read()), read_only=True).active
    assert [row[0] for row in ws.iter_rows(min_row=2, values_only=True)] == ["C1"]


async def test_paging(world, monkeypatch):
    """With a page size of 2, page 1 has two canteens and a next link, page 2 the last one and a previous link."""
    monkeypatch.setattr(schools, "PAGE_SIZE", 2)
    await login(world.client, "admin1")
    first = await (await world.client.get("/schools")).text()
    assert school_ids(first) == ["C1", "C2"] and 'href="/schools?page=2"' in first and "第 1 / 2 页" in first
    second = await (await world.client.get("/schools", params={"page": "2"})).text()
    assert school_ids(second) == ["C3"] and 'href="/schools?page=1"' in second


async def test_export_has_the_same_rows(world):
    """schools.xlsx: Chinese headers, the filtered canteens with counts and rating, a Chinese file name."""
    await login(world.client, "admin1")
    r = await world.client.get("/schools.xlsx", params={"online": "0"})
    assert r.status == 200
    today = (datetime.now(UTC) + timedelta(hours=8)).date().isoformat()
    assert f"filename*=UTF-8''{quote(f'学校-全部-{today}.xlsx', safe='')}" in r.headers["Content-Disposition"]
    rows = list(load_workbook(io.BytesIO(await r.read()), read_only=True).active.iter_rows(values_only=True))
    assert rows[0] == schools.SCHOOL_HEADERS
    assert [row[:9] for row in rows[1:]] == [("C2", "第二小学食堂", "64050202", None, "离线", 1, 0, 1, 0),
                                            ("C3", "中宁一中食堂", "64052101", None, "离线", 1, 0, 0, 0)]
    assert rows[2][9] is None and rows[2][10:] == (1, 1)  # C3: never seen; its alert is a day old: overdue
    rows = list(load_workbook(io.BytesIO(await (await world.client.get("/schools.xlsx")).read()),
                              read_only=True).active.iter_rows(values_only=True))
    assert rows[1][:5] == ("C1", "第一中学食堂", "64050201", "A", "在线") and rows[1][10:] == (2, 1)
