"""The three leaks of issue 9, each replayed as the attacker: another kitchen's picture through a forged
alert, a script stored as a "snapshot", and a canteen taking its own public page down."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

import pytest
from support.api_kit import CANTEENS, DEVICES, add_media, ago, jpeg

from bk_contract import Alert, MediaRef, split_media, topic
from cloud_receiver.admin import auth
from cloud_receiver.app.factory import open_configured_storage
from cloud_receiver.config import LimitsConfig
from cloud_receiver.ingest.handler import Ingestor

pytestmark = pytest.mark.unit

HTML = b"<html><script>fetch('/api/v1/alerts',{credentials:'include'})</script></html>"


@pytest.fixture
def ingest(world, tmp_path):
    """The receiver's own ingest on the world's database (its own connection, as the MQTT thread has)."""
    storage = open_configured_storage(world.cfg)
    yield Ingestor(storage, world.media_dir, LimitsConfig(chunk_data_bytes=4096))
    storage.close()


def _alert(device: str, alert_id: str, sha: str) -> bytes:
    return Alert(id=alert_id, device_id=device, camera_id="cam1", type="phone_use", started_at=ago(minutes=5),
                 snapshot=MediaRef(id=sha[:32], sha256=sha, bytes=100)).model_dump_json().encode()


def _upload(ingest: Ingestor, device: str, data: bytes, content_type: str = "image/jpeg") -> tuple[str, list]:
    sha, chunks = split_media(data, content_type, 4096)
    return sha, [ingest.handle(topic(device, "media", media_id=sha[:32], seq=i), c) for i, c in enumerate(chunks)]


async def test_a_box_cannot_claim_another_kitchens_snapshot(world, ingest):
    """C3's box names C1's snapshot in an alert: the alert is rejected with a reason, and neither C3 nor its
    regulator can download the picture, while C1 and C1's regulator still can."""
    victim, _ = _upload(ingest, DEVICES["C1"], jpeg("c1 kitchen, private"))
    result = ingest.handle(topic(DEVICES["C3"], "alert"), _alert(DEVICES["C3"], "FORGED", victim))
    assert result.outcome == "rejected"
    assert f"snapshot {victim} was uploaded by another device" in result.reason
    reject = ingest.storage.list_rejects(1)[0]
    assert reject["device_id"] == DEVICES["C3"] and "another device" in reject["reason"]
    assert ingest.storage.get_alert("FORGED") is None
    # an alert row naming the hash (stored before this check existed) grants nothing either
    stamp = datetime(2024, 5, 1, tzinfo=UTC)
    world.storage.sql.rows("INSERT INTO alerts (id, device_id, canteen_id, camera_id, type, level, state, rev,"
                           " started_at, snapshot_sha256, received_at, updated_at) VALUES ('OLD', :dev, 'C3', 'cam1',"
                           " 'phone_use', 'warning', 'start', 0, :at, :sha, :at, :at)",
                           dev=DEVICES["C3"], sha=victim, at=stamp)
    assert (await world.get("/alerts/OLD", "c3")).status == 200  # the row itself is C3's
    for who, status in (("c3", 404), ("c1", 200), ("reg", 200), ("admin", 200), (None, 404)):
        r = await world.get(f"/media/{victim}", who)
        assert r.status == status, (who, await r.text())
    # a regulator of C3's jurisdiction only (640521) cannot either
    reg3 = auth.create_token(world.storage.sql, "regulator", "640521", "zhongning-regulator")
    r = await world.client.get(f"/api/v1/media/{victim}", headers={"Authorization": f"Bearer {reg3}"})
    assert r.status == 404


