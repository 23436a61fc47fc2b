"""Console sessions: the `bk_session` cookie, its row in `sessions`, and the CSRF token that goes with it.

The cookie holds a random 32-byte id; the database holds only its sha256, so a copy of the database
cannot be used to log in. A session ends after `idle_s` without a request (8 h), `absolute_s` after
login whatever happens (7 days), at logout, and when its account is disabled or its password set
(`cloud_receiver.admin.accounts` deletes the rows). Each session has its own CSRF token: every form
a page posts carries it (hidden field `csrf`), and console scripts send it as `X-CSRF-Token`.

The same cookie works on /api/v1 for the console's scripts: `api_session` is handed to the API's
auth middleware (`cloud_receiver.admin.auth.SESSION_RESOLVER`), which takes it for GET and, for any
other method, only with a matching `X-CSRF-Token` header.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
import structlog
from aiohttp import web

from cloud_receiver.admin.accounts import User
from cloud_receiver.admin.auth import Principal
from cloud_receiver.appkeys import STORAGE
from cloud_receiver.storage.db import Db, parse_iso
from cloud_receiver.storage.schema import sessions, users

log = structlog.get_logger(__name__)

COOKIE = "bk_session"
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"
SESSION_ID_BYTES = 32
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """How long sessions live and how hard login is throttled (tests set them small)."""

    idle_s: float = 8 * 3600.0  # no request for this long ends a session
    absolute_s: float = 7 * 86400.0  # a session ends this long after login, used or not
    touch_s: float = 60.0  # last_seen is written at most this often per session (not on every request)
    login_limit: int = 5  # failed logins per name, and per client address, within the window ...
    login_window_s: float = 15 * 60.0  # ... after which login is refused (429) until the window passes


SESSION_SETTINGS = web.AppKey("console_session_settings", SessionSettings)
_CURRENT = web.RequestKey("console_session", object)  # ConsoleSession | None, looked up once per request


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    user: User
    csrf: str
    digest: str  # sha256 of the session id: the row's key


def digest_of(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def open_session(db: Db, user: User, settings: SessionSettings, now: datetime | None = None) -> tuple[str, str]:
    """A new session of `user`: returns (session id for the cookie, CSRF token). Ended sessions go too."""
    now = now or datetime.now(UTC)
    session_id = secrets.token_urlsafe(SESSION_ID_BYTES)
    csrf = secrets.token_urlsafe(32)
    s = sessions.c
    with db.write() as conn:
        conn.execute(sessions.delete().where(sa.or_(s.expires_at <= now,
                                                    s.last_seen <= now - timedelta(seconds=settings.idle_s))))
        conn.execute(sessions.insert().values(id_sha256=digest_of(session_id), user_id=user.id, csrf_token=csrf,
                                              created_at=now, last_seen=now,
                                              expires_at=now + timedelta(seconds=settings.absolute_s)))
    log.info("session_opened", user=user.name, role=user.role)
    return session_id, csrf


def find_session(db: Db, session_id: str | None, settings: SessionSettings,
                 now: datetime | None = None) -> ConsoleSession | None:
    """The live session of this id (its account enabled, neither idle nor past its end), or None."""
    if not session_id or len(session_id) > 128:
        return None
    now = now or datetime.now(UTC)
    s, u = sessions.c, users.c
    digest = digest_of(session_id)
    row = db.one(sa.select(s.csrf_token, s.last_seen, u.id, u.name, u.role, u.scope, u.display_name)
                 .join_from(sessions, users, s.user_id == u.id)
                 .where(s.id_sha256 == digest, u.disabled_at.is_(None), s.expires_at > now,
                        s.last_seen > now - timedelta(seconds=settings.idle_s)))
    if row is None:
        return None
    if parse_iso(row["last_seen"]) <= now - timedelta(seconds=settings.touch_s):
        with db.write() as conn:
            conn.execute(sessions.update().where(s.id_sha256 == digest).values(last_seen=now))
    user = User(int(row["id"]), row["name"], row["role"], row["scope"], row["display_name"])
    return ConsoleSession(user, row["csrf_token"], digest)


def end_session(db: Db, session_id: str | None) -> bool:
    """End one session (logout); whether there was one."""
    if not session_id:
        return False
    with db.write() as conn:
        return conn.execute(sessions.delete().where(sessions.c.id_sha256 == digest_of(session_id))).rowcount > 0


# -- in a request ---------------------------------------------------------------------------------
def db_of(request: web.Request) -> Db:
    return request.app[STORAGE].sql


def settings_of(request: web.Request) -> SessionSettings:
    return request.app.get(SESSION_SETTINGS) or SessionSettings()


def current_session(request: web.Request) -> ConsoleSession | None:
    """The session of the request's cookie (looked up once per request), or None."""
    if _CURRENT not in request:
        request[_CURRENT] = find_session(db_of(request), request.cookies.get(COOKIE), settings_of(request))
    found = request[_CURRENT]
    return found if isinstance(found, ConsoleSession) else None


def forget_current(request: web.Request) -> None:
    """After logout, the rest of this request is not logged in."""
    request[_CURRENT] = None


def set_session_cookie(request: web.Request, response: web.StreamResponse, session_id: str) -> None:
    """HttpOnly (no script reads it), SameSite=Lax (not sent on other sites' POSTs), Secure over https."""
    response.set_cookie(COOKIE, session_id, max_age=int(settings_of(request).absolute_s), path="/",
                        httponly=True, samesite="Lax", secure=request.secure)


def clear_session_cookie(request: web.Request, response: web.StreamResponse) -> None:
    response.del_cookie(COOKIE, path="/", secure=request.secure, httponly=True, samesite="Lax")


def csrf_matches(expected: str, presented: object) -> bool:
    """Constant-time comparison of a presented CSRF token (form field or header) with the session's."""
    return isinstance(presented, str) and bool(presented) and hmac.compare_digest(presented, expected)


async def presented_csrf(request: web.Request) -> str:
    """The CSRF token a request carries: the X-CSRF-Token header, else the form field `csrf`."""
    header = request.headers.get(CSRF_HEADER)
    if header:
        return header
    if request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        value = (await request.post()).get(CSRF_FIELD)
        return value if isinstance(value, str) else ""
    return ""


def api_session(request: web.Request) -> tuple[Principal, str] | None:
    """For the API's auth middleware: (principal, CSRF token) of the request's session cookie, or None."""
    if COOKIE not in request.cookies:
        return None
    session = current_session(request)
    return (session.user.principal, session.csrf) if session is not None else None
