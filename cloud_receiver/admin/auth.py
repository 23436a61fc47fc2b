"""Bearer tokens and roles of the API.

A token is random (`bk_` + 43 URL-safe characters), shown once when created and stored only as its
sha256, so a copy of the database cannot be used to call the API. Roles:
- `admin`: everything;
- `regulator`: canteens whose jurisdiction code starts with the token's scope (e.g. "640502");
- `canteen`: the one canteen named by its scope;
- `public` (no token): only `/api/v1/public/...` and the OpenAPI document.
Tokens never appear in logs: only the token's name and role are bound to the request logger.

A browser's EventSource cannot send headers, so the SSE stream also takes a stream ticket in its URL
(`StreamTickets`): made by `POST /api/v1/alerts/stream/tickets` with a token, good only for
`GET /api/v1/alerts/stream`, for `TICKET_TTL_S`, as long as its token is not revoked.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
import structlog
from aiohttp import web

from bk_common.logs import say
from cloud_receiver.storage.db import Db
from cloud_receiver.storage.schema import canteens, stream_tickets, tokens

log = structlog.get_logger(__name__)

ROLES = ("admin", "regulator", "canteen")
TOKEN_PREFIX = "bk_"
JURISDICTION = re.compile(r"^\d{2,12}$")
CANTEEN_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
PUBLIC_PATHS = ("/api/v1/public/", "/api/v1/openapi.json")
# media is reachable without a token when it is a public kitchen snapshot; the handler checks
PUBLIC_OPTIONAL_PATHS = ("/api/v1/media/",)
PRINCIPAL = web.RequestKey("principal", object)  # value is a Principal
TOKEN_SHA256 = web.RequestKey("token_sha256", str)  # digest of the token behind the request (bearer or ticket)
TICKET = web.RequestKey("ticket", str)  # the stream ticket, when the request came with one
STREAM_PATH = "/api/v1/alerts/stream"
LIVE_PATH = "/api/v1/live/"  # live video WebSockets: a browser cannot send headers there either
TICKET_PREFIX = "bkt_"
TICKET_TTL_S = 12 * 3600.0


class AuthError(Exception):
    """Invalid token request (bad role or scope); the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class Principal:
    role: str  # admin | regulator | canteen | public
    scope: str = ""
    name: str = "public"

    def can_see(self, canteen_id: str | None, jurisdiction: str | None) -> bool:
        """May this principal see data of this canteen?"""
        if self.role == "admin":
            return True
        if self.role == "regulator":
            return jurisdiction is not None and jurisdiction.startswith(self.scope)
        if self.role == "canteen":
            return canteen_id is not None and canteen_id == self.scope
        return False


PUBLIC = Principal("public")


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def validate_scope(role: str, scope: str) -> str:
    """Check a role's scope; returns it normalised, raises AuthError naming the problem."""
    scope = (scope or "").strip()
    if role not in ROLES:
        raise AuthError(f"role {role!r} is not one of {', '.join(ROLES)}")
    if role == "admin":
        return ""
    if role == "regulator" and not JURISDICTION.match(scope):
        raise AuthError(f"regulator scope {scope!r} must be a jurisdiction code prefix of 2-12 digits, e.g. 640502")
    if role == "canteen" and not CANTEEN_ID.match(scope):
        raise AuthError(f"canteen scope {scope!r} must be a canteen id (letters, digits, _ . -)")
    return scope


def create_token(db: Db, role: str, scope: str, name: str) -> str:
    """Create a token and return it; only its sha256 is stored. Show it once, never log it."""
    scope = validate_scope(role, scope)
    if not name.strip():
        raise AuthError("a token needs a name saying who holds it")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with db.write() as conn:
        if role == "canteen" and db.one(sa.select(canteens.c.id).where(canteens.c.id == scope), conn) is None:
            raise AuthError(f"canteen {scope!r} does not exist")
        conn.execute(tokens.insert().values(token_sha256=token_digest(token), name=name.strip(), role=role,
                                            scope=scope, created_at=datetime.now(UTC)))
    log.info("token_created", name=name.strip(), role=role, scope=scope)
    return token


