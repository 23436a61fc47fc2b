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


async def _events(resp, n: int, timeout: float = 5.0, ids: list[str] | None = None) -> list[tuple[str, dict]]:
    """Read `n` events (skipping comments) from an open SSE response; their ids go to `ids`."""
    out: list[tuple[str, dict]] = []
    event = None
    while len(out) < n:
        line = (await asyncio.wait_for(resp.content.readline(), timeout)).decode().rstrip("\n")
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("id: ") and ids is not None:
            ids.append(line[4:])
        elif line.startswith("data: "):
            out.append((event, json.loads(line[6:])))
    return out


async def _open(world, who: str, **headers: str):
    """GET the stream and read up to its `: connected` comment (after the `retry:` advice)."""
    resp = await world.client.get("/api/v1/alerts/stream", headers={**world.h(who), **headers})
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
    assert await asyncio.wait_for(resp.content.readline(), 5) == b"retry: 3000\n"
    assert (await resp.content.readline()).startswith(b": connected")
    return resp


async def test_stream_delivers_visible_new_alerts_only(world):
    """A regulator's stream gets the new C1 alert, not the C3 one outside its jurisdiction."""
    resp = await _open(world, "reg")
    world.add_alert("C3", started_at=ago(minutes=1), alert_id="S3", publish=True)
    world.add_alert("C1", started_at=ago(minutes=1), alert_id="S1", publish=True, type="animal")
    [(event, data)] = await _events(resp, 1)
    assert event == "alert" and data["id"] == "S1" and data["type_name"] == "动物/鼠患"
    assert data["status"] == "待整改" and data["canteen_id"] == "C1"
    resp.close()


async def test_stream_canteen_and_keepalive(world):
    """A canteen's stream carries only its own alerts, and keepalive comments while idle."""
    resp = await _open(world, "c3")
    await resp.content.readline()  # the blank line ending the connected comment
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


async def test_reconnect_with_last_event_id_gets_what_was_missed_once(world):
    """Events published while a client was away come first after it reconnects with Last-Event-ID, in order,
    then live ones; none twice, and none the client may not see."""
    ids: list[str] = []
    resp = await _open(world, "reg")
    world.add_alert("C1", started_at=ago(minutes=1), alert_id="R1", publish=True)
    [(_, first)] = await _events(resp, 1, ids=ids)
    resp.close()
    assert first["id"] == "R1"
    world.add_alert("C1", started_at=ago(minutes=1), alert_id="R2", publish=True)
    world.add_alert("C3", started_at=ago(minutes=1), alert_id="R3", publish=True)  # not the regulator's
    world.add_alert("C2", started_at=ago(minutes=1), alert_id="R4", publish=True)
    resp = await _open(world, "reg", **{"Last-Event-ID": ids[-1]})
    world.add_alert("C1", started_at=ago(minutes=1), alert_id="R5", publish=True)
    got = await _events(resp, 3, ids=ids)
    assert [d["id"] for _, d in got] == ["R2", "R4", "R5"]
    seqs = [int(i.split("-")[1]) for i in ids]
    assert seqs == sorted(seqs) and len(set(ids)) == 4 and len({i.split("-")[0] for i in ids}) == 1
    resp.close()


async def _resync_reason(resp) -> str:
    event = None
    while True:
        line = (await asyncio.wait_for(resp.content.readline(), 5)).decode().rstrip("\n")
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: ") and event == "resync":
            data = json.loads(line[6:])
            assert data["reload"] == "/api/v1/alerts"
            return data["reason"]


async def test_resync_when_the_missed_events_cannot_be_given(world):
    """Another run's id, a foreign id, a gap longer than the hub's history: `resync`, then the live stream."""
    from cloud_receiver.app import ALERT_HUB
    hub = world.client.app[ALERT_HUB]
    for last_id, reason in [("0badc0de-5", "receiver_restarted"), ("nonsense", "unknown_event_id")]:
        resp = await _open(world, "admin", **{"Last-Event-ID": last_id})
        assert await _resync_reason(resp) == reason
        resp.close()
    row = world.add_alert("C1", started_at=ago(minutes=1), alert_id="G1")
    hub.publish(row)
    first = f"{hub.epoch}-{hub.seq}"
    for _ in range(hub.history + 1):  # the history moves past `first`
        hub.publish(row)
    resp = await _open(world, "admin", **{"Last-Event-ID": first})
    assert await _resync_reason(resp) == "gap_too_long"
    world.add_alert("C1", started_at=ago(minutes=1), alert_id="G2", publish=True)
    [(_, data)] = await _events(resp, 1)
    assert data["id"] == "G2"
    resp.close()


async def test_a_client_too_slow_for_its_queue_is_told_to_resync(world):
    """Rows dropped for a stream that fell behind are not silent: `resync` with reason client_too_slow."""
    from cloud_receiver.app import ALERT_HUB
    hub = world.client.app[ALERT_HUB]
    resp = await _open(world, "admin")
    row = world.add_alert("C1", started_at=ago(minutes=1), alert_id="F1")
    for _ in range(hub.queue_size + 50):  # in one go: the stream cannot read in between
        hub.publish(row)
    assert hub.dropped >= 50
    assert await _resync_reason(resp) == "client_too_slow"
    resp.close()
