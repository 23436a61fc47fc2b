"""The /admin pages through the real app on both engines: only admins get in, every form needs the session's
CSRF token, bad input is refused in Chinese (400, the form shown again), good input lands in the database,
device passwords and API tokens are shown once and never logged or stored in clear, robot URLs are shown
masked, and a box's page lists its commands and sends `status` / `config_push` the API's way."""

from __future__ import annotations

import hashlib
import logging
import re
from datetime import UTC, datetime
from urllib.parse import unquote

import pytest
import sqlalchemy as sa
import structlog
from support.api_kit import DEVICES, PASSWORD, add_console_users, add_user, form_csrf, login, make_world

from bk_contract import CommandResult, Status
from cloud_receiver.admin import accounts
from cloud_receiver.appkeys import COMMAND_PUBLISHER
from cloud_receiver.control import commands as control
from cloud_receiver.control.publisher import PublishFailed
from cloud_receiver.storage.schema import canteens, commands, devices, metadata, tokens, users, webhooks
from cloud_receiver.storage.sqlite import iso

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("cheap_hashes")]

BOX = DEVICES["C1"]
PAGES = ["/admin", "/admin/canteens", "/admin/devices", "/admin/users", "/admin/tokens", "/admin/webhooks",
         f"/admin/devices/{BOX}"]
POSTS = {"/admin/canteens": {"mode": "add", "id": "K1", "name": "九中食堂", "jurisdiction": "640502"},
         "/admin/devices": {"canteen_id": "K9", "name": "盒子", "no_broker": "1"},
         "/admin/users": {"name": "newbie", "role": "admin", "scope": "", "password": PASSWORD},
         "/admin/users/reg1/disable": {}, "/admin/users/reg1/password": {"password": "another-password-1"},
         "/admin/tokens": {"name": "upper-platform", "role": "admin", "scope": ""},
         "/admin/tokens/revoke": {"name": "ops"},
         "/admin/webhooks": {"id": "w1", "kind": "wecom", "scope_kind": "jurisdiction", "scope": "6405",
                             "url": "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k", "secret_env": ""},
         f"/admin/devices/{BOX}/commands": {"name": "status"}}
AGENT_YAML = f"device:\n  id: \"{BOX}\"\n  name: 后厨\ncameras: []\n"


class FakePublisher:
    """Stands in for the receiver's MQTT command publisher: takes every command, or refuses them all."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []
        self.refuse = False

    def publish(self, topic: str, payload: bytes) -> None:
        if self.refuse:
            raise PublishFailed("no PUBACK within 5 s")
        self.sent.append((topic, payload))


@pytest.fixture
async def world(tmp_path, db_engine):
    w = await make_world(tmp_path, db_engine)
    add_console_users(w)
    w.storage.add_canteen("K9", "第九中学食堂", "640521")  # the seeded canteens' 8-digit codes issue no device ids
    yield w
    await w.close()


@pytest.fixture
async def admin(world):
    """The world with `admin1` logged in; `admin.csrf` is the session's token."""
    assert (await login(world.client, "admin1")).status == 303
    world.csrf = form_csrf(await (await world.client.get("/admin")).text())
    return world


async def post(w, path: str, data: dict, csrf: bool = True):
    return await w.client.post(path, data={**data, **({"csrf": w.csrf} if csrf else {})}, allow_redirects=False)


def shown_once(html: str) -> list[str]:
    return re.findall(r'<code class="secret" id="secret-\d+">([^<]+)</code>', html)


def database_text(w) -> str:
    """Every row of every table, as text: a secret stored in clear would be in it."""
    return "\n".join(repr(w.storage.sql.all(sa.select(t))) for t in metadata.sorted_tables)


@pytest.mark.parametrize("who", ["reg1", "kitchen1"])
async def test_non_admins_get_403_on_every_admin_page(world, who):
    """A regulator or canteen account sees the 403 page on every /admin page and cannot post any admin form."""
    await login(world.client, who)
    csrf = form_csrf(await (await world.client.get("/alerts")).text())
    for path in PAGES:
        r = await world.client.get(path, allow_redirects=False)
        assert r.status == 403 and "无权访问" in await r.text(), path
    for path, data in POSTS.items():
        r = await world.client.post(path, data={**data, "csrf": csrf}, allow_redirects=False)
        assert r.status == 403, path
    assert world.storage.sql.one(sa.select(users).where(users.c.name == "reg1"))["disabled_at"] is None


