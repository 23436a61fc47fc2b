"""Helpers shared by the benchmark scripts (no benchmark here).

- `machine_facts()`: what the figures were measured on (cores, CPU, memory, versions, file system).
- `percentile()`, `rate()`: pure arithmetic for the result tables.
- `cpu_seconds(pid)`: user + system CPU time of a process (all its threads), from /proc.
- `ReceiverProcess`: `cloud-receiver -c FILE serve` as a subprocess, the way production runs it.
- `provision()`, `fresh_db()`, `write_receiver_config()`, `wait_rows()`: a receiver's database (an
  SQLite file, or a `postgresql://` URL) with a canteen, provisioned devices and an admin token; its
  config file; polling its alerts table. `pg_schema()`: a throw-away PostgreSQL schema, dropped after.
- `make_alert()`: a valid `bk_contract.Alert`; `summarise()`: the median of several rounds.
- `print_table()`: a plain-text table.

The broker itself comes from devkit/localbroker.py (Mosquitto on a free port, with
the dynamic-security plugin and provisioned clients), so benchmarks and tests run the same broker.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT,):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))


from bench_machine import cpu_facts  # noqa: E402

from bk_contract import Alert  # noqa: E402
from bk_contract.payloads import AlertBox  # noqa: E402
from cloud_receiver.admin import auth  # noqa: E402
from cloud_receiver.admin.devices import add_device  # noqa: E402
from cloud_receiver.storage.sqlite import SqliteStorage  # noqa: E402
from devkit.localbroker import Broker, free_port  # noqa: E402


class BenchError(RuntimeError):
    """A benchmark could not run as intended (a part did not start, data went missing)."""


# --- arithmetic ---------------------------------------------------------------------------------

def percentile(values: list[float], p: float) -> float | None:
    """The p-th percentile (0..100) by linear interpolation between closest ranks; None when empty."""
    if not values:
        return None
    xs = sorted(values)
    k = (len(xs) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


# --- machine facts ------------------------------------------------------------------------------

def _first_line(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else "?"


def fs_type(path: Path) -> str:
    """File system type of the mount holding `path` (longest mount-point prefix in /proc/mounts)."""
    best, kind = "", "?"
    path = Path(path).resolve()
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            mnt = parts[1]
            if (str(path) == mnt or str(path).startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                best, kind = mnt, parts[2]
    return kind


def machine_facts(work_dir: Path) -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError):
        m = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        cpu = m.group(1) if m else "?"
    mem_gib = None
    with contextlib.suppress(OSError, AttributeError):
        m = re.search(r"^MemTotal:\s*(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
        mem_gib = round(int(m.group(1)) / 1024 / 1024, 1) if m else None
    import aiohttp
    import paho.mqtt
    facts = cpu_facts()
    return {
        "cores": len(os.sched_getaffinity(0)), "cpu": cpu, "mem_gib": mem_gib,
        "isa": facts["isa"], "avx2": "avx2" in facts["isa"], "avx512_vnni": facts["avx512_vnni"],
        "kernel": platform.release(), "python": platform.python_version(), "sqlite": sqlite3.sqlite_version,
        "mosquitto": _first_line([shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-h"]),
        "paho_mqtt": paho.mqtt.__version__, "aiohttp": aiohttp.__version__,
        "work_dir": str(work_dir), "work_dir_fs": fs_type(work_dir),
    }


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds used so far by process `pid` (all threads); None if unreadable."""
    if pid is None:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_used(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


def broker_pid(broker: Broker) -> int | None:
    proc = getattr(broker, "_proc", None)  # localbroker keeps its Popen private
    return proc.pid if proc is not None else None


# --- the receiver as a subprocess ---------------------------------------------------------------

def receiver_command() -> list[str]:
    """The installed `cloud-receiver` console script; `python -m cloud_receiver.app.cli` if it is not on PATH."""
    exe = shutil.which("cloud-receiver")
    return [exe] if exe else [sys.executable, "-m", "cloud_receiver.app.cli"]


@dataclass
class ReceiverProcess:
    """`cloud-receiver -c config.yaml serve` with its stdout (JSON logs) going to `log_path`."""

    config_path: Path
    log_path: Path
    env: dict[str, str]
    proc: subprocess.Popen | None = None
    api_url: str = ""

    def start(self, timeout: float = 30.0) -> None:
        env = {**os.environ, **self.env, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([*receiver_command(), "-c", str(self.config_path), "serve"],
                                         stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                         start_new_session=True)  # a terminal's Ctrl-C reaches us, we stop it
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"receiver exited with {self.proc.returncode}:\n{self.log_tail()}")
            m = re.search(r"API: (http://\S+)/api/v1", self.log_path.read_text(errors="replace"))
            if m:
                self.api_url = m.group(1)
                break
            time.sleep(0.05)
        else:
            raise BenchError(f"receiver did not print its API address within {timeout} s:\n{self.log_tail()}")
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{self.api_url}/healthz", timeout=2) as r:
                if r.status == 200:
                    return
            time.sleep(0.05)
        raise BenchError(f"receiver /healthz not 200 within {timeout} s:\n{self.log_tail()}")

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (the receiver's clean stop), SIGKILL if it does not exit in time; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


# --- the receiver's world: canteen, devices, token, config ------------------------------------

CANTEEN = ("C-bench", "基准测试食堂", "640502")  # id, name, jurisdiction


def make_alert(device_id: str, n: int, started_at: datetime, tag: str = "T") -> Alert:
    """A realistic phone_use alert with one box, unique per (device, n, tag)."""
    return Alert(id=f"{tag}{device_id[-6:]}-{n:07d}", device_id=device_id, camera_id="cam1", type="phone_use",
                 level="warning", started_at=started_at, score=0.87, frame_size=[1920, 1080],
                 boxes=[AlertBox(label="person", score=0.91, box=[412.0, 188.5, 655.0, 870.25], track_id=n),
                        AlertBox(label="cell phone", score=0.66, box=[530.0, 402.0, 575.0, 470.0])],
                 detail="persistence_s=10")


@dataclass
class World:
    db: Path | str  # the SQLite file, or the postgresql:// URL (search_path in it) of a throw-away schema
    devices: dict[str, str]  # device id -> password
    token: str


def is_pg(db: Path | str) -> bool:
    return isinstance(db, str) and db.startswith("postgresql")


def open_storage(db: Path | str) -> Any:
    """The receiver's own store of `db` (migrated): SqliteStorage or PostgresStorage."""
    if is_pg(db):
        from cloud_receiver.storage.postgres import PostgresStorage
        return PostgresStorage(str(db))
    return SqliteStorage(db)


def provision(broker: Broker, db: Path | str, n_devices: int) -> World:
    """Canteen, devices (broker accounts via dynsec + rows) and an admin API token in the receiver's DB."""
    storage = open_storage(db)
    try:
        storage.add_canteen(*CANTEEN)
        devices = {}
        with broker.admin_client() as admin:
            for i in range(n_devices):
                creds = add_device(storage, admin, CANTEEN[0], f"bench box {i + 1}")
                devices[creds.device_id] = creds.password
        token = auth.create_token(storage.sql, "admin", "", "bench-admin")
    finally:
        storage.close()
    return World(db, devices, token)


def fresh_db(path: Path, device_ids: list[str]) -> None:
    """A database made by the receiver's own migrations, with the canteen and devices."""
    storage = SqliteStorage(path)
    try:
        storage.add_canteen(*CANTEEN)
        for d in device_ids:
            storage.add_device(d, CANTEEN[0], "bench")
    finally:
        storage.close()


def write_receiver_config(path: Path, broker: Broker, db: Path | str, log_level: str,
                          client_id: str = "bench-receiver-1") -> dict[str, str]:
    """A receiver's config file; receivers of one benchmark differ by `client_id` (shared subscription)."""
    assert broker.receiver is not None
    where = f"  url: {db}\n" if is_pg(db) else f"  path: {db}\n"
    path.write_text(
        f"http:\n  host: 127.0.0.1\n  port: {free_port()}\n"
        f"mqtt:\n  host: {broker.host}\n  port: {broker.port}\n  client_id: {client_id}\n"
        f"  username: {broker.receiver[0]}\n  password_env: BK_BENCH_RECEIVER_PASSWORD\n"
        f"storage:\n{where}  media_dir: {path.parent / 'media'}\n"
        f"log:\n  level: {log_level}\n  format: json\n", encoding="utf-8")
    return {"BK_BENCH_RECEIVER_PASSWORD": broker.receiver[1]}


PG_URL_DEFAULT = "postgresql://postgres@127.0.0.1:5432/test"


@contextlib.contextmanager
def pg_schema(base_url: str = PG_URL_DEFAULT, prefix: str = "bk_bench") -> Iterator[str]:
    """A throw-away schema; yields a URL whose search_path is it. Dropped (CASCADE) on the way out."""
    import secrets

    import psycopg
    schema = f"{prefix}_{secrets.token_hex(4)}"
    with psycopg.connect(base_url, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
        try:
            yield f"{base_url}{'&' if '?' in base_url else '?'}options=-csearch_path%3D{schema}"
        finally:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


@contextlib.contextmanager
def reader(db: Path | str) -> Iterator[Callable[[str, tuple[Any, ...]], Any]]:
    """A separate read connection to `db`: yields `one(sql, params)` → the first value (`?` parameters)."""
    if is_pg(db):
        import psycopg
        with psycopg.connect(str(db), autocommit=True) as conn:
            yield lambda sql, params=(): conn.execute(sql.replace("?", "%s"), params).fetchone()[0]
        return
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as lite:
        yield lambda sql, params=(): lite.execute(sql, params).fetchone()[0]


def scalar(db: Path | str, sql: str) -> Any:
    """One value from a separate read connection."""
    with reader(db) as one:
        return one(sql, ())


def wait_rows(db: Path | str, like: str, want: int, timeout: float, step: float = 0.01,
              last_ids: Sequence[str] = ()) -> tuple[float | None, int]:
    """Poll a separate read connection until `want` alerts match `like`: (perf_counter then or None, count).

    With `last_ids` (each device's last alert) it first waits until those are stored, by primary key: the count
    scans the whole table (10 ms at 60,000 rows on PostgreSQL), and polled every `step` it took a third of a
    core from the database server the receiver writes to. Then it counts, as before, until all are there."""
    with reader(db) as one:
        deadline = time.perf_counter() + timeout
        probe = f"SELECT count(*) FROM alerts WHERE id IN ({', '.join('?' * len(last_ids))})"
        while last_ids and int(one(probe, tuple(last_ids))) < len(last_ids) and time.perf_counter() < deadline:
            time.sleep(step)
        while (got := int(one("SELECT count(*) FROM alerts WHERE id LIKE ?", (like,)))) < want \
                and time.perf_counter() < deadline:
            time.sleep(step)
        return (time.perf_counter() if got >= want else None), got


def make_workload(device_ids: list[str], total: int, tag: str = "T") -> dict[str, list[Alert]]:
    """`total` alerts spread evenly over the devices, started in the past (older than latency probes)."""
    base = datetime.now(UTC) - timedelta(days=1)
    per: dict[str, list[Alert]] = {d: [] for d in device_ids}
    for n in range(total):
        d = device_ids[n % len(device_ids)]
        per[d].append(make_alert(d, n, base + timedelta(milliseconds=n), tag))
    return per


def summarise(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Median round (by alerts/s) with the best and worst rate; rounds differ when the machine is shared."""
    by_rate = sorted(rounds, key=lambda r: r["alerts_per_s"])
    med = by_rate[(len(by_rate) - 1) // 2]
    return {**med, "rounds": len(rounds), "best_alerts_per_s": by_rate[-1]["alerts_per_s"],
            "worst_alerts_per_s": by_rate[0]["alerts_per_s"], "all_alerts_per_s": [r["alerts_per_s"] for r in rounds]}


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- output ----------------------------------------------------------------------------------------

def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def print_table(headers: list[str], rows: list[list[Any]]) -> None:
    cells = [headers] + [[fmt(c) for c in r] for r in rows]
    widths = [max(len(str(row[i])) for row in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        print("  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                        for i, (c, w) in enumerate(zip(row, widths, strict=True))))
        if n == 0:
            print("  ".join("-" * w for w in widths))
