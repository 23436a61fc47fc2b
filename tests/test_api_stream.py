"""Server-sent events of new alerts, filtered by role."""

from __future__ import annotations

import asyncio
import itertools
import json

import pytest
import sqlalchemy as sa
from support.api_kit import ago, make_world

from cloud_receiver.api import ApiSettings

pytestmark = pytest.mark.unit


@pytest.fixture
async def world(tmp_path, db_engine):
    w = await make_world(tmp_path, db_engine, settings=ApiSettings(sse_keepalive_s=0.1))
    yield w
    await w.close()


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
    from cloud_receiver.appkeys import ALERT_HUB
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
    from cloud_receiver.appkeys import ALERT_HUB
    hub = world.client.app[ALERT_HUB]
    resp = await _open(world, "admin")
    row = world.add_alert("C1", started_at=ago(minutes=1), alert_id="F1")
    for _ in range(hub.queue_size + 50):  # in one go: the stream cannot read in between
        hub.publish(row)
    assert hub.dropped >= 50
    assert await _resync_reason(resp) == "client_too_slow"
    resp.close()


async def test_stream_ticket_opens_the_stream_without_a_header_until_its_token_is_revoked(world):
    """A browser EventSource cannot send headers: a ticket in the URL opens the stream with the token's rights,
    works again for reconnects (with last_event_id), and stops working when the token is revoked or it expires."""
    from cloud_receiver.admin import auth
    from cloud_receiver.api import API_CONTEXT
    r = await world.client.post("/api/v1/alerts/stream/tickets", headers=world.h("c3"))
    assert r.status == 200
    body = await r.json()
    assert body["ticket"].startswith("bkt_") and body["expires_in_s"] == 12 * 3600
    assert body["url"] == f"/api/v1/alerts/stream?ticket={body['ticket']}"
    ids: list[str] = []
    resp = await world.client.get(body["url"])  # no Authorization header
    assert resp.status == 200
    world.add_alert("C1", started_at=ago(minutes=1), alert_id="T1", publish=True)  # not the canteen's
    world.add_alert("C3", started_at=ago(minutes=1), alert_id="T3", publish=True)
    [(_, data)] = await _events(resp, 1, ids=ids)
    assert data["id"] == "T3"
    resp.close()
    world.add_alert("C3", started_at=ago(minutes=1), alert_id="T4", publish=True)
    resp = await world.client.get(body["url"] + f"&last_event_id={ids[-1]}")  # a new EventSource resumes
    [(_, data)] = await _events(resp, 1)
    assert data["id"] == "T4"
    resp.close()
    # the ticket opens nothing else, and cannot make tickets
    assert (await world.client.get(f"/api/v1/alerts?ticket={body['ticket']}")).status == 401
    assert (await world.client.post(f"/api/v1/alerts/stream/tickets?ticket={body['ticket']}")).status == 401
    bad = await world.client.get("/api/v1/alerts/stream?ticket=bkt_forged")
    assert bad.status == 401 and (await bad.json())["error"]["code"] == "invalid_ticket"
    auth.revoke_token(world.storage.sql, "c3-manager")
    assert (await world.client.get(body["url"])).status == 401
    # expiry
    tickets = world.client.app[API_CONTEXT].tickets
    now = [1000.0]
    tickets.clock = lambda: now[0]
    fresh = (await (await world.client.post("/api/v1/alerts/stream/tickets", headers=world.h("reg"))).json())["ticket"]
    now[0] += tickets.ttl_s + 1
    assert (await world.client.get(f"/api/v1/alerts/stream?ticket={fresh}")).status == 401


def _ticket_db(tmp_path):
    """A migrated SQLite database for StreamTickets (its `sql`), and a clock that moves one second per reading."""
    from cloud_receiver.storage.sqlite import SqliteStorage
    storage = SqliteStorage(tmp_path / "tickets.db")
    seconds = itertools.count(1_000_000)
    return storage, lambda: float(next(seconds))


