"""The export for an upper platform (/api/v1/export): an incremental, resumable, signed change feed and a
per-canteen snapshot, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from support.api_kit import DEVICES, EXPORT_KEY, EXPORT_KEY_ENV, ago, jpeg, make_world

from bk_contract import Alert
from cloud_receiver.api import export
from cloud_receiver.storage import migrate
from cloud_receiver.storage.sqlite import iso
from cloud_receiver.workflow import export_feed

pytestmark = pytest.mark.unit

FUTURE = "2099-01-01T00:00:00+08:00"
API_DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def verify(key: bytes, headers, body: bytes, max_age_s: float = 300) -> bool:
    """What the upper platform does (the snippet in docs/api.md): recompute the HMAC, compare, check the age."""
    ts = headers["X-BK-Timestamp"]
    want = "sha256=" + hmac.new(key, ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(want, headers["X-BK-Signature"]) and abs(time.time() - int(ts)) <= max_age_s


async def feed(w, who: str = "admin", cursor: str | None = None, limit: int | None = None) -> dict:
    """One answer of GET /export/changes, its signature checked."""
    params = {k: v for k, v in (("cursor", cursor), ("limit", limit)) if v is not None}
    r = await w.get("/export/changes", who, params=params)
    raw = await r.read()
    assert r.status == 200, raw
    assert verify(EXPORT_KEY.encode(), r.headers, raw)
    return json.loads(raw)


async def drain(w, who: str = "admin", cursor: str | None = None, limit: int = 3) -> tuple[list[dict], str]:
    """Every change after `cursor`, page by page; returns (items, the cursor to keep)."""
    items: list[dict] = []
    for _ in range(100):
        page = await feed(w, who, cursor, limit)
        items += page["items"]
        cursor = page["next_cursor"]
        assert len(page["items"]) <= limit
        if not page["has_more"]:
            return items, cursor
    raise AssertionError("the feed did not end")


def changes(items: list[dict]) -> list[tuple[str, str]]:
    return [(i["alert"]["id"], i["kind"]) for i in items]


def revise(w, alert_id: str, canteen: str, rev: int) -> str:
    """A later revision of an alert (the box ended it), stored as ingest does."""
    row = w.storage.get_alert(alert_id)
    alert = Alert(id=alert_id, device_id=DEVICES[canteen], camera_id="cam1", type=row["type"], rev=rev, state="end",
                  started_at=datetime.fromisoformat(str(row["started_at"]).replace("Z", "+00:00")),
                  ended_at=datetime.now(UTC), score=0.95)
    return w.storage.upsert_alert(alert, iso(datetime.now(UTC)) or "").outcome


async def test_paging_returns_each_change_once_in_order(world):
    """Small pages walk the whole feed: every new alert and revision once, in the order they were stored."""
    for n, canteen in enumerate(["C1", "C2", "C3", "C1", "C2", "C1", "C3"]):
        world.add_alert(canteen, started_at=ago(minutes=60 - n), alert_id=f"P{n}")
    assert revise(world, "P1", "C2", rev=1) == "updated"
    assert revise(world, "P1", "C2", rev=1) == "unchanged"  # a repeat changes nothing: no change
    items, _ = await drain(world, limit=3)
    assert changes(items) == [(f"P{n}", "created") for n in range(7)] + [("P1", "revised")]
    seqs = [i["seq"] for i in items]
    assert seqs == sorted(set(seqs))  # unique and increasing
    assert items[-1]["alert"]["rev"] == 1 and items[1]["alert"]["rev"] == 1  # each item: the alert as it is now
    assert items[0]["jurisdiction"] == "64050201" and items[0]["alert"]["canteen_name"] == "第一中学食堂"


async def test_resume_from_a_saved_cursor_yields_exactly_the_new_changes(world):
    """A cursor kept from the last page gives, later, the changes made since and nothing before."""
    world.add_alert("C1", started_at=ago(minutes=5), alert_id="OLD1")
    world.add_alert("C2", started_at=ago(minutes=4), alert_id="OLD2")
    first, saved = await drain(world)
    assert changes(first) == [("OLD1", "created"), ("OLD2", "created")]
    assert (await feed(world, cursor=saved))["items"] == []  # nothing new: an empty page, the same place
    world.add_alert("C3", started_at=ago(minutes=3), alert_id="NEW1")
    assert revise(world, "OLD1", "C1", rev=2) == "updated"
    again, _ = await drain(world, cursor=saved)
    assert changes(again) == [("NEW1", "created"), ("OLD1", "revised")]


async def test_workflow_actions_appear_as_changes(world):
    """Deadline, 整改 submitted, 复核 rejected and approved are each a change carrying the alert's current status."""
    world.add_alert("C1", started_at=ago(minutes=10), alert_id="W1")
    _, cursor = await drain(world)
    steps = [("/alerts/W1/deadline", "reg", {"deadline": FUTURE}),
             ("/alerts/W1/rectification", "c1", {"note": "已整改", "photo_base64": base64.b64encode(jpeg("w1")).decode()}),
             ("/alerts/W1/review", "reg", {"decision": "reject", "note": "仍有问题", "deadline": FUTURE}),
             ("/alerts/W1/rectification", "c1", {"note": "再次整改", "photo_base64": base64.b64encode(jpeg("w2")).decode()}),
             ("/alerts/W1/review", "reg", {"decision": "approve", "note": ""})]
    for path, who, body in steps:
        r = await world.post(path, who, json=body)
        assert r.status == 200, await r.text()
    items, _ = await drain(world, cursor=cursor)
    assert [i["kind"] for i in items] == ["set_deadline", "submit", "reject", "submit", "approve"]
    latest = items[-1]["alert"]
    assert latest["status"] == "复核通过" and len(latest["transitions"]) == 6  # a rejection is two transitions
    assert latest["transitions"][-1]["to_status"] == "复核通过"


