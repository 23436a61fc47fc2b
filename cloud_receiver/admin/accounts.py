"""People's accounts of the web console: login names, argon2id password hashes, roles and scopes.

Roles and scopes are those of API tokens (`cloud_receiver.admin.auth`): an `admin` sees everything,
a `regulator` the canteens whose jurisdiction code starts with its scope, a `canteen` account its one
canteen. Passwords are hashed with argon2id (argon2-cffi's RFC 9106 profile) and rehashed at the next
login when those parameters change. A password is never a command-line argument (the CLI reads it from
an environment variable or systemd credential) and never logged.

An account is disabled, never deleted (the workflow's transitions name their actor). Disabling an
account or setting its password ends all its console sessions at once (`sessions` rows deleted); a
session lives in the web console (`cloud_receiver.web.sessions`).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
import structlog
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from bk_common.logs import say
from bk_common.yamlconf import resolve_secret
from cloud_receiver.admin.auth import ROLES, AuthError, Principal, validate_scope
from cloud_receiver.storage.db import Db
from cloud_receiver.storage.schema import canteens, sessions, users

log = structlog.get_logger(__name__)

MIN_PASSWORD_CHARS = 10
MAX_PASSWORD_CHARS = 256  # argon2 takes any length; a megabyte "password" is only a way to burn CPU
USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
DISPLAY_NAME_MAX = 64
PASSWORD_HASHER = PasswordHasher()  # argon2id, RFC 9106 low-memory profile; tests swap in a cheaper one


class AccountError(Exception):
    """An account change or lookup refused; the message (Simplified Chinese) says why, for people."""


@dataclass(frozen=True, slots=True)
class User:
    id: int
    name: str
    role: str
    scope: str
    display_name: str

    @property
    def principal(self) -> Principal:
        """What this person may see, as the API's principal (its name is the login name)."""
        return Principal(self.role, self.scope, self.name)

    @property
    def shown_name(self) -> str:
        return self.display_name or self.name


# -- passwords ------------------------------------------------------------------------------------
def check_password_policy(password: str) -> None:
    """Raise AccountError (in Chinese) unless the password is long enough."""
    if len(password) < MIN_PASSWORD_CHARS:
        raise AccountError(f"密码太短: 至少 {MIN_PASSWORD_CHARS} 个字符, 现在只有 {len(password)} 个")
    if len(password) > MAX_PASSWORD_CHARS:
        raise AccountError(f"密码太长: 最多 {MAX_PASSWORD_CHARS} 个字符")


def hash_password(password: str) -> str:
    """The argon2id hash (PHC string) of a password that meets the policy."""
    check_password_policy(password)
    return PASSWORD_HASHER.hash(password)


def verify_password(stored_hash: str, password: str) -> bool:
    """Whether `password` matches `stored_hash`; False (never an exception) for a damaged hash."""
    try:
        return PASSWORD_HASHER.verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    """Whether the hash was made with other parameters than this receiver's (rehash at the next login)."""
    try:
        return PASSWORD_HASHER.check_needs_rehash(stored_hash)
    except InvalidHashError:
        return True


@functools.cache
def _decoy_hash() -> str:
    """Verified against when the name is unknown, so a wrong name costs the time of a wrong password."""
    return PASSWORD_HASHER.hash("decoy password, never a real one")


# -- accounts -------------------------------------------------------------------------------------
def _user(row: dict[str, Any]) -> User:
    return User(int(row["id"]), row["name"], row["role"], row["scope"], row["display_name"])


def _check_name(name: str) -> str:
    name = (name or "").strip()
    if not USER_NAME.match(name):
        raise AccountError(f"用户名 {name[:80]!r} 无效: 1-64 个字母、数字或 _ . @ -, 以字母或数字开头")
    return name


def create_user(db: Db, name: str, role: str, scope: str, password: str, display_name: str = "",
                now: datetime | None = None) -> User:
    """Create an account; raises AccountError naming what is wrong (name taken, role, scope, password)."""
    name = _check_name(name)
    try:
        scope = validate_scope(role, scope)
    except AuthError as err:
        raise AccountError(f"角色或范围无效 (role/scope): {err}") from err
    display_name = (display_name or "").strip()
    if len(display_name) > DISPLAY_NAME_MAX:
        raise AccountError(f"显示名称太长: 最多 {DISPLAY_NAME_MAX} 个字符")
    password_hash = hash_password(password)
    now = now or datetime.now(UTC)
    with db.write() as conn:
        if role == "canteen" and db.one(sa.select(canteens.c.id).where(canteens.c.id == scope), conn) is None:
            raise AccountError(f"食堂 {scope!r} 不存在 (先用 canteen add 添加)")
        if db.one(sa.select(users.c.id).where(users.c.name == name), conn) is not None:
            raise AccountError(f"用户名 {name!r} 已存在")
        new_id = conn.execute(users.insert().values(
            name=name, password_hash=password_hash, role=role, scope=scope, display_name=display_name,
            created_at=now, password_changed_at=now)).inserted_primary_key[0]
    log.info("user_created", name=name, role=role, scope=scope)
    return User(int(new_id), name, role, scope, display_name)


def list_users(db: Db) -> list[dict[str, Any]]:
    """Every account (disabled ones too) without its hash, by name."""
    u = users.c
    return db.all(sa.select(u.id, u.name, u.role, u.scope, u.display_name, u.disabled_at, u.created_at,
                            u.password_changed_at).order_by(u.name))


def get_user(db: Db, user_id: int) -> User | None:
    """An enabled account by id, or None."""
    row = db.one(sa.select(users).where(users.c.id == user_id, users.c.disabled_at.is_(None)))
    return _user(row) if row else None


