"""What every console page stands on: rendering with the base layout, who may see a page, CSRF on every
form post, error pages, security headers, and the static files.

For page authors:

    async def alerts_page(request: web.Request) -> web.Response:
        user, principal = require_user(request, roles=("regulator", "admin"))
        rows = queries.list_alerts(db_of(request), principal, ...)
        return render(request, "alerts.html", {"rows": rows})

`require_user` redirects to /login?next=… when nobody is logged in and shows a 403 page for a role the
page is not for; `render` adds the user, the CSRF token, the navigation and `static()` to the context.
A template extends `base.html` and fills the blocks `title`, `content` and `scripts`. Pages run under
a strict Content-Security-Policy (`PAGE_CSP`): no inline script or style, so behaviour lives in
static/*.js and data reaches it in data-* attributes or a `<script type="application/json">` block.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp_jinja2
import jinja2
import structlog
from aiohttp import web

from cloud_receiver.admin.accounts import User
from cloud_receiver.admin.auth import Principal
from cloud_receiver.storage.db import TextHasNul
from cloud_receiver.web.sessions import (
    COOKIE,
    SAFE_METHODS,
    clear_session_cookie,
    csrf_matches,
    current_session,
    presented_csrf,
)

log = structlog.get_logger(__name__)

PRODUCT = "明厨亮灶智慧监管"
PACKAGE_DIR = Path(str(files("cloud_receiver.web")))
STATIC_DIR = PACKAGE_DIR / "static"
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
            "media-src 'self' blob:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".json": "application/json", ".png": "image/png", ".svg": "image/svg+xml", ".woff2": "font/woff2"}
STATIC_LONG_CACHE = "public, max-age=31536000, immutable"  # a URL with ?v=<digest> never changes its content
STATIC_SHORT_CACHE = "public, max-age=3600"


@dataclass(frozen=True, slots=True)
class NavItem:
    label: str
    href: str
    roles: tuple[str, ...]


NAV = (
    NavItem("预警", "/alerts", ("admin", "regulator", "canteen")),
    NavItem("学校", "/schools", ("admin", "regulator", "canteen")),
    NavItem("台账", "/ledgers", ("admin", "regulator", "canteen")),
    NavItem("大数据", "/dashboard", ("admin", "regulator")),
    NavItem("管理", "/admin", ("admin",)),
)
HOME = {"admin": "/admin", "regulator": "/alerts", "canteen": "/alerts"}
ROLE_NAMES = {"admin": "管理员", "regulator": "监管人员", "canteen": "食堂"}


class PageError(Exception):
    """An error page (403, 404, 429 …) with a title and a message for people; raise it from a handler."""

    def __init__(self, status: int, title: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.title, self.message, self.headers = status, title, message, headers or {}


def home_of(user: User) -> str:
    return HOME.get(user.role, "/alerts")


def safe_next(value: str | None) -> str | None:
    """A `next` target only if it is a path on this site (not `//host`, `/\\host`, `http:…`); else None."""
    if not value or len(value) > 2048 or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return None
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        return None
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or parts.path in ("/login", "/logout") or parts.path.startswith("/api/"):
        return None
    return value


# -- rendering ------------------------------------------------------------------------------------
@functools.cache
def _static_version(rel: str) -> str:
    path = STATIC_DIR / rel
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12] if path.is_file() else "missing"


def static_url(rel: str) -> str:
    """`/static/<rel>?v=<digest>`: the digest changes with the file, so browsers may keep it for a year."""
    return f"/static/{rel}?v={_static_version(rel)}"


def setup_templates(app: web.Application) -> None:
    env = aiohttp_jinja2.setup(app, loader=jinja2.PackageLoader("cloud_receiver.web", "templates"),
                               autoescape=jinja2.select_autoescape(default=True), undefined=jinja2.StrictUndefined,
                               trim_blocks=True, lstrip_blocks=True)
    env.globals.update(static=static_url, product=PRODUCT, role_names=ROLE_NAMES)


def nav_for(user: User | None, path: str) -> list[dict[str, Any]]:
    if user is None:
        return []
    return [{"label": n.label, "href": n.href, "active": path == n.href or path.startswith(n.href + "/")}
            for n in NAV if user.role in n.roles]


def render(request: web.Request, template: str, context: dict[str, Any] | None = None,
           status: int = 200) -> web.Response:
    """Render `template` with the user, CSRF token and navigation added (`user` is None when logged out)."""
    session = current_session(request)
    user = session.user if session else None
    full = {"user": user, "csrf": session.csrf if session else "", "nav": nav_for(user, request.path),
            "home": home_of(user) if user else "/login", **(context or {})}
    response = aiohttp_jinja2.render_template(template, request, full, status=status)
    response.headers.setdefault("Cache-Control", "no-store")  # pages show what one person may see
    return response


def require_user(request: web.Request, roles: Iterable[str] | None = None) -> tuple[User, Principal]:
    """The logged-in user and their principal; redirects to the login page (coming back here after) when
    nobody is logged in, and raises a 403 page when the user's role is not among `roles`."""
    session = current_session(request)
    if session is None:
        target = "/login" + (f"?next={quote(request.path_qs, safe='')}" if request.path != "/" else "")
        redirect = web.HTTPFound(target)
        if COOKIE in request.cookies:
            clear_session_cookie(request, redirect)
        raise redirect
    if roles is not None and session.user.role not in tuple(roles):
        raise PageError(403, "无权访问", "您的账号没有查看此页面的权限。如需访问, 请联系管理员。")
    return session.user, session.user.principal


