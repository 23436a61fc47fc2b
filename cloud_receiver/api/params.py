"""Parsing of query parameters and JSON bodies into typed values; errors name what is wrong (4xx).

JSON bodies are read with a byte limit, must be sent as `application/json` (415 otherwise), and
their nesting is measured before they are parsed (`nests_deeper`), so a hostile body cannot make the
parser recurse until it fails.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import TypeVar

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError
from pydantic import BaseModel, ValidationError

from bk_common.jsondepth import nests_deeper
from cloud_receiver.api.errors import ApiError, bad_request
from cloud_receiver.errors import validation_problem

M = TypeVar("M", bound=BaseModel)
JSON_MAX_DEPTH = 32  # no request body of this API nests deeper than 4
TIME_EXAMPLE = "2024-05-01T08:00:00+08:00"
_BARE_DATE = re.compile(r"^([0-9]{4})-([0-9]{2})-([0-9]{2})$")
# RFC 3339 date-time, which is what the "date-time" format of the OpenAPI document means; in a query
# string an unencoded `+` arrives as a space, so a space stands for `+` before the zone
_DATE_TIME = re.compile(r"^([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,30}))?"
                        r"(?:[Zz]|([+ -])([0-9]{2}):([0-9]{2}))$")
_NO_ZONE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?$")


def parse_time(name: str, value: object, *, required: bool = False, tz_hours: int | None = None) -> datetime | None:
    """An RFC 3339 time with a zone (`Z` or `±hh:mm`) as an aware UTC datetime; 400 naming `name` otherwise.

    Where `tz_hours` is given a bare date (`2024-05-01`) is accepted too and means the start of that
    day in that zone (the product's zone is UTC+8). A leap second (`:60`) is the end of its minute.
    """
    if value is None:
        if required:
            raise bad_request(f"{name} is required: an ISO-8601 time with a zone, e.g. {TIME_EXAMPLE}")
        return None
    if not isinstance(value, str):
        raise bad_request(f"{name} must be a string: an ISO-8601 time with a zone, e.g. {TIME_EXAMPLE}; "
                          f"got {type(value).__name__}")
    shown = value if len(value) <= 64 else value[:64] + "…"
    if tz_hours is not None and (d := _BARE_DATE.match(value)):
        parts, offset, leap = [*map(int, d.groups()), 0, 0, 0, 0], tz_hours * 60, False
    elif m := _DATE_TIME.match(value):
        y, mo, day, hh, mi, ss, frac, sign, zh, zm = m.groups()
        offset = 0 if sign is None else (-1 if sign == "-" else 1) * (int(zh) * 60 + int(zm))
        leap = ss == "60"
        parts = [int(y), int(mo), int(day), int(hh), int(mi), 59 if leap else int(ss),
                 999_999 if leap else int((frac or "0")[:6].ljust(6, "0"))]
    else:
        problem = "needs a time zone" if _NO_ZONE.match(value) else "is not an ISO-8601 time with a zone"
        also = " or a date (meaning its start in UTC+8)" if tz_hours is not None else ""
        raise bad_request(f"{name}={shown!r} {problem}; e.g. {TIME_EXAMPLE}{also}")
    out_of_range = ApiError(422, "bad_request", f"{name}={shown!r} is outside the supported range "
                            "(years 1 to 9999 in UTC)")
    if parts[0] == 0:  # RFC 3339 has a year 0; a datetime has not
        raise out_of_range
    try:
        t = datetime(*parts, tzinfo=timezone(timedelta(minutes=offset)))  # type: ignore[misc]
    except ValueError as err:  # February 30th, hour 25, offset of a day or more
        raise bad_request(f"{name}={shown!r} is not a valid time: {err}") from err
    try:
        return t.astimezone(UTC)
    except OverflowError as err:
        raise out_of_range from err


def parse_int(name: str, value: str | None, default: int, lo: int, hi: int) -> int:
    if value is None:
        return default
    try:
        n = int(value)
    except ValueError as err:
        raise bad_request(f"{name}={value[:32]!r} is not an integer") from err
    if not lo <= n <= hi:
        raise bad_request(f"{name}={n} is outside {lo}..{hi}")
    return n


async def read_limited(request: web.Request, max_bytes: int) -> bytes:
    """The request body, refused with 413 when it exceeds `max_bytes` (read without buffering more)."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise ApiError(413, "too_large", f"body of {request.content_length} bytes exceeds {max_bytes}")
    buf = bytearray()
    while chunk := await request.content.read(64 * 1024):
        buf += chunk
        if len(buf) > max_bytes:
            raise ApiError(413, "too_large", f"body exceeds {max_bytes} bytes")
    return bytes(buf)


async def read_form(request: web.Request, fields: Sequence[str], limit: int) -> dict[str, bytes]:
    """The parts of a multipart/form-data body by name: 400 for a malformed body or a field not in `fields`,
    413 for a part over `limit` bytes (read without buffering more)."""
    try:
        return await _read_parts(request, fields, limit)
    except (ValueError, AssertionError, LookupError, HttpProcessingError) as err:
        # aiohttp's multipart reader raises these for a missing boundary or a malformed part
        raise bad_request(f"malformed multipart body: {err or type(err).__name__}") from err


async def _read_parts(request: web.Request, fields: Sequence[str], limit: int) -> dict[str, bytes]:
    out = {}
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            raise bad_request("nested multipart is not accepted")
        if part.name not in fields:
            raise bad_request(f"unexpected form field {part.name!r}; expected {' and '.join(fields)}")
        buf = bytearray()
        while chunk := await part.read_chunk(64 * 1024):
            buf += chunk
            if len(buf) > limit:
                raise ApiError(413, "too_large", f"{part.name} exceeds {limit} bytes")
        out[part.name] = bytes(buf)
    return out


def base64_field(name: str, text: str) -> bytes:
    """The bytes a base64 body field holds, or 400 naming the field."""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as err:
        raise bad_request(f"{name}: not valid base64") from err


def require_json(request: web.Request) -> None:
    ctype = request.content_type
    if ctype != "application/json" and not (ctype.startswith("application/") and ctype.endswith("+json")):
        raise ApiError(415, "unsupported_media_type", f"send the body as application/json, not {ctype or 'nothing'}")


async def json_raw(request: web.Request, max_bytes: int = 64 * 1024) -> bytes:
    """The bytes of a JSON body: 415 for another content type, 413 over `max_bytes`, 400 when nested too deep."""
    require_json(request)
    raw = await read_limited(request, max_bytes)
    if nests_deeper(raw, JSON_MAX_DEPTH):
        raise bad_request(f"body nests deeper than {JSON_MAX_DEPTH} levels")
    return raw


def from_json(model: type[M], raw: bytes) -> M:
    """`raw` as `model`, parsed strictly (a time must be an RFC 3339 string, a number is not a string),
    or 400 naming the first wrong field, e.g. `deadline: Input should be a valid string`."""
    try:
        return model.model_validate_json(raw, strict=True)
    except ValidationError as err:
        raise bad_request(validation_problem(err, "(body)"), "invalid_input") from err
