"""Limits and noise: SSE streams capped per token and in all, a client leaving is one info line, stream
events carry the canteen name like REST, /healthz tells the public only up or down."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest
import structlog
from support.api_kit import ago, make_world
from support.waiting import async_wait_until

from cloud_receiver.api import API_CONTEXT, ApiSettings
from cloud_receiver.appkeys import SUBSCRIBER

pytestmark = pytest.mark.unit


@pytest.fixture
async def world(tmp_path, db_engine):
    w = await make_world(tmp_path, db_engine, settings=ApiSettings(sse_keepalive_s=0.05, sse_max_streams=3,
                                                        sse_max_streams_per_token=2))
    yield w
    await w.close()


async def _open(world, who: str | None = None, url: str = "/api/v1/alerts/stream"):
    resp = await world.client.get(url, headers=world.h(who))
    if resp.status == 200:
        assert (await asyncio.wait_for(resp.content.readline(), 5)).startswith(b"retry:")
    return resp


def _open_streams(world) -> int:
    return sum(world.client.app[API_CONTEXT].streams.values())


async def test_streams_are_capped_per_token_and_in_all(world):
    """A token's third stream (its tickets included) is 429 with Retry-After; so is the receiver's fourth;
    a closed stream frees its place."""
    ticket = (await (await world.post("/alerts/stream/tickets", "reg")).json())["url"]
    first, second = await _open(world, "reg"), await _open(world, url=ticket)
    third = await _open(world, "reg")
    assert third.status == 429 and third.headers["Retry-After"].isdigit()
    assert "this token already has 2" in (await third.json())["error"]["message"]
    assert (await _open(world, url=ticket)).status == 429
    other = await _open(world, "admin")
    assert other.status == 200
    full = await _open(world, "c1")
    assert full.status == 429 and "already serves 3" in (await full.json())["error"]["message"]
    first.close()
    assert await async_wait_until(lambda: _open_streams(world) == 2, 5)
    again = await _open(world, "reg")
    assert again.status == 200
    for resp in (second, other, again):
        resp.close()
    assert await async_wait_until(lambda: _open_streams(world) == 0, 5)
    assert world.client.app[API_CONTEXT].streams == {}


async def test_a_client_leaving_is_one_info_line(world):
    """An ordinary disconnect is logged once, at info, without a traceback; nothing is logged as an error."""
    with structlog.testing.capture_logs() as logs:
        resp = await _open(world, "reg")
        resp.close()
        assert await async_wait_until(lambda: any(e["event"] == "sse_client_left" for e in logs), 5)
        assert await async_wait_until(lambda: _open_streams(world) == 0, 5)
    left = [e for e in logs if e["event"] == "sse_client_left"]
    assert len(left) == 1 and left[0]["log_level"] == "info" and "exc_info" not in left[0]
    assert not [e for e in logs if e["log_level"] in ("error", "critical")]


async def test_stream_events_carry_the_canteen_name_like_rest(world):
    """`canteen_name` of an SSE alert event is the canteen's name, as GET /alerts/{id} gives it."""
    resp = await _open(world, "reg")
    world.add_alert("C1", started_at=ago(minutes=1), alert_id="N1", publish=True)
    line = b""
    while not line.startswith(b"data: "):
        line = await asyncio.wait_for(resp.content.readline(), 5)
    resp.close()
    event = json.loads(line[6:])
    rest = await (await world.get("/alerts/N1", "reg")).json()
    assert event["canteen_name"] == rest["canteen_name"] == "第一中学食堂"


class FakeSubscriber:
    """A stand-in for the MQTT subscriber (fake: only the state flags and counts /healthz reads)."""

    def __init__(self) -> None:
        self.connected, self.subscribed = threading.Event(), threading.Event()
        self.connected.set()
        self.subscribed.set()
        self.counts = {"stored": 7, "duplicate": 1, "rejected": 2}


async def test_healthz_down_shows_nothing_else(world):
    """Without a subscriber /healthz is 503 "down", and no token makes it say more than that but an admin's."""
    for who in (None, "reg", "c1"):
        r = await world.client.get("/healthz", headers=world.h(who))
        assert r.status == 503 and await r.json() == {"status": "down"}
    r = await world.client.get("/healthz", headers=world.h("admin"))
    assert (await r.json())["ingest"] == {}


async def test_healthz_is_up_for_the_public_and_detailed_for_admin(tmp_path):
    """With the subscriber up, the public gets {"status": "up"}; an admin token adds MQTT state and ingest counts."""
    world = await make_world(tmp_path, state={SUBSCRIBER: FakeSubscriber()})
    try:
        for who in (None, "reg", "c1"):
            r = await world.client.get("/healthz", headers=world.h(who))
            assert r.status == 200 and await r.json() == {"status": "up"}
        r = await world.client.get("/healthz", headers=world.h("admin"))
        assert await r.json() == {"status": "up", "mqtt_connected": True, "mqtt_subscribed": True,
                                  "ingest": {"stored": 7, "duplicate": 1, "rejected": 2}}
    finally:
        await world.close()
