"""A small world for the API tests: the real app factory on a real SQLite file or PostgreSQL schema, rows inserted
through the receiver's own storage functions, and tokens for every role."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from bk_contract import Alert, ChunkHeader, MediaRef, Status
from bk_contract.payloads import CameraHealth
from cloud_receiver.admin import auth
from cloud_receiver.app.factory import create_app
from cloud_receiver.appkeys import ALERT_HUB, STORAGE
from cloud_receiver.config import ExportConfig, ReceiverConfig, StorageConfig
from cloud_receiver.storage.media_store import write_media_file
from cloud_receiver.storage.sqlite import Storage, iso
from support.requirements import pg_schema

# canteen id -> (name, jurisdiction)
CANTEENS = {"C1": ("第一中学食堂", "64050201"), "C2": ("第二小学食堂", "64050202"), "C3": ("中宁一中食堂", "64052101")}
DEVICES = {"C1": "64050200001180000001", "C2": "64050200001180000002", "C3": "64052100001180000003"}
# every test receiver (make_world, api_server) signs its /export answers with this key, read from the environment
# as in production (export.key_env); tests of a missing key unset it with monkeypatch
EXPORT_KEY_ENV, EXPORT_KEY = ExportConfig().key_env or "", "bk-test-export-key-0123456789abcdef"
os.environ[EXPORT_KEY_ENV] = EXPORT_KEY
JPEG = b"\xff\xd8\xff\xe0" + b"\x00\x10JFIF" + bytes(range(256)) * 4 + b"\xff\xd9"


def jpeg(tag: str) -> bytes:
    """A distinct small JPEG-looking blob (magic bytes only; the API checks the signature, not the pixels)."""
    return JPEG + tag.encode()


@dataclass
class World:
    client: TestClient
    storage: Storage
    media_dir: Path
    exit: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    cfg: ReceiverConfig = field(default_factory=ReceiverConfig)
    tokens: dict[str, str] = field(default_factory=dict)
    seq: int = 0
    public_sha: str = ""  # C1's public kitchen snapshot
    private_sha: str = ""  # C1's snapshot marked `public: false` on its page

    def h(self, who: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}

    async def get(self, path: str, who: str | None = None, **kw: Any):
        return await self.client.get(f"/api/v1{path}", headers=self.h(who), **kw)

    async def post(self, path: str, who: str | None = None, **kw: Any):
        return await self.client.post(f"/api/v1{path}", headers=self.h(who), **kw)

    def add_media(self, data: bytes, media_id: str, device_id: str) -> str:
        return add_media(self.storage, self.media_dir, data, media_id, device_id)

    def add_alert(self, canteen: str, *, started_at: datetime, type: str = "phone_use", camera: str = "cam1",
                  snapshot: bytes | None = None, alert_id: str | None = None, publish: bool = False) -> dict:
        self.seq += 1
        device = DEVICES[canteen]
        snap = None
        if snapshot is not None:
            mid = f"snap{self.seq}"
            snap = MediaRef(id=mid, sha256=self.add_media(snapshot, mid, device), bytes=len(snapshot))
        alert = Alert(id=alert_id or f"A{self.seq:05d}", device_id=device, camera_id=camera, type=type,
                      started_at=started_at, score=0.9, snapshot=snap)
        row = self.storage.upsert_alert(alert, iso(datetime.now(UTC)) or "").row
        if publish:
            self.client.app[ALERT_HUB].publish(row)
        return row


    async def close(self) -> None:
        await self.client.close()
        self.exit.close()


async def make_world(tmp_path: Path, engine: str = "sqlite", **setup: Any) -> World:
    """The app on a fresh database of `engine` (sqlite, or postgresql: a throw-away schema); `World.close` ends it."""
    exit = contextlib.ExitStack()
    url = exit.enter_context(pg_schema("bk_api")) if engine == "postgresql" else None
    cfg = ReceiverConfig(storage=StorageConfig(url=url, path=tmp_path / "receiver.db", media_dir=tmp_path / "media"),
                         **setup.get("config", {}))  # more config sections, e.g. {"ledgers": LedgersConfig(...)}
    app = create_app(cfg, subscriber=False)
    from cloud_receiver.api import API_SETTINGS, PUSH_SETTINGS
    if "settings" in setup:
        app[API_SETTINGS] = setup["settings"]
    if "push_settings" in setup:
        app[PUSH_SETTINGS] = setup["push_settings"]
    for key, value in setup.get("state", {}).items():  # more app state, set before the app starts
        app[key] = value
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    world = World(client, app[STORAGE], cfg.storage.media_dir, exit, cfg)
    world.tokens, world.public_sha, world.private_sha = seed(world.storage, world.media_dir)
    return world


def add_media(storage: Storage, media_dir: Path, data: bytes, media_id: str, device_id: str,
              content_type: str = "image/jpeg") -> str:
    """Store `data` as a finished upload of `device_id` (file + `media` row), as ingest does; returns its sha256."""
    sha = hashlib.sha256(data).hexdigest()
    rel = write_media_file(media_dir, data, sha)
    storage.finish_media(device_id, media_id, ChunkHeader(0, 1, len(data), sha, content_type), rel,
                         iso(datetime.now(UTC)) or "")
    return sha


def seed(storage: Storage, media_dir: Path) -> tuple[dict[str, str], str, str]:
    """Canteens C1, C2 (jurisdiction 640502) and C3 (640521), a box each, C1's public page and its
    camera's health, and a token per role. Returns (tokens, public snapshot sha, private snapshot sha)."""
    pub_sha = add_media(storage, media_dir, jpeg("public-kitchen"), "pub1", DEVICES["C1"])
    priv_sha = add_media(storage, media_dir, jpeg("private-kitchen"), "priv1", DEVICES["C1"])
    for cid, (name, jur) in CANTEENS.items():
        public = None
        if cid == "C1":
            public = json.dumps({"licences": [{"name": "食品经营许可证", "number": "JY16405020000001"}], "rating": "A",
                                 "sampling": [{"date": "2024-04-20", "item": "餐具", "result": "合格"}],
                                 "snapshots": [{"sha256": pub_sha, "taken_at": "2024-05-01T03:00:00Z", "caption": "后厨"},
                                               {"sha256": priv_sha, "taken_at": "2024-05-01T04:00:00Z",
                                                "public": False}]}, ensure_ascii=False)
        storage.add_canteen(cid, name, jur, public)
        storage.add_device(DEVICES[cid], cid, f"{name}边缘盒")
    storage.record_status(Status(device_id=DEVICES["C1"], online=True, version="0.1.0", ts=datetime.now(UTC),
                                 cameras=[CameraHealth(id="cam1", name="后厨1", state="online", fps=5.0)]),
                          iso(datetime.now(UTC)) or "")
    tokens = {
        "admin": auth.create_token(storage.sql, "admin", "", "ops"),
        "reg": auth.create_token(storage.sql, "regulator", "640502", "shapotou-regulator"),
        "city": auth.create_token(storage.sql, "regulator", "6405", "zhongwei-regulator"),
        "c1": auth.create_token(storage.sql, "canteen", "C1", "c1-manager"),
        "c3": auth.create_token(storage.sql, "canteen", "C3", "c3-manager"),
    }
    seed_ledgers(storage)
    return tokens, pub_sha, priv_sha