async def test_the_signature_verifies_with_the_key_and_fails_with_another(world):
    """Both endpoints sign the exact body bytes: the right key verifies, another key or a changed byte does not."""
    world.add_alert("C1", started_at=ago(minutes=1))
    for path in ("/export/changes", "/export/canteens"):
        r = await world.get(path, "admin")
        raw = await r.read()
        assert r.status == 200 and r.headers["X-BK-Key-Id"] == "1" and r.headers["Cache-Control"] == "no-store"
        assert r.headers["X-BK-Signature"].startswith("sha256=")
        assert verify(EXPORT_KEY.encode(), r.headers, raw)
        assert not verify(b"another-key-of-the-same-length!!!!!", r.headers, raw)
        assert not verify(EXPORT_KEY.encode(), r.headers, raw.replace(b"}", b" }", 1))
        assert export.sign(EXPORT_KEY.encode(), r.headers["X-BK-Timestamp"], raw) == r.headers["X-BK-Signature"]


async def test_the_verification_snippet_in_the_docs_works(world):
    """docs/api.md's `fetch` accepts a real answer with the right key and refuses it with another."""
    section = API_DOC.read_text(encoding="utf-8").split("## Export for an upper platform", 1)[1]
    code = next(b for b in section.split("```python\n")[1:] if "def fetch(" in b).split("```")[0]
    scope: dict = {}
    exec(code.split("\ncursor = ")[0], scope)  # the function; the polling loop after it is an example
    world.add_alert("C1", started_at=ago(minutes=1), alert_id="DOC1")
    url = str(world.client.make_url("/api/v1/export/changes"))
    page = await asyncio.to_thread(scope["fetch"], url, world.tokens["admin"], {"1": EXPORT_KEY.encode()})
    assert changes(page["items"]) == [("DOC1", "created")]
    with pytest.raises(ValueError, match="not signed by our key"):
        await asyncio.to_thread(scope["fetch"], url, world.tokens["admin"], {"1": b"not-the-key-0123456789"})


async def test_a_regulator_sees_only_its_jurisdiction(world):
    """Shapotou's regulator gets the changes and canteens of 640502 only; Zhongwei's (6405) gets all three."""
    for canteen in ("C1", "C2", "C3"):
        world.add_alert(canteen, started_at=ago(minutes=2), alert_id=f"J-{canteen}")
    reg, _ = await drain(world, "reg")
    assert {i["alert"]["canteen_id"] for i in reg} == {"C1", "C2"}
    city, _ = await drain(world, "city")
    assert {i["alert"]["canteen_id"] for i in city} == {"C1", "C2", "C3"}
    r = await world.get("/export/canteens", "reg")
    assert [c["canteen_id"] for c in (await r.json())["items"]] == ["C1", "C2"]