def end_sessions(conn: sa.Connection, user_id: int) -> int:
    """End every console session of an account (in the caller's transaction); returns how many."""
    return conn.execute(sessions.delete().where(sessions.c.user_id == user_id)).rowcount


def disable_user(db: Db, name: str, now: datetime | None = None) -> int:
    """Disable an account and end its sessions; returns how many sessions ended. AccountError if unknown."""
    with db.write() as conn:
        row = db.one(sa.select(users.c.id, users.c.disabled_at).where(users.c.name == name), conn)
        if row is None:
            raise AccountError(f"没有用户 {name!r}")
        if row["disabled_at"] is None:
            conn.execute(users.update().where(users.c.id == row["id"]).values(disabled_at=now or datetime.now(UTC)))
        ended = end_sessions(conn, row["id"])
    log.info("user_disabled", name=name, sessions_ended=ended)
    return ended


def set_password(db: Db, name: str, password: str, now: datetime | None = None) -> int:
    """Set an account's password and end its sessions; returns how many ended. AccountError if unknown."""
    password_hash = hash_password(password)
    with db.write() as conn:
        row = db.one(sa.select(users.c.id).where(users.c.name == name), conn)
        if row is None:
            raise AccountError(f"没有用户 {name!r}")
        conn.execute(users.update().where(users.c.id == row["id"]).values(
            password_hash=password_hash, password_changed_at=now or datetime.now(UTC)))
        ended = end_sessions(conn, row["id"])
    log.info("user_password_set", name=name, sessions_ended=ended)
    return ended


def authenticate(db: Db, name: str, password: str) -> User | None:
    """The enabled account with this name and password, or None. Takes the time of one argon2 check
    whether or not the name exists; an outdated hash is replaced by one with today's parameters."""
    if len(password) > MAX_PASSWORD_CHARS:
        return None
    row = db.one(sa.select(users).where(users.c.name == (name or "").strip()))
    if row is None:
        verify_password(_decoy_hash(), password)
        return None
    if not verify_password(row["password_hash"], password) or row["disabled_at"] is not None:
        return None
    if needs_rehash(row["password_hash"]):
        with db.write() as conn:  # only if nobody changed it meanwhile
            conn.execute(users.update().where(users.c.id == row["id"], users.c.password_hash == row["password_hash"])
                         .values(password_hash=PASSWORD_HASHER.hash(password)))
        log.info("user_password_rehashed", name=row["name"])
    return _user(row)


# -- CLI ------------------------------------------------------------------------------------------
def register_user_cli(subparsers: Any) -> None:
    """Add `user add|list|disable|passwd`; each sets `func(args, db)` returning the exit code (as tokens do)."""
    user = subparsers.add_parser("user", help="web console accounts")
    sub = user.add_subparsers(dest="user_command", required=True)
    # no abbreviations: `--password SECRET` must fail, not be taken for `--password-env` and echoed back
    add = sub.add_parser("add", help="create an account (password from an environment variable)", allow_abbrev=False)
    add.add_argument("--name", required=True, help="login name, e.g. zhongwei-li")
    add.add_argument("--role", required=True, choices=ROLES)
    add.add_argument("--scope", default="", help="jurisdiction code prefix (regulator) or canteen id (canteen)")
    add.add_argument("--password-env", required=True, metavar="VAR",
                     help="environment variable (or systemd credential) holding the password")
    add.add_argument("--display-name", default="", help="name shown in the console, e.g. 李监管")
    add.set_defaults(func=_cli_add)
    sub.add_parser("list", help="list accounts").set_defaults(func=_cli_list)
    disable = sub.add_parser("disable", help="disable an account and end its sessions")
    disable.add_argument("--name", required=True)
    disable.set_defaults(func=_cli_disable)
    passwd = sub.add_parser("passwd", help="set an account's password and end its sessions", allow_abbrev=False)
    passwd.add_argument("--name", required=True)
    passwd.add_argument("--password-env", required=True, metavar="VAR",
                        help="environment variable (or systemd credential) holding the new password")
    passwd.set_defaults(func=_cli_passwd)


def _password_from(var: str) -> str:
    password = resolve_secret(var)
    if password is None:
        raise AccountError(f"环境变量 {var} 未设置 (也没有同名 systemd credential): 请把密码放在那里")
    return password


def _cli_add(args: Any, db: Db) -> int:
    try:
        user = create_user(db, args.name, args.role, args.scope, _password_from(args.password_env),
                           args.display_name)
    except AccountError as err:
        say(f"错误 (error): {err}", err=True)
        return 1
    say(f"用户已创建: {user.name} ({user.role} {user.scope})".rstrip())
    return 0


def _cli_list(args: Any, db: Db) -> int:
    for u in list_users(db):
        state = f"已停用 {u['disabled_at']}" if u["disabled_at"] else "启用"
        say(f"{u['name']}\t{u['role']}\t{u['scope'] or '-'}\t{state}\t{u['display_name'] or '-'}")
    return 0


def _cli_disable(args: Any, db: Db) -> int:
    try:
        ended = disable_user(db, args.name)
    except AccountError as err:
        say(f"错误 (error): {err}", err=True)
        return 1
    say(f"用户已停用: {args.name}, 结束了 {ended} 个会话")
    return 0


def _cli_passwd(args: Any, db: Db) -> int:
    try:
        ended = set_password(db, args.name, _password_from(args.password_env))
    except AccountError as err:
        say(f"错误 (error): {err}", err=True)
        return 1
    say(f"密码已更新: {args.name}, 结束了 {ended} 个会话")
    return 0
