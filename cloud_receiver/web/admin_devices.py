"""Edge boxes on /admin: the list (`/admin/devices`), adding one (its id and password shown once), and a
box's own page (`/admin/devices/{id}`: status, cameras, recent commands, `status` and `config_push`).

Adding a box is `cloud-receiver device add` in a form: `admin.devices.add_device` issues the id and
password and, unless 仅保存 (the CLI's `--no-broker`) is ticked, creates the box's broker account through
dynamic security with the receiver config's `broker` section. It runs off the event loop (the broker
may take seconds to answer) on a storage of its own, as the CLI does. Commands go through
`control.commands.send`, the path of `POST /api/v1/devices/{id}/commands`; static/admin.js then polls
`GET /api/v1/devices/{id}/commands/{cid}` until the box has answered.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import sqlalchemy as sa
import structlog
from aiohttp import web

from bk_common.yamlconf import YamlConfigError, load_yaml_with_lines
from cloud_receiver.admin.devices import DISTRICT, DeviceCredentials, add_device
from cloud_receiver.admin.dynsec import DynsecAdmin
from cloud_receiver.api.context import ctx
from cloud_receiver.appkeys import CONFIG
from cloud_receiver.config import ReceiverConfig, resolve_secret
from cloud_receiver.control import commands as control
from cloud_receiver.control.publisher import PublishFailed
from cloud_receiver.errors import ProvisioningError, StorageError
from cloud_receiver.storage.db import Db
from cloud_receiver.storage.opening import open_store
from cloud_receiver.storage.schema import canteens, command_results, commands, devices
from cloud_receiver.storage.sqlite import Storage
from cloud_receiver.web.admin_forms import (
    Errors,
    admin_page,
    canteen_choices,
    done,
    local_time,
    read_form,
    require_admin,
    show_once,
)
from cloud_receiver.web.pages import PageError
from cloud_receiver.web.sessions import db_of
from cloud_receiver.workflow import queries

log = structlog.get_logger(__name__)

NAME_MAX = 64
RECENT_COMMANDS = 20
CONFIG_MAX_CHARS = 64 * 1024  # a whole agent config is a few KiB
VERSION = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
SENDABLE = ("status", "config_push")  # what the device page offers
STATES = {"pending": "等待应答", "ok": "成功", "failed": "失败", "expired": "超时未应答", "not_sent": "未送达"}
COMMAND_NAMES = {"status": "状态查询", "config_push": "推送配置", "snapshot_now": "抓拍", "live_start": "开始直播",
                 "live_stop": "结束直播", "playback": "回放", "reload": "重新加载配置", "collect_mark": "标记误报(留作训练样本)"}


# -- the list and adding a box ----------------------------------------------------------------------
def reported_configs(db: Db, device_id: str | None = None) -> dict[str, dict[str, Any]]:
    """Per device, what its latest answered `status` command said (config_version, config_on_trial, …)."""
    c, r = commands.c, command_results.c
    answered = commands.join(command_results, sa.and_(r.device_id == c.device_id, r.command_id == c.id))
    latest = sa.select(c.device_id, sa.func.max(r.at).label("at")).select_from(answered).where(
        c.name == "status", r.ok == 1).group_by(c.device_id)
    if device_id is not None:
        latest = latest.where(c.device_id == device_id)
    last = latest.subquery()
    rows = db.all(sa.select(r.device_id, r.data_json).select_from(
        answered.join(last, sa.and_(last.c.device_id == r.device_id, last.c.at == r.at))).where(c.name == "status"))
    return {row["device_id"]: json.loads(row["data_json"] or "{}") for row in rows}


def config_text(reported: dict[str, Any] | None) -> str:
    if not reported:
        return "-"
    version = str(reported.get("config_version") or "初始配置")
    return version + (" (试用中)" if reported.get("config_on_trial") else "")


def problems_of(status_json: str | None) -> list[str]:
    try:
        found = json.loads(status_json or "{}").get("problems", [])
    except (ValueError, AttributeError):
        return []
    return [str(p) for p in found] if isinstance(found, list) else []


def _devices_page(request: web.Request, form: dict[str, str], errors: Errors, status: int = 200) -> web.Response:
    db = db_of(request)
    d = devices.c
    rows = db.all(sa.select(d.id, d.name, d.canteen_id, canteens.c.name.label("canteen_name"), d.online, d.last_seen,
                            d.version, d.status_json)
                  .select_from(devices.outerjoin(canteens, canteens.c.id == d.canteen_id)).order_by(d.id))
    configs = reported_configs(db)
    for r in rows:
        r["last_seen"] = local_time(request, r["last_seen"])
        r["problems"] = problems_of(r.pop("status_json"))
        r["config"] = config_text(configs.get(r["id"]))
    return admin_page(request, "admin_devices.html", {
        "title": "设备管理", "rows": rows, "form": form, "errors": errors, "canteens": canteen_choices(db),
        "broker_env": request.app[CONFIG].broker.admin_password_env}, status)


async def devices_page(request: web.Request) -> web.Response:
    require_admin(request)
    return _devices_page(request, {"canteen_id": request.query.get("canteen", ""), "name": "", "no_broker": ""}, {})


def _open_storage(cfg: ReceiverConfig) -> Storage:
    """A storage of this thread's own (connections are per thread), on the app's database (already migrated)."""
    s = cfg.storage
    return open_store(url=s.url, password_env=s.password_env, sqlite_path=s.sqlite_path,
                      busy_timeout_ms=s.busy_timeout_ms, migrate=False)


def _provision(cfg: ReceiverConfig, canteen_id: str, name: str, admin_password: str | None) -> DeviceCredentials:
    """`cloud-receiver device add` (with the broker when `admin_password` is given, else `--no-broker`); blocking."""
    storage = _open_storage(cfg)
    try:
        if admin_password is None:
            return add_device(storage, None, canteen_id, name, cfg.device_ids)
        b = cfg.broker
        with DynsecAdmin(b.host, b.port, b.admin_username, admin_password, tls=b.tls, timeout_s=b.timeout_s) as admin:
            return add_device(storage, admin, canteen_id, name, cfg.device_ids)
    finally:
        storage.close()


async def devices_submit(request: web.Request) -> web.Response:
    """Issue a box's id and password (shown once), create its broker account, store it."""
    admin, _ = require_admin(request)
    posted = await read_form(request)
    form = {k: posted.get(k, "") for k in ("canteen_id", "name", "no_broker")}
    cfg = request.app[CONFIG]
    db = db_of(request)
    errors: Errors = {}
    canteen = db.one(sa.select(canteens).where(canteens.c.id == form["canteen_id"]))
    if canteen is None:
        errors["canteen_id"] = "请选择设备所属的食堂 (没有的话先在“食堂”页添加)。"
    elif not DISTRICT.match(canteen["jurisdiction"] or ""):
        errors["canteen_id"] = (f"该食堂的辖区代码 {canteen['jurisdiction'] or '(空)'} 不是 6 位区县代码, 无法生成设备编号; "
                                "请先在“食堂”页修改。")
    if len(form["name"]) > NAME_MAX:
        errors["name"] = f"设备名称最多 {NAME_MAX} 个字符。"
    use_broker = form["no_broker"] != "1"
    admin_password = resolve_secret(cfg.broker.admin_password_env) if use_broker else None
    if use_broker and admin_password is None:
        errors["no_broker"] = (f"未配置 MQTT broker 管理密码 (环境变量或 systemd 凭据 {cfg.broker.admin_password_env}), "
                               "无法开通设备账号。请配置后重试; 测试用的普通 broker 可勾选“仅保存”。")
    if errors:
        return _devices_page(request, form, errors, status=400)
    try:
        creds = await asyncio.get_running_loop().run_in_executor(
            None, _provision, cfg, form["canteen_id"], form["name"], admin_password)
    except ProvisioningError as err:
        errors["no_broker"] = f"在 MQTT broker 上开通设备账号失败, 设备未保存: {err}"
    except StorageError as err:
        errors["name"] = f"保存设备失败, 请重试: {err}"
    if errors:
        return _devices_page(request, form, errors, status=503)
    log.info("console_device_added", device_id=creds.device_id, canteen_id=form["canteen_id"], broker=use_broker,
             by=admin.name)
    facts = [("食堂", f"{canteen['name'] or ''} ({form['canteen_id']})"), ("设备名称", form["name"] or "-"),
             ("MQTT broker", "已开通设备账号" if use_broker else "仅保存, 未开通 broker 账号")]
    return show_once(request, "设备已添加", "请把以下编号和密码配置到边缘盒上, 密码只显示这一次。",
                     [("设备编号 (device.id)", creds.device_id), ("设备密码", creds.password)], facts,
                     ["设备编号填入盒子配置文件 (agent.yaml) 的 device.id; 它也是设备连接 MQTT 的用户名。",
                      "设备密码写入盒子的凭据 BK_DEVICE_PASSWORD: 文件 /etc/brightkitchen/credentials/BK_DEVICE_PASSWORD "
                      "(systemd LoadCredential), 然后重启 brightkitchen-agent。",
                      "平台不保存密码明文, 此页关闭后无法再次查看; 丢失后需重新添加设备。"],
                     back=f"/admin/devices/{creds.device_id}")