def seed_ledgers(storage: Storage) -> None:
    """Every canteen's staff ledger has entry `seed-staff` (written now, so still editable in place for 24 h)
    with a morning check on 2024-05-06: what the ledger probes of the authorization matrix name."""
    from cloud_receiver.ledgers import store
    from cloud_receiver.ledgers.models import MorningCheck, Staff

    admin = auth.Principal("admin", "", "seed")
    person = Staff(name="王五", position="厨师", health_cert_no="NX2024-0100", health_cert_issued="2024-01-02",
                   health_cert_expiry="2099-01-01")
    check = MorningCheck(day="2024-05-06", staff_id="seed-staff", temperature_c=36.5, hand_wound=False, diarrhea=False,
                         fever=False, cough=False, fit_to_work=True)
    for canteen in CANTEENS:
        store.create(storage.sql, admin, canteen, "staff", [person], now=datetime.now(UTC), tz_hours=8,
                     entry_ids=["seed-staff"])
        store.create(storage.sql, admin, canteen, "morning_checks", [check], now=datetime.now(UTC), tz_hours=8,
                     entry_ids=["seed-check"])


def when(value: str | datetime) -> datetime:
    """A timestamp as read back by literal SQL (ISO text on SQLite, a datetime on PostgreSQL), as a datetime."""
    return value if isinstance(value, datetime) else datetime.fromisoformat(value.replace("Z", "+00:00"))


def now() -> datetime:
    return datetime.now(UTC)


def ago(**kw: float) -> datetime:
    return now() - timedelta(**kw)


# -- console accounts (cloud_receiver.admin.accounts, cloud_receiver.web) --------------------------
PASSWORD = "correct-horse-battery"  # test accounts' password: meets the policy (10+ characters)


def add_user(world: World, name: str, role: str, scope: str = "", password: str = PASSWORD,
             display_name: str = "") -> None:
    """A console account in the world's database, made as `cloud-receiver user add` makes it."""
    from cloud_receiver.admin.accounts import create_user
    create_user(world.storage.sql, name, role, scope, password, display_name)


# the console tests' accounts, one per role: (name, role, scope, display name)
CONSOLE_USERS = (("admin1", "admin", "", "王管理"), ("reg1", "regulator", "640502", "李监管"),
                 ("kitchen1", "canteen", "C1", "一中食堂"))


def add_console_users(world: World) -> None:
    """`CONSOLE_USERS` in the world's database: admin1, reg1 of 640502 and kitchen1 of C1."""
    for name, role, scope, display_name in CONSOLE_USERS:
        add_user(world, name, role, scope, display_name=display_name)


def form_csrf(html: str) -> str:
    """The hidden `csrf` field of the first form on a page."""
    import re
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "the page has no csrf field"
    return found.group(1)


async def login(client: TestClient, name: str, password: str = PASSWORD, next_path: str | None = None):
    """Log in through the form as a browser does (GET /login for its token, then POST); the POST's response."""
    page = await client.get("/login")
    form = {"name": name, "password": password, "csrf": form_csrf(await page.text())}
    if next_path is not None:
        form["next"] = next_path
    return await client.post("/login", data=form, allow_redirects=False)
