"""The administration pages `/admin/…` (admins only; any other role gets the 403 page): the overview, canteens
and push robots here; devices in `admin_devices`, people's accounts and API tokens in `admin_people`.

Forms follow `admin_forms`: CSRF field, Chinese message under the field at fault (400), redirect after
a good post. A robot's webhook URL carries its key, so after it is saved the pages show it masked.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlsplit

import sqlalchemy as sa
import structlog
from aiohttp import web

from cloud_receiver.admin.auth import CANTEEN_ID, JURISDICTION
from cloud_receiver.admin.devices import DISTRICT
from cloud_receiver.appkeys import STORAGE
from cloud_receiver.push.wiring import add_webhook
from cloud_receiver.storage.schema import canteens, devices, tokens, users, webhooks
from cloud_receiver.web import admin_devices, admin_people
from cloud_receiver.web.admin_forms import (
    Errors,
    admin_page,
    canteen_choices,
    canteen_exists,
    done,
    read_form,
    require_admin,
)
from cloud_receiver.web.sessions import db_of

log = structlog.get_logger(__name__)

NAME_MAX = 64
WEBHOOK_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
URL_MAX = 2048
ROBOT_KINDS = {"wecom": "企业微信", "dingtalk": "钉钉"}
SCOPE_KINDS = {"jurisdiction": "辖区 (代码前缀)", "canteen": "单个食堂"}
SHOWN_KEY_CHARS = 4  # of a long key in a robot's URL, only the last few are shown


# -- overview ---------------------------------------------------------------------------------------
async def admin_home(request: web.Request) -> web.Response:
    require_admin(request)
    db = db_of(request)

    def count(table: sa.Table, *where: sa.ColumnElement[bool]) -> int:
        return int(db.scalar(sa.select(sa.func.count()).select_from(table).where(*where)) or 0)

    cards = [
        {"href": "/admin/canteens", "label": "食堂", "value": count(canteens), "detail": "学校食堂及其辖区代码"},
        {"href": "/admin/devices", "label": "设备", "value": count(devices),
         "detail": f"在线 {count(devices, devices.c.online == 1)} 台 · 开通、状态、远程配置"},
        {"href": "/admin/users", "label": "用户", "value": count(users, users.c.disabled_at.is_(None)),
         "detail": "控制台账号 (启用中)"},
        {"href": "/admin/tokens", "label": "API 令牌", "value": count(tokens, tokens.c.revoked_at.is_(None)),
         "detail": "对接系统使用的令牌 (有效)"},
        {"href": "/admin/webhooks", "label": "推送机器人", "value": count(webhooks),
         "detail": "企业微信 / 钉钉群机器人"},
    ]
    return admin_page(request, "admin_index.html", {"title": "系统管理", "cards": cards})


# -- canteens ---------------------------------------------------------------------------------------
def _canteens_page(request: web.Request, form: dict[str, str], errors: Errors, editing: bool,
                   status: int = 200) -> web.Response:
    db = db_of(request)
    c = canteens.c
    rows = db.all(sa.select(c.id, c.name, c.jurisdiction, sa.func.count(devices.c.id).label("devices"))
                  .select_from(canteens.outerjoin(devices, devices.c.canteen_id == c.id))
                  .group_by(c.id, c.name, c.jurisdiction).order_by(c.id))
    return admin_page(request, "admin_canteens.html", {"title": "食堂管理", "rows": rows, "form": form,
                                                       "errors": errors, "editing": editing}, status)


async def canteens_page(request: web.Request) -> web.Response:
    require_admin(request)
    edit = request.query.get("edit", "")
    if edit:
        row = db_of(request).one(sa.select(canteens).where(canteens.c.id == edit))
        if row is None:
            raise web.HTTPSeeOther("/admin/canteens")
        form = {"id": row["id"], "name": row["name"], "jurisdiction": row["jurisdiction"]}
        return _canteens_page(request, form, {}, editing=True)
    return _canteens_page(request, {"id": "", "name": "", "jurisdiction": ""}, {}, editing=False)


async def canteens_submit(request: web.Request) -> web.Response:
    """Add a canteen, or (mode=edit) change the name and jurisdiction of one; like `cloud-receiver canteen add`."""
    admin, _ = require_admin(request)
    form = await read_form(request)
    editing = form.get("mode") == "edit"
    canteen_id, name, jurisdiction = form.get("id", ""), form.get("name", ""), form.get("jurisdiction", "")
    errors: Errors = {}
    db = db_of(request)
    if not CANTEEN_ID.match(canteen_id):
        errors["id"] = "食堂编号应为 1-64 个字母、数字或 _ . -, 例如 canteen-0001。"
    elif editing and not canteen_exists(db, canteen_id):
        errors["id"] = "没有这个食堂, 无法修改。"
    elif not editing and canteen_exists(db, canteen_id):
        errors["id"] = "这个食堂编号已存在; 要修改它, 请在列表中点“编辑”。"
    if len(name) > NAME_MAX:
        errors["name"] = f"名称最多 {NAME_MAX} 个字符。"
    if not DISTRICT.match(jurisdiction):
        errors["jurisdiction"] = "辖区代码应为 6 位数字的区县代码, 例如 640502 (设备编号由它生成)。"
    if errors:
        form = {"id": canteen_id, "name": name, "jurisdiction": jurisdiction}
        return _canteens_page(request, form, errors, editing, status=400)
    request.app[STORAGE].add_canteen(canteen_id, name, jurisdiction)  # the loop's own connection (appkeys)
    log.info("console_canteen_saved", canteen_id=canteen_id, jurisdiction=jurisdiction, by=admin.name)
    raise done("/admin/canteens", "canteen_saved")


# -- push robots ------------------------------------------------------------------------------------
def mask_url(url: str) -> str:
    """A robot URL without its secret: query values (the key / access_token) and any password hidden but the
    last few characters of a long value, so two robots can still be told apart."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "***"

    def hide(value: str) -> str:
        return "***" + value[-SHOWN_KEY_CHARS:] if len(value) >= 16 else "***"

    query = "&".join(f"{k}={hide(v)}" for k, v in parse_qsl(parts.query, keep_blank_values=True))
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}" + (f"?{query}" if query else "")


