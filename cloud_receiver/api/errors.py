"""JSON errors of the API: `{"error": {"code": ..., "message": ...}}` with a fitting status.

Exceptions of the project's own modules are translated here, once: bad input → 400, unknown or
invisible → 404, wrong role → 403, conflicting state → 409.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from cloud_receiver.admin.auth import AuthError
from cloud_receiver.workflow import rectify
from cloud_receiver.workflow.queries import Conflict, NotFound, QueryError

log = structlog.get_logger(__name__)


class ApiError(Exception):
    """An error answer; raise it from a handler."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def bad_request(message: str, code: str = "bad_request") -> ApiError:
    return ApiError(400, code, message)


def json_error(status: int, code: str, message: str) -> web.Response:
    resp = web.json_response({"error": {"code": code, "message": message}}, status=status)
    if status == 401:
        resp.headers["WWW-Authenticate"] = 'Bearer realm="brightkitchen"'
    return resp


_TRANSLATE: tuple[tuple[type[BaseException], int, str], ...] = (
    (rectify.NotAllowed, 403, "forbidden"),
    (rectify.IllegalTransition, 409, "illegal_transition"),
    (rectify.InvalidInput, 400, "invalid_input"),
    (QueryError, 400, "bad_request"),
    (AuthError, 400, "bad_request"),
    (NotFound, 404, "not_found"),
    (Conflict, 409, "conflict"),
)


@web.middleware
async def error_middleware(request: web.Request,
                           handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    if not request.path.startswith("/api/v1"):
        return await handler(request)
    try:
        return await handler(request)
    except ApiError as err:
        return json_error(err.status, err.code, err.message)
    except web.HTTPException as err:
        if err.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(err.status, "http_error")
        return json_error(err.status, code, err.reason if err.status != 404 else f"no endpoint {request.path}")
    except Exception as err:
        for kind, status, code in _TRANSLATE:
            if isinstance(err, kind):
                return json_error(status, code, str(err))
        log.exception("api_internal_error", path=request.path, method=request.method)
        return json_error(500, "internal", "internal error; see the receiver's log")
