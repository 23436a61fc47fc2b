"""Roles and scopes of the API: admin, regulator (jurisdiction prefix), canteen, public."""

from __future__ import annotations

import hashlib

import pytest
from support.api_kit import ago, jpeg, make_world

from cloud_receiver.admin import auth

pytestmark = pytest.mark.unit

PROTECTED = ["/alerts", "/alerts/A00001", "/devices", "/cameras", "/canteens", "/stats", "/alerts/stream"]


@pytest.fixture
async def world(tmp_path, db_engine):
    w = await make_world(tmp_path, db_engine)
    w.add_alert("C1", started_at=ago(hours=3), snapshot=jpeg("c1-snap"))  # A00001
    w.add_alert("C2", started_at=ago(hours=2), snapshot=jpeg("c2-snap"))  # A00002
    w.add_alert("C3", started_at=ago(hours=1), snapshot=jpeg("c3-snap"))  # A00003
    yield w
    await w.close()


async def _ids(w, who, query=""):
    r = await w.get(f"/alerts{query}", who)
    assert r.status == 200, await r.text()
    return sorted(a["id"] for a in (await r.json())["items"])


@pytest.mark.parametrize("path", PROTECTED)
async def test_no_token_is_401(world, path):
    """Every non-public endpoint answers 401 with a JSON error without a token."""
    r = await world.get(path)
    assert r.status == 401
    body = await r.json()
    assert body["error"]["code"] == "unauthenticated" and "Bearer" in body["error"]["message"]


async def test_invalid_and_revoked_token_is_401(world):
    """An unknown token and a revoked one are both refused with 401."""
    r = await world.client.get("/api/v1/alerts", headers={"Authorization": "Bearer bk_nope"})
    assert r.status == 401 and (await r.json())["error"]["code"] == "invalid_token"
    assert auth.revoke_token(world.storage.sql, "c1-manager") == 1
    r = await world.get("/alerts", "c1")
    assert r.status == 401


async def test_tokens_stored_as_hash_only(world):
    """The database holds the token's sha256, never the token itself."""
    rows = world.storage.sql.rows("SELECT * FROM tokens")
    assert len(rows) == 5
    dump = repr(rows)
    for token in world.tokens.values():
        assert token not in dump
        assert hashlib.sha256(token.encode()).hexdigest() in dump


async def test_canteen_sees_only_its_own_alerts(world):
    """A canteen token lists only its canteen, gets 404 for another's alert and 403 filtering another canteen."""
    assert await _ids(world, "c1") == ["A00001"]
    assert (await world.get("/alerts/A00002", "c1")).status == 404
    assert (await world.get("/alerts/A00001", "c1")).status == 200
    r = await world.get("/alerts?canteen=C2", "c1")
    assert r.status == 403 and (await r.json())["error"]["code"] == "forbidden"
    devices = (await (await world.get("/devices", "c1")).json())["items"]
    assert [d["canteen_id"] for d in devices] == ["C1"]


async def test_regulator_sees_only_jurisdiction(world):
    """A regulator of 640502 sees C1 and C2 but not C3 (640521); the city regulator sees all three."""
    assert await _ids(world, "reg") == ["A00001", "A00002"]
    assert (await world.get("/alerts/A00003", "reg")).status == 404
    assert await _ids(world, "reg", "?canteen=C3") == []
    assert await _ids(world, "city") == ["A00001", "A00002", "A00003"]
    assert await _ids(world, "admin") == ["A00001", "A00002", "A00003"]
    canteens = (await (await world.get("/canteens", "reg")).json())["items"]
    assert [c["id"] for c in canteens] == ["C1", "C2"]


async def test_media_checked_through_alert(world):
    """An alert snapshot downloads for roles that see the alert and is 404 for others and the public."""
    sha = world.storage.get_alert("A00001")["snapshot_sha256"]
    r = await world.get(f"/media/{sha}", "c1")
    assert r.status == 200 and await r.read() == jpeg("c1-snap")
    assert (await world.get(f"/media/{sha}", "reg")).status == 200
    assert (await world.get(f"/media/{sha}", "c3")).status == 404
    assert (await world.get(f"/media/{sha}")).status == 404
    assert (await world.get("/media/not-a-hash", "admin")).status == 400


async def test_public_page_shows_public_data_only(world):
    """The public page has name, licences, rating and public snapshots, and nothing private."""
    r = await world.get("/public/canteens/C1")
    assert r.status == 200
    body = await r.json()
    assert set(body) == {"id", "name", "licences", "rating", "sampling", "snapshots"}
    assert body["name"] == "第一中学食堂" and body["rating"] == "A"
    assert [s["sha256"] for s in body["snapshots"]] == [world.public_sha]
    text = await r.text()
    assert "A00001" not in text and "jurisdiction" not in text and world.private_sha not in text
    assert body["snapshots"][0]["url"] == f"/p/C1/snapshots/{world.public_sha}.jpg"  # the blurred copy
    assert (await world.get(f"/media/{world.public_sha}")).status == 404  # never the original without a login
    assert (await world.get(f"/media/{world.private_sha}")).status == 404
    assert (await world.get("/public/canteens/NOPE")).status == 404


@pytest.mark.parametrize(("role", "scope"), [("regulator", "64x"), ("canteen", ""), ("root", ""),
                                             ("canteen", "NOPE")])
async def test_create_token_validates(world, role, scope):
    """Token creation refuses bad roles, malformed scopes and unknown canteens."""
    with pytest.raises(auth.AuthError):
        auth.create_token(world.storage.sql, role, scope, "someone")


async def test_errors_are_json(world):
    """Unknown endpoints and wrong methods answer a JSON error body."""
    r = await world.get("/nothing-here", "admin")
    assert r.status == 404 and (await r.json())["error"]["code"] == "not_found"
    r = await world.client.delete("/api/v1/alerts", headers=world.h("admin"))
    assert r.status == 405 and (await r.json())["error"]["code"] == "method_not_allowed"
