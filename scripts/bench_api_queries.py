#!/usr/bin/env python3
"""API query benchmark at a region's scale: the real API beside the raw SQL it runs, on SQLite and PostgreSQL.

    python scripts/gen_alerts.py --url sqlite:////tmp/region.db            # once: a million alerts
    python scripts/bench_api_queries.py --url sqlite:////tmp/region.db --url 'postgresql://…?options=-csearch_path%3Dregion'
    python scripts/bench_api_queries.py --url sqlite:////tmp/region.db --runs 50 --explain

For each database (made by scripts/gen_alerts.py): the receiver's own app, `create_app(cfg,
subscriber=False)`, served by aiohttp's test server on 127.0.0.1, asked through HTTP with real
tokens (`auth.create_token`: an admin, a regulator of the county with most canteens, one of its
city) for:

- `GET /api/v1/alerts`, first page (50), as admin and as the county's regulator;
- the same filtered by type + canteen + since (90 days), and by status=逾期 (overdue);
- `GET /api/v1/stats` over the last 365 days for the city's regulator (and, for information, for
  the county's regulator and for the admin: every canteen).

The limit: the SQL statements the request ran (caught on the app's engine, the token check left
out), executed again with the bare driver (sqlite3 / psycopg) on a connection of its own and
fetched to the end. API and SQL alternate, `--runs` times each after a warm-up; p50 and p95 in ms.
`--explain` prints each statement's plan to stderr (EXPLAIN QUERY PLAN / EXPLAIN ANALYZE). The tokens made
for the run are deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bench_common as bc
import sqlalchemy as sa
from aiohttp.test_utils import TestClient, TestServer
from bench_machine import cpu_line, refresh_rollups

from bk_common.logs import configure_logging
from cloud_receiver.admin import auth
from cloud_receiver.app.factory import create_app
from cloud_receiver.appkeys import STORAGE
from cloud_receiver.config import ReceiverConfig, StorageConfig

GOALS_MS = {"list": 50.0, "stats": 300.0}  # p95
TOKEN_PREFIX = "bench-api-"


def pick_scopes(db: Any) -> dict[str, str]:
    """The county with most canteens, its city, its noisiest canteen and that canteen's most common type."""
    county = db.rows("SELECT jurisdiction AS j, count(*) AS n FROM canteens GROUP BY jurisdiction"
                     " ORDER BY n DESC, j LIMIT 1")[0]["j"]
    canteen = db.rows("SELECT a.canteen_id AS c, count(*) AS n FROM alerts a JOIN canteens c ON c.id = a.canteen_id"
                      " WHERE c.jurisdiction = :j GROUP BY a.canteen_id ORDER BY n DESC, c LIMIT 1", j=county)[0]["c"]
    kind = db.rows("SELECT type AS t, count(*) AS n FROM alerts WHERE canteen_id = :c GROUP BY type ORDER BY n DESC, t"
                   " LIMIT 1", c=canteen)[0]["t"]
    return {"county": county, "city": county[:4], "canteen": canteen, "type": kind}


def queries(scopes: dict[str, str], now: datetime) -> list[tuple[str, str, str, dict[str, str], str]]:
    """(name, who, path, query string, goal kind)."""
    z = lambda t: t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: E731
    year = {"since": z(now - timedelta(days=365)), "until": z(now)}
    filt = {"type": scopes["type"], "canteen": scopes["canteen"], "since": z(now - timedelta(days=90))}
    return [
        ("alerts page 1, admin", "admin", "/api/v1/alerts", {}, "list"),
        (f"alerts page 1, regulator {scopes['county']}", "county", "/api/v1/alerts", {}, "list"),
        ("alerts type+canteen+since 90 d, regulator", "county", "/api/v1/alerts", filt, "list"),
        ("alerts status=逾期, regulator", "county", "/api/v1/alerts", {"status": "逾期"}, "list"),
        ("alerts status=逾期, admin", "admin", "/api/v1/alerts", {"status": "逾期"}, "list"),
        (f"stats 365 d, regulator {scopes['city']}", "city", "/api/v1/stats", year, "stats"),
        (f"stats 365 d, regulator {scopes['county']}", "county", "/api/v1/stats", year, "info"),
        ("stats 365 d, admin (every canteen)", "admin", "/api/v1/stats", year, "info"),
    ]


class Capture:
    """The statements an engine runs while `on`, as (SQL, parameters) of the driver."""

    def __init__(self, engine: sa.Engine) -> None:
        self.on = False
        self.statements: list[tuple[str, Any]] = []
        sa.event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, _conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        if self.on and ("alerts" in statement or "devices" in statement) and "tokens" not in statement:
            self.statements.append((statement, parameters))

    @contextlib.contextmanager
    def catching(self) -> Iterator[list[tuple[str, Any]]]:
        self.statements, self.on = [], True
        try:
            yield self.statements
        finally:
            self.on = False


@contextlib.contextmanager
def raw_runner(url: str) -> Iterator[tuple[Any, str]]:
    """(run(statements) -> seconds, dialect) on a bare driver connection."""
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))

        def run_lite(stmts: list[tuple[str, Any]]) -> float:
            t0 = time.perf_counter()
            for sql, params in stmts:
                conn.execute(sql, params).fetchall()
            return time.perf_counter() - t0
        try:
            yield run_lite, "sqlite"
        finally:
            conn.close()
        return
    import psycopg
    with psycopg.connect(url, autocommit=True) as pg:
        def run_pg(stmts: list[tuple[str, Any]]) -> float:
            t0 = time.perf_counter()
            for sql, params in stmts:
                pg.execute(sql, params).fetchall()
            return time.perf_counter() - t0
        yield run_pg, "postgresql"