# -- one box ----------------------------------------------------------------------------------------
def command_summary(view: dict[str, Any]) -> str:
    """What a command's row says besides its state (static/admin.js `summary` says the same)."""
    if view["state"] in ("failed", "not_sent"):
        return view["error"] or ""
    if view["state"] != "ok":
        return ""
    data = view.get("data") or {}
    if view["name"] == "status":
        trial = " (试用中)" if data.get("config_on_trial") else ""
        return (f"程序版本 {data.get('version') or '-'} · 配置版本 {data.get('config_version') or '初始配置'}{trial}"
                f" · 摄像头在线 {data.get('cameras_online', '-')}/{data.get('cameras', '-')}")
    if view["name"] == "config_push":
        return "设备已接受配置, 正在重启试用; 摄像头未能全部上线时会自动回滚 (见“问题”)。"
    return ""


def _shown(request: web.Request, view: dict[str, Any]) -> dict[str, Any]:
    args = view["args"]
    return {"id": view["id"], "name": view["name"], "label": COMMAND_NAMES.get(view["name"], view["name"]),
            "version": str(args.get("version", "")) if view["name"] == "config_push" else "",
            "issuer": view["issuer"], "issued": local_time(request, view["issued_at"]), "state": view["state"],
            "state_label": STATES.get(view["state"], view["state"]), "summary": command_summary(view)}


