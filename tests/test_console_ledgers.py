"""The 自律台账 pages of the console through the real app (SQLite and PostgreSQL): the ledgers render for a
canteen with the seeded staff, a canteen cannot open another canteen's ledger, a regulator reads but gets
no create form, an entry page shows its revisions, every ledger has its create form, and the day page
(按日追溯) traces a day's checks and deliveries within the user's scope."""

from __future__ import annotations

import re

import pytest
from aiohttp import FormData
from support.api_kit import add_user, ago, jpeg, login, make_world

from cloud_receiver.admin.auth import Principal
from cloud_receiver.ledgers import store
from cloud_receiver.ledgers.models import Purchase, PurchaseItem, Staff, Supplier
from cloud_receiver.web import ledger_forms

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
    # another jurisdiction's canteen, by its link and its name (not "C3" alone: the random CSRF token in the page may hold it)
    assert "canteen=C3" not in html and "中宁一中食堂" not in html
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


CODE = "91640500MA76A1B2CE"  # a 统一社会信用代码 with a correct check character


async def upload(w, tag: str) -> str:
    """A ledger photo of C1 uploaded through the API (as the page's script does); its sha256."""
    form = FormData()
    form.add_field("photo", jpeg(tag), content_type="image/jpeg", filename=f"{tag}.jpg")
    r = await w.client.post("/api/v1/canteens/C1/ledger-photos", data=form, headers=w.h("c1"))
    assert r.status == 200, await r.text()
    return (await r.json())["sha256"]


async def a_delivery(w) -> tuple[str, str, str, str]:
    """C1's supplier (licence photo) and its delivery on 2024-05-06 (certificate photo): (supplier, purchase, shas)."""
    p = Principal("canteen", "C1", "c1")
    licence, cert = await upload(w, "licence"), await upload(w, "certificate")
    sup = Supplier(name="宁夏放心粮油公司", credit_code=CODE, licence_no="JY16405020000009", licence_expiry="2024-05-20",
                   licence_photo_sha256=licence)
    [s] = store.create(w.storage.sql, p, "C1", "suppliers", [sup], now=ago(hours=1), tz_hours=8)
    buy = Purchase(day="2024-05-06", supplier_id=s["id"], certificate_photo_sha256s=[cert],
                   items=[PurchaseItem(name="大米", quantity=50, unit="千克", batch="B240501")])
    [b] = store.create(w.storage.sql, p, "C1", "purchases", [buy], now=ago(hours=1), tz_hours=8)
    return s["id"], b["id"], licence, cert


async def test_day_page_traces_who_worked_and_where_food_came_from(world):
    """The day page shows the 晨检 (who worked), the delivery with its supplier, licence state and photos."""
    sid, bid, licence, cert = await a_delivery(world)
    r = await page(world, "c1", "/ledgers/day/2024-05-06")
    html = await r.text()
    assert r.status == 200 and "按日追溯 · 2024-05-06" in html
    staff = html[html.index('id="day-staff"'):html.index('id="day-purchases"')]
    assert "王五" in staff and "可上岗" in staff and 'href="/ledgers/morning_checks/seed-check"' in staff
    bought = html[html.index('id="day-purchases"'):html.index('id="day-samples"')]
    assert f'href="/ledgers/suppliers/{sid}"' in bought and "宁夏放心粮油公司" in bought
    assert "JY16405020000009" in bought and "即将过期" in bought  # 14 days left on the delivery day
    assert "大米 50 千克 (批号 B240501)" in bought and f'href="/ledgers/purchases/{bid}"' in bought
    assert f'src="/api/v1/media/{licence}"' in bought and f'src="/api/v1/media/{cert}"' in bought
    assert 'href="/ledgers/day/2024-05-05"' in html and 'href="/ledgers/day/2024-05-07"' in html
    assert "<script>" not in html and "style=" not in html
    assert (await world.client.get(f"/api/v1/media/{cert}")).status == 200  # the thumbnails load for the user
    r = await world.client.get("/ledgers/purchases")
    html = await r.text()
    assert 'href="/ledgers/day/2024-05-06"' in html and "供货商: 宁夏放心粮油公司" in html and "大米 50 千克" in html
    assert f'src="/api/v1/media/{cert}"' in html
    r = await world.client.get(f"/ledgers/purchases/{bid}")
    html = await r.text()
    assert 'href="/ledgers/day/2024-05-06"' in html and f'href="/ledgers/suppliers/{sid}"' in html
    assert f'src="/api/v1/media/{cert}"' in html and 'data-type="items"' in html
    r = await world.client.get("/ledgers")
    assert 'id="day-link"' in await r.text()
    r = await world.client.get("/ledgers/day?day=2024-05-06", allow_redirects=False)
    assert r.status == 302 and r.headers["Location"] == "/ledgers/day/2024-05-06"


