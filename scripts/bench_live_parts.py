"""Parts of scripts/bench_live.py (no benchmark here): the counting TCP proxy in front of the broker,
the sliding 60 s windows over its per-second counts, and a WebSocket viewer of the receiver's live
endpoint that notes when it could first decode a frame; what the run's records say (the box's budget
classes, alert latencies) and ffmpeg's CPU for the same work."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import select
import socket
import subprocess
import threading
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

WINDOW_S = 60


# --- the box's socket, counted --------------------------------------------------------------------

class CountingProxy:
    """A TCP relay on 127.0.0.1 that counts, per second, the bytes the client (the box) writes upstream."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.up: dict[int, int] = defaultdict(int)  # int(monotonic second) -> bytes box -> broker
        self.down: dict[int, int] = defaultdict(int)
        self.connections = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="bench-proxy", daemon=True)

    def __enter__(self) -> CountingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self._lock:
                self.connections += 1
            threading.Thread(target=self._pipe, args=(client, upstream), name="bench-proxy-conn", daemon=True).start()

    def _pipe(self, client: socket.socket, upstream: socket.socket) -> None:
        socks = [client, upstream]
        try:
            while not self._stop.is_set():
                ready, _, _ = select.select(socks, [], [], 0.5)
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    other = upstream if s is client else client
                    other.sendall(data)
                    with self._lock:
                        (self.up if s is client else self.down)[int(time.monotonic())] += len(data)
        except OSError:
            return
        finally:
            client.close()
            upstream.close()

    def seconds(self, start: float, end: float) -> list[int]:
        """Upstream bytes of each whole second in [start, end)."""
        with self._lock:
            return [self.up.get(s, 0) for s in range(int(start), int(end))]


def window_sums(per_second: list[int], window: int = WINDOW_S) -> list[int]:
    """Sum over every `window` consecutive seconds (one per start second)."""
    if len(per_second) < window:
        return []
    acc = sum(per_second[:window])
    out = [acc]
    for i in range(window, len(per_second)):
        acc += per_second[i] - per_second[i - window]
        out.append(acc)
    return out


def mbps(nbytes: float, seconds: float) -> float:
    return nbytes * 8 / seconds / 1e6


# --- the viewer --------------------------------------------------------------------------------------