async def test_hidden_changes_move_a_regulators_cursor_on(world):
    """At the end of the feed the cursor moves past changes the regulator may not see, so they are not read again."""
    world.add_alert("C1", started_at=ago(minutes=3), alert_id="H1")
    world.add_alert("C3", started_at=ago(minutes=2), alert_id="H3")
    items, cursor = await drain(world, "reg")
    assert changes(items) == [("H1", "created")]
    admin_items, _ = await drain(world, "admin")
    assert export_feed.decode_cursor(cursor) == max(i["seq"] for i in admin_items)
    world.add_alert("C2", started_at=ago(minutes=1), alert_id="H2")
    assert changes((await drain(world, "reg", cursor))[0]) == [("H2", "created")]


@pytest.mark.parametrize("path", ["/export/changes", "/export/canteens"])
async def test_canteen_tokens_are_refused_and_anonymous_callers_unauthenticated(world, path):
    """A canteen token gets 403 and no token 401, both without data."""
    r = await world.get(path, "c1")
    assert r.status == 403 and (await r.json())["error"]["code"] == "forbidden"
    assert "X-BK-Signature" not in r.headers
    r = await world.get(path)
    assert r.status == 401


@pytest.mark.parametrize(("query", "status", "field"), [
    ("limit=0", 400, "limit"), ("limit=1001", 400, "limit"), ("limit=ten", 400, "limit"),
    ("cursor=not%20a%20cursor!", 400, "cursor"), ("cursor=" + base64.urlsafe_b64encode(b"x.1.2").decode().rstrip("="), 422, "cursor"),
    ("cursor=" + base64.urlsafe_b64encode(b"c1.99999999999999999999").decode().rstrip("="), 422, "cursor")])
async def test_a_bad_cursor_or_limit_is_refused_naming_the_field(world, query, status, field):
    """Input outside the schema is 400, a well-formed cursor this API never gave 422; the message names the field."""
    r = await world.get(f"/export/changes?{query}", "admin")
    assert r.status == status, await r.text()
    assert (await r.json())["error"]["message"].startswith(f"{field}")


async def test_a_limit_of_1000_is_accepted(world):
    """The largest page size is allowed and answers all changes at once."""
    world.add_alert("C1", started_at=ago(minutes=1), alert_id="L1")
    page = await feed(world, limit=1000)
    assert changes(page["items"]) == [("L1", "created")] and page["has_more"] is False


@pytest.mark.parametrize("key", [None, "too-short"])
async def test_without_a_usable_key_the_export_answers_503(world, monkeypatch, key):
    """No key (or one under 16 bytes): 503 naming the setting, and never unsigned data."""
    if key is None:
        monkeypatch.delenv(EXPORT_KEY_ENV)
    else:
        monkeypatch.setenv(EXPORT_KEY_ENV, key)
    world.add_alert("C1", started_at=ago(minutes=1))
    for path in ("/export/changes", "/export/canteens"):
        r = await world.get(path, "admin")
        body = await r.json()
        assert r.status == 503 and body["error"]["code"] == "export_not_configured"
        assert EXPORT_KEY_ENV in body["error"]["message"] and "items" not in body
        assert "X-BK-Signature" not in r.headers


