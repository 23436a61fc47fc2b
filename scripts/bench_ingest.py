#!/usr/bin/env python3
"""Receiver ingest benchmark: the real receiver beside its SQLite limit, and event → API latency.

    python scripts/bench_ingest.py                       # 4 devices, 3 rounds of 20000 alerts, 2 x 200 latency samples
    python scripts/bench_ingest.py --alerts 20000 --devices 8 --json
    python scripts/bench_ingest.py --storage postgresql  # the same into PostgreSQL (a throw-away schema)

Everything runs on 127.0.0.1 in a temporary folder: a Mosquitto on a free port with the
dynamic-security plugin (devkit/localbroker.py), the devices provisioned through the receiver's own
`add_device`, and the receiver as a subprocess, `cloud-receiver -c FILE serve`, as in production
(JSON logs at level info into a file). Measured:

1. ingest: D devices publish valid `bk_contract.Alert`s (QoS 1, unique ids) as fast as their
   in-flight window allows; time from the first publish until a separate read connection counts
   every row in the receiver's database. Median of --rounds rounds (the machine may be shared).
2. the limit: the same rows inserted with plain `sqlite3` into a database created by the
   receiver's own migrations, one transaction per row and one per batch; plus, to locate the
   cost, the receiver's `SqliteStorage.upsert_alert`, `Ingestor.handle` (one transaction per
   message) and `Ingestor.handle_batch` (--batch messages per transaction, the receiver's group
   commit without MQTT) called in-process. With `--storage postgresql` the receiver stores into a
   throw-away schema of --pg-url (dropped afterwards) and the limit is plain psycopg into the same
   table: a transaction per row, and per group-commit batch by pipelined `executemany` and by
   `COPY` (scripts/bench_ingest_pg.py); then, by default, a second receiver (another client id)
   joins the same shared subscription and the rounds run again: two receivers against one.
3. latency: one alert at a time (~20/s), time until `GET /api/v1/alerts` (polled) lists it, and,
   in a second pass, until the SSE stream `GET /api/v1/alerts/stream` delivers it.
Everything started is stopped in `finally` blocks, also on Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bench_common as bc
from bench_ingest_limits import measure_limits
from bench_ingest_pg import PG_LABELS, measure_pg_limits, server_version
from bench_publisher import DevicePublisher

from bk_common.logs import configure_logging
from bk_contract import Alert, topic
from cloud_receiver.config import MqttConfig
from devkit.localbroker import Broker, start_broker

GOALS = {"sqlite": {"raw_per_row": 0.5}, "postgresql": {"raw_per_row": 1.0, "raw_batch": 0.3}}  # receiver / limit
GOAL_P95_S = 0.5
RX_BATCH_MAX = MqttConfig().batch_max  # the receiver's group-commit batch (default config)


# --- 1. ingest through MQTT ------------------------------------------------------------------------

def ingest_round(world: bc.World, pubs: list[DevicePublisher], receivers: list[bc.ReceiverProcess], broker: Broker,
                 work: dict[str, list[Alert]], tag: str, timeout: float) -> dict[str, Any]:
    """One throughput round: every device publishes its share; wait until the DB holds every row."""
    payloads = {d: [(topic(d, "alert"), a.model_dump_json().encode()) for a in alerts] for d, alerts in work.items()}
    total = sum(len(v) for v in payloads.values())
    acked0 = {p.device_id: p.acked for p in pubs}
    pids = (bc.broker_pid(broker), *(r.pid for r in receivers))
    cpu0 = [bc.cpu_seconds(p) for p in pids]
    t0 = time.perf_counter()
    # interleave the devices so all windows fill at once; paho queues what the window does not yet allow
    for i in range(max(len(v) for v in payloads.values())):
        for p in pubs:
            msgs = payloads[p.device_id]
            if i < len(msgs):
                p.publish(*msgs[i])
    t_queued = time.perf_counter()
    t_done, got = bc.wait_rows(world.db, f"{tag}%", total, timeout, last_ids=[a[-1].id for a in work.values() if a])
    cpu1 = [bc.cpu_seconds(p) for p in pids]
    if t_done is None:
        raise bc.BenchError(f"only {got} of {total} alerts stored within {timeout} s:\n{receivers[0].log_tail()}")
    for p in pubs:
        if not p.wait_acked(acked0[p.device_id] + len(payloads[p.device_id]), 10):
            raise bc.BenchError(f"device {p.device_id} is missing PUBACKs")
    elapsed = t_done - t0
    used = [bc.cpu_used(a, b) for a, b in zip(cpu0, cpu1, strict=True)]
    rcpu = None if None in used[1:] else sum(used[1:])  # type: ignore[arg-type]
    return {"alerts": total, "seconds": elapsed, "alerts_per_s": bc.rate(total, elapsed),
            "publish_calls_s": t_queued - t0, "all_pubacks_s": max(p.last_ack_at for p in pubs) - t0,
            "receiver_cpu_s": rcpu, "receiver_cpu_ms_per_alert": None if rcpu is None else rcpu / total * 1000,
            "broker_cpu_s": used[0]}


def measure_ingest(world: bc.World, broker: Broker, receivers: list[bc.ReceiverProcess], total: int, rounds: int,
                   inflight: int, timeout: float, tag: str = "T") -> dict[str, Any]:
    """`rounds` rounds of `total` alerts into the receiver(s) (several: one shared subscription); the median."""
    pubs: list[DevicePublisher] = []
    results = []
    try:
        for d, pw in world.devices.items():
            pubs.append(DevicePublisher(broker.host, broker.port, d, pw, inflight=inflight))
        # warm-up: one alert per device proves the ACLs, the subscription and the path end to end
        warm_at = datetime.now(UTC) - timedelta(days=2)
        for p in pubs:
            for n in range(len(receivers)):  # several alerts each, so every receiver of the group gets some
                p.publish(topic(p.device_id, "alert"),
                          bc.make_alert(p.device_id, n, warm_at, f"W{tag}").model_dump_json())
        if bc.wait_rows(world.db, f"W{tag}%", len(pubs) * len(receivers), 15)[0] is None:
            raise bc.BenchError(f"warm-up alerts never reached the database:\n{receivers[-1].log_tail()}")
        for r in range(rounds):
            res = ingest_round(world, pubs, receivers, broker,
                               bc.make_workload(list(world.devices), total, f"{tag}{r}"), f"{tag}{r}", timeout)
            bc.say(f"  round {r + 1}/{rounds}: {res['alerts_per_s']:,.0f} alerts/s")
            results.append(res)
    finally:
        for p in pubs:
            p.close()
    rejects = bc.scalar(world.db, "SELECT count(*) FROM rejects")
    failures = {k: v for p in pubs for k, v in p.failures.items()}
    if rejects or failures:
        raise bc.BenchError(f"receiver rejected {rejects} messages, broker refused {failures}: see {receivers[0].log_path}")
    return bc.summarise(results)


# --- 3. latency: event -> visible through the API --------------------------------------------------

async def _latency(api: str, token: str, pub: DevicePublisher, samples: int, per_s: float, mode: str,
                   poll_s: float, tag: str, timeout: float = 5.0) -> dict[str, Any]:
    import aiohttp
    headers = {"Authorization": f"Bearer {token}"}
    seen: dict[str, float] = {}
    arrived = asyncio.Event()
    lat: list[float] = []
    missing = 0
    async with aiohttp.ClientSession(headers=headers) as http:
        reader = None
        if mode == "sse":
            stream = await http.get(f"{api}/api/v1/alerts/stream", timeout=aiohttp.ClientTimeout(total=None))
            if stream.status != 200:
                raise bc.BenchError(f"SSE stream answered {stream.status}")

            async def read() -> None:
                async for raw in stream.content:
                    line = raw.decode("utf-8", "replace")
                    if line.startswith("data: "):  # the event id is the stream's own; the alert id is in the data
                        seen[json.loads(line[6:])["id"]] = time.perf_counter()
                        arrived.set()

            reader = asyncio.create_task(read(), name="bench-sse-reader")
        try:
            start = time.perf_counter()
            for i in range(samples):
                await asyncio.sleep(max(0.0, start + i / per_s - time.perf_counter()))
                alert = bc.make_alert(pub.device_id, i, datetime.now(UTC), tag)
                body = alert.model_dump_json().encode()
                t_pub = time.perf_counter()
                pub.publish(topic(pub.device_id, "alert"), body)
                deadline = t_pub + timeout
                t_seen = None
                while time.perf_counter() < deadline:
                    if mode == "sse":
                        if alert.id in seen:
                            t_seen = seen[alert.id]
                            break
                        arrived.clear()
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(arrived.wait(), deadline - time.perf_counter())
                    else:
                        async with http.get(f"{api}/api/v1/alerts", params={"limit": "1"}) as r:
                            items = (await r.json())["items"] if r.status == 200 else []
                        if any(it["id"] == alert.id for it in items):
                            t_seen = time.perf_counter()
                            break
                        await asyncio.sleep(poll_s)
                if t_seen is None:
                    missing += 1
                else:
                    lat.append(t_seen - t_pub)
        finally:
            if reader is not None:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
                stream.close()
    bc.say(f"  {mode}: p50 {bc.fmt(bc.percentile(lat, 50), 3)} s, p95 {bc.fmt(bc.percentile(lat, 95), 3)} s")
    return {"samples": samples, "missing": missing, "p50_s": bc.percentile(lat, 50), "p95_s": bc.percentile(lat, 95),
            "max_s": max(lat) if lat else None, "mean_s": sum(lat) / len(lat) if lat else None}


def measure_latency(world: bc.World, broker: Broker, receiver: bc.ReceiverProcess, samples: int, per_s: float,
                    poll_s: float) -> dict[str, Any]:
    device, password = next(iter(world.devices.items()))
    pub = DevicePublisher(broker.host, broker.port, device, password, inflight=10)
    try:
        rest, sse = (asyncio.run(_latency(receiver.api_url, world.token, pub, samples, per_s, mode, poll_s, tag))
                     for mode, tag in (("rest", "L"), ("sse", "S")))
    finally:
        pub.close()
    return {"rest_poll": {**rest, "poll_interval_s": poll_s}, "sse": sse, "rate_per_s": per_s}


# --- report ----------------------------------------------------------------------------------------

def report(res: dict[str, Any]) -> None:
    m, ing, lim, lat, p = res["machine"], res["ingest"], res["limits"], res["latency"], res["params"]
    pg = p["storage"] == "postgresql"
    print(f"cpu: {m['cpu']}, {m['cores']} cores; avx2 {'yes' if m['avx2'] else 'no'},"
          f" avx512_vnni {'yes' if m['avx512_vnni'] else 'no'}; {m['mem_gib']} GiB")
    print(f"Python {m['python']}, SQLite {m['sqlite']}{', PostgreSQL ' + m['postgresql'] if pg else ''},"
          f" {m['mosquitto']}, paho {m['paho_mqtt']}; work folder on {m['work_dir_fs']};"
          f" load average {m['load_before']} before, {m['load_after']} after (shared machine: ratios are steadier"
          " than absolute rates)")
    print(f"receiver: {p['receiver_mode']} (log level {p['log_level']}, JSON lines to a file);"
          f" {p['devices']} devices, QoS 1, in-flight window {p['inflight']} per device;"
          f" {p['alerts']} alerts per round, median of {p['rounds']} rounds\n")
    base = lim["raw_per_row"]["alerts_per_s"]
    if pg:
        labels = {k: v.format(b=p["batch"]) for k, v in PG_LABELS.items()}
    else:
        labels = {"raw_per_row": "raw sqlite3, 1 txn per row", "raw_batch": f"raw sqlite3, 1 txn per {p['batch']} rows",
                  "storage_upsert": "SqliteStorage.upsert_alert, in-proc", "ingestor_handle": "Ingestor.handle, in-proc",
                  "ingestor_batch": f"Ingestor.handle_batch({p['rx_batch']}), in-proc"}
    engine = "PostgreSQL" if pg else "SQLite"
    rows = [[f"receiver: MQTT -> subprocess -> {engine}", ing]]
    if res["two_receivers"]:
        rows.append([f"2 receivers, shared subscription -> {engine}", res["two_receivers"]])
    rows += [[label, lim[k]] for k, label in labels.items()]
    bc.print_table(["path", "alerts/s", "worst", "best", "ms/alert", "receiver/this", "this/raw-per-row"],
                [[name, round(r["alerts_per_s"]), round(r["worst_alerts_per_s"]), round(r["best_alerts_per_s"]),
                  f"{1000 / r['alerts_per_s']:.3f}", f"{ing['alerts_per_s'] / r['alerts_per_s']:.3f}",
                  f"{r['alerts_per_s'] / base:.3f}"] for name, r in rows])
    r = res["ratios"]
    print()
    for key, goal in GOALS[p["storage"]].items():
        got = r[f"receiver_vs_{key}"]
        print(f"receiver / {labels[key]} = {got:.3f} (goal >= {goal}: {'met' if got >= goal else 'NOT met'})")
    if not pg:
        print(f"receiver / raw batch = {r['receiver_vs_raw_batch']:.3f}")
    if r["two_receivers_vs_one"] is not None:
        print(f"two receivers / one = {r['two_receivers_vs_one']:.3f} (same broker, database and {m['cores']} cores"
              " shared by publishers, broker, receivers and the database server)")
    for name, x in (("one receiver", ing), ("two receivers", res["two_receivers"])):
        if x and x["receiver_cpu_ms_per_alert"] is not None:
            print(f"median round, {name}: receiver CPU {x['receiver_cpu_s']:.2f} s in {x['seconds']:.2f} s"
                  f" ({x['receiver_cpu_ms_per_alert']:.3f} ms per alert), broker CPU {bc.fmt(x['broker_cpu_s'], 2)} s;"
                  f" the broker had PUBACKed everything after {x['all_pubacks_s']:.2f} s")
    print()
    rest, sse = lat["rest_poll"], lat["sse"]
    lrows = [[f"REST: poll GET /api/v1/alerts every {rest['poll_interval_s'] * 1000:g} ms", rest],
             ["SSE: GET /api/v1/alerts/stream", sse]]
    bc.print_table(["event -> visible", "samples", "missing", "p50 ms", "p95 ms", "max ms"],
                [[name, x["samples"], x["missing"], *(None if x[k] is None else round(x[k] * 1000, 1)
                                                      for k in ("p50_s", "p95_s", "max_s"))] for name, x in lrows])
    p95 = rest["p95_s"]
    ok = p95 is not None and p95 <= GOAL_P95_S and rest["missing"] == 0
    print(f"\nlatency goal p95 <= {GOAL_P95_S} s (REST): {'met' if ok else 'NOT met'}"
          f" (one alert at a time, {lat['rate_per_s']:g}/s)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--alerts", type=int, default=20000, help="alerts in the throughput run, over all devices")
    ap.add_argument("--devices", type=int, default=4, help="publishing devices")
    ap.add_argument("--rounds", type=int, default=3, help="throughput rounds per path; the median is reported")
    ap.add_argument("--inflight", type=int, default=100, help="QoS 1 messages in flight per device")
    ap.add_argument("--batch", type=int, default=500, help="rows per transaction of the raw SQLite batch insert "
                    "(PostgreSQL's raw batches have the receiver's group-commit size)")
    ap.add_argument("--storage", choices=["sqlite", "postgresql"], default="sqlite",
                    help="the receiver's database: an SQLite file, or a throw-away schema in --pg-url")
    ap.add_argument("--pg-url", default=bc.PG_URL_DEFAULT, help="PostgreSQL to use with --storage postgresql")
    ap.add_argument("--two-receivers", action=argparse.BooleanOptionalAction, default=None,
                    help="then also two receivers on one shared subscription (default: with PostgreSQL)")
    ap.add_argument("--latency-samples", type=int, default=200, help="alerts per latency pass (REST, then SSE)")
    ap.add_argument("--latency-rate", type=float, default=20.0, help="latency alerts per second")
    ap.add_argument("--poll-interval", type=float, default=0.005, help="REST polling interval, seconds")
    ap.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                    help="the receiver's log level (production default: info)")
    ap.add_argument("--timeout", type=float, default=300.0, help="longest wait for the throughput run, seconds")
    ap.add_argument("--dir", type=Path, default=None, help="where the temporary folder goes (default: system temp)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, databases)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON instead of tables")
    args = ap.parse_args(argv)
    if args.two_receivers is None:
        args.two_receivers = args.storage == "postgresql"
    if args.alerts < args.devices or args.devices < 1 or args.latency_samples < 1 or args.batch < 1 or args.rounds < 1:
        ap.error("need --devices >= 1, --alerts >= --devices, and --latency-samples, --batch, --rounds >= 1")
    return args


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    if args.storage == "sqlite":
        return run_on(args, tmp, tmp / "receiver" / "receiver.db")
    with bc.pg_schema(args.pg_url) as url:  # a throw-away schema, dropped afterwards
        return run_on(args, tmp, url)


def start_receiver(broker: Broker, world: bc.World, folder: Path, client_id: str, log_level: str) -> bc.ReceiverProcess:
    folder.mkdir(parents=True, exist_ok=True)
    env = bc.write_receiver_config(folder / "receiver.yaml", broker, world.db, log_level, client_id)
    receiver = bc.ReceiverProcess(folder / "receiver.yaml", folder / "receiver.log", env)
    receiver.start()
    return receiver


def run_on(args: argparse.Namespace, tmp: Path, db: Path | str) -> dict[str, Any]:
    broker = None
    receivers: list[bc.ReceiverProcess] = []
    load_before = os.getloadavg()
    two = None
    try:
        bc.say(f"starting Mosquitto (dynsec) and provisioning {args.devices} devices in {tmp} ({args.storage})")
        broker = start_broker(tmp / "broker", dynsec=True)
        world = bc.provision(broker, db, args.devices)
        receivers.append(start_receiver(broker, world, tmp / "receiver", "bench-receiver-1", args.log_level))
        receiver = receivers[0]
        bc.say(f"receiver up at {receiver.api_url} (pid {receiver.pid}); ingest of {args.alerts} alerts ...")
        ingest = measure_ingest(world, broker, receivers, args.alerts, args.rounds, args.inflight, args.timeout)
        bc.say(f"latency: {args.latency_samples} samples per pass at {args.latency_rate:g}/s ...")
        latency = measure_latency(world, broker, receiver, args.latency_samples, args.latency_rate, args.poll_interval)
        if args.two_receivers:
            receivers.append(start_receiver(broker, world, tmp / "receiver2", "bench-receiver-2", args.log_level))
            bc.say(f"second receiver up (pid {receivers[1].pid}), same shared subscription; ingest again ...")
            two = measure_ingest(world, broker, receivers, args.alerts, args.rounds, args.inflight, args.timeout, "U")
        for r in receivers:
            if (code := r.stop()) not in (0, None):
                raise bc.BenchError(f"receiver exited with {code} on SIGTERM:\n{r.log_tail()}")
        broker.stop()
        bc.say(f"the limit: raw {args.storage} and the receiver's layers in-process ...")
        work = bc.make_workload(list(world.devices), args.alerts)
        if bc.is_pg(db):
            limits = measure_pg_limits(str(db), tmp, work, args.rounds, RX_BATCH_MAX)
        else:
            limits = measure_limits(tmp, work, args.batch, args.rounds, RX_BATCH_MAX)
    finally:
        for r in receivers:
            r.stop()
        if broker is not None:
            broker.stop()
    load = {"load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in os.getloadavg()]}
    engine = {"postgresql": server_version(str(db))} if bc.is_pg(db) else {}
    goals = GOALS[args.storage]
    return {
        "machine": {**bc.machine_facts(tmp), **load, **engine},
        "params": {"storage": args.storage, "alerts": args.alerts, "devices": args.devices, "rounds": args.rounds,
                   "inflight": args.inflight, "batch": RX_BATCH_MAX if bc.is_pg(db) else args.batch,
                   "rx_batch": RX_BATCH_MAX, "latency_samples": args.latency_samples, "log_level": args.log_level,
                   "receiver_mode": f"subprocess `{Path(receiver.proc.args[0]).name} -c FILE serve`"},
        "ingest": ingest, "limits": limits, "latency": latency, "two_receivers": two,
        "ratios": {**{f"receiver_vs_{k}": bc.ratio(ingest["alerts_per_s"], v["alerts_per_s"]) for k, v in limits.items()},
                   "two_receivers_vs_one": bc.ratio(two["alerts_per_s"], ingest["alerts_per_s"]) if two else None},
        "goals": {**{f"receiver_vs_{k}_min": v for k, v in goals.items()}, "latency_p95_max_s": GOAL_P95_S},
    }


def _interrupt(_sig: int, _frame: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM stops us like Ctrl-C: the finally blocks stop what we started


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    tmp = Path(tempfile.mkdtemp(prefix="bk-bench-ingest-", dir=args.dir))
    t0 = time.monotonic()
    try:  # what this process logs (the receiver's modules log to stdout) goes to a file, as in production
        with open(tmp / "bench-process.log", "w", encoding="utf-8") as log, contextlib.redirect_stdout(log):
            configure_logging("info", "json")  # so the in-process Ingestor pays for its log line too
            res = run(args, tmp)
    except bc.BenchError as err:
        bc.say(f"benchmark failed: {err}")
        return 1
    except KeyboardInterrupt:
        bc.say("interrupted; everything started was stopped")
        return 130
    finally:
        if args.keep:
            bc.say(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    res["wall_s"] = time.monotonic() - t0
    if args.json:
        print(json.dumps(res, ensure_ascii=False, indent=2))
    else:
        report(res)
        print(f"\n(wall time {res['wall_s']:.0f} s; script: {Path(__file__).relative_to(bc.ROOT)})")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
