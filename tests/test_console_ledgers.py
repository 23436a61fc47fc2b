"""The 自律台账 pages of the console through the real app (SQLite and PostgreSQL): the ledgers render for a
canteen with the seeded staff, a canteen cannot open another canteen's ledger, a regulator reads but gets
no create form, and an entry page shows its revisions."""

from __future__ import annotations

import re

import pytest
from support.api_kit import add_user, ago, login, make_world

from cloud_receiver.admin.auth import Principal
from cloud_receiver.ledgers import store
from cloud_receiver.ledgers.models import Staff

pytestmark = pytest.mark.unit


@pytest.fixture
async def world(tmp_path, db_engine):
    w = await make_world(tmp_path, db_engine)
    add_user(w, "reg1", "regulator", "640502", display_name="沙坡头区监管员")
    add_user(w, "c1", "canteen", "C1")
    yield w
    await w.close()


async def page(w, who: str, path: str):
    w.client.session.cookie_jar.clear()
    assert (await login(w.client, who)).status == 303
    return await w.client.get(path)


def ids(html: str) -> list[str]:
    return re.findall(r'<tr data-id="([^"]+)"', html)


async def test_canteen_pages_render_with_seeded_staff(world):
    r = await page(world, "c1", "/ledgers")
    html = await r.text()
    assert r.status == 200 and "第一中学食堂" in html and 'href="/ledgers/staff"' in html and "整班录入" in html
    r = await world.client.get("/ledgers/staff")
    html = await r.text()
    assert r.status == 200 and ids(html) == ["seed-staff"] and "王五" in html
    assert 'id="create-form"' in html and 'name="health_cert_expiry"' in html
    assert "/api/v1/canteens/C1/ledgers/staff/export.xlsx" in html
    r = await world.client.get("/ledgers/morning_checks?since=2024-05-01&until=2024-05-31")
    html = await r.text()
    assert ids(html) == ["seed-check"] and "王五" in html and 'name="staff_id"' in html
    assert ids(await (await world.client.get("/ledgers/morning_checks?since=2024-06-01")).text()) == []
    r = await world.client.get("/ledgers/morning-checks/shift")
    html = await r.text()
    assert r.status == 200 and 'data-staff-id="seed-staff"' in html and 'value="36.5"' in html
    assert "<script>" not in html and "style=" not in html  # the CSP allows neither
    r = await world.client.get("/ledgers/staff/seed-staff")
    html = await r.text()
    assert r.status == 200 and "NX2024-0100" in html and 'id="correct-form"' in html
    assert (await world.client.get("/ledgers/nonsense")).status == 404


async def test_canteen_cannot_open_another_canteens_ledger(world):
    for path in ("/ledgers?canteen=C2", "/ledgers/staff?canteen=C2", "/ledgers/staff/seed-staff?canteen=C2",
                 "/ledgers/staff?canteen=NOPE"):
        r = await page(world, "c1", path)
        assert r.status == 404, path
        assert "无权查看" in await r.text()


async def test_regulator_reads_without_create_form(world):
    r = await page(world, "reg1", "/ledgers")
    html = await r.text()
    assert r.status == 200 and "/ledgers?canteen=C1" in html and "/ledgers?canteen=C2" in html
    assert "C3" not in html  # another jurisdiction
    r = await world.client.get("/ledgers/staff?canteen=C2")
    html = await r.text()
    assert r.status == 200 and ids(html) == ["seed-staff"] and 'id="create-form"' not in html
    r = await world.client.get("/ledgers/staff/seed-staff?canteen=C2")
    html = await r.text()
    assert r.status == 200 and 'data-mode="comment"' in html and 'id="correct-form"' not in html
    assert (await world.client.get("/ledgers/staff?canteen=C3")).status == 404
    assert (await world.client.get("/ledgers/morning-checks/shift?canteen=C1")).status == 403
    r = await world.client.get("/ledgers/staff")
    assert r.status == 200 and str(r.url).endswith("/ledgers")  # no canteen picked: back to the choice


async def test_entry_page_shows_revisions(world):
    """An entry written two days ago is not editable in place; its correction keeps the old revision."""
    p = Principal("canteen", "C1", "c1")
    old = Staff(name="赵六", health_cert_no="NX-1", health_cert_issued="2024-01-01", health_cert_expiry="2099-01-01")
    store.create(world.storage.sql, p, "C1", "staff", [old], now=ago(days=2), tz_hours=8, entry_ids=["old-staff"])
    store.correct(world.storage.sql, p, "C1", "staff", "old-staff", old.model_copy(update={"name": "赵陆"}), "姓名写错",
                  now=ago(hours=25), tz_hours=8)
    r = await page(world, "c1", "/ledgers/staff/old-staff")
    html = await r.text()
    assert r.status == 200 and "赵陆" in html and 'id="earlier-revisions"' in html and "赵六" in html
    assert "姓名写错" in html and 'id="not-editable"' in html and 'id="edit-in-place"' not in html
