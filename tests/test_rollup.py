"""Alert count rollups: /stats and the dashboard's counts from the rollups plus live parts equal a count over `alerts`."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from support.api_kit import CANTEENS, make_world, when

from cloud_receiver.admin.auth import Principal
from cloud_receiver.web import dashboard_queries as dq
from cloud_receiver.workflow import counts, queries, rectify, rollup

pytestmark = pytest.mark.unit

NOW = datetime(2024, 7, 10, 3, 0, tzinfo=UTC)
TYPES = ("no_mask", "no_chef_hat", "phone_use", "animal")
PRINCIPALS = [Principal("admin", "", "admin"), Principal("regulator", "640502", "reg"),
              Principal("regulator", "6405", "city"), Principal("regulator", "64052101", "street"),
              Principal("canteen", "C2", "c2"), Principal("regulator", "6499", "nobody")]


def _expected(rows: list[dict], p: Principal, region: str, since: datetime, until: datetime, tz: int) -> dict:
    """By type, canteen and local day, counted in Python from the alert rows."""
    seen = [r for r in rows if since <= when(r["started_at"]) < until and _visible(p, region, r["canteen_id"])]
    day = [(when(r["started_at"]) + timedelta(hours=tz)).date().isoformat() for r in seen]
    return {"by_type": dict(sorted(Counter(r["type"] for r in seen).items())),
            "by_canteen": dict(sorted(Counter(r["canteen_id"] or "" for r in seen).items())),
            "by_day": dict(sorted(Counter(day).items())), "status": Counter(r["status"] for r in seen),
            "hour": Counter((when(r["started_at"]) + timedelta(hours=tz)).hour for r in seen),
            "weekday_hour": Counter((((when(r["started_at"]) + timedelta(hours=tz)).weekday() + 1) % 7,
                                     (when(r["started_at"]) + timedelta(hours=tz)).hour) for r in seen)}


def _visible(p: Principal, region: str, canteen: str | None) -> bool:
    jur = CANTEENS[canteen][1] if canteen in CANTEENS else None
    return p.can_see(canteen, jur) and (not region or (jur or "").startswith(region))


def _check(w, rng: random.Random, tz: int = 8) -> int:
    """Random periods (whole local days, and cut mid-day), principals and regions: rollup counts == Python counts."""
    rows = w.storage.sql.rows("SELECT type, canteen_id, started_at, status FROM alerts")
    db = w.storage.sql
    checked = 0
    periods = []
    for _ in range(5):
        start = NOW - timedelta(days=rng.randint(0, 80), hours=rng.choice([0, 0, 5]), minutes=rng.choice([0, 17]))
        since = start.replace(hour=16, minute=0) if rng.random() < 0.5 else start  # 16:00Z = local midnight (UTC+8)
        periods.append((since, since + timedelta(days=rng.randint(0, 70), hours=rng.choice([0, 3]))))
    # most of April (its month count less its first 9 days), May and June whole (the month tier), part of July
    periods.append((datetime(2024, 4, 10, tzinfo=UTC) - timedelta(hours=tz), NOW))
    for since, until in periods:
        for p in PRINCIPALS:
            s = counts.stats(db, p, since, until, tz)
            want = _expected(rows, p, "", since, until, tz)
            assert (s["by_type"], s["by_canteen"], s["by_day"]) == (want["by_type"], want["by_canteen"], want["by_day"]), \
                (p, since, until)
            region = "64050202" if p.role == "admin" else p.scope
            with db.read(snapshot=True) as conn:
                pl = counts.plan(db, conn, p, region, since, until, tz)
                status = counts.count(db, conn, pl, "day", ("status",))
                hour = counts.count(db, conn, pl, "hour", ("hour",))
                weekday_hour = counts.count(db, conn, pl, "hour", ("weekday", "hour"))
                daily = counts.count(db, conn, pl, "daily", ("day",))
            want = _expected(rows, p, region, since, until, tz)
            assert {k[0]: n for k, n in status.items() if n} == dict(want["status"])
            assert {k[0]: n for k, n in hour.items() if n} == dict(want["hour"])
            assert {k: n for k, n in weekday_hour.items() if n} == dict(want["weekday_hour"])
            assert {k[0]: n for k, n in daily.items() if n} == want["by_day"]
            checked += 1
    return checked


def _check_dashboard(w) -> None:
    """The dashboard's charts (types, days, heat map, statuses) from rollups + live parts equal Python's counts."""
    rows = w.storage.sql.rows("SELECT type, canteen_id, started_at, status FROM alerts")
    last = (NOW + timedelta(hours=8)).date()
    period = dq.Period(last - timedelta(days=75), last)
    for p, region in ((PRINCIPALS[0], ""), (PRINCIPALS[2], "640502")):
        got = dq.dashboard_data(w.storage.sql, p, region, period, now=NOW, default_hours=24.0)
        want = _expected(rows, p, region, period.start, period.end, 8)
        assert {t["type"]: t["count"] for t in got["by_type"]} == want["by_type"]
        assert {d["day"]: d["count"] for d in got["by_day"] if d["count"]} == want["by_day"]
        assert sum(n for _, _, n in got["heatmap"]) == got["total"] == sum(want["by_type"].values()) > 0
        assert got["workflow"]["submitted"] == want["status"]["已整改"]


async def test_rollup_counts_equal_live_counts_through_changes(tmp_path, db_engine):
    """Counts are exact before any refresh, after one, after new alerts on old days and workflow actions, and after a canteen moves."""
    w = await make_world(tmp_path, db_engine)
    try:
        rng = random.Random(7)
        for i in range(400):
            canteen = rng.choice(["C1", "C2", "C3", "C3"])
            w.add_alert(canteen, started_at=NOW - timedelta(days=rng.uniform(0, 90)), type=rng.choice(TYPES),
                        alert_id=f"R{i:04d}")
        db = w.storage.sql
        assert _check(w, rng) > 0  # nothing rolled up yet for these: all live
        done = rollup.refresh(db, 8, NOW)
        assert done["full"] or done["days"] > 50  # after the app's start-up refresh of the empty table: days recounted
        for table in ("alert_counts_day", "alert_counts_hour", "alert_counts_daily", "alert_counts_month",
                      "alert_counts_month_type", "alert_counts_month_hour"):
            assert sum(r["n"] for r in db.rows(f"SELECT n FROM {table}")) == 400, table
        with db.read() as conn:
            assert counts.plan(db, conn, PRINCIPALS[0], "", NOW - timedelta(days=60), NOW, 8).dirty == frozenset()
            pl = counts.plan(db, conn, PRINCIPALS[1], "", datetime(2024, 4, 9, 16, tzinfo=UTC), NOW, 8)
            assert pl.months == ("2024-05", "2024-06")  # whole months: the month tables; the rest: the day tables
            assert pl.month_days == (("2024-04-10", "2024-04-30"), ("2024-07-01", "2024-07-09"))  # July 10 is cut: live
            # April is 21 of 30 days: the canteens' counts are April's less its first 9 days; July's 9 days are live
            assert pl.months_less == ("2024-04",)
            assert pl.less_months == (("2024-03-31T16:00:00.000Z", "2024-04-09T16:00:00.000Z"),)
            assert pl.live_months == (("2024-06-30T16:00:00.000Z", "2024-07-10T03:00:00.000Z"),)
        _check(w, rng)

        admin = Principal("admin", "", "admin")
        for r in db.rows("SELECT id, canteen_id FROM alerts WHERE id IN ('R0003', 'R0010', 'R0100')"):
            queries.apply_action(db, Principal("canteen", r["canteen_id"], "cook"), r["id"], rectify.Action.SUBMIT, now=NOW,
                                 default_hours=None, note="已整改", photo_sha256="ab" * 32)  # workflow actions on old alerts change their status
        for i in range(30):  # late alerts on old days (a box that was offline)
            w.add_alert("C1", started_at=NOW - timedelta(days=rng.uniform(20, 40)), type="animal", alert_id=f"L{i:03d}")
        with db.read() as conn:
            assert len(counts.plan(db, conn, admin, "", NOW - timedelta(days=60), NOW, 8).dirty) > 3
        _check(w, rng)  # the changed days are counted live
        assert rollup.refresh(db, 8, NOW)["days"] > 3
        _check(w, rng)
        _check_dashboard(w)

        assert rollup.refresh(db, 5, NOW)["full"] is True  # another time zone: rebuilt
        _check(w, rng, tz=5)
        _check(w, rng)  # asked in the old zone: not the rollup's, all live

        w.storage.add_canteen("C3", CANTEENS["C3"][0], "64050209")  # C3 moves into 640502
        CANTEENS["C3"] = (CANTEENS["C3"][0], "64050209")
        try:
            _check(w, rng, tz=5)  # the rollups are of the old map: not used
            assert rollup.refresh(db, 5, NOW)["full"] is True
            _check(w, rng, tz=5)
        finally:
            CANTEENS["C3"] = (CANTEENS["C3"][0], "64052101")
    finally:
        await w.close()


def test_plan_splits_whole_days_months_and_edges():
    """A period cut mid-day reads whole days from the rollups and the cut parts live; months only when whole."""
    assert counts._ranges([(NOW, NOW + timedelta(hours=1)), (NOW + timedelta(hours=1), NOW + timedelta(hours=2)),
                           (NOW, NOW)]) == (("2024-07-10T03:00:00.000Z", "2024-07-10T05:00:00.000Z"),)
    assert rollup.day_range("2024-07-10", 8) == ("2024-07-09T16:00:00.000Z", "2024-07-10T16:00:00.000Z")
    assert rollup.month_range("2024-12", 8) == ("2024-11-30T16:00:00.000Z", "2024-12-31T16:00:00.000Z")
