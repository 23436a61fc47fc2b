#!/usr/bin/env python3
"""The console at a region's scale: server time of /alerts and /dashboard, and the time a person
waits in Chromium for the alert list, on a database made by scripts/gen_alerts.py.

    python scripts/gen_alerts.py --url sqlite:////tmp/region.db          # 1,000,000 alerts, once
    python scripts/bench_console.py --url sqlite:////tmp/region.db

Runs the real app (create_app, no MQTT) on that database, logs a regulator of one city and an admin
in through the login form, then times (p50/p95 over --runs requests, after --warmup): the 预警 page
(`/alerts`, first page; and filtered by type), the 大数据 data (`/dashboard/data.json` for the city and
the last 365 days). With --browser it also opens Debian's Chromium and times navigation to
`/alerts` until the list's first row is visible. Prints the CPU model and ISA flags with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from scripts.bench_machine import cpu_facts, refresh_rollups  # noqa: E402

PASSWORD = "bench-console-password"


def config(url: str, work: Path):  # noqa: ANN201 - ReceiverConfig
    from cloud_receiver.config import ReceiverConfig, StorageConfig

    return ReceiverConfig(storage=StorageConfig(url=url, path=work / "unused.db", media_dir=work / "media"))


def pick_city(url: str) -> str:
    import sqlalchemy as sa

    from cloud_receiver.storage.opening import open_store
    s = config(url, Path(tempfile.gettempdir())).storage
    store = open_store(url=s.url, password_env=None, sqlite_path=s.sqlite_path, migrate=False)
    try:
        row = store.sql.one(sa.text("SELECT substr(jurisdiction, 1, 4) AS city, count(*) AS n FROM canteens "
                                    "GROUP BY city ORDER BY n DESC LIMIT 1"))
        return row["city"] if row else "6401"
    finally:
        store.close()


async def time_pages(url: str, runs: int, warmup: int, work: Path) -> list[tuple[str, list[float]]]:
    from aiohttp.test_utils import TestClient, TestServer
    from support.api_kit import login

    from cloud_receiver.admin.accounts import create_user
    from cloud_receiver.app.factory import create_app
    from cloud_receiver.appkeys import STORAGE

    city = pick_city(url)
    client = TestClient(TestServer(create_app(config(url, work), subscriber=False), host="127.0.0.1"))
    await client.start_server()
    try:
        db = client.app[STORAGE].sql
        for name, role, scope in (("bench-reg", "regulator", city), ("bench-admin", "admin", "")):
            if not db.rows("SELECT id FROM users WHERE name = :n", n=name):
                create_user(db, name, role, scope, PASSWORD)
        out = []
        for who in ("bench-reg", "bench-admin"):
            client.session.cookie_jar.clear()
            assert (await login(client, who, PASSWORD)).status in (302, 303)
            for label, path in ((f"{who} /alerts first page", "/alerts"),
                                (f"{who} /alerts?type=no_mask", "/alerts?type=no_mask"),
                                (f"{who} /dashboard data, city {city}, 365 days",
                                 f"/dashboard/data.json?region={city}&days=365")):
                times = []
                for i in range(warmup + runs):
                    t0 = time.perf_counter()
                    r = await client.get(path)
                    await r.read()
                    assert r.status == 200, (path, r.status)
                    if i >= warmup:
                        times.append((time.perf_counter() - t0) * 1000)
                out.append((label, times))
        return out
    finally:
        await client.close()


def browser_navigation(url: str, runs: int, work: Path) -> list[float]:
    from support.browser import chromium_browser, log_in, open_page, serve_app

    from cloud_receiver.app.factory import create_app
    app = create_app(config(url, work), subscriber=False)
    times = []
    with serve_app(app) as base, chromium_browser() as browser, open_page(browser, "desktop") as (page, _):
        log_in(page, base, "bench-reg", PASSWORD, "/alerts")
        for _ in range(runs):
            t0 = time.perf_counter()
            page.goto(f"{base}/alerts")
            page.wait_for_selector("#alert-rows tr", state="visible")
            times.append((time.perf_counter() - t0) * 1000)
    return times


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True, help="a database made by scripts/gen_alerts.py")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--browser", action="store_true", help="also time navigation to /alerts in Chromium")
    args = ap.parse_args(argv)
    facts = cpu_facts()
    print(f"CPU: {facts['model']}, {facts['cores']} cores, ISA {' '.join(facts['isa'])}, "
          f"avx512_vnni {'yes' if facts['avx512_vnni'] else 'no'}")
    print(refresh_rollups(args.url))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for label, times in asyncio.run(time_pages(args.url, args.runs, args.warmup, work)):
            print(f"{label:<55} p50 {pct(times, 50):7.1f} ms   p95 {pct(times, 95):7.1f} ms   (goal p95 ≤ 200 ms)")
        if args.browser:
            times = browser_navigation(args.url, max(5, args.runs // 3), work)
            print(f"{'Chromium: navigation to /alerts until the list shows':<55} p50 {pct(times, 50):7.1f} ms   "
                  f"p95 {pct(times, 95):7.1f} ms   (goal ≤ 1000 ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
