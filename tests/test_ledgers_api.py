"""The ledgers API (自律台账) on both engines: entries, the 24 h rule and revisions, validation, scope, photos,
the alerts the ledger rules raise, and one day traced."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import FormData
from support.api_kit import jpeg, make_world
from support.authz_matrix import JPEG_B64
from support.waiting import async_wait_until

from cloud_receiver.api.context import ApiContext
from cloud_receiver.config import LedgersConfig
from cloud_receiver.ledgers import runner, store
from cloud_receiver.ledgers.models import Supplier
from cloud_receiver.push.wiring import add_webhook

pytestmark = pytest.mark.unit

T0 = datetime(2024, 5, 6, 2, 0, tzinfo=UTC)  # Monday 10:00 in China
CODE = "91640500MA76A1B2CE"  # a 统一社会信用代码 with a correct check character
STAFF = {"name": "张三", "position": "厨师", "health_cert_no": "NX-0001", "health_cert_issued": "2023-06-01",
         "health_cert_expiry": "2099-01-01"}
CHECK = {"temperature_c": 36.5, "hand_wound": False, "diarrhea": False, "fever": False, "cough": False,
         "fit_to_work": True}
WASTE = {"day": "2024-05-06", "quantity_kg": 8.5, "collector": "马师傅", "company": "中卫市环卫公司"}
SAMPLE = {"day": "2024-05-06", "meal": "午", "dish": "番茄炒蛋", "weight_g": 150, "kept_from": "2024-05-06T12:00:00+08:00",
          "kept_until": "2024-05-08T12:00:00+08:00", "kept_by": "李四"}


@dataclass
class Clock:
    t: datetime


@pytest.fixture
async def world(tmp_path, db_engine, monkeypatch):
    clock = Clock(T0)
    monkeypatch.setattr(ApiContext, "now", lambda self: clock.t)
    w = await make_world(tmp_path, db_engine)
    w.clock = clock  # type: ignore[attr-defined]
    yield w
    await w.close()


async def call(w, method: str, path: str, who: str | None, body=None, **kw):
    return await w.client.request(method, f"/api/v1{path}", json=body, headers=w.h(who), **kw)


async def ok(w, method: str, path: str, who: str | None, body=None) -> dict:
    r = await call(w, method, path, who, body)
    assert r.status == 200, await r.text()
    return await r.json()


async def test_create_list_filter_and_page(world):
    """Entries come back newest day first, filtered by day range and subject, page by page."""
    for day, kg in (("2024-05-03", 10), ("2024-05-04", 12.5), ("2024-05-06", 8)):
        await ok(world, "POST", "/canteens/C1/ledgers/waste", "c1", {**WASTE, "day": day, "quantity_kg": kg})
    body = await ok(world, "GET", "/canteens/C1/ledgers/waste?from=2024-05-04&to=2024-05-06", "c1")
    assert [(i["day"], i["data"]["quantity_kg"]) for i in body["items"]] == [("2024-05-06", 8), ("2024-05-04", 12.5)]
    first = body["items"][0]
    assert (first["kind_name"], first["created_by"], first["revision"], first["current"]) == ("厨余废弃物", "c1-manager", 1,
                                                                                             True)
    page = await ok(world, "GET", "/canteens/C1/ledgers/waste?limit=2", "reg")
    assert len(page["items"]) == 2 and page["next_cursor"]
    rest = await ok(world, "GET", f"/canteens/C1/ledgers/waste?limit=2&cursor={page['next_cursor']}", "reg")
    assert [i["day"] for i in rest["items"]] == ["2024-05-03"] and rest["next_cursor"] is None
    await ok(world, "POST", "/canteens/C1/ledgers/samples", "c1", SAMPLE)
    await ok(world, "POST", "/canteens/C1/ledgers/samples", "c1", {**SAMPLE, "meal": "早", "dish": "馒头"})
    lunch = await ok(world, "GET", "/canteens/C1/ledgers/samples?subject=午", "c1")
    assert [i["data"]["dish"] for i in lunch["items"]] == ["番茄炒蛋"]


@pytest.mark.parametrize(("path", "body", "status", "field"), [
    ("/canteens/C1/ledgers/samples", {**SAMPLE, "weight_g": 100}, 400, "weight_g"),
    ("/canteens/C1/ledgers/samples", {**SAMPLE, "kept_until": "2024-05-08T11:00:00+08:00"}, 422, "kept_until"),
    ("/canteens/C1/ledgers/samples", {k: v for k, v in SAMPLE.items() if k != "dish"}, 400, "dish"),
    ("/canteens/C1/ledgers/samples", {**SAMPLE, "day": "2024-05-07"}, 422, "day"),  # tomorrow
    ("/canteens/C1/ledgers/samples", WASTE, 422, "waste"),  # a valid entry of another ledger
    ("/canteens/C1/ledgers/suppliers", {"name": "甲", "credit_code": CODE[:-1] + "F", "licence_no": "JY1",
                                        "licence_expiry": "2025-01-01"}, 422, "credit_code"),
    ("/canteens/C1/ledgers/suppliers", {"name": "甲", "credit_code": "91640500MA76A1B2CI", "licence_no": "JY1",
                                        "licence_expiry": "2025-01-01"}, 400, "credit_code"),
    ("/canteens/C1/ledgers/staff", {**STAFF, "health_cert_expiry": "2023-01-01"}, 422, "health_cert_expiry"),
    ("/canteens/C1/ledgers/staff", {**STAFF, "nickname": "小张"}, 400, "nickname"),
    ("/canteens/C1/ledgers/bogus", WASTE, 400, "kind"),
    ("/canteens/C1/ledgers/morning_checks", {**CHECK, "day": "2024-05-06", "staff_id": "seed-staff", "fever": True},
     422, "fit_to_work"),
    ("/canteens/C1/ledgers/morning_checks", {**CHECK, "day": "2024-05-06", "staff_id": "nobody"}, 422, "staff_id"),
    ("/canteens/C1/ledgers/waste", {**WASTE, "photo_sha256s": ["ab" * 32]}, 422, "photo_sha256s.0"),
])
async def test_validation_names_the_field(world, path, body, status, field):
    """Bad input is 400 naming the field; well-formed but impossible input is 422 naming the field."""
    r = await call(world, "POST", path, "c1", body)
    assert r.status == status, await r.text()
    assert field in (await r.json())["error"]["message"]


async def test_edit_within_24h_then_only_revisions(world):
    """Within 24 h an entry is edited in place; later only a revision with a reason corrects it, keeping the old."""
    made = await ok(world, "POST", "/canteens/C1/ledgers/staff", "c1", STAFF)
    rid = made["id"]
    world.clock.t = T0 + timedelta(hours=23)
    edited = await ok(world, "PUT", f"/canteens/C1/ledgers/staff/{rid}", "c1", {**STAFF, "name": "张三丰"})
    assert (edited["revision"], edited["data"]["name"], edited["edited_by"]) == (1, "张三丰", "c1-manager")
    world.clock.t = T0 + timedelta(hours=25)
    late = await call(world, "PUT", f"/canteens/C1/ledgers/staff/{rid}", "c1", {**STAFF, "name": "张三"})
    assert late.status == 422 and "revisions" in (await late.json())["error"]["message"]
    no_reason = await call(world, "POST", f"/canteens/C1/ledgers/staff/{rid}/revisions", "c1", {"data": STAFF})
    assert no_reason.status == 400 and "reason" in (await no_reason.json())["error"]["message"]
    fixed = await ok(world, "POST", f"/canteens/C1/ledgers/staff/{rid}/revisions", "c1",
                     {"reason": "健康证编号录错", "data": {**STAFF, "health_cert_no": "NX-0002"}})
    assert (fixed["revision"], fixed["data"]["health_cert_no"], fixed["reason"]) == (2, "NX-0002", "健康证编号录错")
    old, new = fixed["revisions"]
    assert (old["current"], old["data"]["name"], old["data"]["health_cert_no"]) == (False, "张三丰", "NX-0001")
    assert (new["current"], new["created_at"]) == (True, "2024-05-07T03:00:00.000Z")
    listed = await ok(world, "GET", "/canteens/C1/ledgers/staff", "reg")
    assert [i["revision"] for i in listed["items"] if i["id"] == rid] == [2]
    again = await ok(world, "GET", f"/canteens/C1/ledgers/staff/{rid}", "reg")
    assert [r["revision"] for r in again["revisions"]] == [1, 2]


async def test_scope_and_roles(world):
    """A canteen writes only its own ledgers (another's is 404); a regulator reads and comments but may not write."""
    assert (await call(world, "POST", "/canteens/C2/ledgers/waste", "c1", WASTE)).status == 404
    assert (await call(world, "GET", "/canteens/C1/ledgers/waste", "c3")).status == 404
    assert (await call(world, "GET", "/canteens/C1/ledgers/staff/seed-staff", "c3")).status == 404
    assert (await call(world, "POST", "/canteens/C1/ledgers/waste", "reg", WASTE)).status == 403
    assert (await call(world, "POST", "/canteens/C3/ledgers/waste", "reg", WASTE)).status == 404
    assert (await call(world, "GET", "/canteens/C3/ledgers/staff", "city")).status == 200
    said = await ok(world, "POST", "/canteens/C1/ledgers/staff/seed-staff/comments", "reg", {"text": "请上传健康证照片"})
    reply = await ok(world, "POST", "/canteens/C1/ledgers/staff/seed-staff/comments", "c1", {"text": "已上传"})
    assert [(c["author"], c["role"], c["text"]) for c in reply["comments"]] == [
        ("shapotou-regulator", "regulator", "请上传健康证照片"), ("c1-manager", "canteen", "已上传")]
    assert said["comments"][0]["at"] == "2024-05-06T02:00:00.000Z"
    assert (await call(world, "POST", "/canteens/C1/ledgers/staff/seed-staff/comments", "c3", {"text": "x"})).status == 404


async def test_a_whole_shift_in_one_request(world):
    """A shift's morning checks are stored together; one bad line stores none and names its place."""
    b = await ok(world, "POST", "/canteens/C1/ledgers/staff", "c1", {**STAFF, "name": "李四", "health_cert_no": "NX-2"})
    shift = {"day": "2024-05-06", "checked_by": "食品安全管理员",
             "checks": [{**CHECK, "staff_id": "seed-staff"}, {**CHECK, "staff_id": b["id"], "temperature_c": 36.8}]}
    done = await ok(world, "POST", "/canteens/C1/morning-checks", "c1", shift)
    assert [(i["data"]["staff_id"], i["data"]["checked_by"]) for i in done["items"]] == [
        ("seed-staff", "食品安全管理员"), (b["id"], "食品安全管理员")]
    bad = {**shift, "checks": [{**CHECK, "staff_id": "seed-staff"}, {**CHECK, "staff_id": "nobody"}]}
    r = await call(world, "POST", "/canteens/C1/morning-checks", "c1", bad)
    assert r.status == 422 and "checks.1.staff_id" in (await r.json())["error"]["message"]
    listed = await ok(world, "GET", "/canteens/C1/ledgers/morning_checks?from=2024-05-06&to=2024-05-06", "c1")
    assert len(listed["items"]) == 3  # the seeded check and the shift's two; nothing of the refused one


async def test_expired_health_cert_on_a_morning_check_raises_an_alert(world):
    """A person with an expired 健康证 checked in the morning: a `health_cert_expired` alert the regulator lists,
    raised once, rectified like a camera alert."""
    person = await ok(world, "POST", "/canteens/C1/ledgers/staff", "c1",
                      {**STAFF, "health_cert_issued": "2023-05-01", "health_cert_expiry": "2024-05-01"})
    check = {**CHECK, "day": "2024-05-06", "staff_id": person["id"]}
    await ok(world, "POST", "/canteens/C1/ledgers/morning_checks", "c1", check)
    await ok(world, "POST", "/canteens/C1/ledgers/morning_checks", "c1", {**check, "note": "复检"})
    listed = await ok(world, "GET", "/alerts", "reg")
    found = [a for a in listed["items"] if a["type"] == "health_cert_expired"]
    assert len(found) == 1
    alert = found[0]
    assert (alert["canteen_id"], alert["device_id"], alert["type_name"], alert["status"]) == (
        "C1", "ledger", "健康证过期", "待整改")
    assert "张三" in alert["detail"] and "2024-05-01" in alert["detail"]
    assert not [a for a in (await ok(world, "GET", "/alerts", "c3"))["items"] if a["id"] == alert["id"]]
    fixed = await ok(world, "POST", f"/alerts/{alert['id']}/rectification", "c1",
                     {"note": "已停岗并安排体检", "photo_base64": JPEG_B64})
    assert fixed["status"] == "已整改"


async def test_photos_follow_the_canteen(world):
    """A ledger photo is a checked JPEG; entries may name only their canteen's photos; who may read it follows the canteen."""
    form = FormData()
    form.add_field("photo", jpeg("health-cert"), content_type="image/jpeg", filename="cert.jpg")
    r = await world.client.post("/api/v1/canteens/C1/ledger-photos", data=form, headers=world.h("c1"))
    assert r.status == 200, await r.text()
    up = await r.json()
    sha = up["sha256"]
    assert up["url"] == f"/api/v1/media/{sha}"
    made = await ok(world, "POST", "/canteens/C1/ledgers/staff", "c1", {**STAFF, "health_cert_photo_sha256": sha})
    assert made["data"]["health_cert_photo_sha256"] == sha
    assert (await world.get(f"/media/{sha}", "reg")).status == 200
    assert (await world.get(f"/media/{sha}", "c3")).status == 404
    foreign = await call(world, "POST", "/canteens/C3/ledgers/staff", "c3", {**STAFF, "health_cert_photo_sha256": sha})
    assert foreign.status == 422 and "health_cert_photo_sha256" in (await foreign.json())["error"]["message"]
    png = FormData()
    png.add_field("photo", b"\x89PNG\r\n\x1a\n" + bytes(64), content_type="image/jpeg", filename="x.jpg")
    not_jpeg = await world.client.post("/api/v1/canteens/C1/ledger-photos", data=png, headers=world.h("c1"))
    assert not_jpeg.status == 422 and "JPEG" in (await not_jpeg.json())["error"]["message"]
    assert (await call(world, "POST", "/canteens/C1/ledger-photos", "reg", {"photo_base64": JPEG_B64})).status == 403


async def test_a_day_traced(world):
    """One day: who was checked (and who worked), who was not, deliveries with supplier and licence state, samples."""
    sup = await ok(world, "POST", "/canteens/C1/ledgers/suppliers", "c1",
                   {"name": "宁夏放心粮油公司", "credit_code": CODE, "licence_no": "JY16405020000009",
                    "licence_expiry": "2024-05-20"})
    dup = await call(world, "POST", "/canteens/C1/ledgers/suppliers", "c1",
                     {"name": "同一家", "credit_code": CODE, "licence_no": "JY2", "licence_expiry": "2025-01-01"})
    assert dup.status == 422 and "credit_code" in (await dup.json())["error"]["message"]
    buy = await ok(world, "POST", "/canteens/C1/ledgers/purchases", "c1", {
        "day": "2024-05-06", "supplier_id": sup["id"], "items": [{"name": "大米", "quantity": 50, "unit": "千克"}]})
    assert (buy["supplier"]["name"], buy["supplier"]["licence_state"]) == ("宁夏放心粮油公司", "expiring")
    other = await ok(world, "POST", "/canteens/C1/ledgers/staff", "c1", {**STAFF, "name": "赵六", "health_cert_no": "X"})
    await ok(world, "POST", "/canteens/C1/ledgers/morning_checks", "c1",
             {**CHECK, "day": "2024-05-06", "staff_id": "seed-staff"})
    await ok(world, "POST", "/canteens/C1/ledgers/samples", "c1", SAMPLE)
    day = await ok(world, "GET", "/canteens/C1/days/2024-05-06", "reg")
    assert day["canteen"] == {"id": "C1", "name": "第一中学食堂"}
    assert len(day["morning_checks"]) == 2  # the seeded one and today's, both of seed-staff
    assert day["morning_checks"][0]["staff"]["health_cert_state"] == "valid"
    assert day["working"] == ["王五", "王五"]
    assert [p["name"] for p in day["not_checked"]] == ["赵六"] and day["not_checked"][0]["id"] == other["id"]
    assert day["purchases"][0]["supplier"]["licence_expiry"] == "2024-05-20"
    assert [s["data"]["dish"] for s in day["samples"]] == ["番茄炒蛋"]
    assert day["waste"] == [] and day["disinfection"] == []
    got = await ok(world, "GET", f"/canteens/C1/ledgers/purchases/{buy['id']}", "c1")
    assert got["supplier"]["credit_code"] == CODE


async def test_periodic_rules_raise_missing_checks_and_samples_once(world):
    """The rule run finds a school day without 晨检 and a served meal without a sample, stores each once, and owes
    the jurisdiction's robot a push for each."""
    add_webhook(world.storage.sql, "zw", "jurisdiction", "6405", "wecom", "http://127.0.0.1:9/cgi-bin/webhook/send")
    await ok(world, "POST", "/canteens/C1/ledgers/staff", "c1", STAFF)  # registered Monday 2024-05-06
    world.clock.t = T0 + timedelta(days=1)
    await ok(world, "POST", "/canteens/C1/ledgers/samples", "c1", {**SAMPLE, "day": "2024-05-06"})
    tuesday_evening = datetime(2024, 5, 7, 12, 0, tzinfo=UTC)  # 20:00 in China
    db, cfg = world.storage.sql, LedgersConfig()
    rows = runner.run_once(db, cfg, tuesday_evening, owner="bk-receiver-1")
    found = sorted((r["type"], r["started_at"]) for r in rows)
    # Monday has the seeded check and its lunch a sample; Sunday is no school day; Tuesday has neither
    assert found == [("morning_check_missing", "2024-05-07T01:00:00.000Z"), ("sample_missing", "2024-05-07T06:00:00.000Z")]
    assert all(r["camera_id"] in ("每日晨检台账", "食品留样台账") and r["canteen_id"] == "C1" for r in rows)
    assert runner.run_once(db, cfg, tuesday_evening, owner="bk-receiver-1") == []
    owed = db.rows("SELECT alert_id FROM push_outbox WHERE robot_id = 'zw'")
    assert sorted(o["alert_id"] for o in owed) == sorted(r["id"] for r in rows)


async def test_the_app_runs_the_rules_periodically(tmp_path, db_engine):
    """With a short interval the receiver's own task raises a supplier licence alert written behind its back."""
    w = await make_world(tmp_path, db_engine, config={"ledgers": LedgersConfig(rules_interval_s=0.05)})
    try:
        entry = Supplier(name="过期供货商", credit_code=CODE, licence_no="JY3", licence_expiry="2020-01-01")
        store.create(w.storage.sql, store.Principal("canteen", "C2", "c2"), "C2", "suppliers", [entry],
                     now=datetime.now(UTC), tz_hours=8)

        async def raised():
            items = (await (await w.get("/alerts", "reg")).json())["items"]
            return [a for a in items if a["canteen_id"] == "C2" and a["type"] == "supplier_licence_expired"]

        found = await async_wait_until(raised, timeout=10)
        assert found[0]["type_name"] == "供货商许可证过期" and "2020-01-01" in found[0]["detail"]
    finally:
        await w.close()