def explain(url: str, stmts: list[tuple[str, Any]]) -> None:
    if url.startswith("sqlite:///"):
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as conn:
            for sql, params in stmts:
                bc.say("    " + "\n    ".join(f"{r[3]}" for r in conn.execute("EXPLAIN QUERY PLAN " + sql, params)))
        return
    import psycopg
    with psycopg.connect(url, autocommit=True) as pg:
        for sql, params in stmts:
            plan = pg.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params).fetchall()
            bc.say("    " + "\n    ".join(r[0] for r in plan))


async def bench_one(url: str, runs: int, warmup: int, show_plans: bool, tmp: Path) -> dict[str, Any]:
    bc.say(refresh_rollups(url))
    cfg = ReceiverConfig(storage=StorageConfig(url=url, media_dir=tmp / "media"))
    app = create_app(cfg, subscriber=False)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    storage = app[STORAGE]
    db = storage.sql
    tag = f"{TOKEN_PREFIX}{time.time_ns()}"
    try:
        scopes = pick_scopes(db)
        tokens = {"admin": auth.create_token(db, "admin", "", f"{tag}-admin"),
                  "county": auth.create_token(db, "regulator", scopes["county"], f"{tag}-county"),
                  "city": auth.create_token(db, "regulator", scopes["city"], f"{tag}-city")}
        counts = {"alerts": db.rows("SELECT count(*) AS n FROM alerts")[0]["n"],
                  "canteens": db.rows("SELECT count(*) AS n FROM canteens")[0]["n"]}
        capture = Capture(db.engine)
        out = []
        with raw_runner(url) as (run_raw, dialect):
            for name, who, path, params, kind in queries(scopes, datetime.now(UTC)):
                headers = {"Authorization": f"Bearer {tokens[who]}"}
                api_s, sql_s = [], []
                for i in range(warmup + runs):
                    with capture.catching() as stmts:
                        t0 = time.perf_counter()
                        async with client.get(path, params=params, headers=headers) as resp:
                            body = await resp.read()
                        took = time.perf_counter() - t0
                    if resp.status != 200:
                        raise bc.BenchError(f"{name}: HTTP {resp.status}: {body[:300]!r}")
                    raw = run_raw(stmts)
                    if i >= warmup:
                        api_s.append(took)
                        sql_s.append(raw)
                if show_plans:
                    bc.say(f"\n[{dialect}] {name}: {len(stmts)} statement(s)")
                    explain(url, stmts)
                res = {"name": name, "kind": kind, "statements": len(stmts), "bytes": len(body),
                       **{f"api_p{p}_ms": bc.percentile(api_s, p) * 1000 for p in (50, 95)},  # type: ignore[operator]
                       **{f"sql_p{p}_ms": bc.percentile(sql_s, p) * 1000 for p in (50, 95)}}  # type: ignore[operator]
                bc.say(f"  [{dialect}] {name}: API p95 {res['api_p95_ms']:.1f} ms, SQL p95 {res['sql_p95_ms']:.1f} ms")
                out.append(res)
        version = db.rows("SELECT sqlite_version() AS v" if dialect == "sqlite" else "SHOW server_version")[0]
        return {"engine": dialect, "version": next(iter(version.values())), **counts, "scopes": scopes, "queries": out}
    finally:
        with contextlib.suppress(Exception):
            db.rows("DELETE FROM tokens WHERE name LIKE :p", p=f"{TOKEN_PREFIX}%")
        await client.close()


def report(results: list[dict[str, Any]], runs: int) -> None:
    print(cpu_line())
    print("(2 cores shared with other work: absolute times are noisy, API/SQL ratios steadier)")
    for r in results:
        print(f"\n{r['engine']} {r['version']}: {r['alerts']:,} alerts, {r['canteens']:,} canteens;"
              f" county {r['scopes']['county']}, city {r['scopes']['city']}, canteen {r['scopes']['canteen']},"
              f" type {r['scopes']['type']}; p50/p95 of {runs} runs")
        rows = []
        for q in r["queries"]:
            goal = GOALS_MS.get(q["kind"])
            met = "-" if goal is None else ("met" if q["api_p95_ms"] <= goal else f"NOT met (x{q['api_p95_ms'] / goal:.1f})")
            rows.append([q["name"], q["statements"], round(q["api_p50_ms"], 1), round(q["api_p95_ms"], 1),
                         round(q["sql_p50_ms"], 1), round(q["sql_p95_ms"], 1),
                         f"{q['api_p50_ms'] / max(q['sql_p50_ms'], 1e-3):.2f}", "-" if goal is None else f"<= {goal:g}",
                         met])
        bc.print_table(["query", "SQL stmts", "API p50", "API p95", "SQL p50", "SQL p95", "API/SQL", "goal p95",
                        "API goal"], rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", action="append", required=True,
                    help="a database made by scripts/gen_alerts.py (sqlite:///… or postgresql://…); repeat for both")
    ap.add_argument("--runs", type=int, default=50, help="timed requests per query")
    ap.add_argument("--warmup", type=int, default=3, help="untimed requests per query first")
    ap.add_argument("--explain", action="store_true", help="print each statement's plan")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bk-bench-api-") as tmp, \
            open(Path(tmp) / "app.log", "w", encoding="utf-8") as log, contextlib.redirect_stdout(log):
        configure_logging("warning", "json")
        results = []
        for url in args.url:
            try:
                results.append(asyncio.run(bench_one(url, args.runs, args.warmup, args.explain, Path(tmp))))
            except bc.BenchError as err:
                bc.say(f"benchmark failed: {err}")
                return 1
    report(results, args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
