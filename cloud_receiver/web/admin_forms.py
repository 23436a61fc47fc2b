"""What the /admin pages share: the admin-only guard, reading a posted form, role/scope checks in Chinese,
the notice after a redirect (post/redirect/get), show-once secret pages and local times.

Every admin form posts with the session's `csrf` field (checked by `pages.console_middleware`). A form
with a problem is shown again with status 400, the values kept and a Chinese message under each field
at fault; a good one redirects (303) to its list with `?done=<code>`, a fixed message of `DONE`
(never text from the request). Pages that show a secret (a device password, an API token) are the
exception: they render directly, once, with `Cache-Control: no-store`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import sqlalchemy as sa
from aiohttp import web

from cloud_receiver.admin.accounts import User
from cloud_receiver.admin.auth import CANTEEN_ID, JURISDICTION, ROLES, Principal
from cloud_receiver.api import API_SETTINGS
from cloud_receiver.storage.db import Db, parse_iso
from cloud_receiver.storage.schema import canteens
from cloud_receiver.web.pages import ROLE_NAMES, render, require_user

ADMIN_ONLY = ("admin",)
FIELD_MAX = 256  # longest one-line field a form takes (longer input is cut, then refused by its check)
Errors = dict[str, str]

# fixed notices after a redirect, by the `done` code of the URL
DONE = {
    "canteen_saved": "食堂已保存。",
    "user_added": "用户已创建。",
    "user_disabled": "用户已停用, 其所有登录会话已结束。",
    "password_set": "密码已重置, 该用户的所有登录会话已结束, 需用新密码重新登录。",
    "token_revoked": "令牌已吊销, 使用它的请求将被拒绝。",
    "nothing_revoked": "没有需要吊销的令牌 (该名称的令牌不存在或已吊销)。",
    "webhook_saved": "推送机器人已保存。",
    "command_sent": "命令已发送, 正在等待设备应答。",
}
ADMIN_SECTIONS = (  # the admin pages' own navigation (admin_base.html)
    ("概览", "/admin"), ("食堂", "/admin/canteens"), ("设备", "/admin/devices"), ("用户", "/admin/users"),
    ("API 令牌", "/admin/tokens"), ("推送机器人", "/admin/webhooks"),
)
ROLE_CHOICES = tuple((role, ROLE_NAMES[role]) for role in ROLES)


def require_admin(request: web.Request) -> tuple[User, Principal]:
    """The logged-in admin; the login page for nobody, a 403 page for any other role."""
    return require_user(request, roles=ADMIN_ONLY)


async def read_form(request: web.Request, *raw: str) -> dict[str, str]:
    """The posted fields as text: one-line fields stripped and cut at FIELD_MAX; the fields named in `raw`
    (passwords, a config) exactly as sent."""
    posted = await request.post()
    form = {}
    for key, value in posted.items():
        if isinstance(value, str):
            form[key] = value if key in raw else value.strip()[:FIELD_MAX]
    return form


def done(path: str, code: str, **more: str) -> web.HTTPSeeOther:
    """The redirect after a good post: `path` shows the notice `DONE[code]` (`more`: further query parameters)."""
    assert code in DONE
    return web.HTTPSeeOther(f"{path}?{urlencode({'done': code, **more})}")


def notice_of(request: web.Request) -> str:
    return DONE.get(request.query.get("done", ""), "")


def admin_page(request: web.Request, template: str, context: dict[str, Any], status: int = 200) -> web.Response:
    """Render an admin page: adds the section navigation and the notice of a redirect."""
    sections = [{"label": label, "href": href, "active": request.path == href
                 or (href != "/admin" and request.path.startswith(href + "/"))} for label, href in ADMIN_SECTIONS]
    return render(request, template, {"sections": sections, "notice": notice_of(request) if status == 200 else "",
                                      **context}, status=status)


def show_once(request: web.Request, title: str, lead: str, secrets: list[tuple[str, str]],
              facts: list[tuple[str, str]], notes: list[str], back: str) -> web.Response:
    """A page showing a secret once (rendered straight from the POST, never cached, never logged)."""
    response = admin_page(request, "admin_secret.html", {"title": title, "lead": lead, "secrets": secrets,
                                                         "facts": facts, "notes": notes, "back": back})
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return response


def local_time(request: web.Request, value: str | None) -> str:
    """A stored UTC timestamp as local wall-clock time (the API's `tz_hours`, China Standard Time), or "-"."""
    if not value:
        return "-"
    tz_hours = request.app[API_SETTINGS].tz_hours if API_SETTINGS in request.app else 8
    try:
        return f"{parse_iso(str(value)) + timedelta(hours=tz_hours):%Y-%m-%d %H:%M:%S}"
    except ValueError:
        return str(value)


def canteen_exists(db: Db, canteen_id: str) -> bool:
    return db.one(sa.select(canteens.c.id).where(canteens.c.id == canteen_id)) is not None


def check_role_scope(db: Db, role: str, scope: str, errors: Errors) -> str:
    """The scope normalised for `role` (empty for admin); a Chinese message in `errors` when either is wrong."""
    if role not in ROLES:
        errors["role"] = "请选择角色: 管理员、监管人员或食堂。"
        return scope
    if role == "admin":
        return ""
    if role == "regulator" and not JURISDICTION.match(scope):
        errors["scope"] = "监管人员的范围应为 2-12 位数字的辖区代码前缀, 例如 640502。"
    elif role == "canteen" and not (CANTEEN_ID.match(scope) and canteen_exists(db, scope)):
        errors["scope"] = "食堂账号的范围应为已有的食堂编号 (先在“食堂”页添加)。"
    return scope


def canteen_choices(db: Db) -> list[dict[str, Any]]:
    """Every canteen (id, name, jurisdiction) for the forms' pickers."""
    c = canteens.c
    return db.all(sa.select(c.id, c.name, c.jurisdiction).order_by(c.id))