def revoke_token(db: Db, name: str) -> int:
    """Revoke every active token of this name; returns how many."""
    with db.write() as conn:
        n = conn.execute(tokens.update().where(tokens.c.name == name, tokens.c.revoked_at.is_(None))
                         .values(revoked_at=datetime.now(UTC))).rowcount
    log.info("token_revoked", name=name, count=n)
    return n


def lookup(db: Db, token: str) -> Principal | None:
    """The principal of a presented token, or None if unknown or revoked."""
    return lookup_digest(db, token_digest(token))


def lookup_digest(db: Db, digest: str) -> Principal | None:
    t = tokens.c
    row = db.one(sa.select(t.role, t.scope, t.name).where(t.token_sha256 == digest, t.revoked_at.is_(None)))
    return Principal(row["role"], row["scope"], row["name"]) if row else None


class StreamTickets:
    """Stream tickets, kept in the database (`stream_tickets`), so a ticket one receiver issued opens the
    stream on every receiver of the deployment.

    Kept as sha256(ticket) -> (sha256 of the issuing token, expiry); every use looks the token up
    again, so revoking the token ends its tickets (and open streams check again every keepalive).
    At most `per_token` per token and `max_tickets` in all live at once (the oldest go); expired rows
    are deleted whenever a ticket is issued. `clock` is wall-clock seconds (the expiry is a timestamp
    every receiver compares with its own clock).
    """

    def __init__(self, db: Db, ttl_s: float = TICKET_TTL_S, clock: Callable[[], float] = time.time,
                 max_tickets: int = 10_000, per_token: int = 20) -> None:
        self.db, self.ttl_s, self.clock, self.max_tickets, self.per_token = db, ttl_s, clock, max_tickets, per_token

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    def issue(self, token_sha256: str) -> str:
        """A new ticket; a token's oldest ticket goes when it holds `per_token` (one token cannot crowd out others)."""
        t = stream_tickets.c
        now = self._now()
        oldest_first = (t.expires_at, t.ticket_sha256)
        with self.db.write() as conn:
            conn.execute(stream_tickets.delete().where(t.expires_at <= now))
            mine = sa.select(t.ticket_sha256).where(t.token_sha256 == token_sha256).order_by(*oldest_first)
            drop = [r["ticket_sha256"] for r in self.db.all(mine, conn)]
            drop = drop[:max(0, len(drop) - self.per_token + 1)]
            total = self.db.scalar(sa.select(sa.func.count()).select_from(stream_tickets), conn) - len(drop)
            if total >= self.max_tickets:
                others = sa.select(t.ticket_sha256).where(t.ticket_sha256.not_in(drop)).order_by(*oldest_first)
                drop += [r["ticket_sha256"] for r in self.db.all(others.limit(total - self.max_tickets + 1), conn)]
            if drop:
                conn.execute(stream_tickets.delete().where(t.ticket_sha256.in_(drop)))
            ticket = TICKET_PREFIX + secrets.token_urlsafe(32)
            conn.execute(stream_tickets.insert().values(ticket_sha256=token_digest(ticket), token_sha256=token_sha256,
                                                        expires_at=now + timedelta(seconds=self.ttl_s)))
        return ticket

    def token_sha256(self, ticket: str) -> str | None:
        """The digest of the token that issued this ticket, or None if unknown or expired."""
        t = stream_tickets.c
        return self.db.scalar(sa.select(t.token_sha256).where(t.ticket_sha256 == token_digest(ticket),
                                                              t.expires_at > self._now()))