async def test_nobody_is_sent_to_login(world):
    """Logged out, an admin page redirects to the login page and comes back after."""
    r = await world.client.get("/admin/devices", allow_redirects=False)
    assert r.status == 302 and unquote(r.headers["Location"]) == "/login?next=/admin/devices"


async def test_every_admin_page_opens_for_an_admin(admin):
    """Each admin page answers 200 with its section navigation and the CSRF field in its forms."""
    for path in PAGES:
        r = await admin.client.get(path)
        html = await r.text()
        assert r.status == 200 and 'aria-label="管理导航"' in html and "推送机器人" in html, path
        assert r.headers["Cache-Control"] == "no-store" and "script-src 'self'" in r.headers["Content-Security-Policy"]
        assert "<script>" not in html and " style=" not in html, path


@pytest.mark.parametrize("path", sorted(POSTS))
async def test_a_form_without_csrf_is_403(admin, path):
    """Every admin form posted without the session's CSRF token gets the 403 page and changes nothing."""
    before = database_text(admin)
    r = await post(admin, path, POSTS[path], csrf=False)
    assert r.status == 403 and "请求无效" in await r.text()
    assert database_text(admin) == before


async def test_admin_adds_and_edits_a_canteen(admin):
    """Adding a canteen redirects with a notice and stores it; editing changes its name and jurisdiction."""
    r = await post(admin, "/admin/canteens", POSTS["/admin/canteens"])
    assert r.status == 303 and r.headers["Location"] == "/admin/canteens?done=canteen_saved"
    page = await (await admin.client.get(r.headers["Location"])).text()
    assert "食堂已保存" in page and "九中食堂" in page
    assert admin.storage.get_canteen("K1")["jurisdiction"] == "640502"
    form = await (await admin.client.get("/admin/canteens?edit=K1")).text()
    assert 'value="edit"' in form and "编辑食堂 K1" in form
    r = await post(admin, "/admin/canteens", {"mode": "edit", "id": "K1", "name": "第九中学食堂", "jurisdiction": "640521"})
    assert r.status == 303
    row = admin.storage.get_canteen("K1")
    assert (row["name"], row["jurisdiction"]) == ("第九中学食堂", "640521")


@pytest.mark.parametrize(("data", "field", "message"), [
    ({"id": "bad id!", "jurisdiction": "640502"}, "id", "食堂编号应为"),
    ({"id": "C1", "jurisdiction": "640502"}, "id", "已存在"),
    ({"id": "K2", "jurisdiction": "6405"}, "jurisdiction", "6 位数字"),
    ({"id": "K2", "jurisdiction": "640502", "name": "长" * 65}, "name", "最多 64 个字符"),
])
async def test_canteen_form_refuses_bad_input_in_chinese(admin, data, field, message):
    """A bad canteen is refused with 400, the message under its field, the input kept, nothing stored."""
    r = await post(admin, "/admin/canteens", {"mode": "add", "name": "", **data})
    html = await r.text()
    assert r.status == 400
    error = re.search(rf'<p class="field-error" id="f-{field}-error">([^<]+)</p>', html)
    assert error and message in error.group(1)
    assert 'aria-invalid="true"' in html and f'value="{data["id"]}"' in html.replace("&#34;", '"')
    assert admin.storage.get_canteen("K2") is None


async def test_admin_adds_a_device_and_sees_its_password_once(admin, caplog):
    """The device's 20-digit id and password are shown once (no-store), never logged, and only the id is stored."""
    caplog.set_level(logging.DEBUG)
    with structlog.testing.capture_logs() as logs:
        r = await post(admin, "/admin/devices", POSTS["/admin/devices"])
        html = await r.text()
    assert r.status == 200 and r.headers["Cache-Control"] == "no-store"
    device_id, password = shown_once(html)
    assert re.fullmatch(r"\d{20}", device_id) and device_id.startswith("640521") and len(password) >= 24
    assert html.count(password) == 1 and "BK_DEVICE_PASSWORD" in html and "只显示这一次" in html
    row = admin.storage.sql.one(sa.select(devices).where(devices.c.id == device_id))
    assert row["canteen_id"] == "K9" and row["name"] == "盒子"
    assert password not in database_text(admin)
    assert password not in repr(logs) and password not in caplog.text
    assert any(e["event"] == "console_device_added" and e["device_id"] == device_id for e in logs)
    for path in ("/admin/devices", f"/admin/devices/{device_id}"):
        page = await (await admin.client.get(path)).text()
        assert device_id in page and password not in page


