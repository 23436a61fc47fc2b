#!/usr/bin/env python3
"""Uplink drain rate: the box's `Uplink` emptying its outbox beside raw paho publishing, same broker.

    python scripts/bench_uplink.py                        # 3 rounds: 3000 small alerts, 600 chunks of 32 KiB
    python scripts/bench_uplink.py --alerts 5000 --chunks 1000 --rounds 5

Everything runs on 127.0.0.1: a Mosquitto on a free port (devkit/localbroker.py, anonymous), and a
QoS 1 subscriber in a child process (so the device needs it: without a subscriber Mosquitto answers
PUBACK 0x10 and the uplink holds its messages back) that records when the first and the last
message arrive. Two kinds of traffic, each in --rounds rounds, median reported:

- small alerts: `Outbox.add_event` messages (~230-byte JSON), priority alert;
- 32 KiB media chunks: one clip queued with `Outbox.add_media` (default chunk size 32768).

`ours`: the outbox is filled first (not timed), then `Uplink` starts with the upload budget out of
the way (1 Tbit/s); timed from the first to the last arrival at the subscriber (and, on the box's
side, from CONNACK until the outbox is empty: every PUBACK settled and deleted). `raw paho`: the
same topics and payloads published by a bare paho v5 client with the same in-flight window (20),
timed the same way at the subscriber. The ratio ours / raw shows what the outbox (SQLite reads,
deletes in one transaction per round, FULL sync) costs on top of MQTT itself.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT, ROOT / "scripts"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import bench_machine  # noqa: E402
import paho.mqtt  # noqa: E402
import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

import bk_contract  # noqa: E402
from devkit.localbroker import start_broker  # noqa: E402

WINDOW = 20  # the Uplink's default in-flight window; the raw publisher gets the same


def subscriber_main(port: int, topic_filter: str, count: int) -> int:
    """Child process: subscribe (QoS 1), say READY, then report first/last arrival of `count` messages."""
    got = {"n": 0, "first": None, "last": None, "bytes": 0}
    done = threading.Event()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-sub-{os.getpid()}", protocol=mqtt.MQTTv5)

    def on_message(_c: Any, _u: Any, msg: Any) -> None:
        now = time.monotonic()
        got["n"] += 1
        got["bytes"] += len(msg.payload)
        if got["first"] is None:
            got["first"] = now
        got["last"] = now
        if got["n"] >= count:
            done.set()

    c.on_connect = lambda cl, _u, _f, _rc, _p: cl.subscribe(topic_filter, qos=1)
    c.on_subscribe = lambda *_a: print("READY", flush=True)
    c.on_message = on_message
    c.connect("127.0.0.1", port)
    c.loop_start()
    ok = done.wait(600)
    c.disconnect()
    c.loop_stop()
    print(json.dumps(got | {"complete": ok}), flush=True)
    return 0 if ok else 1


class Subscriber:
    """The child-process subscriber, started and waited for by the benchmark."""

    def __init__(self, port: int, topic_filter: str, count: int) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, "--subscriber", str(port), topic_filter, str(count)],
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if line != "READY":
            self.proc.kill()
            raise RuntimeError(f"subscriber did not start: {line!r}")

    def result(self, timeout: float = 600) -> dict[str, Any]:
        out, _ = self.proc.communicate(timeout=timeout)
        return json.loads(out.strip().splitlines()[-1])


def fill_outbox(path: Path, device: str, kind: str, n: int) -> Any:
    from datetime import UTC, datetime

    from edge_agent.outbox.store import Outbox
    box = Outbox(path, device_id=device)
    if kind == "alerts":
        for i in range(n):
            box.add_event(bk_contract.Alert(id=f"B{i:08d}", device_id=device, camera_id="cam1", type="phone_use",
                                            started_at=datetime.now(UTC), score=0.9, detail="persons=1"))
    else:
        box.add_media(os.urandom(32768 * n), "video/mp4")
    return box


def run_ours(port: int, work: Path, device: str, kind: str, n: int) -> dict[str, Any]:
    from edge_agent.config import BrokerConfig, UplinkConfig
    from edge_agent.uplink.client import Uplink
    box = fill_outbox(work / f"{device}.db", device, kind, n)
    messages = box.db.execute("SELECT topic, payload FROM messages ORDER BY seq").fetchall()
    topic_filter = f"bk/v1/{device}/alert" if kind == "alerts" else f"bk/v1/{device}/media/#"
    sub = Subscriber(port, topic_filter, n)
    cfg = UplinkConfig(broker=BrokerConfig(port=port, password_env="BK_BENCH_UNSET"), budget_kbps_per_camera=1e9,
                       telemetry_s=3600)
    up = Uplink(cfg, device_id=device, outbox=box, n_cameras=1, status=list, version="bench", window=WINDOW)
    up.start()
    try:
        t_conn = None
        while box.stats()["depth_total"]:
            if t_conn is None and up.health()["connected"]:
                t_conn = time.monotonic()
            time.sleep(0.002)
        t_empty = time.monotonic()
        got = sub.result()
    finally:
        up.stop()
        box.close()
    return {"sub": got, "box_s": t_empty - (t_conn or t_empty), "messages": messages}


def run_raw(port: int, device: str, kind: str, messages: list[tuple[str, bytes]]) -> dict[str, Any]:
    topics = [t.replace(t.split("/")[2], device, 1) for t, _ in messages]
    topic_filter = f"bk/v1/{device}/alert" if kind == "alerts" else f"bk/v1/{device}/media/#"
    sub = Subscriber(port, topic_filter, len(messages))
    acked = threading.Event()
    count = {"n": 0}

    def on_publish(*_a: Any) -> None:
        count["n"] += 1
        if count["n"] >= len(messages):
            acked.set()

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-raw-{device}", protocol=mqtt.MQTTv5)
    c.max_inflight_messages_set(WINDOW)
    c.max_queued_messages_set(0)
    c.on_publish = on_publish
    connected = threading.Event()
    c.on_connect = lambda *_a: connected.set()
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        if not connected.wait(10):
            raise RuntimeError("raw publisher could not connect")
        t0 = time.monotonic()
        for t, (_, payload) in zip(topics, messages, strict=True):
            c.publish(t, payload, qos=1)
        if not acked.wait(600):
            raise RuntimeError("raw publisher: not every PUBACK arrived")
        t1 = time.monotonic()
        got = sub.result()
    finally:
        c.disconnect()
        c.loop_stop()
    return {"sub": got, "box_s": t1 - t0}


def rate(sub: dict[str, Any], n: int) -> float:
    if not sub["complete"] or sub["n"] < n:
        raise RuntimeError(f"subscriber got {sub['n']} of {n} messages")
    return (n - 1) / max(1e-9, sub["last"] - sub["first"])  # n arrivals span n - 1 intervals


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--subscriber":
        return subscriber_main(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--alerts", type=int, default=3000, help="small alert messages per round")
    ap.add_argument("--chunks", type=int, default=600, help="32 KiB chunks per round")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    from bk_common.logs import configure_logging
    configure_logging("warning", to_stderr=True)  # the uplink's info lines would bury the table
    work = Path(tempfile.mkdtemp(prefix="bench-uplink-", dir=ROOT / "var" if (ROOT / "var").is_dir() else None))
    broker = start_broker(work / "broker")
    print(bench_machine.cpu_line())
    print(f"{bench_machine.disk_line(work)}; python {sys.version.split()[0]}, paho-mqtt {paho.mqtt.__version__}, "
          f"broker {broker.host}:{broker.port}; in-flight window {WINDOW}; median of {args.rounds} rounds\n")
    results: dict[str, dict[str, list[float]]] = {}
    serial = 0
    try:
        for kind, n in (("alerts", args.alerts), ("chunks", args.chunks)):
            res = results.setdefault(kind, {"ours": [], "raw": [], "ours_box": [], "raw_box": []})
            for _ in range(args.rounds):
                serial += 1
                ours = run_ours(broker.port, work, f"6405020000118{serial:07d}", kind, n)
                raw = run_raw(broker.port, f"6405020000119{serial:07d}", kind, ours["messages"])
                res["ours"].append(rate(ours["sub"], n))
                res["raw"].append(rate(raw["sub"], n))
                res["ours_box"].append(n / ours["box_s"])
                res["raw_box"].append(n / raw["box_s"])
    finally:
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"{'traffic':<24} {'path':<10} {'msgs/s':>8} {'worst':>8} {'best':>8} {'sender msgs/s':>14} {'ours/raw':>9}")
    print(f"{'-' * 24} {'-' * 10} {'-' * 8} {'-' * 8} {'-' * 8} {'-' * 14} {'-' * 9}")
    for kind, label in (("alerts", f"{args.alerts} small alerts"), ("chunks", f"{args.chunks} x 32 KiB chunks")):
        res = results[kind]
        ratio = statistics.median(res["ours"]) / statistics.median(res["raw"])
        for path in ("ours", "raw"):
            rates = res[path]
            print(f"{label:<24} {path if path == 'ours' else 'raw paho':<10} {statistics.median(rates):>8.0f} "
                  f"{min(rates):>8.0f} {max(rates):>8.0f} {statistics.median(res[path + '_box']):>14.0f} "
                  f"{f'{ratio:.2f}' if path == 'ours' else '':>9}")
    print("\nmsgs/s: first to last arrival at the subscriber; sender msgs/s: ours from CONNACK until the outbox is "
          "empty, raw from the first publish to the last PUBACK")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