def bearer(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer ...` header, or None."""
    if not header:
        return None
    kind, _, value = header.partition(" ")
    return value.strip() or None if kind.lower() == "bearer" else None


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# set by the web console: request -> (Principal, CSRF token) of its session cookie, or None
SESSION_RESOLVER = web.AppKey("session_resolver", object)
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def auth_middleware(get_db: Callable[[web.Application], Db],
                    error: Callable[[int, str, str], web.Response],
                    get_tickets: Callable[[web.Application], StreamTickets | None] | None = None) -> Any:
    """Middleware setting `request[PRINCIPAL]`; answers 401 for a missing or invalid token or ticket.
    Without either, the web console's session cookie counts (`SESSION_RESOLVER`), for a write only with
    the session's CSRF token in `X-CSRF-Token` (403 otherwise)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if not path.startswith("/api/v1"):
            return await handler(request)
        token = bearer(request.headers.get("Authorization"))
        principal = None
        if token:
            request[TOKEN_SHA256] = token_digest(token)
            principal = lookup_digest(get_db(request.app), request[TOKEN_SHA256])
            if principal is None:
                return error(401, "invalid_token", "the bearer token is unknown or revoked")
        elif (path == STREAM_PATH or path.startswith(LIVE_PATH)) and "ticket" in request.query and get_tickets is not None:
            tickets = get_tickets(request.app)
            digest = tickets.token_sha256(request.query["ticket"]) if tickets is not None else None
            principal = lookup_digest(get_db(request.app), digest) if digest else None
            if digest and principal is not None:
                request[TOKEN_SHA256], request[TICKET] = digest, request.query["ticket"]
            if principal is None:
                return error(401, "invalid_ticket", "the stream ticket is unknown, expired or its token revoked; "
                             "get a new one with POST /api/v1/alerts/stream/tickets")
        elif callable(resolve := request.app.get(SESSION_RESOLVER)) and (session := resolve(request)) is not None:
            principal, csrf = session  # the console's session cookie; a write also needs its CSRF token
            if request.method not in SAFE_METHODS and not hmac.compare_digest(
                    request.headers.get("X-CSRF-Token", "").encode(), csrf.encode()):
                return error(403, "csrf_required", "a request with the console's session cookie needs the "
                             "session's `X-CSRF-Token` header")
        if principal is None:
            if not path.startswith(PUBLIC_PATHS + PUBLIC_OPTIONAL_PATHS):
                return error(401, "unauthenticated", "this endpoint needs an `Authorization: Bearer <token>` header")
            principal = PUBLIC
        request[PRINCIPAL] = principal
        structlog.contextvars.bind_contextvars(principal=principal.name, role=principal.role)
        try:
            return await handler(request)
        finally:
            structlog.contextvars.unbind_contextvars("principal", "role")

    return middleware


def principal_of(request: web.Request) -> Principal:
    p = request.get(PRINCIPAL)
    return p if isinstance(p, Principal) else PUBLIC


def register_token_cli(subparsers: Any) -> None:
    """Add `token create` and `token revoke` to an argparse subparsers object.

    Each sub-command sets `func(args, db)`; the CLI opens the database (with migrations applied)
    and calls `args.func(args, db)`, which returns the exit code.
    """
    token = subparsers.add_parser("token", help="API bearer tokens")
    sub = token.add_subparsers(dest="token_command", required=True)
    create = sub.add_parser("create", help="create a token and print it once")
    create.add_argument("--role", required=True, choices=ROLES)
    create.add_argument("--scope", default="", help="jurisdiction code prefix (regulator) or canteen id (canteen)")
    create.add_argument("--name", required=True, help="who holds the token, e.g. 'zhongwei-shapotou-regulator'")
    create.set_defaults(func=_cli_create)
    revoke = sub.add_parser("revoke", help="revoke all tokens of a name")
    revoke.add_argument("--name", required=True)
    revoke.set_defaults(func=_cli_revoke)


def _cli_create(args: Any, db: Db) -> int:
    try:
        token = create_token(db, args.role, args.scope, args.name)
    except AuthError as err:
        say(f"错误 (error): {err}")
        return 2
    say(token)
    return 0


def _cli_revoke(args: Any, db: Db) -> int:
    n = revoke_token(db, args.name)
    say(f"已吊销 {n} 个令牌 (revoked {n} token(s))")
    return 0 if n else 1
