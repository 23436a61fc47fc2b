"""Bad input gets a 4xx JSON problem naming what is wrong, never a 500 (issue 9's list, one test each)."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from support.api_kit import ago, jpeg, make_world

from bk_common.jsondepth import nests_deeper

pytestmark = pytest.mark.unit

JSON = {"Content-Type": "application/json"}


@pytest.fixture
async def world(tmp_path, db_engine):
    w = await make_world(tmp_path, db_engine)
    w.add_alert("C1", started_at=ago(hours=1), alert_id="B1")
    yield w
    await w.close()


async def _problem(r, status: int) -> str:
    assert r.status == status, await r.text()
    assert r.headers["Content-Type"].startswith("application/json")
    return (await r.json())["error"]["message"]


@pytest.mark.parametrize("path", ["/alerts/B1/deadline", "/alerts/B1/review"])
@pytest.mark.parametrize("deadline", [1893456000, 1.5, ["2099-01-01T00:00:00Z"], {"at": "2099"}, True, False])
async def test_a_deadline_that_is_not_a_string_is_400(world, path, deadline):
    """A number, list, object or bool as `deadline` is a 400 naming `deadline`, on both endpoints."""
    body = {"deadline": deadline, "decision": "reject", "note": "照片不清楚"} if path.endswith("review") else \
        {"deadline": deadline}
    assert "deadline" in await _problem(await world.post(path, "reg", json=body), 400)


@pytest.mark.parametrize("decision", [["approve"], {"approve": True}, 1, None, "maybe"])
async def test_a_decision_that_is_not_approve_or_reject_is_400(world, decision):
    """`decision` as a list, object, number, null or unknown word is a 400 naming `decision`."""
    assert "decision" in await _problem(await world.post("/alerts/B1/review", "reg", json={"decision": decision}), 400)


async def test_a_rejection_needs_a_note_and_a_deadline(world):
    """What the schema says of a rejection is what the API checks: both fields, by name."""
    r = await world.post("/alerts/B1/review", "reg", json={"decision": "reject", "note": "不合格"})
    assert "deadline" in await _problem(r, 400)
    r = await world.post("/alerts/B1/review", "reg", json={"decision": "reject", "deadline": "2099-01-01T00:00:00Z",
                                                          "note": "   "})
    assert "note" in await _problem(r, 400)


@pytest.mark.parametrize("query", [
    "since=9999-12-31T23:59:59-14:00", "until=0001-01-01T00:00:00%2B14:00", "since=0000-01-01T00:00:00Z"])
@pytest.mark.parametrize("path", ["/alerts", "/stats"])
async def test_a_time_outside_what_the_server_can_hold_is_422(world, path, query):
    """Well-formed times beyond year 1..9999 in UTC are refused with 422 naming the parameter."""
    assert query.split("=")[0] in await _problem(await world.get(f"{path}?{query}", "admin"), 422)
    deadline = query.split("=", 1)[1].replace("%2B", "+")
    r = await world.post("/alerts/B1/deadline", "reg", json={"deadline": deadline})
    assert "deadline" in await _problem(r, 422)


@pytest.mark.parametrize(("query", "start"), [
    ("since=2024-05-01", "2024-04-30T16:00:00.000Z"), ("since=2024-05-01T00:00:00Z", "2024-05-01T00:00:00.000Z"),
    ("since=2024-05-01t08:00:00.5%2B08:00", "2024-05-01T00:00:00.500Z"),
    ("since=2024-04-30T23:59:60Z", "2024-04-30T23:59:59.999Z")])
async def test_bare_dates_are_days_in_china_standard_time(world, query, start):
    """A bare date is the start of that day in UTC+8 (as the schema says); RFC 3339 forms all parse."""
    r = await world.get(f"/stats?{query}&until=2024-06-01", "admin")
    assert r.status == 200, await r.text()
    assert (await r.json())["since"] == start


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/alerts/B1/deadline"), ("POST", "/alerts/B1/review"), ("POST", "/alerts/B1/rectification"),
    ("PATCH", "/canteens/C1/public")])
async def test_deeply_nested_json_is_refused_before_parsing(world, method, path):
    """32,000 levels of nesting on every JSON endpoint: 400 saying how deep is allowed, no 500."""
    who = "c1" if path.endswith("rectification") else "admin"
    for body in (b"[" * 32_000 + b"]" * 32_000, b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
                 b'{"note": "' + b"[" * 10_000 + b'", "x": ' + b"[" * 40 + b"]" * 40 + b"}"):
        r = await world.client.request(method, f"/api/v1{path}", data=body, headers={**world.h(who), **JSON})
        assert "nests deeper than 32 levels" in await _problem(r, 400)


@pytest.mark.parametrize(("raw", "depth"), [
    (b"1", 0), (b"[]", 1), (b"{[]}", 2), (b"[[],[[]]]", 3), (b'{"a":[{"b":"[[[[[["}]}', 3), (b'"\\"[["', 0),
    (b'["\\\\", [[]]]', 3), (b'["\\\\\\"[", []]', 2), (b"[" * 5 + b'"' + b"[" * 40 + b'"' + b"]" * 5, 5),
    (b"[" * 40, 40), (b"[" * 3 + b"]" * 3, 3)])
def test_nesting_is_measured_without_parsing(raw, depth):
    """`nests_deeper` counts arrays and objects, not brackets inside strings (escaped quotes included)."""
    for limit in (depth - 1, depth, depth + 1):
        if limit >= 0:
            assert nests_deeper(raw, limit) == (depth > limit), (raw, limit)


async def test_brackets_inside_strings_do_not_count_as_nesting(world):
    """A note full of brackets is text, not depth."""
    r = await world.post("/alerts/B1/deadline", "reg", json={"deadline": "2099-01-01T00:00:00Z", "note": "[" * 900})
    assert r.status == 200, await r.text()


@pytest.mark.parametrize("headers", [{"Content-Type": "multipart/form-data"},
                                     {"Content-Type": "multipart/form-data; boundary=xyz"},
                                     {"Content-Type": "multipart/form-data; boundary="}])
@pytest.mark.parametrize("body", [b"", b"garbage without any boundary", b"--xyz\r\nno headers end",
                                  b"--xyz\r\nContent-Disposition: form-data; name=\"photo\"\r\n\r\n\xff\xd8\xff"])
async def test_malformed_multipart_is_400(world, headers, body):
    """Multipart without a boundary, with a wrong one, or cut short is a 400 naming the problem."""
    r = await world.client.post("/api/v1/alerts/B1/rectification", data=body, headers={**world.h("c1"), **headers})
    assert r.status == 400, await r.text()
    assert (await r.json())["error"]["message"]


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/alerts/B1/deadline"), ("POST", "/alerts/B1/review"), ("POST", "/alerts/B1/rectification"),
    ("PATCH", "/canteens/C1/public")])
@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", None])
async def test_a_body_not_sent_as_json_is_415(world, method, path, ctype):
    """A JSON-looking body sent as text/plain (or without a type) is not parsed as JSON: 415."""
    who = "c1" if path.endswith("rectification") else "admin"
    headers = {**world.h(who), **({"Content-Type": ctype} if ctype else {})}
    body = json.dumps({"deadline": "2099-01-01T00:00:00Z", "decision": "approve", "rating": "A"}).encode()
    r = await world.client.request(method, f"/api/v1{path}", data=body, headers=headers,
                                   skip_auto_headers=() if ctype else ("Content-Type",))
    await _problem(r, 415)


async def test_an_oversized_url_is_a_json_problem(world):
    """A URL longer than 4096 bytes gets a JSON 414, not aiohttp's plain text."""
    r = await world.get("/alerts?canteen=" + "x" * 6000, "admin")
    assert "4096" in await _problem(r, 414)