def _webhooks_page(request: web.Request, form: dict[str, str], errors: Errors, status: int = 200) -> web.Response:
    w = webhooks.c
    rows = db_of(request).all(sa.select(w.id, w.kind, w.scope_kind, w.scope, w.url, w.secret_env, w.enabled)
                              .order_by(w.id))
    for r in rows:
        r["url"] = mask_url(r["url"])
    return admin_page(request, "admin_webhooks.html", {
        "title": "推送机器人", "rows": rows, "form": form, "errors": errors, "kinds": ROBOT_KINDS,
        "scope_kinds": SCOPE_KINDS, "canteens": canteen_choices(db_of(request))}, status)


async def webhooks_page(request: web.Request) -> web.Response:
    require_admin(request)
    empty = {"id": "", "kind": "wecom", "scope_kind": "jurisdiction", "scope": "", "url": "", "secret_env": ""}
    return _webhooks_page(request, empty, {})


def check_webhook(request: web.Request, form: dict[str, str]) -> Errors:
    errors: Errors = {}
    if not WEBHOOK_ID.match(form["id"]):
        errors["id"] = "编号应为 1-64 个字母、数字或 _ . -, 例如 shapotou-wecom。"
    if form["kind"] not in ROBOT_KINDS:
        errors["kind"] = "请选择机器人类型: 企业微信或钉钉。"
    if form["scope_kind"] == "jurisdiction":
        if not JURISDICTION.match(form["scope"]):
            errors["scope"] = "辖区范围应为 2-12 位数字的辖区代码前缀, 例如 640502。"
    elif form["scope_kind"] == "canteen":
        if not (CANTEEN_ID.match(form["scope"]) and canteen_exists(db_of(request), form["scope"])):
            errors["scope"] = "请填写已有的食堂编号。"
    else:
        errors["scope_kind"] = "请选择推送范围: 辖区或单个食堂。"
    url = form["url"]
    try:
        parts = urlsplit(url)
        ok_url = parts.scheme in ("https", "http") and bool(parts.hostname) and len(url) <= URL_MAX
    except ValueError:
        ok_url = False
    if not ok_url:
        errors["url"] = "请填写机器人的完整 Webhook 地址 (https://…), 可在群设置的机器人详情中复制。"
    if form["secret_env"] and not ENV_NAME.match(form["secret_env"]):
        errors["secret_env"] = "环境变量名只能包含字母、数字和下划线, 且不以数字开头, 例如 BK_DINGTALK_SECRET。"
    return errors


async def webhooks_submit(request: web.Request) -> web.Response:
    """Add or replace (same id) a robot, like `cloud-receiver webhook add`."""
    admin, _ = require_admin(request)
    posted = await read_form(request, "url")
    form = {k: posted.get(k, "") for k in ("id", "kind", "scope_kind", "scope", "secret_env")}
    form["url"] = posted.get("url", "").strip()[:URL_MAX + 1]
    errors = check_webhook(request, form)
    if errors:
        return _webhooks_page(request, form, errors, status=400)
    add_webhook(db_of(request), form["id"], form["scope_kind"], form["scope"], form["kind"], form["url"],
                form["secret_env"] or None)
    log.info("console_webhook_saved", id=form["id"], by=admin.name)
    raise done("/admin/webhooks", "webhook_saved")


def register(app: web.Application) -> None:
    """The /admin routes."""
    app.router.add_get("/admin", admin_home)
    app.router.add_get("/admin/canteens", canteens_page)
    app.router.add_post("/admin/canteens", canteens_submit)
    app.router.add_get("/admin/webhooks", webhooks_page)
    app.router.add_post("/admin/webhooks", webhooks_submit)
    admin_devices.register(app)
    admin_people.register(app)