def error_page(request: web.Request, err: PageError) -> web.Response:
    response = render(request, "error.html", {"title": err.title, "message": err.message}, status=err.status)
    response.headers.update(err.headers)
    return response


# -- middleware and headers -----------------------------------------------------------------------
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
NO_SESSION_POSTS = ("/login",)  # the login form carries its own pre-session token (login.py)
PUBLIC_FORM = re.compile(r"^/p/[^/]+/report$")  # the public report form: its signed challenge (public_report.py)


def is_console_path(path: str) -> bool:
    return not path.startswith(("/api/", "/static/")) and path not in ("/healthz", "/metrics")


@web.middleware
async def console_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """For console pages: every non-GET needs the session's CSRF token (403 page otherwise); PageError and
    aiohttp's 405 become pages. An unknown path keeps aiohttp's plain 404 (with the API's CSP, which lets it
    load nothing)."""
    if not is_console_path(request.path):
        return await handler(request)
    try:
        if (request.method not in SAFE_METHODS and request.path not in NO_SESSION_POSTS
                and not PUBLIC_FORM.match(request.path)):
            session = current_session(request)
            if session is None and request.path == "/logout":
                raise web.HTTPSeeOther("/login")
            if session is None or not csrf_matches(session.csrf, await presented_csrf(request)):
                log.warning("console_csrf_refused", path=request.path, logged_in=session is not None)
                raise PageError(403, "请求无效", "表单已过期或来源不明, 已被拒绝。请返回页面刷新后重试。")
        return await handler(request)
    except PageError as err:
        return error_page(request, err)
    except TextHasNul:
        return error_page(request, PageError(400, "输入无效", "提交的文字中含有不可见的控制字符 (NUL), 请删除后重试。"))
    except web.HTTPMethodNotAllowed as err:
        return error_page(request, PageError(405, "请求无效", "此页面不接受这种请求。",
                                             {"Allow": err.headers.get("Allow", "")}))


async def page_headers(request: web.Request, response: web.StreamResponse) -> None:
    """An HTML page of the console gets its own CSP (the API's allows nothing), runs after the API's hook."""
    if request.path.startswith("/api/") or not response.content_type.startswith("text/html"):
        return
    response.headers["Content-Security-Policy"] = PAGE_CSP
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["X-Content-Type-Options"] = "nosniff"


async def static_file(request: web.Request) -> web.StreamResponse:
    """A file of the package's static/ folder, of a type the console uses; cached long when versioned."""
    rel = request.match_info["path"]
    root = STATIC_DIR.resolve()
    path = (root / rel).resolve()
    if root not in path.parents or path.suffix not in STATIC_TYPES or not path.is_file():
        raise web.HTTPNotFound()
    cache = STATIC_LONG_CACHE if request.query.get("v") == _static_version(str(path.relative_to(root))) \
        else STATIC_SHORT_CACHE
    return web.FileResponse(path, headers={"Content-Type": STATIC_TYPES[path.suffix], "Cache-Control": cache,
                                           "X-Content-Type-Options": "nosniff"})
