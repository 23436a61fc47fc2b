"""Server-sent events of new alerts, filtered by role."""

from __future__ import annotations

import asyncio
import json

import pytest
from api_kit import ago, make_world

from cloud_receiver.api import ApiSettings


@pytest.fixture
async def world(tmp_path):
    w = await make_world(tmp_path, settings=ApiSettings(sse_keepalive_s=0.1))
    yield w
    await w.client.close()


async def _events(resp, n: int, timeout: float = 5.0) -> list[tuple[str, dict]]:
    """Read `n` events (skipping comments) from an open SSE response."""
    out: list[tuple[str, dict]] = []
    event = None
    while len(out) < n:
        line = (await asyncio.wait_for(resp.content.readline(), timeout)).decode().rstrip("\n")
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            out.append((event, json.loads(line[6:])))
    return out


async def test_stream_delivers_visible_new_alerts_only(world):
    """A regulator's stream gets the new C1 alert, not the C3 one outside its jurisdiction."""
    resp = await world.get("/alerts/stream", "reg")
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
    assert (await resp.content.readline()).startswith(b": connected")
    world.add_alert("C3", started_at=ago(minutes=1), alert_id="S3", publish=True)
    world.add_alert("C1", started_at=ago(minutes=1), alert_id="S1", publish=True, type="animal")
    [(event, data)] = await _events(resp, 1)
    assert event == "alert" and data["id"] == "S1" and data["type_name"] == "动物/鼠患"
    assert data["status"] == "待整改" and data["canteen_id"] == "C1"
    resp.close()


async def test_stream_canteen_and_keepalive(world):
    """A canteen's stream carries only its own alerts, and keepalive comments while idle."""
    resp = await world.get("/alerts/stream", "c3")
    await resp.content.readline()
    await resp.content.readline()
    line = await asyncio.wait_for(resp.content.readline(), 2)
    assert line.startswith(b": keepalive")
    world.add_alert("C1", started_at=ago(minutes=1), alert_id="K1", publish=True)
    world.add_alert("C3", started_at=ago(minutes=1), alert_id="K3", publish=True)
    [(event, data)] = await _events(resp, 1)
    assert data["id"] == "K3"
    resp.close()


async def test_stream_needs_token(world):
    """The stream is not public."""
    assert (await world.get("/alerts/stream")).status == 401