async def test_device_needs_the_broker_unless_store_only(admin, monkeypatch):
    """Without 仅保存 the broker must be provisioned: with no admin password configured that is a 400 naming the variable."""
    monkeypatch.delenv("BK_BROKER_ADMIN_PASSWORD", raising=False)
    before = admin.storage.sql.scalar(sa.select(sa.func.count()).select_from(devices))
    r = await post(admin, "/admin/devices", {"canteen_id": "K9", "name": "盒子"})
    html = await r.text()
    assert r.status == 400 and "BK_BROKER_ADMIN_PASSWORD" in html and "仅保存" in html
    r = await post(admin, "/admin/devices", {"canteen_id": "nope", "no_broker": "1"})
    assert r.status == 400 and "请选择设备所属的食堂" in await r.text()
    r = await post(admin, "/admin/devices", {"canteen_id": "C3", "no_broker": "1"})  # jurisdiction 64052101
    assert r.status == 400 and "不是 6 位区县代码" in await r.text()
    assert admin.storage.sql.scalar(sa.select(sa.func.count()).select_from(devices)) == before


async def test_admin_adds_disables_and_resets_users(admin, caplog):
    """A new account can log in; its password is never logged or stored in clear; disable and reset work."""
    caplog.set_level(logging.DEBUG)
    with structlog.testing.capture_logs() as logs:
        r = await post(admin, "/admin/users", {"name": "zhang", "display_name": "张监管", "role": "regulator",
                                                "scope": "640502", "password": "zhang-first-pass"})
    assert r.status == 303 and r.headers["Location"] == "/admin/users?done=user_added"
    assert "zhang-first-pass" not in repr(logs) + caplog.text + database_text(admin)
    row = admin.storage.sql.one(sa.select(users).where(users.c.name == "zhang"))
    assert (row["role"], row["scope"], row["display_name"]) == ("regulator", "640502", "张监管")
    assert accounts.authenticate(admin.storage.sql, "zhang", "zhang-first-pass") is not None
    r = await post(admin, "/admin/users/zhang/password", {"password": "zhang-second-pass"})
    assert r.status == 303 and r.headers["Location"] == "/admin/users?done=password_set"
    assert accounts.authenticate(admin.storage.sql, "zhang", "zhang-second-pass") is not None
    r = await post(admin, "/admin/users/zhang/disable", {})
    assert r.status == 303 and "已停用" in await (await admin.client.get(r.headers["Location"])).text()
    assert accounts.authenticate(admin.storage.sql, "zhang", "zhang-second-pass") is None


@pytest.mark.parametrize(("path", "data", "message"), [
    ("/admin/users", {"name": "x y", "role": "admin", "password": PASSWORD}, "用户名应为"),
    ("/admin/users", {"name": "li2", "role": "regulator", "scope": "abc", "password": PASSWORD}, "辖区代码前缀"),
    ("/admin/users", {"name": "li2", "role": "canteen", "scope": "C9", "password": PASSWORD}, "已有的食堂编号"),
    ("/admin/users", {"name": "li2", "role": "admin", "password": "short"}, "密码太短"),
    ("/admin/users", {"name": "reg1", "role": "admin", "password": PASSWORD}, "已存在"),
    ("/admin/users/reg1/password", {"password": "short"}, "密码太短"),
    ("/admin/users/admin1/disable", {}, "不能停用自己"),
    ("/admin/tokens", {"name": "", "role": "admin"}, "请填写令牌名称"),
    ("/admin/tokens", {"name": "t", "role": "root"}, "请选择角色"),
    ("/admin/webhooks", {"id": "w1", "kind": "wecom", "scope_kind": "jurisdiction", "scope": "6405", "url": "ftp://x"},
     "Webhook 地址"),
    ("/admin/webhooks", {"id": "w1", "kind": "feishu", "scope_kind": "canteen", "scope": "C1",
                         "url": "https://x.example/hook"}, "企业微信或钉钉"),
])
async def test_people_and_robot_forms_refuse_bad_input(admin, path, data, message):
    """Bad accounts, tokens and robots are refused with 400 and a Chinese message, changing nothing."""
    before = database_text(admin)
    r = await post(admin, path, data)
    html = await r.text()
    assert r.status == 400
    assert any(message in e for e in re.findall(r'<p class="field-error"[^>]*>([^<]+)</p>', html)), html
    assert database_text(admin) == before