async def test_the_canteen_snapshot_counts_devices_and_rectification(world):
    """Per canteen: boxes total/online/last seen now, alerts of the period by status, and the rates."""
    for n in range(4):
        world.add_alert("C1", started_at=ago(hours=30 + n), alert_id=f"S{n}")  # past the default 24 h deadline
    world.add_alert("C1", started_at=ago(days=40), alert_id="S-old")  # before the period
    photo = {"note": "ok", "photo_base64": base64.b64encode(jpeg("s")).decode()}
    for alert_id in ("S0", "S1"):
        assert (await world.post(f"/alerts/{alert_id}/rectification", "c1", json=photo)).status == 200
    assert (await world.post("/alerts/S0/review", "reg", json={"decision": "approve"})).status == 200
    assert (await world.post("/alerts/S2/deadline", "reg", json={"deadline": FUTURE})).status == 200
    r = await world.get("/export/canteens", "admin")
    body = await r.json()
    c1, c2 = body["items"][0], body["items"][1]
    assert c1["devices"] == {"total": 1, "online": 1, "online_rate": 1.0, "last_seen": c1["devices"]["last_seen"]}
    assert c1["devices"]["last_seen"] is not None and c2["devices"]["online_rate"] == 0.0
    assert c1["alerts"] == {"total": 4, "pending": 1, "overdue": 1, "submitted": 1, "approved": 1,
                            "rectification_rate": 0.5, "closure_rate": 0.25}
    assert c2["alerts"]["total"] == 0 and c2["alerts"]["rectification_rate"] is None
    assert body["totals"]["canteens"] == 3 and body["totals"]["devices"]["total"] == 3
    assert body["totals"]["alerts"]["total"] == 4
    since = (datetime.now(UTC) - timedelta(days=60)).isoformat()
    r = await world.get("/export/canteens", "admin", params={"since": since})
    assert (await r.json())["items"][0]["alerts"]["total"] == 5


@pytest.mark.parametrize(("query", "status"), [("since=2024-05-02&until=2024-05-01", 422),
                                               ("since=2023-01-01&until=2024-05-01", 422), ("since=yesterday", 400)])
async def test_a_bad_period_is_refused(world, query, status):
    """since after until, or a period over 366 days, is 422; a time that is no time is 400 naming since."""
    r = await world.get(f"/export/canteens?{query}", "admin")
    assert r.status == status
    assert "since" in (await r.json())["error"]["message"]


@pytest.mark.integration
async def test_a_change_committed_late_with_a_lower_id_is_not_skipped(tmp_path, monkeypatch):
    """PostgreSQL: a change whose id was drawn first but committed last is handed out, not skipped by the cursor."""
    from cloud_receiver.storage.postgres import PostgresStorage

    w = await make_world(tmp_path, "postgresql")
    late = PostgresStorage(w.cfg.storage.url or "", migrate=False)
    try:
        _, cursor = await drain(w)
        with late.batch():  # one transaction, open while the other change commits
            late.upsert_alert(Alert(id="LATE", device_id=DEVICES["C1"], camera_id="cam1", type="phone_use",
                                    started_at=ago(minutes=2)), iso(datetime.now(UTC)) or "")
            w.add_alert("C2", started_at=ago(minutes=1), alert_id="EARLY")
            monkeypatch.setattr(export, "SETTLE_MAX_S", 0.05)  # the open transaction does not end: wait little
            page = await feed(w, cursor=cursor)
            monkeypatch.undo()
            assert w.storage.get_alert("EARLY") is not None  # committed and readable: a naive cursor would pass it
            assert page["items"] == []  # handing EARLY out now would move the cursor past LATE's lower id
            cursor = page["next_cursor"]
        items, _ = await drain(w, cursor=cursor)
        assert changes(items) == [("LATE", "created"), ("EARLY", "created")]
        assert items[0]["seq"] < items[1]["seq"]  # the lower id, committed later
    finally:
        late.close()
        await w.close()


def test_alerts_stored_before_the_feed_existed_are_in_it(tmp_path):
    """Migration 0005 gives every alert already stored a `created` change, oldest first."""
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    cfg = Config()
    cfg.set_main_option("script_location", str(migrate.SCRIPT_LOCATION))
    with engine.connect() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0004")
        for n, received in ((2, "2024-05-01T00:00:02.000Z"), (1, "2024-05-01T00:00:01.000Z")):
            conn.execute(sa.text("INSERT INTO alerts (id, device_id, camera_id, type, level, state, rev, started_at, "
                                 "received_at, updated_at) VALUES (:id, 'd', 'c', 'phone_use', 'warning', 'start', 0, "
                                 ":t, :t, :t)"), {"id": f"B{n}", "t": received})
        conn.commit()
    migrate.upgrade(engine)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT alert_id, kind FROM alert_changes ORDER BY id")).all()
    engine.dispose()
    assert [tuple(r) for r in rows] == [("B1", "created"), ("B2", "created")]
