"""The rectification workflow over HTTP: deadline, submission with photo, review, refusals, overdue."""

from __future__ import annotations

import base64

import aiohttp
import pytest
from support.api_kit import ago, jpeg, make_world, now

from cloud_receiver.api import ApiSettings

pytestmark = pytest.mark.unit


@pytest.fixture
async def world(tmp_path, db_engine):
    w = await make_world(tmp_path, db_engine, settings=ApiSettings(default_deadline_hours=24, photo_max_bytes=64 * 1024))
    w.add_alert("C1", started_at=ago(hours=1), alert_id="W1")
    w.add_alert("C1", started_at=ago(hours=30), alert_id="OLD")  # past the 24 h default deadline
    w.add_alert("C3", started_at=ago(hours=1), alert_id="W3")
    yield w
    await w.close()


def _form(note: str, photo: bytes) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("note", note)
    form.add_field("photo", photo, filename="fix.jpg", content_type="image/jpeg")
    return form


async def test_full_workflow_over_http(world):
    """Deadline → multipart submission → rejection with new deadline → base64 resubmission → approval."""
    deadline = (now().replace(microsecond=0)).isoformat().replace("+00:00", "Z")
    r = await world.post("/alerts/W1/deadline", "reg", json={"deadline": "2099-01-01T18:00:00+08:00", "note": "限期"})
    assert r.status == 200, await r.text()
    assert (await r.json())["deadline"] == "2099-01-01T10:00:00.000Z"
    r = await world.post("/alerts/W1/rectification", "c1", data=_form("已收起手机并培训", jpeg("fix1")))
    assert r.status == 200, await r.text()
    body = await r.json()
    assert body["status"] == "已整改"
    photo = body["transitions"][-1]["photo_sha256"]
    r = await world.post("/alerts/W1/review", "reg", json={"decision": "reject", "note": "照片看不清",
                                                          "deadline": "2099-02-01T00:00:00Z"})
    body = await r.json()
    assert r.status == 200 and body["status"] == "待整改" and body["deadline"] == "2099-02-01T00:00:00.000Z"
    r = await world.post("/alerts/W1/rectification", "c1",
                         json={"note": "重新拍照", "photo_base64": base64.b64encode(jpeg("fix2")).decode()})
    assert r.status == 200 and (await r.json())["status"] == "已整改"
    r = await world.post("/alerts/W1/review", "reg", json={"decision": "approve", "note": "合格"})
    body = await r.json()
    assert body["status"] == "复核通过"
    steps = [(t["from_status"], t["to_status"], t["role"], t["actor"]) for t in body["transitions"]]
    assert steps == [
        ("待整改", "待整改", "regulator", "shapotou-regulator"),
        ("待整改", "已整改", "canteen", "c1-manager"),
        ("已整改", "驳回", "regulator", "shapotou-regulator"),
        ("驳回", "待整改", "regulator", "shapotou-regulator"),
        ("待整改", "已整改", "canteen", "c1-manager"),
        ("已整改", "复核通过", "regulator", "shapotou-regulator"),
    ]
    assert all(t["at"] >= deadline[:10] for t in body["transitions"])
    # the rectification photo is readable by those who see the alert, not by another canteen
    r = await world.get(f"/media/{photo}", "reg")
    assert r.status == 200 and await r.read() == jpeg("fix1")
    assert (await world.get(f"/media/{photo}", "c3")).status == 404


