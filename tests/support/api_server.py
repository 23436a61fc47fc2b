"""A live receiver (API and console, no MQTT ingest) on 127.0.0.1 in a thread of its own, for clients that are
not aiohttp's test client: Chromium (the browser tests), schemathesis (tests/test_api_schemathesis.py,
scripts/fuzz_api.py) and plain sockets.

`live_receiver` seeds a fresh SQLite database through a callback before the app starts, then serves it
with `browser.serve_app`. `live_api` is that receiver seeded like `api_kit.make_world` (canteens C1, C2
in jurisdiction 640502, C3 in 640521, a box each, a token per role) plus an alert with a snapshot per
canteen, so that the fuzzer meets real rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bk_contract import Alert, CameraHealth, MediaRef, Status
from cloud_receiver.app.factory import create_app, open_configured_storage
from cloud_receiver.config import ReceiverConfig, StorageConfig
from cloud_receiver.storage.sqlite import Storage, iso
from support.api_kit import DEVICES, add_media, jpeg, seed
from support.browser import serve_app


@dataclass
class LiveApi:
    base_url: str  # e.g. http://127.0.0.1:41234
    tokens: dict[str, str] = field(default_factory=dict)
    alerts: dict[str, str] = field(default_factory=dict)  # canteen id -> id of its seeded alert
    snapshots: dict[str, str] = field(default_factory=dict)  # canteen id -> sha256 of its alert's snapshot

    @property
    def openapi_url(self) -> str:
        return f"{self.base_url}/api/v1/openapi.json"


def seed_alerts(storage: Storage, media_dir: Path) -> tuple[dict[str, str], dict[str, str]]:
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
def live_receiver(tmp_path: Path, setup: Callable[[Storage], None]) -> Iterator[tuple[str, ReceiverConfig]]:
    """A receiver on a SQLite file in `tmp_path`, filled by `setup(storage)` before it starts, served on a free
    port of 127.0.0.1 until the block ends; (base URL, its config)."""
    cfg = ReceiverConfig(storage=StorageConfig(path=tmp_path / "receiver.db", media_dir=tmp_path / "media"))
    storage = open_configured_storage(cfg)
    try:
        setup(storage)
    finally:
        storage.close()
    with serve_app(create_app(cfg, subscriber=False)) as base_url:
        yield base_url, cfg


@contextmanager
def live_api(tmp_path: Path) -> Iterator[LiveApi]:
    """Serve the receiver's API, seeded for the fuzzer, on a free port of 127.0.0.1 until the block ends."""
    live = LiveApi("")

    def setup(storage: Storage) -> None:
        media_dir = tmp_path / "media"
        live.tokens, _, _ = seed(storage, media_dir)
        live.alerts, live.snapshots = seed_alerts(storage, media_dir)

    with live_receiver(tmp_path, setup) as (base_url, _):
        live.base_url = base_url
        yield live
