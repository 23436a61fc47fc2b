"""The command endpoints' answers to bad input, scope and role, without a broker (both engines)."""

from __future__ import annotations

import pytest
from support.api_kit import DEVICES

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("body", "needle"), [
    ({"name": "format_disk"}, "name"),
    ({"name": "status", "ttl_s": 99999}, "ttl_s"),
    ({"name": "status", "ttl_s": "soon"}, "ttl_s"),
    ({"name": "snapshot_now", "camera_id": "cam 1"}, "camera_id"),
    ({"name": "status", "extra": 1}, "extra"),
])
async def test_bad_command_bodies_are_400_naming_the_field(world, body, needle):
    """A body outside the schema is refused with 400 and the field named."""
    r = await world.post(f"/devices/{DEVICES['C1']}/commands", "admin", json=body)
    assert r.status == 400 and needle in (await r.json())["error"]["message"]


async def test_scope_role_and_no_broker(world):
    """Out of scope is 404, a role's forbidden command 403, and an allowed one 503 without MQTT, recorded nowhere."""
    assert (await world.post(f"/devices/{DEVICES['C3']}/commands", "reg", json={"name": "status"})).status == 404
    assert (await world.post(f"/devices/{DEVICES['C1']}/commands", "reg", json={"name": "config_push"})).status == 403
    r = await world.post(f"/devices/{DEVICES['C1']}/commands", "reg", json={"name": "status"})
    assert r.status == 503 and "MQTT" in (await r.json())["error"]["message"]
    assert world.storage.sql.rows("SELECT id FROM commands") == []
    assert (await world.get(f"/devices/{DEVICES['C1']}/commands/nope", "admin")).status == 404