def _device_page(request: web.Request, device_id: str, *, form: dict[str, str] | None = None,
                 send_error: str = "", errors: Errors | None = None, status: int = 200) -> web.Response:
    _, principal = require_admin(request)
    db = db_of(request)
    d = devices.c
    row = db.one(sa.select(d.id, d.name, d.canteen_id, canteens.c.name.label("canteen_name"), d.online, d.last_seen,
                           d.version, d.status_json, d.created_at)
                 .select_from(devices.outerjoin(canteens, canteens.c.id == d.canteen_id)).where(d.id == device_id))
    if row is None:
        raise PageError(404, "未找到", "没有这个设备。")
    now = ctx(request).now()
    ids = db.all(sa.select(commands.c.id).where(commands.c.device_id == device_id)
                 .order_by(commands.c.issued_at.desc(), commands.c.id).limit(RECENT_COMMANDS))
    recent = [_shown(request, v) for i in ids if (v := control.view(db, device_id, i["id"], now)) is not None]
    sent_id = request.query.get("sent", "")
    sent = next((c for c in recent if c["id"] == sent_id), None)
    cameras = queries.list_cameras(db, principal, device_id)
    for cam in cameras:
        cam["updated"] = local_time(request, cam["updated_at"])
    device = {**row, "last_seen": local_time(request, row["last_seen"]), "created": local_time(request, row["created_at"]),
              "problems": problems_of(row["status_json"]), "config": config_text(reported_configs(db, device_id).get(device_id))}
    return admin_page(request, "admin_device.html", {
        "title": f"设备 {row['name'] or device_id}", "device": device, "cameras": cameras, "recent": recent,
        "sent": sent, "send_error": send_error, "form": form or {"version": "", "config": ""},
        "errors": errors or {}, "states": STATES}, status)


