"""People and programs on /admin: console accounts (`/admin/users`: add, disable, reset password) and API
tokens (`/admin/tokens`: create, shown once; revoke).

Accounts go through `cloud_receiver.admin.accounts` (argon2id off the event loop; disabling or a new
password ends the account's sessions), tokens through `cloud_receiver.admin.auth` (only the sha256 is
stored). Neither a password nor a token is ever logged or put in a URL.
"""

from __future__ import annotations

import asyncio
import functools

import sqlalchemy as sa
import structlog
from aiohttp import web

from cloud_receiver.admin import accounts, auth
from cloud_receiver.admin.accounts import DISPLAY_NAME_MAX, USER_NAME, AccountError
from cloud_receiver.storage.schema import tokens, users
from cloud_receiver.web.admin_forms import (
    ROLE_CHOICES,
    Errors,
    admin_page,
    canteen_choices,
    check_role_scope,
    done,
    local_time,
    read_form,
    require_admin,
    show_once,
)
from cloud_receiver.web.pages import ROLE_NAMES, PageError
from cloud_receiver.web.sessions import db_of

log = structlog.get_logger(__name__)

TOKEN_NAME_MAX = 64
EMPTY_USER = {"name": "", "display_name": "", "role": "regulator", "scope": ""}


# -- accounts ---------------------------------------------------------------------------------------
def _users_page(request: web.Request, *, form: dict[str, str] | None = None, errors: Errors | None = None,
                row_errors: dict[str, str] | None = None, status: int = 200) -> web.Response:
    rows = accounts.list_users(db_of(request))
    for r in rows:
        r["created"] = local_time(request, r["created_at"])
        r["password_changed"] = local_time(request, r["password_changed_at"])
        r["disabled"] = local_time(request, r["disabled_at"]) if r["disabled_at"] else ""
    return admin_page(request, "admin_users.html", {
        "title": "用户管理", "rows": rows, "form": form or EMPTY_USER, "errors": errors or {},
        "row_errors": row_errors or {}, "roles": ROLE_CHOICES, "canteens": canteen_choices(db_of(request)),
        "min_password": accounts.MIN_PASSWORD_CHARS, "me": require_admin(request)[0].name}, status)


async def users_page(request: web.Request) -> web.Response:
    require_admin(request)
    return _users_page(request)


def _password_problem(password: str) -> str:
    try:
        accounts.check_password_policy(password)
    except AccountError as err:
        return f"{err}。"
    return ""


async def users_submit(request: web.Request) -> web.Response:
    """Create an account with a role, a scope and a password the admin gives the person."""
    admin, _ = require_admin(request)
    posted = await read_form(request, "password")
    form = {k: posted.get(k, "") for k in EMPTY_USER}
    password = posted.get("password", "")
    db = db_of(request)
    errors: Errors = {}
    if not USER_NAME.match(form["name"]):
        errors["name"] = "用户名应为 1-64 个字母、数字或 _ . @ -, 以字母或数字开头, 例如 zhongwei-li。"
    if len(form["display_name"]) > DISPLAY_NAME_MAX:
        errors["display_name"] = f"显示名称最多 {DISPLAY_NAME_MAX} 个字符。"
    form["scope"] = check_role_scope(db, form["role"], form["scope"], errors)
    if problem := _password_problem(password):
        errors["password"] = problem
    if not errors:
        try:  # argon2 takes tens of milliseconds of CPU: not on the event loop
            await asyncio.get_running_loop().run_in_executor(None, functools.partial(
                accounts.create_user, db, form["name"], form["role"], form["scope"], password, form["display_name"]))
        except AccountError as err:  # the name is taken (or changed under us)
            errors["name"] = f"{err}。"
    if errors:
        return _users_page(request, form=form, errors=errors, status=400)
    log.info("console_user_added", name=form["name"], role=form["role"], by=admin.name)
    raise done("/admin/users", "user_added")


def _known_user(request: web.Request) -> str:
    """The account name of the URL; a 404 page when there is no such account."""
    name = request.match_info["name"]
    if db_of(request).one(sa.select(users.c.id).where(users.c.name == name)) is None:
        raise PageError(404, "未找到", "没有这个用户。")
    return name


async def user_disable(request: web.Request) -> web.Response:
    admin, _ = require_admin(request)
    name = _known_user(request)
    if name == admin.name:
        return _users_page(request, row_errors={name: "不能停用自己正在使用的账号。"}, status=400)
    try:
        accounts.disable_user(db_of(request), name)
    except AccountError as err:
        return _users_page(request, row_errors={name: f"{err}。"}, status=400)
    log.info("console_user_disabled", name=name, by=admin.name)
    raise done("/admin/users", "user_disabled")