async def test_admin_creates_a_token_once_and_revokes_it(admin, caplog):
    """The token is shown once and works on the API; only its sha256 is stored; revoking ends it."""
    caplog.set_level(logging.DEBUG)
    with structlog.testing.capture_logs() as logs:
        r = await post(admin, "/admin/tokens", {"name": "upper-platform", "role": "regulator", "scope": "6405"})
        html = await r.text()
    assert r.status == 200 and r.headers["Cache-Control"] == "no-store"
    (token,) = shown_once(html)
    assert token.startswith("bk_") and html.count(token) == 1
    assert token not in repr(logs) + caplog.text + database_text(admin)
    stored = admin.storage.sql.one(sa.select(tokens).where(tokens.c.name == "upper-platform"))
    assert stored["token_sha256"] == hashlib.sha256(token.encode()).hexdigest()
    api = {"Authorization": f"Bearer {token}"}
    assert (await admin.client.get("/api/v1/canteens", headers=api)).status == 200
    listing = await (await admin.client.get("/admin/tokens")).text()
    assert "upper-platform" in listing and token not in listing
    r = await post(admin, "/admin/tokens/revoke", {"name": "upper-platform"})
    assert r.status == 303 and r.headers["Location"] == "/admin/tokens?done=token_revoked"
    assert (await admin.client.get("/api/v1/canteens", headers=api)).status == 401
    r = await post(admin, "/admin/tokens/revoke", {"name": "upper-platform"})
    assert r.headers["Location"] == "/admin/tokens?done=nothing_revoked"


async def test_admin_adds_and_replaces_a_robot_shown_masked(admin, caplog):
    """A robot is stored (the pusher needs its URL) but listed with its key masked; the same id replaces it."""
    caplog.set_level(logging.DEBUG)
    key = "693a91f6-7xxx-4bc4-97a0-0ec2sifa5aaa"
    url = f"https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key={key}"
    with structlog.testing.capture_logs() as logs:
        r = await post(admin, "/admin/webhooks", {**POSTS["/admin/webhooks"], "url": url})
    assert r.status == 303 and r.headers["Location"] == "/admin/webhooks?done=webhook_saved"
    assert key not in repr(logs) + caplog.text
    listing = await (await admin.client.get(r.headers["Location"])).text()
    assert key not in listing and "key=***5aaa" in listing and "推送机器人已保存" in listing
    r = await post(admin, "/admin/webhooks", {"id": "w1", "kind": "dingtalk", "scope_kind": "canteen", "scope": "C1",
                                              "url": "https://oapi.dingtalk.com/robot/send?access_token=abc",
                                              "secret_env": "BK_DINGTALK_SECRET"})
    assert r.status == 303
    rows = admin.storage.sql.all(sa.select(webhooks))
    assert [(w["id"], w["kind"], w["scope_kind"], w["scope"], w["secret_env"]) for w in rows] == [
        ("w1", "dingtalk", "canteen", "C1", "BK_DINGTALK_SECRET")]


async def test_device_page_lists_status_cameras_and_commands(admin):
    """The box's page shows its problems, cameras, reported config version and recent commands with their states."""
    sql, now = admin.storage.sql, datetime.now(UTC)
    admin.storage.record_status(Status(device_id=BOX, online=True, version="0.2.0", ts=now,
                                       problems=["config v2 rolled back: camera cam1 never came online"]), iso(now))
    status = control.new_command("status", "admin1", now)
    push = control.new_command("config_push", "admin1", now, args={"config": AGENT_YAML, "version": "v3"})
    for cmd in (status, push):
        control.record(sql, BOX, cmd)
    admin.storage.record_command_result(BOX, CommandResult(id=status.id, ok=True, data={
        "version": "0.2.0", "config_version": "v2", "config_on_trial": True, "cameras": 1, "cameras_online": 0}), iso(now))
    admin.storage.record_command_result(BOX, CommandResult(id=push.id, ok=False, error=(
        "config refused: config_push:3: cameras[0].source.type: Input should be 'rtsp' or 'file'")), iso(now))
    html = await (await admin.client.get(f"/admin/devices/{BOX}")).text()
    assert "config v2 rolled back" in html and "后厨1" in html and "v2 (试用中)" in html
    assert "状态查询" in html and "成功" in html and "推送配置" in html and "版本 v3" in html and "失败" in html
    assert "cameras[0].source.type" in html and "config_push:3" in html
    assert AGENT_YAML.splitlines()[0] not in html  # the pushed config itself is not repeated in the list
    listing = await (await admin.client.get("/admin/devices")).text()
    assert "v2 (试用中)" in listing and "config v2 rolled back" in listing and "0.2.0" in listing