async def device_page(request: web.Request) -> web.Response:
    return _device_page(request, request.match_info["id"])


def check_config(text: str, device_id: str) -> str:
    """A Chinese message for a config the box would surely refuse (the box itself validates every key), or ""."""
    if not text.strip():
        return "请粘贴盒子的完整配置 (agent.yaml 的全部内容)。"
    if len(text) > CONFIG_MAX_CHARS:
        return f"配置太长: 最多 {CONFIG_MAX_CHARS} 个字符。"
    try:
        data, _ = load_yaml_with_lines(text, "config")
    except YamlConfigError as err:
        return f"不是有效的 YAML: {err}"
    if not isinstance(data, dict):
        return "配置应为 YAML 映射 (device:, broker:, cameras: … 等键)。"
    device = data.get("device")
    found = device.get("id") if isinstance(device, dict) else None
    if isinstance(found, int):  # YAML reads 20 bare digits as a number, which the box refuses
        return f"device.id 请加引号写成字符串: id: \"{device_id}\"。"
    if found != device_id:
        return f"配置中的 device.id 应为本设备编号 {device_id}, 现在是 {found!r}。"
    return ""


async def device_command(request: web.Request) -> web.Response:
    """Send `status` or `config_push` to the box, as `POST /api/v1/devices/{id}/commands` does."""
    admin, principal = require_admin(request)
    device_id = request.match_info["id"]
    posted = await read_form(request, "config")
    name = posted.get("name", "")
    db = db_of(request)
    if db.one(sa.select(devices.c.id).where(devices.c.id == device_id)) is None:
        raise PageError(404, "未找到", "没有这个设备。")
    if name not in SENDABLE:
        raise PageError(400, "请求无效", "此页面只能发送状态查询或推送配置。")
    form = {"version": posted.get("version", ""), "config": posted.get("config", "")}
    args: dict[str, Any] = {}
    if name == "config_push":
        errors: Errors = {}
        if not VERSION.match(form["version"]):
            errors["version"] = "版本号应为 1-32 个字母、数字或 _ . -, 例如 2024-05-01a。"
        if problem := check_config(form["config"], device_id):
            errors["config"] = problem
        if errors:
            return _device_page(request, device_id, form=form, errors=errors, status=400)
        args = {"config": form["config"], "version": form["version"]}
    try:
        cmd = await control.send(db, ctx(request).publisher, principal, device_id, name, ctx(request).now(), args=args)
    except control.CommandRefused as err:
        raise PageError(403, "无权操作", "您的账号不能向设备发送这个命令。") from err
    except control.NotConnected:
        return _device_page(request, device_id, form=form, status=503, send_error=(
            "设备不可达: 本接收端当前没有 MQTT 连接, 命令未发送。请检查接收端与 MQTT broker 的连接后重试。"))
    except PublishFailed as err:
        return _device_page(request, device_id, form=form, status=503, send_error=(
            f"设备不可达: MQTT broker 未接收命令, 已记录为“未送达”。请稍后重试。({err})"))
    log.info("console_command_sent", device_id=device_id, command=name, command_id=cmd.id, by=admin.name)
    raise done(f"/admin/devices/{device_id}", "command_sent", sent=cmd.id)


def register(app: web.Application) -> None:
    app.router.add_get("/admin/devices", devices_page)
    app.router.add_post("/admin/devices", devices_submit)
    app.router.add_get("/admin/devices/{id}", device_page)
    app.router.add_post("/admin/devices/{id}/commands", device_command)