@pytest.mark.parametrize(("who", "path", "payload", "status"), [
    ("c1", "/alerts/W1/review", {"decision": "approve"}, 403),        # canteen approving
    ("c1", "/alerts/W1/deadline", {"deadline": "2099-01-01T00:00:00Z"}, 403),
    ("reg", "/alerts/W1/review", {"decision": "approve"}, 409),       # nothing submitted yet
    ("reg", "/alerts/W3/review", {"decision": "approve"}, 404),       # outside jurisdiction
    ("reg", "/alerts/W1/review", {"decision": "maybe"}, 400),
    ("reg", "/alerts/W1/deadline", {"deadline": "2001-01-01T00:00:00Z"}, 422),  # well-formed, but in the past
    ("reg", "/alerts/W1/deadline", {}, 400),
    ("c3", "/alerts/W1/rectification", {"note": "x", "photo_base64": "AAAA"}, 404),
    ("reg", "/alerts/W1/rectification", {"note": "x", "photo_base64": "AAAA"}, 403),
    ("c1", "/alerts/W1/rectification", {"note": "x", "photo_base64": "!!notb64"}, 400),
    ("c1", "/alerts/W1/rectification", {"note": "x", "photo_base64": base64.b64encode(b"GIF89a").decode()}, 400),
    ("c1", "/alerts/W1/rectification", {"note": "", "photo_base64": base64.b64encode(jpeg("a")).decode()}, 400),
    ("c1", "/alerts/NOPE/rectification", {"note": "x", "photo_base64": "AAAA"}, 404),
])
async def test_refused_actions(world, who, path, payload, status):
    """Wrong roles, wrong scopes, illegal transitions and bad input are refused and change nothing."""
    r = await world.post(path, who, json=payload)
    assert r.status == status, await r.text()
    assert set((await r.json())["error"]) == {"code", "message"}
    assert world.storage.get_alert("W1")["status"] == "待整改"
    assert world.storage.sql.rows("SELECT count(*) AS n FROM transitions")[0]["n"] == 0


async def test_photo_size_limit(world):
    """A photo over the limit is refused with 413 (multipart and JSON), nothing stored."""
    big = jpeg("x") + b"\0" * (64 * 1024)
    r = await world.post("/alerts/W1/rectification", "c1", data=_form("note", big))
    assert r.status == 413
    r = await world.post("/alerts/W1/rectification", "c1",
                         json={"note": "n", "photo_base64": base64.b64encode(big).decode()})
    assert r.status == 413
    assert world.storage.sql.rows("SELECT count(*) AS n FROM media WHERE device_id = 'api-upload'")[0]["n"] == 0


async def test_overdue_computed_at_read_time(world):
    """An alert past its default deadline reads as 逾期, is found by status=逾期, and extending it reopens it."""
    body = await (await world.get("/alerts/OLD", "c1")).json()
    assert body["status"] == "逾期"
    assert world.storage.get_alert("OLD")["status"] == "待整改"  # never stored
    ids = [a["id"] for a in (await (await world.get("/alerts?status=逾期", "c1")).json())["items"]]
    assert ids == ["OLD"]
    ids = [a["id"] for a in (await (await world.get("/alerts?status=待整改", "c1")).json())["items"]]
    assert ids == ["W1"]
    r = await world.post("/alerts/OLD/deadline", "reg", json={"deadline": "2099-01-01T00:00:00Z"})
    body = await r.json()
    assert body["status"] == "待整改" and body["transitions"][0]["from_status"] == "逾期"


async def test_late_submission_then_rejected_listed(world):
    """An overdue alert can still be rectified; after a rejection it is listed under status=驳回."""
    r = await world.post("/alerts/OLD/rectification", "c1", data=_form("迟到的整改", jpeg("late")))
    assert r.status == 200 and (await r.json())["transitions"][0]["from_status"] == "逾期"
    r = await world.post("/alerts/OLD/review", "city", json={"decision": "reject", "note": "不合格",
                                                            "deadline": "2099-01-01T00:00:00Z"})
    assert r.status == 200
    ids = [a["id"] for a in (await (await world.get("/alerts?status=驳回", "reg")).json())["items"]]
    assert ids == ["OLD"]


async def test_submission_on_approved_alert_stores_no_photo(world):
    """A rectification for an alert that cannot take one is refused (409) before its photo is stored."""
    await world.post("/alerts/W1/rectification", "c1", data=_form("done", jpeg("first")))
    await world.post("/alerts/W1/review", "reg", json={"decision": "approve"})
    r = await world.post("/alerts/W1/rectification", "c1", data=_form("again", jpeg("second")))
    assert r.status == 409 and (await r.json())["error"]["code"] == "illegal_transition"
    assert world.storage.sql.rows("SELECT count(*) AS n FROM media WHERE device_id = 'api-upload'")[0]["n"] == 1
