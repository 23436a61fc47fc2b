#!/usr/bin/env python3
"""Generate a receiver database of N alerts at a region's scale, on SQLite or PostgreSQL.

    python scripts/gen_alerts.py --url sqlite:////tmp/region.db                     # 1,000,000 alerts
    python scripts/gen_alerts.py --url 'postgresql://postgres@127.0.0.1:5432/test?options=-csearch_path%3Dregion'
    python scripts/gen_alerts.py --url sqlite:////tmp/small.db --alerts 100000 --canteens 300

The schema comes from the receiver's own migrations (`cloud_receiver.storage.migrate`, as
`cloud-receiver migrate` runs them). Then, with a fixed seed:

- ~3,000 canteens in 6-digit county codes under five cities (6401xx … 6405xx, weighted by size),
  one box (`devices`, ids as `cloud-receiver device add` issues them) and ~4 cameras each;
- N alerts over a year up to now, in time order as ingest would store them: types from
  `bk_contract.violations` (hats, masks and uniforms most often), mostly in kitchen hours (China
  Standard Time), canteens unequally noisy; workflow statuses by age (recent ones mostly 待整改,
  old ones mostly 复核通过, some left 待整改 past their deadline: 逾期), a tenth with a set deadline;
  ids are ULIDs, as the boxes make them.

Fast bulk load: the alerts table's secondary indexes are dropped, the rows loaded (COPY on
PostgreSQL; executemany in one transaction on SQLite) and the indexes rebuilt from the same
declaration (cloud_receiver/storage/schema.py); PostgreSQL is then VACUUM ANALYZEd (what autovacuum
would soon do). The database must not hold alerts yet.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bk_contract.violations import VIOLATION_NAMES  # noqa: E402
from cloud_receiver.admin.devices import compose_device_id  # noqa: E402
from cloud_receiver.config import DeviceIdConfig  # noqa: E402
from cloud_receiver.storage import migrate  # noqa: E402
from cloud_receiver.storage.db import iso  # noqa: E402
from cloud_receiver.storage.schema import alerts  # noqa: E402

# city prefix -> (share of canteens, its county codes)
CITIES: dict[str, tuple[float, list[str]]] = {
    "6401": (0.38, ["640104", "640105", "640106", "640121", "640122", "640181"]),
    "6402": (0.14, ["640202", "640205", "640221"]),
    "6403": (0.20, ["640302", "640303", "640323", "640324", "640381"]),
    "6404": (0.14, ["640402", "640422", "640423", "640424", "640425"]),
    "6405": (0.14, ["640502", "640521", "640522"]),
}
TYPE_WEIGHTS = {"no_chef_hat": 24, "no_mask": 20, "no_uniform": 12, "phone_use": 10, "bin_open": 10,
                "station_unattended": 6, "smoking": 3, "animal": 3, "crowding": 3, "intrusion_off_hours": 3,
                "camera_offline": 3, "camera_tampered": 1.5, "fire": 0.5}
assert set(TYPE_WEIGHTS) == set(VIOLATION_NAMES), "every contract type, and only those"
CRITICAL = {"fire", "animal", "smoking"}
# local hour (UTC+8) weights: breakfast, lunch and dinner preparation
HOUR_WEIGHTS = [1, 1, 1, 1, 2, 8, 10, 9, 8, 10, 12, 12, 9, 6, 6, 8, 10, 9, 6, 3, 2, 1, 1, 1]
TZ_HOURS = 8
CAMERAS_PER_BOX = 4
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CHUNK = 20000
COLUMNS = ("id", "device_id", "canteen_id", "camera_id", "type", "level", "state", "rev", "started_at", "ended_at",
           "score", "boxes_json", "frame_size_json", "detail", "snapshot_id", "snapshot_sha256", "received_at",
           "updated_at", "status", "deadline")


def ulid(ms: int, rand: int) -> str:
    """A ULID (26 Crockford base32 characters: 48-bit milliseconds, 80 random bits)."""
    value = (ms << 80) | rand
    return "".join(CROCKFORD[(value >> (5 * i)) & 31] for i in range(25, -1, -1))


def make_canteens(n: int, rng: np.random.Generator) -> list[tuple[str, str, str]]:
    """(id, name, jurisdiction) of `n` canteens spread over the cities' counties."""
    shares = np.array([s for s, _ in CITIES.values()])
    per_city = np.floor(shares / shares.sum() * n).astype(int)
    per_city[0] += n - per_city.sum()
    out = []
    for (_city, (_share, counties)), count in zip(CITIES.items(), per_city, strict=True):
        for i in range(count):
            county = counties[int(rng.integers(len(counties)))] if i >= len(counties) else counties[i]
            out.append((f"C{county}{len(out):05d}", f"{county}区第{len(out) + 1}学校食堂", county))
    return out