async def test_day_page_follows_the_scope(world):
    """A canteen sees only its own day; a regulator reads the days of its jurisdiction's canteens only."""
    await a_delivery(world)
    for path in ("/ledgers/day/2024-05-06?canteen=C2", "/ledgers/day/2024-05-06?canteen=C3"):
        r = await page(world, "c1", path)
        assert r.status == 404 and "无权查看" in await r.text(), path
    assert (await world.client.get("/ledgers/day/2024-13-01")).status == 404
    r = await page(world, "reg1", "/ledgers/day/2024-05-06?canteen=C1")
    html = await r.text()
    assert r.status == 200 and "宁夏放心粮油公司" in html and "王五" in html
    assert 'href="/ledgers/suppliers/' in html and "?canteen=C1" in html
    r = await world.client.get("/ledgers/day/2024-05-06?canteen=C2")
    html = await r.text()
    assert r.status == 200 and "第二小学食堂" in html and "宁夏放心粮油公司" not in html
    assert (await world.client.get("/ledgers/day/2024-05-06?canteen=C3")).status == 404
    assert (await world.client.get("/ledgers/day/2024-05-06")).status == 200  # no canteen: back to the choice


@pytest.mark.parametrize(("kind", "names"), [
    ("purchases", ('name="supplier_id"', 'data-type="items"', 'data-item="quantity"', 'name="certificate_photo_sha256s"',
                   'name="invoice_photo_sha256s"')),
    ("gatherings", ('name="occasion"', 'name="headcount"', 'data-type="lines"', 'name="reported_to"')),
    ("additives", ('name="amount_g"', 'name="operator"', 'name="supplier_id"')),
    ("photos", ('name="photo_sha256s"', 'class="photo-input"', 'name="caption"')),
    ("staff", ('name="health_cert_photo_sha256"',)),
    ("suppliers", ('name="licence_photo_sha256"',)),
    ("samples", ('name="photo_sha256"',)),
])
async def test_every_ledger_has_a_create_form(world, kind, names):
    """The canteen gets a create form with the ledger's own fields and photo pickers; a regulator gets none."""
    r = await page(world, "c1", f"/ledgers/{kind}")
    html = await r.text()
    assert r.status == 200 and 'id="create-form"' in html, kind
    for name in names:
        assert name in html, name
    assert "ledgers.css" in html and "<script>" not in html
    r = await page(world, "reg1", f"/ledgers/{kind}?canteen=C1")
    assert r.status == 200 and 'id="create-form"' not in await r.text()


def test_values_are_shown_as_people_read_them():
    """A purchase's summary names its supplier and items; photos are counted, not listed by hash."""
    data = {"day": "2024-05-06", "supplier_id": "S1", "certificate_photo_sha256s": ["a" * 64],
            "items": [{"name": "大米", "quantity": 50.0, "unit": "千克", "shelf_life_days": 180}]}
    assert ledger_forms.summary("purchases", data, {"S1": "粮油公司"}) == "供货商: 粮油公司; 品名及数量: 大米 50 千克 (保质期 180 天)"
    assert ledger_forms.photos_of("purchases", data) == [("检验合格证明照片", "a" * 64)]
    rows = ledger_forms.rows("purchases", data, {"S1": "粮油公司"})
    assert ("检验合格证明照片", "1 张", ["a" * 64]) in rows and ("供货商", "粮油公司", []) in rows
    assert ledger_forms.summary("gatherings", {"meal": "午", "occasion": "运动会", "dishes": ["米饭", "鸡腿"]}, {}) \
        == "餐次: 午; 聚餐事由: 运动会; 菜品: 米饭、鸡腿"
