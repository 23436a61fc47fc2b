"""JSON errors of the API: `{"error": {"code": ..., "message": ...}}` with a fitting status.

Exceptions of the project's own modules are translated here, once: bad input → 400, unknown or
invisible → 404, wrong role → 403, conflicting state → 409. aiohttp's own answers (no such route,
method not allowed with its `Allow` header, body too large) become the same JSON, and so does a
URL longer than `URL_MAX` (414). A URL or header beyond the HTTP parser's limit (aiohttp's 8190
bytes, raised to 64 KiB by `cloud-receiver serve`) is refused by aiohttp before the app runs, in
plain text: it offers no hook for that (aiohttp#3287).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from cloud_receiver.admin.auth import AuthError
from cloud_receiver.api.http import json_response
from cloud_receiver.storage.db import TextHasNul
from cloud_receiver.workflow import rectify
from cloud_receiver.workflow.queries import Conflict, NotFound, QueryError

log = structlog.get_logger(__name__)

URL_MAX = 4096  # bytes of path + query; no request of this API needs a tenth of it


class ApiError(Exception):
    """An error answer; raise it from a handler."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def bad_request(message: str, code: str = "bad_request") -> ApiError:
    return ApiError(400, code, message)


def json_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    resp = json_response({"error": {"code": code, "message": message}}, status=status, headers=headers)
    if status == 401:
        resp.headers["WWW-Authenticate"] = 'Bearer realm="brightkitchen"'
    return resp


_TRANSLATE: tuple[tuple[type[BaseException], int, str], ...] = (
    (rectify.NotAllowed, 403, "forbidden"),
    (rectify.IllegalTransition, 409, "illegal_transition"),
    (rectify.InvalidInput, 400, "invalid_input"),
    (QueryError, 400, "bad_request"),
    (TextHasNul, 400, "bad_request"),
    (AuthError, 400, "bad_request"),
    (NotFound, 404, "not_found"),
    (Conflict, 409, "conflict"),
)
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "too_large", 415: "unsupported_media_type"}


@web.middleware
async def error_middleware(request: web.Request,
                           handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    if not request.path.startswith("/api/v1"):
        return await handler(request)
    if len(request.raw_path) > URL_MAX:
        return json_error(414, "uri_too_long", f"the URL is {len(request.raw_path)} bytes long; at most {URL_MAX}")
    try:
        return await handler(request)
    except ApiError as err:
        return json_error(err.status, err.code, err.message, err.headers)
    except web.HTTPException as err:
        if err.status < 400:
            raise
        headers = {"Allow": err.headers["Allow"]} if "Allow" in err.headers else None
        message = f"no endpoint {request.path}" if err.status == 404 else err.reason
        if err.status == 405:
            message = f"{request.method} is not allowed here; allowed: {err.headers.get('Allow', '')}"
        return json_error(err.status, _HTTP_CODES.get(err.status, "http_error"), message, headers)
    except Exception as err:
        for kind, status, code in _TRANSLATE:
            if isinstance(err, kind):
                return json_error(status, code, str(err))
        log.exception("api_internal_error", path=request.path, method=request.method)
        return json_error(500, "internal", "internal error; see the receiver's log")