async def test_own_media_named_before_or_after_upload_is_accepted(world, ingest):
    """The honest order (alert first, media after) and the reverse both work, and the device's canteen reads it."""
    data = jpeg("c3 kitchen")
    sha = hashlib.sha256(data).hexdigest()
    assert ingest.handle(topic(DEVICES["C3"], "alert"), _alert(DEVICES["C3"], "EARLY", sha)).outcome == "stored"
    _, outcomes = _upload(ingest, DEVICES["C3"], data)
    assert [o.outcome for o in outcomes] == ["stored"]
    assert ingest.handle(topic(DEVICES["C3"], "alert"), _alert(DEVICES["C3"], "LATE", sha)).outcome == "stored"
    assert (await world.get(f"/media/{sha}", "c3")).status == 200
    assert (await world.get(f"/media/{sha}", "c1")).status == 404
    # the same bytes uploaded by another box too: each canteen may read its own upload
    _, outcomes = _upload(ingest, DEVICES["C1"], data)
    assert [o.outcome for o in outcomes] == ["stored"]
    assert (await world.get(f"/media/{sha}", "c1")).status == 200


@pytest.mark.parametrize(("content_type", "data", "reason"), [
    ("text/html", HTML, "is not accepted; the contract allows image/jpeg, video/mp4"),
    ("image/svg+xml", b"<svg onload='alert(1)'/>", "is not accepted"),
    ("image/jpeg", HTML, "declared image/jpeg but the bytes do not start with a JPEG SOI marker"),
    ("video/mp4", jpeg("not a clip"), "declared video/mp4 but the bytes do not start with an MP4 'ftyp' box"),
])
async def test_a_box_cannot_store_a_script_as_media(world, ingest, content_type, data, reason):
    """Media of a type the contract does not allow, or whose bytes are not what it claims, is rejected."""
    sha, outcomes = _upload(ingest, DEVICES["C1"], data, content_type)
    assert outcomes[-1].outcome == "rejected" and reason in outcomes[-1].reason
    assert ingest.storage.media_uploaders(sha) == set() and ingest.storage.count("media_chunks") == 0
    assert (await world.get(f"/media/{sha}", "admin")).status == 404


async def test_clips_and_snapshots_of_the_contract_types_are_stored(ingest):
    """A JPEG snapshot and an MP4 clip (ftyp box first) pass the byte check."""
    mp4 = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + bytes(5000)
    for data, ctype in ((jpeg("ok"), "image/jpeg"), (mp4, "video/mp4")):
        sha, outcomes = _upload(ingest, DEVICES["C1"], data, ctype)
        assert outcomes[-1].outcome == "stored" and ingest.storage.media_uploaders(sha) == {DEVICES["C1"]}


async def test_media_stored_before_the_check_is_never_served_as_html(world):
    """An HTML file stored as text/html before types were checked comes back as an attachment of type
    application/octet-stream with nosniff and a sandboxing CSP; on the public page it is not served at all."""
    sha = add_media(world.storage, world.media_dir, HTML, "old1", DEVICES["C1"], content_type="text/html")
    page = json.dumps({"snapshots": [{"sha256": sha, "taken_at": "2024-05-01T00:00:00Z"}]})
    world.storage.add_canteen("C1", CANTEENS["C1"][0], CANTEENS["C1"][1], page)
    assert (await world.get(f"/media/{sha}")).status == 404  # the public gets blurred copies only, of pictures
    assert (await world.client.get(f"/p/C1/snapshots/{sha}.jpg")).status == 404
    for who in ("c1", "reg"):
        r = await world.get(f"/media/{sha}", who)
        assert r.status == 200 and await r.read() == HTML
        assert r.headers["Content-Type"] == "application/octet-stream"
        assert r.headers["Content-Disposition"].startswith("attachment")
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert "sandbox" in r.headers["Content-Security-Policy"]
    # a picture whose stored type lies (text/html) is not trusted either
    liar = add_media(world.storage, world.media_dir, jpeg("typed wrong"), "old2", DEVICES["C1"], content_type="text/html")
    r = await world.get(f"/media/{liar}", "c1")
    assert r.headers["Content-Type"] == "application/octet-stream"


async def test_a_real_snapshot_is_served_inline_as_jpeg(world):
    """A checked JPEG keeps its type, inline, with its name, nosniff and the sandboxing CSP."""
    r = await world.get(f"/media/{world.public_sha}", "c1")
    assert r.status == 200 and r.headers["Content-Type"] == "image/jpeg"
    assert r.headers["Content-Disposition"] == f'inline; filename="{world.public_sha}.jpg"'
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["Content-Security-Policy"] == "default-src 'none'; sandbox"


