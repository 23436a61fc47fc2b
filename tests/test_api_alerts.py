"""Alert listing: filters, cursor pagination, input errors, and /stats counts."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from support.api_kit import make_world, when

pytestmark = pytest.mark.unit

BASE = datetime(2024, 5, 1, 0, 0, tzinfo=UTC)
TYPES = ("phone_use", "animal", "crowding")


@pytest.fixture
async def world(tmp_path, db_engine):
    w = await make_world(tmp_path, db_engine)
    # 120 alerts; several share a started_at (ties broken by id), spread over canteens, types and 3 days
    for i in range(120):
        canteen = ("C1", "C2", "C3")[i % 3]
        w.add_alert(canteen, started_at=BASE + timedelta(hours=(i // 4) * 2), type=TYPES[i % len(TYPES) - (i % 2)],
                    alert_id=f"P{(i * 37) % 1000:04d}")
    yield w
    await w.close()


async def _all_pages(w, who, query, limit):
    ids, cursor, pages = [], None, 0
    while True:
        q = f"/alerts?limit={limit}{query}" + (f"&cursor={cursor}" if cursor else "")
        r = await w.get(q, who)
        assert r.status == 200, await r.text()
        body = await r.json()
        ids += [(a["started_at"], a["id"]) for a in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if not cursor:
            return ids, pages


@pytest.mark.parametrize("limit", [1, 7, 50, 200])
async def test_pagination_returns_each_alert_once(world, limit):
    """Walking all pages yields every alert exactly once, newest first, with ties on started_at ordered by id."""
    got, pages = await _all_pages(world, "admin", "", limit)
    assert len(got) == 120 and len(set(got)) == 120
    assert got == sorted(got, reverse=True)
    assert pages == -(-120 // limit)  # no empty trailing page
    expected = {r["id"] for r in world.storage.sql.rows("SELECT id FROM alerts")}
    assert {i for _, i in got} == expected


async def test_pagination_with_filters_and_scope(world):
    """Paging a regulator's filtered view returns exactly the matching visible alerts."""
    got, _ = await _all_pages(world, "reg", "&type=phone_use,animal&since=2024-05-01T06:00:00Z", 5)
    expected = {r["id"] for r in world.storage.sql.rows(
        "SELECT id FROM alerts WHERE canteen_id IN ('C1','C2') AND type IN ('phone_use','animal')"
        " AND started_at >= :since", since=when("2024-05-01T06:00:00.000Z"))}
    assert {i for _, i in got} == expected and len(got) == len(expected) > 0


async def test_filters_time_type_canteen(world):
    """since/until, type and canteen filters each narrow the list exactly."""
    r = await world.get("/alerts?limit=200&canteen=C1&type=crowding"
                        "&since=2024-05-01T08:00:00%2B08:00&until=2024-05-02T00:00:00Z", "admin")
    items = (await r.json())["items"]
    assert items and all(a["canteen_id"] == "C1" and a["type"] == "crowding" for a in items)
    assert all("2024-05-01T00:00:00.000Z" <= a["started_at"] < "2024-05-02T00:00:00.000Z" for a in items)
    n = world.storage.sql.rows("SELECT count(*) AS n FROM alerts WHERE canteen_id='C1' AND type='crowding'"
                               " AND started_at < :until", until=when("2024-05-02T00:00:00.000Z"))[0]["n"]
    assert len(items) == n


@pytest.mark.parametrize(("query", "needle"), [
    ("limit=0", "limit"), ("limit=201", "limit"), ("limit=abc", "limit"), ("cursor=%%%", "cursor"),
    ("since=yesterday", "since"), ("until=2024-05-01T08:00:00", "time zone"), ("type=dancing", "dancing"),
    ("status=done", "status"),
])
async def test_bad_input_is_400_with_reason(world, query, needle):
    """Malformed parameters answer 400 and the message names what is wrong."""
    r = await world.get(f"/alerts?{query}", "admin")
    assert r.status == 400
    assert needle in (await r.json())["error"]["message"]


async def test_stats_counts_exact(world):
    """/stats counts by type, canteen and local day match the rows, within the token's scope."""
    r = await world.get("/stats?since=2024-05-01T00:00:00Z&until=2024-05-03T00:00:00Z", "reg")
    assert r.status == 200
    s = await r.json()
    rows = [r for r in world.storage.sql.rows("SELECT type, canteen_id, started_at FROM alerts")
            if r["canteen_id"] in ("C1", "C2") and when("2024-05-01T00:00:00Z") <= when(r["started_at"]) < when("2024-05-03T00:00:00Z")]
    assert s["total"] == len(rows)
    assert s["by_type"] == dict(Counter(r["type"] for r in rows))
    assert s["by_canteen"] == {"C1": 32, "C2": 32}  # 2 of the 2.5 days, a third each
    local = dict(Counter((when(r["started_at"]) + timedelta(hours=8)).date().isoformat() for r in rows))
    assert s["by_day"] == local and sum(local.values()) == 64 and len(local) == 3
    assert s["devices"] == {"total": 2, "online": 1, "online_rate": 0.5}


async def test_stats_bad_range(world):
    """A reversed or over-long stats range is well-formed but cannot be answered: 422."""
    r = await world.get("/stats?since=2024-05-02T00:00:00Z&until=2024-05-01T00:00:00Z", "admin")
    assert r.status == 422
    r = await world.get("/stats?since=2020-01-01T00:00:00Z&until=2024-05-01T00:00:00Z", "admin")
    assert r.status == 422 and "366" in (await r.json())["error"]["message"]


async def test_devices_and_cameras(world):
    """Devices show online status and last seen; cameras their reported health."""
    devices = {d["id"]: d for d in (await (await world.get("/devices", "admin")).json())["items"]}
    assert len(devices) == 3
    online = [d for d in devices.values() if d["online"]]
    assert len(online) == 1 and online[0]["canteen_id"] == "C1" and online[0]["last_seen"]
    cams = (await (await world.get("/cameras", "admin")).json())["items"]
    assert [(c["camera_id"], c["name"], c["state"]) for c in cams] == [("cam1", "后厨1", "online")]
    assert (await (await world.get("/cameras", "c3")).json())["items"] == []