def test_tickets_are_stored_as_digests_and_bounded(tmp_path):
    """Only a ticket's digest reaches the database, and at most `max_tickets` live at once (the oldest go)."""
    from cloud_receiver.admin.auth import StreamTickets, token_digest
    from cloud_receiver.storage.schema import stream_tickets
    storage, clock = _ticket_db(tmp_path)
    t = StreamTickets(storage.sql, ttl_s=60, clock=clock, max_tickets=3)
    made = [t.issue(f"sha{n}") for n in range(5)]
    rows = storage.sql.all(sa.select(stream_tickets))
    assert len(rows) == 3 and all(m not in repr(rows) for m in made)
    assert token_digest(made[4]) in {r["ticket_sha256"] for r in rows}
    assert [t.token_sha256(m) for m in made] == [None, None, "sha2", "sha3", "sha4"]
    storage.close()


def test_one_token_cannot_crowd_out_the_others_tickets(tmp_path):
    """A token holding `per_token` tickets loses its oldest to a new one; another token's ticket stays."""
    from cloud_receiver.admin.auth import StreamTickets
    storage, clock = _ticket_db(tmp_path)
    t = StreamTickets(storage.sql, clock=clock, max_tickets=100, per_token=5)
    theirs = t.issue("victim")
    mine = [t.issue("greedy") for _ in range(30)]
    assert t.token_sha256(theirs) == "victim"
    assert [t.token_sha256(m) for m in mine[-5:]] == ["greedy"] * 5 and t.token_sha256(mine[0]) is None
    storage.close()


def test_tickets_are_shared_through_the_database_and_expired_ones_purged(tmp_path):
    """A ticket one receiver issued opens on another over the same database; an expired one is refused, then purged."""
    from cloud_receiver.admin.auth import StreamTickets
    from cloud_receiver.storage.schema import stream_tickets
    storage, _ = _ticket_db(tmp_path)
    now = [1_000_000.0]
    a = StreamTickets(storage.sql, ttl_s=60, clock=lambda: now[0])
    b = StreamTickets(storage.sql, ttl_s=60, clock=lambda: now[0])
    ticket = a.issue("sha-a")
    assert b.token_sha256(ticket) == "sha-a"
    now[0] += 61
    assert b.token_sha256(ticket) is None
    b.issue("sha-b")
    assert [r["token_sha256"] for r in storage.sql.all(sa.select(stream_tickets))] == ["sha-b"]
    storage.close()


async def test_odd_last_event_ids_resync_and_the_stream_goes_on(world):
    """An id ahead of the hub, or with digits int() would choke on: `resync`, then every live event."""
    from cloud_receiver.appkeys import ALERT_HUB
    hub = world.client.app[ALERT_HUB]
    for last_id in (f"{hub.epoch}-{hub.seq + 50}", f"{hub.epoch}-²", f"{hub.epoch}-" + "9" * 5000):
        resp = await _open(world, "admin", **{"Last-Event-ID": last_id})
        assert await _resync_reason(resp) == "unknown_event_id"
        world.add_alert("C1", started_at=ago(minutes=1), alert_id=f"O{hub.seq}", publish=True)
        [(_, data)] = await _events(resp, 1)
        assert data["id"] == f"O{hub.seq - 1}"
        resp.close()


async def test_an_open_stream_ends_when_its_token_is_revoked(world):
    """The token is checked again while the stream is open (every keepalive interval)."""
    from cloud_receiver.admin import auth
    resp = await _open(world, "c3")
    auth.revoke_token(world.storage.sql, "c3-manager")
    await asyncio.wait_for(resp.content.read(), 5)  # returns only at the end of the stream: the server ended it
    assert resp.content.at_eof()
    assert (await world.client.get("/api/v1/alerts/stream", headers=world.h("c3"))).status == 401


async def test_events_for_others_still_move_the_resume_point(world):
    """A canteen's stream on a busy hub gets id-only lines, so a reconnect does not fall out of the history."""
    from cloud_receiver.appkeys import ALERT_HUB
    hub = world.client.app[ALERT_HUB]
    resp = await _open(world, "c3")
    row = world.add_alert("C1", started_at=ago(minutes=1), alert_id="BUSY")
    for _ in range(100):
        hub.publish(row)  # none of them for C3
    line = b""
    while not line.startswith(b"id: "):
        line = await asyncio.wait_for(resp.content.readline(), 5)
    assert line.decode().strip() == f"id: {hub.epoch}-{hub.seq}"
    assert await resp.content.readline() == b"\n"  # no data: nothing is dispatched, only lastEventId moves
    resp.close()