@pytest.mark.parametrize("path", ["/api/v1/alerts", "/api/v1/openapi.json", "/api/v1/public/canteens/C1",
                                  "/api/v1/nothing", "/api/v1/public/canteens/NOPE", "/healthz", "/elsewhere"])
async def test_every_response_says_nosniff_and_has_a_csp(world, path):
    """JSON answers, errors, aiohttp's own 404 and /healthz all carry nosniff and a Content-Security-Policy."""
    r = await world.client.get(path, headers=world.h("admin"))
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert "default-src 'none'" in r.headers["Content-Security-Policy"]


@pytest.mark.parametrize(("body", "field"), [
    ({"snapshots": None}, "snapshots"), ({"licences": None}, "licences"), ({"sampling": None}, "sampling"),
    ({"snapshots": "x"}, "snapshots"), ({"licences": {"name": "a"}}, "licences"), ({"rating": 5}, "rating"),
    ({"rating": ["A"]}, "rating"), ({"snapshots": [None]}, "snapshots.0"), ({"sampling": [1]}, "sampling.0"),
    ({"snapshots": [{"sha256": "a" * 64, "taken_at": 1714521600}]}, "snapshots.0.taken_at"),
    ({"snapshots": [{"sha256": "a" * 64, "taken_at": "2024-05-01T00:00:00"}]}, "snapshots.0.taken_at"),
    ({"licences": [{"name": "许可证", "number": 5}]}, "licences.0.number"),
    ({}, "nothing to change"), ([], "(body)"), (None, "(body)"), ("x", "(body)"),
])
async def test_a_canteen_cannot_break_its_public_page(world, body, field):
    """Nulls, empty bodies and wrong types are 400 naming the field; nothing is stored; the page still reads."""
    before = world.storage.get_canteen("C1")["public_json"]
    r = await world.client.patch("/api/v1/canteens/C1/public", data=json.dumps(body),
                                 headers={**world.h("c1"), "Content-Type": "application/json"})
    err = (await r.json())["error"]
    assert r.status == 400 and field in err["message"], err
    assert world.storage.get_canteen("C1")["public_json"] == before
    assert (await world.get("/public/canteens/C1")).status == 200


async def test_an_empty_or_plain_text_body_is_refused(world):
    """An empty JSON body is 400; a body not sent as JSON is 415 (never parsed as JSON)."""
    r = await world.client.patch("/api/v1/canteens/C1/public", headers={**world.h("c1"),
                                                                        "Content-Type": "application/json"}, data=b"")
    assert r.status == 400
    r = await world.client.patch("/api/v1/canteens/C1/public", headers={**world.h("c1"), "Content-Type": "text/plain"},
                                 data=b'{"licences": []}')
    assert r.status == 415 and (await r.json())["error"]["code"] == "unsupported_media_type"


@pytest.mark.parametrize("stored", [
    "null", "[]", "5", '"text"', "not json", '{"snapshots": null, "licences": null, "sampling": null}',
    '{"licences": "x", "sampling": {"a": 1}, "rating": 5}', '{"snapshots": [1, "x", null, {"sha256": 5}]}',
    '{"snapshots": [{"sha256": "zz", "taken_at": "yesterday"}], "licences": [{"name": ""}]}',
    '{"sampling": [{"date": "2024-02-30", "item": "x", "result": "y"}], "rating": "A+"}',
    "[" * 100_000 + "]" * 100_000,
])
async def test_stored_data_never_makes_the_public_page_fail(world, stored):
    """Whatever a row holds, the public page answers 200 with well-formed parts, and a PATCH on top works."""
    world.storage.set_public_json("C2", stored)
    r = await world.get("/public/canteens/C2")
    assert r.status == 200, await r.text()
    page = await r.json()
    assert page["rating"] in (None, "A", "B", "C")
    assert all(isinstance(x, dict) and x.get("number") for x in page["licences"])
    assert all(s["url"].endswith(s["sha256"]) for s in page["snapshots"])
    r = await world.client.patch("/api/v1/canteens/C2/public", headers=world.h("admin"), json={"rating": "B"})
    assert r.status == 200 and (await r.json())["rating"] == "B"