async def user_password(request: web.Request) -> web.Response:
    """Set a new password (given by the admin); the account's sessions end."""
    admin, _ = require_admin(request)
    name = _known_user(request)
    password = (await read_form(request, "password")).get("password", "")
    problem = _password_problem(password)
    if not problem:
        try:
            await asyncio.get_running_loop().run_in_executor(None, accounts.set_password, db_of(request), name,
                                                             password)
        except AccountError as err:
            problem = f"{err}。"
    if problem:
        return _users_page(request, row_errors={name: problem}, status=400)
    log.info("console_user_password_set", name=name, by=admin.name)
    if name == admin.name:  # the admin's own session has just ended
        raise web.HTTPSeeOther("/login")
    raise done("/admin/users", "password_set")


# -- API tokens -------------------------------------------------------------------------------------
def _tokens_page(request: web.Request, *, form: dict[str, str] | None = None, errors: Errors | None = None,
                 status: int = 200) -> web.Response:
    t = tokens.c
    rows = db_of(request).all(sa.select(t.name, t.role, t.scope, t.created_at, t.revoked_at)
                              .order_by(t.revoked_at.is_not(None), t.created_at.desc(), t.name))
    for r in rows:
        r["created"] = local_time(request, r["created_at"])
        r["revoked"] = local_time(request, r["revoked_at"]) if r["revoked_at"] else ""
    return admin_page(request, "admin_tokens.html", {
        "title": "API 令牌", "rows": rows, "form": form or {"name": "", "role": "regulator", "scope": ""},
        "errors": errors or {}, "roles": ROLE_CHOICES, "canteens": canteen_choices(db_of(request))}, status)


async def tokens_page(request: web.Request) -> web.Response:
    require_admin(request)
    return _tokens_page(request)


async def tokens_submit(request: web.Request) -> web.Response:
    """Create a token; the answer shows it once (only its sha256 is kept)."""
    admin, _ = require_admin(request)
    posted = await read_form(request)
    form = {k: posted.get(k, "") for k in ("name", "role", "scope")}
    db = db_of(request)
    errors: Errors = {}
    if not form["name"] or len(form["name"]) > TOKEN_NAME_MAX:
        errors["name"] = f"请填写令牌名称 (1-{TOKEN_NAME_MAX} 个字符), 写明谁持有它, 例如 shapotou-regulator。"
    form["scope"] = check_role_scope(db, form["role"], form["scope"], errors)
    token = ""
    if not errors:
        try:
            token = auth.create_token(db, form["role"], form["scope"], form["name"])
        except auth.AuthError as err:  # checked above; only a canteen removed meanwhile gets here
            errors["scope"] = f"无法创建令牌: {err}"
    if errors:
        return _tokens_page(request, form=form, errors=errors, status=400)
    log.info("console_token_created", name=form["name"], role=form["role"], by=admin.name)
    facts = [("名称", form["name"]), ("角色", ROLE_NAMES[form["role"]]), ("范围", form["scope"] or "全部")]
    return show_once(request, "API 令牌已创建", "请立即复制并交给持有人, 这是唯一一次显示。",
                     [("令牌", token)], facts,
                     ["令牌只显示这一次: 平台只保存它的摘要, 无法再次查看。丢失后请吊销并重新创建。",
                      "使用方法: 在请求头中加入 Authorization: Bearer <令牌>。",
                      "请勿通过聊天群、邮件正文等明文渠道转发令牌。"], back="/admin/tokens")


async def tokens_revoke(request: web.Request) -> web.Response:
    admin, _ = require_admin(request)
    name = (await read_form(request)).get("name", "")
    revoked = auth.revoke_token(db_of(request), name) if name else 0
    log.info("console_token_revoked", name=name, count=revoked, by=admin.name)
    raise done("/admin/tokens", "token_revoked" if revoked else "nothing_revoked")


def register(app: web.Application) -> None:
    app.router.add_get("/admin/users", users_page)
    app.router.add_post("/admin/users", users_submit)
    app.router.add_post("/admin/users/{name}/disable", user_disable)
    app.router.add_post("/admin/users/{name}/password", user_password)
    app.router.add_get("/admin/tokens", tokens_page)
    app.router.add_post("/admin/tokens", tokens_submit)
    app.router.add_post("/admin/tokens/revoke", tokens_revoke)
