"""Helpers of tests/test_multi_receiver.py (no tests here): real `cloud-receiver serve` processes on one
PostgreSQL, a lean device publisher, SSE readers and a fake robot whose door can be held shut.

- `ReceiverProcess`: `python -m cloud_receiver.app.cli -c FILE serve` as a subprocess (its JSON log in a
  file), started until /healthz answers 200; `kill()` is kill -9, `stop()` SIGTERM.
- `write_receiver_config`: a receiver's YAML for a plain (anonymous) broker and a PostgreSQL URL.
- `LeanPublisher`: a device's MQTT v5 QoS 1 connection on the receiver's own codec, with an in-flight
  window (paho's ~80 µs a message would make the test's publisher the bottleneck on 2 cores).
- `SseReader`: an alert stream read in the background: every alert id, `resync` reasons, the end.
- `GatedRobots`: FakeRobots whose WeCom endpoint parks requests while `close()`d and refuses what it
  parked when `open()`ed again, so a receiver can be killed at a moment its one request to the robot is
  parked: then it holds no push the robot accepted and it did not mark sent (the one window no claim can
  close: docs/receiver.md, "Several receivers").
- `tcp_ports(pid)`: the local TCP ports of a process's sockets (to tell whose request is parked).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from cloud_receiver.ingest import codec
from support.fake_robots import FakeRobots

ROOT = Path(__file__).resolve().parents[2]
ALERT_ID = re.compile(r'data: \{"id":"([^"]+)"')


def write_receiver_config(path: Path, *, broker: Any, pg_url: str, client_id: str, http_port: int,
                          extra: str = "") -> Path:
    """A receiver's config for a plain broker and a PostgreSQL schema; `extra` is more YAML (whole sections)."""
    path.write_text(
        f"http:\n  host: 127.0.0.1\n  port: {http_port}\n"
        f"mqtt:\n  host: {broker.host}\n  port: {broker.port}\n  client_id: {client_id}\n"
        "  reconnect_min_s: 0.1\n  reconnect_max_s: 0.5\n"
        f"storage:\n  url: '{pg_url}'\n  media_dir: {path.parent / (client_id + '-media')}\n"
        f"{extra}", encoding="utf-8")
    return path


@dataclass
class ReceiverProcess:
    """`cloud-receiver -c config serve` with stdout and stderr (JSON log lines) going to `log_path`."""

    config_path: Path
    log_path: Path
    proc: subprocess.Popen | None = None
    api_url: str = ""

    def launch(self) -> None:
        env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "cloud_receiver.app.cli", "-c", str(self.config_path),
                                          "serve"], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)

    def wait_up(self, timeout: float = 30.0) -> None:
        """Until it printed its API address and /healthz answers 200 (subscribed to the broker)."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"receiver exited with {self.proc.returncode}:\n{self.log_tail()}"
            m = re.search(r"API: (http://\S+)/api/v1", self.log_path.read_text(errors="replace"))
            if m:
                self.api_url = m.group(1)
                with contextlib.suppress(OSError), urllib.request.urlopen(f"{self.api_url}/healthz", timeout=2) as r:
                    if r.status == 200:
                        return
            time.sleep(0.05)
        raise AssertionError(f"receiver not up within {timeout} s:\n{self.log_tail()}")

    def kill(self) -> None:
        """kill -9: no clean stop, no PUBACKs after the last commit, claims left as they were."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 15.0) -> int | None:
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

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def log_events(self, event: str) -> list[dict[str, Any]]:
        """The JSON log lines whose `event` is `event`."""
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if f'"{event}"' in line:
                with contextlib.suppress(ValueError):
                    item = json.loads(line)
                    if item.get("event") == event:
                        out.append(item)
        return out


