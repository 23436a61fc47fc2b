"""Login, logout and the role's home page.

The login form has no session yet, so it carries a pre-session token of its own: GET /login sets it as
the `bk_login` cookie (path /login) and as the form's hidden `csrf` field, and POST /login takes the
form only when both agree (another site cannot read the cookie to copy it into its own form). A login
replaces any session the browser had (a new id every time), and `?next=` returns to a page of this
site only (`pages.safe_next`).
"""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime, timedelta

import structlog
from aiohttp import web

from cloud_receiver.admin import accounts
from cloud_receiver.api import API_SETTINGS
from cloud_receiver.web.pages import PageError, home_of, render, safe_next
from cloud_receiver.web.sessions import (
    COOKIE,
    clear_session_cookie,
    csrf_matches,
    current_session,
    db_of,
    end_session,
    forget_current,
    open_session,
    set_session_cookie,
    settings_of,
)
from cloud_receiver.web.throttle import LoginThrottle

log = structlog.get_logger(__name__)

LOGIN_COOKIE = "bk_login"
LOGIN_COOKIE_MAX_AGE_S = 3600
FIELD_MAX = 256  # longest name the form takes (passwords have their own limit in accounts)


def _throttle(request: web.Request) -> LoginThrottle:
    s = settings_of(request)
    return LoginThrottle(db_of(request), limit=s.login_limit, window_s=s.login_window_s)


def _login_form(request: web.Request, *, name: str = "", error: str = "", status: int = 200,
                next_path: str | None = None) -> web.Response:
    token = request.cookies.get(LOGIN_COOKIE)
    if not token or len(token) > 64:
        token = secrets.token_urlsafe(24)
    response = render(request, "login.html", {"title": "登录", "login_csrf": token, "name": name, "error": error,
                                              "next": next_path or ""}, status=status)
    response.set_cookie(LOGIN_COOKIE, token, max_age=LOGIN_COOKIE_MAX_AGE_S, path="/login", httponly=True,
                        samesite="Lax", secure=request.secure)
    return response


async def login_page(request: web.Request) -> web.Response:
    next_path = safe_next(request.query.get("next"))
    session = current_session(request)
    if session is not None:
        raise web.HTTPFound(next_path or home_of(session.user))
    return _login_form(request, next_path=next_path)


def _retry_message(request: web.Request, retry_at: datetime) -> str:
    tz_hours = request.app[API_SETTINGS].tz_hours if API_SETTINGS in request.app else 8
    local = retry_at.astimezone(UTC) + timedelta(hours=tz_hours)
    minutes = max(1, int((retry_at - datetime.now(UTC)).total_seconds() + 59) // 60)
    return f"登录失败次数过多, 已暂时锁定。请在 {local:%H:%M} (约 {minutes} 分钟后) 再试。"


async def login_submit(request: web.Request) -> web.Response:
    form = await request.post()
    name = str(form.get("name", ""))[:FIELD_MAX].strip()
    password = str(form.get("password", ""))
    next_path = safe_next(str(form.get("next", "")))
    if not csrf_matches(request.cookies.get(LOGIN_COOKIE, ""), form.get("csrf")):
        log.warning("login_csrf_refused")
        raise PageError(403, "请求无效", "登录表单已过期或来源不明。请刷新登录页后重试。")
    throttle = _throttle(request)
    retry_at = throttle.retry_at(name, request.remote)
    if retry_at is not None:
        log.warning("login_throttled", user=name, remote=request.remote)
        response = _login_form(request, name=name, error=_retry_message(request, retry_at), status=429,
                               next_path=next_path)
        response.headers["Retry-After"] = str(max(1, int((retry_at - datetime.now(UTC)).total_seconds()) + 1))
        return response
    db = db_of(request)
    # argon2 takes tens of milliseconds of CPU: not on the event loop
    user = await asyncio.get_running_loop().run_in_executor(None, accounts.authenticate, db, name, password)
    if user is None:
        throttle.record_failure(name, request.remote)
        log.info("login_failed", user=name, remote=request.remote)
        return _login_form(request, name=name, error="用户名或密码错误。", status=401, next_path=next_path)
    throttle.forget_name(name)
    end_session(db, request.cookies.get(COOKIE))  # a login never continues an older session
    session_id, _ = open_session(db, user, settings_of(request))
    response = web.HTTPSeeOther(next_path or home_of(user))
    set_session_cookie(request, response, session_id)
    response.del_cookie(LOGIN_COOKIE, path="/login")
    log.info("login", user=user.name, role=user.role)
    raise response


async def logout(request: web.Request) -> web.Response:
    """POST only, with the session's CSRF token (checked by the console middleware)."""
    session = current_session(request)
    end_session(db_of(request), request.cookies.get(COOKIE))
    forget_current(request)
    if session is not None:
        log.info("logout", user=session.user.name)
    response = web.HTTPSeeOther("/login")
    clear_session_cookie(request, response)
    raise response


async def root(request: web.Request) -> web.Response:
    """/ : the role's home page, or the login page."""
    session = current_session(request)
    raise web.HTTPFound(home_of(session.user) if session else "/login")


def register(app: web.Application) -> None:
    app.router.add_get("/", root)
    app.router.add_get("/login", login_page)
    app.router.add_post("/login", login_submit)
    app.router.add_post("/logout", logout)