async def test_an_url_beyond_the_http_parser_still_closes_cleanly(world):
    """Beyond aiohttp's 8190-byte request line the parser refuses before the app runs: a 400, never a 500."""
    host, port = world.client.server.host, world.client.server.port
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET /api/v1/alerts?x=" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    status = await asyncio.wait_for(reader.readline(), 5)
    writer.close()
    assert status.split()[1] == b"400"


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("DELETE", "/alerts", "GET"), ("TRACE", "/openapi.json", "GET"), ("PUT", "/canteens/C1/public", "PATCH"),
    ("GET", "/alerts/B1/review", "POST"), ("DELETE", "/media/" + "a" * 64, "GET")])
async def test_405_says_what_is_allowed(world, method, path, allow):
    """A wrong method is a JSON 405 with the `Allow` header naming the right one."""
    r = await world.client.request(method, f"/api/v1{path}", headers=world.h("admin"))
    assert allow in await _problem(r, 405)
    assert r.headers["Allow"] == allow


async def test_chinese_comes_back_as_utf8_not_escapes(world):
    """JSON answers carry Chinese text as UTF-8, not \\u escapes."""
    raw = await (await world.get("/canteens", "admin")).read()
    assert "第一中学食堂".encode() in raw and b"\\u" not in raw
    raw = await (await world.get("/alerts/B1", "admin")).read()
    assert "玩手机".encode() in raw and "待整改".encode() in raw


async def test_a_photo_that_is_not_a_jpeg_is_refused(world):
    """Rectification photos are JPEG only (bytes checked): PNG, HTML and base64 of anything else are refused."""
    png = b"\x89PNG\r\n\x1a\n" + bytes(100)
    for data, status in ((png, 422), (b"<html><script>x</script>", 422), (jpeg("ok"), 200)):
        form = aiohttp.FormData()
        form.add_field("note", "已整改")
        form.add_field("photo", data, filename="fix.jpg", content_type="image/jpeg")
        r = await world.post("/alerts/B1/rectification", "c1", data=form)
        assert r.status == status, await r.text()
    assert world.storage.sql.rows("SELECT count(*) AS n FROM media WHERE device_id = 'api-upload'")[0]["n"] == 1


async def test_a_nul_character_in_text_is_400_naming_the_field(world):
    """PostgreSQL's text cannot hold a NUL (\\u0000) and SQLite's can: both refuse it alike with a 400 naming the
    field, store nothing of that request, and go on taking good input."""
    r = await world.post("/alerts/B1/deadline", "reg", json={"deadline": "2099-01-01T18:00:00+08:00", "note": "限\u0000期"})
    assert "note" in await _problem(r, 400) and "NUL" in await _problem(r, 400)
    assert not (await (await world.get("/alerts/B1", "reg")).json())["deadline"].startswith("2099")  # none of it kept
    r = await world.post("/alerts/B1/deadline", "reg", json={"deadline": "2099-01-01T18:00:00+08:00", "note": "限期"})
    assert r.status == 200, await r.text()
