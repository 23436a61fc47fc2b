"""Helpers shared by the benchmark scripts (no benchmark here).

- `machine_facts()`: what the figures were measured on (cores, CPU, memory, versions, file system).
- `percentile()`, `rate()`: pure arithmetic for the result tables.
- `cpu_seconds(pid)`: user + system CPU time of a process (all its threads), from /proc.
- `ReceiverProcess`: `cloud-receiver -c FILE serve` as a subprocess, the way production runs it.
- `DevicePublisher`: a device-side paho MQTT v5 client that counts PUBACKs and their reason codes.
- `print_table()`: a plain-text table.

The broker itself comes from tests/brokerkit.py (the team's Mosquitto-on-a-free-port kit, with
the dynamic-security plugin and provisioned clients), so benchmarks and tests run the same broker.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT, ROOT / "tests"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402


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
    return {
        "cores": len(os.sched_getaffinity(0)), "cpu": cpu, "mem_gib": mem_gib,
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the receiver as a subprocess ---------------------------------------------------------------

def receiver_command() -> list[str]:
    """The installed `cloud-receiver` console script; `python -m cloud_receiver.cli` if it is not on PATH."""
    exe = shutil.which("cloud-receiver")
    return [exe] if exe else [sys.executable, "-m", "cloud_receiver.cli"]


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


# --- a device publisher ---------------------------------------------------------------------------

@dataclass
class DevicePublisher:
    """A device's MQTT v5 connection (own username/password), publishing QoS 1 with `inflight` in flight."""

    host: str
    port: int
    device_id: str
    password: str
    inflight: int = 100
    acked: int = 0
    failures: dict[int, int] = field(default_factory=dict)  # PUBACK reason code >= 0x80 -> count
    last_ack_at: float = 0.0

    def __post_init__(self) -> None:
        self._cond = threading.Condition()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-{self.device_id}", protocol=mqtt.MQTTv5)
        c.username_pw_set(self.device_id, self.password)
        c.max_inflight_messages_set(self.inflight)
        c.max_queued_messages_set(0)  # unlimited: paho holds what the window does not yet allow
        c.on_publish = self._on_publish
        connected = threading.Event()
        reasons: list[Any] = []
        c.on_connect = lambda _c, _u, _f, reason, _p: (reasons.append(reason), connected.set())
        c.connect(self.host, self.port, keepalive=60)
        c.loop_start()
        if not connected.wait(10) or reasons[0].is_failure:
            c.loop_stop()
            raise BenchError(f"device {self.device_id} could not connect: {reasons[0] if reasons else 'no CONNACK'}")
        self.client = c

    def _on_publish(self, _c: Any, _u: Any, _mid: int, reason: Any, _p: Any) -> None:
        with self._cond:
            self.acked += 1
            self.last_ack_at = time.perf_counter()
            if reason.value >= 0x80:
                self.failures[reason.value] = self.failures.get(reason.value, 0) + 1
            self._cond.notify_all()

    def publish(self, topic: str, payload: bytes) -> None:
        info = self.client.publish(topic, payload, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise BenchError(f"publish by {self.device_id} failed: {mqtt.error_string(info.rc)}")

    def wait_acked(self, n: int, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.acked >= n, timeout)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.disconnect()
        self.client.loop_stop()


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
        print("  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))))
        if n == 0:
            print("  ".join("-" * w for w in widths))
