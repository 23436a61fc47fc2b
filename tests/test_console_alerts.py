"""The 预警 pages of the console through the real app: list with filters and scope, the alert page with
its timeline and the actions each role may take, on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from support.api_kit import add_user, jpeg, login, make_world

from bk_contract import Alert, AlertBox

pytestmark = pytest.mark.unit

T0 = datetime(2024, 5, 1, 2, 0, tzinfo=UTC)  # 10:00 in Beijing


@pytest.fixture
async def world(tmp_path, db_engine):
    w = await make_world(tmp_path, db_engine)
    add_user(w, "reg1", "regulator", "640502", display_name="沙坡头区监管员")
    add_user(w, "c1", "canteen", "C1")
    add_user(w, "c3", "canteen", "C3")
    w.add_alert("C1", started_at=T0, alert_id="A-C1-1", type="phone_use", snapshot=jpeg("c1"))
    w.add_alert("C2", started_at=T0 + timedelta(days=1), alert_id="A-C2-1", type="smoking")
    w.add_alert("C3", started_at=T0 + timedelta(days=2), alert_id="A-C3-1", type="phone_use")
    yield w
    await w.close()


def ids(html: str) -> list[str]:
    return re.findall(r'<tr data-id="([^"]+)"', html)


async def page(w, who: str, path: str):
    assert (await login(w.client, who)).status == 303
    return await w.client.get(path)


async def test_list_is_scoped_by_role(world):
    """A regulator sees the region's alerts, a canteen only its own; the other region's never reach the page."""
    r = await page(world, "reg1", "/alerts")
    assert r.status == 200 and ids(await r.text()) == ["A-C2-1", "A-C1-1"]
    world.client.session.cookie_jar.clear()
    r = await page(world, "c1", "/alerts")
    html = await r.text()
    assert ids(html) == ["A-C1-1"] and "A-C3-1" not in html and "第二小学食堂" not in html


async def test_filters_narrow_the_list(world):
    """Type, school, dates (Beijing days) and status filter the list; a bad date is a 400 page naming the field."""
    r = await page(world, "reg1", "/alerts?type=smoking")
    assert ids(await r.text()) == ["A-C2-1"]
    assert ids(await (await world.client.get("/alerts?canteen=C1")).text()) == ["A-C1-1"]
    assert ids(await (await world.client.get("/alerts?since=2024-05-02&until=2024-05-02")).text()) == ["A-C2-1"]
    assert ids(await (await world.client.get("/alerts?region=64050201")).text()) == ["A-C1-1"]
    assert ids(await (await world.client.get("/alerts?status=复核通过")).text()) == []
    bad = await world.client.get("/alerts?since=yesterday")
    assert bad.status == 400 and "since" in await bad.text()
    bad = await world.client.get("/alerts?type=dancing")
    assert bad.status == 400 and "dancing" in await bad.text()


async def test_canteen_cannot_ask_for_another_canteen(world):
    """A canteen user filtering on another canteen gets a 403 page, not an empty list."""
    r = await page(world, "c1", "/alerts?canteen=C2")
    assert r.status == 403 and "无权" in await r.text()


async def test_alert_page_shows_facts_timeline_and_role_actions(world):
    """The regulator sees the alert with its snapshot, timeline and the deadline action; the canteen sees the
    rectification form; an alert out of scope is a 403 page, an unknown id a 404 page."""
    r = await page(world, "reg1", "/alerts/A-C1-1")
    html = await r.text()
    assert r.status == 200 and "玩手机" in html and "第一中学食堂" in html and "/api/v1/media/" in html
    assert 'data-action="deadline"' in html and 'data-action="rectify"' not in html
    r = await world.client.get("/alerts/A-C3-1")
    assert r.status == 403 and "无权查看" in await r.text()
    r = await world.client.get("/alerts/A-NOPE")
    assert r.status == 404 and "没有这条预警" in await r.text()
    world.client.session.cookie_jar.clear()
    html = await (await page(world, "c1", "/alerts/A-C1-1")).text()
    assert 'data-action="rectify"' in html and 'data-action="deadline"' not in html
    r = await world.client.get("/alerts/A-C2-1")
    assert r.status == 403 and "无权查看" in await r.text()


async def test_box_labels_cannot_break_out_of_the_page_data(world):
    """Text a box sends (a label) reaches the page's JSON block escaped: no `</script>` from the device."""
    row = world.storage.upsert_alert(Alert(
        id="A-XSS", device_id="64050200001180000001", camera_id="cam1", type="phone_use", started_at=T0, score=0.9,
        boxes=[AlertBox(label="</script><script>alert(1)</script>", score=0.9, box=[1, 2, 3, 4])]),
        "2024-05-01T02:00:00.000Z").row
    assert row["id"] == "A-XSS"
    html = await (await page(world, "reg1", "/alerts/A-XSS")).text()
    assert "<script>alert(1)" not in html and "\\u003c/script\\u003e" in html


async def test_pages_need_a_login_and_come_back_after_it(world):
    """Without a session the alert page redirects to the login with `next`, and logging in returns there."""
    r = await world.client.get("/alerts/A-C1-1", allow_redirects=False)
    assert r.status == 302 and r.headers["Location"].startswith("/login?next=")
    r = await login(world.client, "reg1", next_path="/alerts/A-C1-1")
    assert r.status == 303 and r.headers["Location"] == "/alerts/A-C1-1"
