"""What every response of the receiver carries, and how JSON is written.

- `json_response`: UTF-8 JSON (Chinese as is, not `\\u` escapes).
- `security_headers`: an `on_response_prepare` hook, so it reaches every response the app sends —
  handlers', middlewares' errors, aiohttp's own 404/405 and file responses alike — with
  `X-Content-Type-Options: nosniff` (a browser never guesses a type we did not state) and a
  Content-Security-Policy that lets a page load nothing and run nothing (the API serves no HTML).
  Media get `sandbox` on top, so even a file opened directly in a tab has no script and no origin.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from aiohttp import web

CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
MEDIA_CSP = "default-src 'none'; sandbox"
_dumps = functools.partial(json.dumps, ensure_ascii=False, separators=(",", ":"))


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON answer in UTF-8."""
    return web.json_response(body, status=status, headers=headers, dumps=_dumps)


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Add nosniff and a Content-Security-Policy to a response about to be sent (a media file keeps its own)."""
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("Referrer-Policy", "no-referrer")