class Viewer:
    """A WebSocket viewer of the receiver's live endpoint on its own thread; decodes what it gets."""

    def __init__(self, api_url: str, token: str, device: str, camera: str) -> None:
        self.url = f"{api_url}/api/v1/live/{device}/{camera}"
        self.token = token
        self.opened = 0.0
        self.first_frame: float | None = None
        self.pieces = 0
        self.bytes = 0
        self.connects = 0
        self.errors: list[str] = []
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), name="bench-viewer", daemon=True)

    def start(self) -> Viewer:
        self._thread.start()
        return self

    def close(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop ended already (the socket closed)
                self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    async def _main(self) -> None:
        """Watch until closed; when the relay gives up on a stream (no video within its timeout: the pieces
        wait behind an alert clip in the box's outbox), open the socket again, as the console's player does."""
        import aiohttp

        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        stopper = asyncio.create_task(self._stop.wait(), name="bench-viewer-stop")
        self.opened = time.monotonic()
        buf = bytearray()
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {self.token}"}) as http:
            while not self._stop.is_set():
                try:
                    async with http.ws_connect(self.url) as ws:
                        self.connects += 1
                        while True:
                            receive = asyncio.create_task(ws.receive(), name="bench-viewer-receive")
                            done, _ = await asyncio.wait({receive, stopper}, return_when=asyncio.FIRST_COMPLETED)
                            if receive not in done:
                                receive.cancel()
                                return
                            msg = receive.result()
                            if msg.type == aiohttp.WSMsgType.TEXT:
                                if "error" in msg.json():
                                    self.errors.append(msg.json()["error"])
                                continue
                            if msg.type != aiohttp.WSMsgType.BINARY:
                                break
                            self.bytes += len(msg.data)
                            self.pieces += 1
                            if self.first_frame is None:
                                buf += msg.data
                                if self._decodes(bytes(buf)):
                                    self.first_frame = time.monotonic()
                                    buf.clear()
                except aiohttp.ClientError as err:
                    self.errors.append(repr(err))
                    await asyncio.sleep(0.5)

    @staticmethod
    def _decodes(data: bytes) -> bool:
        """The pieces so far (init segment + fragments) hold a decodable frame."""

        import av
        try:
            with av.open(io.BytesIO(data), format="mp4") as c:
                return next(iter(c.decode(video=0)), None) is not None
        except (av.FFmpegError, StopIteration, ValueError):
            return False


# --- what the run's records say ----------------------------------------------------------------

NAMES = {0: "alert", 1: "snapshot", 2: "clip", 3: "live", 4: "telemetry"}


def phase_stats(ticks: list[dict[str, Any]], start: float, end: float) -> dict[str, Any]:
    """From the box's once-a-second reports within [start, end]: kbit/s by budget class, the live
    encoder's output, the largest live backlog in the outbox."""
    inside = [t for t in ticks if start <= t["tick"] <= end]
    if len(inside) < 2:
        return {"kbps_by_class": {}, "encoded_kbps": 0.0, "live_depth_max": 0}
    a, b = inside[0], inside[-1]
    secs = b["tick"] - a["tick"]
    by_class = {NAMES[int(k)]: (b["spent"][k] - a["spent"].get(k, 0)) * 8 / secs / 1000 for k in b["spent"]}
    encoded = max(0, b["encoded_bytes"] - a["encoded_bytes"]) * 8 / secs / 1000
    return {"kbps_by_class": by_class, "encoded_kbps": encoded,
            "live_depth_max": max(t["depth"].get("live", 0) for t in inside)}


def alert_latencies(db: Path, made: dict[str, float], since: float, until: float) -> tuple[list[float], int]:
    """Seconds from the box making each alert (started in [since, until), wall) to its row's received_at;
    and how many of them never arrived."""
    import sqlite3
    ids = [a for a, t in made.items() if since <= t < until]
    if not ids:
        return [], 0
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as lite:
        rows = dict(lite.execute(f"SELECT id, received_at FROM alerts WHERE id IN ({','.join('?' * len(ids))})",
                                 ids).fetchall())
    out = [datetime.fromisoformat(rows[a]).timestamp() - made[a] for a in ids if a in rows]
    return out, len(ids) - len(out)


def wait_alerts_in(db: Path, made: dict[str, float], since: float, until: float, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alert_latencies(db, made, since, until)[1]:
        time.sleep(0.5)


def ffmpeg_cpu(clip: Path, seconds: float, *, transcode: bool, bitrate: int, fps: float) -> float:
    """CPU seconds per wall second of ffmpeg reading `clip` at its pace (-re, looped) for `seconds`:
    decoding only, or the live transcode (640x360, `fps`, libx264 as edge_agent/live/encoder.py sets it)."""
    cmd = ["ffmpeg", "-v", "error", "-nostdin", "-re", "-stream_loop", "-1", "-i", str(clip), "-t", str(seconds), "-an"]
    if transcode:
        gop = str(round(fps))
        cmd += ["-vf", f"fps={fps:g},scale=640:360:flags=bilinear", "-c:v", "libx264", "-preset", "ultrafast",
                "-tune", "zerolatency", "-bf", "0", "-g", gop, "-keyint_min", gop, "-sc_threshold", "0",
                "-b:v", str(bitrate), "-maxrate", str(bitrate), "-bufsize", str(bitrate), "-pix_fmt", "yuv420p",
                "-f", "mp4", "-movflags", "frag_keyframe+empty_moov+default_base_moof+frag_every_frame", "-y", "/dev/null"]
    else:
        cmd += ["-f", "null", "-"]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed ({proc.returncode}): {' '.join(cmd)}")
    return (usage.ru_utime + usage.ru_stime) / wall