def status_by_age(age_h: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Stored workflow status (待整改 / 已整改 / 复核通过) with probabilities that depend on the alert's age."""
    u = rng.random(len(age_h))
    pending = np.where(age_h < 24, 0.70, np.where(age_h < 24 * 7, 0.15, 0.03))
    submitted = np.where(age_h < 24, 0.20, np.where(age_h < 24 * 7, 0.25, 0.05))
    return np.where(u < pending, "待整改", np.where(u < pending + submitted, "已整改", "复核通过"))


def alert_rows(n: int, canteens: list[tuple[str, str, str]], boxes: list[str], end: datetime, days: int,
               rng: np.random.Generator) -> Iterator[list[tuple]]:
    """Chunks of alert rows (COLUMNS order), oldest first."""
    # times: a day, then a local hour by kitchen activity, then the second within it; sorted; the
    # last `n` before a minute ago (the days run from midnight a year ago to today's midnight, partly future)
    m = n + n // days + 100
    day = rng.integers(0, days + 1, m)
    hour = rng.choice(24, m, p=np.array(HOUR_WEIGHTS) / sum(HOUR_WEIGHTS))
    offset_s = np.sort(day * 86400 + (hour - TZ_HOURS) * 3600 + rng.random(m) * 3600)
    start = (end - timedelta(days=days)).replace(hour=0, minute=0, second=0, microsecond=0)
    end_s = (end - start).total_seconds()
    offset_s = offset_s[offset_s < end_s - 60][-n:]
    weights = rng.lognormal(0.0, 1.0, len(canteens))  # some canteens far noisier than others
    types = list(TYPE_WEIGHTS)
    type_p = np.array([TYPE_WEIGHTS[t] for t in types]) / sum(TYPE_WEIGHTS.values())
    base_ms = int(start.timestamp() * 1000)
    for lo in range(0, len(offset_s), CHUNK):
        t = offset_s[lo:lo + CHUNK]
        k = len(t)
        who = rng.choice(len(canteens), k, p=weights / weights.sum())
        cam = rng.integers(1, CAMERAS_PER_BOX + 1, k)
        kind = rng.choice(len(types), k, p=type_p)
        dur = rng.integers(10, 300, k)
        lag = rng.random(k) * 3
        score = np.round(0.35 + rng.random(k) * 0.6, 3)
        age_h = (end_s - t) / 3600
        status = status_by_age(age_h, rng)
        set_deadline = rng.random(k) < 0.1
        snap = rng.random(k) < 0.9
        rand = rng.integers(0, 1 << 62, (k, 2))
        rows = []
        for i in range(k):
            ms = base_ms + int(t[i] * 1000)
            at = datetime.fromtimestamp(ms / 1000, UTC)
            ty = types[kind[i]]
            received = iso(at + timedelta(seconds=float(lag[i])))
            aid = ulid(ms, (int(rand[i, 0]) << 18) ^ int(rand[i, 1]))
            rows.append((
                aid, boxes[who[i]], canteens[who[i]][0], f"cam{cam[i]}", ty, "critical" if ty in CRITICAL else "warning",
                "end", 1, iso(at), iso(at + timedelta(seconds=int(dur[i]))), float(score[i]),
                json.dumps([{"label": "person", "score": float(score[i]), "box": [412.0, 188.5, 655.0, 870.25]}],
                           separators=(",", ":")), "[1920,1080]", "",
                f"snap-{aid}" if snap[i] else None, f"{int(rand[i, 0]):016x}{int(rand[i, 1]):016x}" * 2 if snap[i] else None,
                received, received, str(status[i]), iso(at + timedelta(hours=72)) if set_deadline[i] else None))
        yield rows


def engine_of(url: str) -> sa.Engine:
    if url.startswith("sqlite:///"):
        return sa.create_engine(url)
    import psycopg
    return sa.create_engine("postgresql+psycopg://", creator=lambda: psycopg.connect(url))


def migrate_db(url: str) -> str:
    """The receiver's migrations, as `cloud-receiver migrate` runs them."""
    if url.startswith("sqlite:///"):
        return migrate.migrate_sqlite(Path(url.removeprefix("sqlite:///")))
    import psycopg
    return migrate.migrate_postgres(lambda: psycopg.connect(url))


def load(url: str, args: argparse.Namespace) -> dict[str, float]:
    rng = np.random.default_rng(args.seed)
    end = datetime.now(UTC)
    canteens = make_canteens(args.canteens, rng)
    serial: dict[str, int] = {}
    boxes = []
    for _cid, _name, county in canteens:
        serial[county] = serial.get(county, 0) + 1
        boxes.append(compose_device_id(county, serial[county], DeviceIdConfig()))
    created = iso(end - timedelta(days=args.days + 30))
    online = rng.random(len(boxes)) < 0.95
    engine = engine_of(url)
    pg = engine.dialect.name == "postgresql"
    times: dict[str, float] = {}
    try:
        with engine.begin() as conn:
            if conn.execute(sa.text("SELECT count(*) FROM alerts")).scalar():
                raise SystemExit(f"{url}: the alerts table is not empty; generate into an empty database")
            t0 = time.perf_counter()
            conn.execute(sa.text("INSERT INTO canteens (id, name, jurisdiction) VALUES (:i, :n, :j)"),
                         [{"i": c, "n": n, "j": j} for c, n, j in canteens])
            conn.execute(sa.text("INSERT INTO devices (id, canteen_id, name, created_at, last_seen, online, version)"
                                 " VALUES (:i, :c, :n, :t, :s, :o, '1.0.0')"),
                         [{"i": b, "c": c[0], "n": f"box of {c[0]}", "t": created, "s": iso(end), "o": int(on)}
                          for b, c, on in zip(boxes, canteens, online, strict=True)])
            conn.execute(sa.text("INSERT INTO cameras (device_id, camera_id, name, state, fps, reconnects, updated_at)"
                                 " VALUES (:d, :c, :c, 'online', 5.0, 0, :t)"),
                         [{"d": b, "c": f"cam{i}", "t": iso(end)} for b in boxes for i in range(1, CAMERAS_PER_BOX + 1)])
            for idx in alerts.indexes:  # rebuilt after the load: far faster than maintaining them row by row
                conn.execute(sa.text(f"DROP INDEX IF EXISTS {idx.name}"))
            n = 0
            sql = f"INSERT INTO alerts ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
            raw = conn.connection.driver_connection
            for rows in alert_rows(args.alerts, canteens, boxes, end, args.days, rng):
                if pg:
                    with raw.cursor() as cur, cur.copy(f"COPY alerts ({', '.join(COLUMNS)}) FROM STDIN") as copy:
                        for r in rows:
                            copy.write_row(r)
                else:
                    raw.executemany(sql, rows)
                n += len(rows)
                print(f"\r  {n:,} alerts", end="", file=sys.stderr, flush=True)
            print(file=sys.stderr)
            times["load_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            for idx in alerts.indexes:
                idx.create(conn)
            times["indexes_s"] = time.perf_counter() - t0
        if pg:
            t0 = time.perf_counter()
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(sa.text("VACUUM ANALYZE"))
            times["vacuum_analyze_s"] = time.perf_counter() - t0
        times["alerts"] = n
    finally:
        engine.dispose()
    return times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True, help="sqlite:///ABSOLUTE/PATH.db or postgresql://… (search_path via options)")
    ap.add_argument("--alerts", type=int, default=1_000_000, help="how many alerts (about: the last minute is left out)")
    ap.add_argument("--canteens", type=int, default=3000, help="canteens, one box of 4 cameras each")
    ap.add_argument("--days", type=int, default=365, help="the alerts span this many days up to now")
    ap.add_argument("--seed", type=int, default=10, help="random seed (same seed, same database)")
    args = ap.parse_args(argv)
    if args.canteens < len(CITIES) * 6 or args.alerts < 1 or args.days < 1:
        ap.error(f"need --canteens >= {len(CITIES) * 6}, --alerts >= 1, --days >= 1")
    if not args.url.startswith(("sqlite:///", "postgresql://")):
        ap.error("--url must start with sqlite:/// or postgresql://")
    t0 = time.perf_counter()
    revision = migrate_db(args.url)
    times = load(args.url, args)
    print(f"{times['alerts']:,} alerts, {args.canteens:,} canteens in {sum(len(c) for _, c in CITIES.values())} counties,"
          f" schema revision {revision}: loaded in {times['load_s']:.1f} s, indexes {times['indexes_s']:.1f} s"
          + (f", VACUUM ANALYZE {times['vacuum_analyze_s']:.1f} s" if "vacuum_analyze_s" in times else "")
          + f"; total {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
