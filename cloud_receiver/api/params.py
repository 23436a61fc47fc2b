"""Parsing of query parameters and JSON bodies into typed values; errors say what is wrong (400)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from cloud_receiver.api.errors import bad_request


def parse_time(name: str, value: str | None, *, required: bool = False) -> datetime | None:
    """An ISO-8601 time with a zone (or `Z`); a bare date means its start in UTC."""
    if value is None or value == "":
        if required:
            raise bad_request(f"{name} is required (ISO-8601 time with zone, e.g. 2024-05-01T08:00:00+08:00)")
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00").replace(" ", "+"))
    except ValueError as err:
        raise bad_request(f"{name}={value!r} is not an ISO-8601 time, e.g. 2024-05-01T08:00:00+08:00") from err
    if t.tzinfo is None:
        if len(value) == 10:
            return t.replace(tzinfo=UTC)
        raise bad_request(f"{name}={value!r} needs a time zone, e.g. 2024-05-01T08:00:00+08:00")
    return t


def parse_int(name: str, value: str | None, default: int, lo: int, hi: int) -> int:
    if value is None or value == "":
        return default
    try:
        n = int(value)
    except ValueError as err:
        raise bad_request(f"{name}={value!r} is not an integer") from err
    if not lo <= n <= hi:
        raise bad_request(f"{name}={n} is outside {lo}..{hi}")
    return n


async def read_limited(request: web.Request, max_bytes: int) -> bytes:
    """The request body, refused with 413 when it exceeds `max_bytes` (read without buffering more)."""
    from cloud_receiver.api.errors import ApiError
    if request.content_length is not None and request.content_length > max_bytes:
        raise ApiError(413, "too_large", f"body of {request.content_length} bytes exceeds {max_bytes}")
    buf = bytearray()
    while chunk := await request.content.read(64 * 1024):
        buf += chunk
        if len(buf) > max_bytes:
            raise ApiError(413, "too_large", f"body exceeds {max_bytes} bytes")
    return bytes(buf)


async def json_body(request: web.Request, max_bytes: int = 64 * 1024) -> dict[str, Any]:
    raw = await read_limited(request, max_bytes)
    try:
        body = json.loads(raw or b"{}")
    except ValueError as err:
        raise bad_request(f"body is not valid JSON: {err}") from err
    if not isinstance(body, dict):
        raise bad_request("body must be a JSON object")
    return body


def text_field(body: dict[str, Any], name: str, max_len: int = 1000) -> str:
    value = body.get(name, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise bad_request(f"{name} must be a string")
    if len(value) > max_len:
        raise bad_request(f"{name} is {len(value)} characters, at most {max_len} allowed")
    return value