async def test_pushing_a_config_without_mqtt_says_the_box_is_unreachable(admin):
    """The world has no MQTT: a valid push answers 503 in Chinese, keeps the typed config, sends nothing."""
    r = await post(admin, f"/admin/devices/{BOX}/commands", {"name": "config_push", "version": "v5", "config": AGENT_YAML})
    html = await r.text()
    assert r.status == 503 and "设备不可达" in html and "没有 MQTT 连接" in html
    assert f"id: &#34;{BOX}&#34;\n  name: 后厨\ncameras: []" in html  # in the textarea again
    assert admin.storage.sql.all(sa.select(commands)) == []


@pytest.mark.parametrize(("version", "config", "field", "message"), [
    ("v 1", AGENT_YAML, "version", "版本号应为"),
    ("v6", "", "config", "请粘贴"),
    ("v6", f"device:\n  id: {BOX}: 1\n", "config", "不是有效的 YAML: config:2"),
    ("v6", AGENT_YAML.replace(BOX, "64050200001180009999"), "config", "应为本设备编号"),
    ("v6", AGENT_YAML.replace(f'"{BOX}"', BOX), "config", "请加引号"),
])
async def test_config_push_form_refuses_bad_input(admin, version, config, field, message):
    """A push the box would surely refuse is stopped with 400 and a message under its field."""
    r = await post(admin, f"/admin/devices/{BOX}/commands", {"name": "config_push", "version": version, "config": config})
    html = await r.text()
    assert r.status == 400
    error = re.search(rf'<p class="field-error" id="f-{field}-error">([^<]+)</p>', html)
    assert error and message in error.group(1)


async def test_commands_go_the_api_way_and_the_page_follows_them(tmp_path, db_engine):
    """With a publisher, status and config_push are recorded and published; the page and the API show pending, then
    the box's answer; a publish the broker refuses is 503 and recorded as not sent."""
    publisher = FakePublisher()
    w = await make_world(tmp_path, db_engine, state={COMMAND_PUBLISHER: publisher})
    try:
        add_user(w, "admin1", "admin")
        await login(w.client, "admin1")
        w.csrf = form_csrf(await (await w.client.get("/admin")).text())
        r = await post(w, f"/admin/devices/{BOX}/commands", {"name": "config_push", "version": "v7", "config": AGENT_YAML})
        assert r.status == 303
        sent = re.search(r"sent=(c[0-9a-f]+)", r.headers["Location"]).group(1)
        assert [t for t, _ in publisher.sent] == [f"bk/v1/{BOX}/cmd"] and sent.encode() in publisher.sent[0][1]
        page = await (await w.client.get(r.headers["Location"])).text()
        assert "命令已发送" in page and f'data-poll-command="{sent}"' in page and "等待应答" in page
        view = await (await w.client.get(f"/api/v1/devices/{BOX}/commands/{sent}")).json()
        assert view["state"] == "pending" and view["args"] == {"config": AGENT_YAML, "version": "v7"}
        w.storage.record_command_result(BOX, CommandResult(id=sent, ok=False, error="config refused: config_push:2: "
                                                           "device.name: too long"), iso(datetime.now(UTC)))
        view = await (await w.client.get(f"/api/v1/devices/{BOX}/commands/{sent}")).json()
        assert view["state"] == "failed" and "config_push:2: device.name" in view["error"]
        publisher.refuse = True
        r = await post(w, f"/admin/devices/{BOX}/commands", {"name": "status"})
        assert r.status == 503 and "设备不可达" in await r.text()
        states = {v["name"]: v["state"] for i in w.storage.sql.all(sa.select(commands.c.id))
                  if (v := control.view(w.storage.sql, BOX, i["id"], datetime.now(UTC)))}
        assert states == {"config_push": "failed", "status": "not_sent"}
    finally:
        await w.close()


async def test_a_nul_character_in_a_form_is_a_400_page(admin):
    """A NUL in a form's text (PostgreSQL's text cannot hold one) is a 400 page on both engines, nothing is stored,
    and the same form without it then works."""
    r = await post(admin, "/admin/canteens", {**POSTS["/admin/canteens"], "name": "九中\u0000食堂"})
    assert r.status == 400 and "控制字符" in await r.text()
    assert admin.storage.sql.scalar(sa.select(sa.func.count()).select_from(canteens).where(canteens.c.id == "K1")) == 0
    assert (await post(admin, "/admin/canteens", POSTS["/admin/canteens"])).status == 303