class LeanPublisher:
    """A device's MQTT v5 connection (anonymous broker) publishing QoS 1 with at most `inflight` unacknowledged."""

    def __init__(self, host: str, port: int, device_id: str, inflight: int = 200) -> None:
        self.device_id, self.inflight = device_id, inflight
        self.acked = 0
        self.refused = 0  # PUBACKs with a reason code >= 0x80
        self._cond = threading.Condition()
        self._queue: collections.deque[bytes] = collections.deque()
        self._in_flight = 0
        self._next_id = 0
        sock = socket.create_connection((host, port), timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(codec.connect_packet(f"dev-{device_id}", 60, clean_start=True))
        data = b""
        while not (packets := codec.split_packets(data, 1 << 20)[0]):
            chunk = sock.recv(4096)
            assert chunk, f"device {device_id}: broker closed the connection before CONNACK"
            data += chunk
        first, body = packets[0]
        assert first >> 4 == codec.CONNACK and codec.parse_connack(body).reason_code == 0, f"device {device_id} refused"
        sock.settimeout(None)
        self._sock = sock
        self._reader = threading.Thread(target=self._read, name=f"pub-{device_id}", daemon=True)
        self._reader.start()

    def _packet(self, topic: str, payload: bytes) -> bytes:
        self._next_id = self._next_id % 65535 + 1
        return codec.publish_packet(topic, payload, self._next_id)

    def publish(self, topic: str, payload: bytes) -> None:
        with self._cond:
            if self._in_flight < self.inflight and not self._queue:
                self._in_flight += 1
                self._sock.sendall(self._packet(topic, payload))
            else:
                self._queue.append(self._packet(topic, payload))

    def _read(self) -> None:
        pending = b""
        while True:
            try:
                data = self._sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            packets, used = codec.split_packets(pending + data, 1 << 20)
            pending = (pending + data)[used:]
            reasons = [body[2] if len(body) > 2 else 0 for first, body in packets if first >> 4 == codec.PUBACK]
            with self._cond:
                self.acked += len(reasons)
                self.refused += sum(1 for r in reasons if r >= 0x80)
                self._in_flight -= len(reasons)
                n = min(self.inflight - self._in_flight, len(self._queue))
                if n > 0:
                    self._in_flight += n
                    self._sock.sendall(b"".join(self._queue.popleft() for _ in range(n)))
                self._cond.notify_all()

    def wait_acked(self, n: int, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.acked >= n, timeout)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.sendall(codec.DISCONNECT_PACKET)
            self._sock.shutdown(socket.SHUT_RDWR)
        self._reader.join(5)
        self._sock.close()


@dataclass
class SseReader:
    """Reads `GET url` (an alert stream) in a background task: alert ids in order, resync reasons, whether it ended."""

    session: aiohttp.ClientSession
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    ids: list[str] = field(default_factory=list)
    resyncs: list[str] = field(default_factory=list)
    ended: bool = False
    status: int | None = None

    async def start(self) -> SseReader:
        self._resp = await self.session.get(self.url, headers=self.headers, timeout=aiohttp.ClientTimeout(total=None))
        self.status = self._resp.status
        assert self.status == 200, f"{self.url}: {self.status} {await self._resp.text()}"
        self._task = asyncio.create_task(self._read(), name="test-sse-reader")
        return self

    async def _read(self) -> None:
        event = None
        try:
            async for raw in self._resp.content:
                line = raw.decode()
                if line.startswith("event: "):
                    event = line[7:].strip()
                elif line.startswith("data: "):
                    if event == "resync":
                        self.resyncs.append(json.loads(line[6:])["reason"])
                    else:  # an alert's JSON starts with its id: cheaper than parsing 20,000 of them
                        self.ids.append(ALERT_ID.match(line).group(1))
        except aiohttp.ClientPayloadError:
            pass  # the server ended the stream: ended below
        self.ended = True

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._resp.close()


def tcp_ports(pid: int) -> set[int]:
    """Local ports of the TCP sockets process `pid` holds (from /proc; empty once it is gone)."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                link = os.readlink(fd)
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


class GatedRobots(FakeRobots):
    """FakeRobots whose WeCom endpoint can be held shut: while closed, requests wait at the door; `open()` refuses
    those (HTTP 502, so the sender retries; nothing is recorded for them) and lets later ones in again.

    A message is recorded and answered with no await in between, so once `close()` has returned no further
    message is accepted until `open()`."""

    def __init__(self) -> None:
        super().__init__()
        self.closed = False
        self._door = asyncio.Event()
        self._door.set()
        self.waiting: set[int] = set()  # peer ports of the requests parked now
        self.refused = 0

    def close(self) -> None:
        self.closed = True
        self._door = asyncio.Event()

    def open(self) -> None:
        self.closed = False
        self._door.set()

    async def wecom(self, request: web.Request) -> web.Response:
        body = await request.json()
        if self.closed:
            peer = request.transport.get_extra_info("peername")[1] if request.transport else 0
            self.waiting.add(peer)
            await self._door.wait()
            self.waiting.discard(peer)
            self.refused += 1
            return web.Response(status=502, text="door was shut")
        self.received.append((time.monotonic(), "wecom", body["text"]["content"]))
        return web.json_response({"errcode": 0, "errmsg": "ok"})
