"""A live receiver API on 127.0.0.1 in a thread of its own, for clients that are not aiohttp's test
client: schemathesis (tests/test_api_schemathesis.py, scripts/fuzz_api.py) and plain sockets.

The database is seeded like `api_kit.make_world` (canteens C1, C2 in jurisdiction 640502, C3 in
640521, a box each, a token per role) plus an alert with a snapshot per canteen, so that the fuzzer
meets real rows. MQTT ingest is off (`create_app(subscriber=False)`).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiohttp import web

from bk_contract import Alert, CameraHealth, MediaRef, Status
from cloud_receiver.app.factory import create_app
from cloud_receiver.appkeys import STORAGE
from cloud_receiver.config import ReceiverConfig, StorageConfig
from cloud_receiver.storage.sqlite import iso
from support.api_kit import DEVICES, add_media, jpeg, seed


@dataclass
class LiveApi:
    base_url: str  # e.g. http://127.0.0.1:41234
    tokens: dict[str, str] = field(default_factory=dict)
    alerts: dict[str, str] = field(default_factory=dict)  # canteen id -> id of its seeded alert
    snapshots: dict[str, str] = field(default_factory=dict)  # canteen id -> sha256 of its alert's snapshot

    @property
    def openapi_url(self) -> str:
        return f"{self.base_url}/api/v1/openapi.json"


def seed_alerts(storage, media_dir: Path) -> tuple[dict[str, str], dict[str, str]]:  # noqa: ANN001 - SqliteStorage
    """An open alert with a snapshot for each canteen (ids `L-C1`, `L-C2`, `L-C3`), and a camera on every box."""
    alerts, snaps = {}, {}
    started = datetime.now(UTC) - timedelta(hours=1)
    for canteen, device in DEVICES.items():
        storage.record_status(Status(device_id=device, online=True, version="0.1.0", ts=datetime.now(UTC),
                                     cameras=[CameraHealth(id="cam1", name="后厨1", state="online", fps=5.0)]),
                              iso(datetime.now(UTC)) or "")
        data = jpeg(f"live-{canteen}")
        sha = add_media(storage, media_dir, data, f"live{canteen}", device)
        alert = Alert(id=f"L-{canteen}", device_id=device, camera_id="cam1", type="phone_use", started_at=started,
                      score=0.9, snapshot=MediaRef(id=f"live{canteen}", sha256=sha, bytes=len(data)))
        storage.upsert_alert(alert, iso(datetime.now(UTC)) or "")
        alerts[canteen], snaps[canteen] = alert.id, sha
    return alerts, snaps


@contextmanager
def live_api(tmp_path: Path) -> Iterator[LiveApi]:
    """Serve the receiver's API on a free port of 127.0.0.1 until the block ends."""
    cfg = ReceiverConfig(storage=StorageConfig(path=tmp_path / "receiver.db", media_dir=tmp_path / "media"))
    started = threading.Event()
    stop: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
    out: list[LiveApi] = []
    failed: list[BaseException] = []

    async def serve() -> None:
        runner = web.AppRunner(create_app(cfg, subscriber=False), access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # noqa: SLF001
            storage = runner.app[STORAGE]
            tokens, _, _ = seed(storage, cfg.storage.media_dir)
            alerts, snaps = seed_alerts(storage, cfg.storage.media_dir)
            out.append(LiveApi(f"http://127.0.0.1:{port}", tokens, alerts, snaps))
            stop.append((asyncio.get_running_loop(), asyncio.Event()))
            started.set()
            await stop[0][1].wait()
        finally:
            await runner.cleanup()

    def run() -> None:
        try:
            asyncio.run(serve())
        except BaseException as err:  # noqa: BLE001 - handed to the test thread
            failed.append(err)
            started.set()

    thread = threading.Thread(target=run, name="bk-live-api", daemon=True)
    thread.start()
    if not started.wait(30) or failed:
        raise RuntimeError(f"the live API did not start: {failed[0] if failed else 'timeout'}")
    loop, done = stop[0]
    try:
        yield out[0]
    finally:
        loop.call_soon_threadsafe(done.set)
        thread.join(30)
