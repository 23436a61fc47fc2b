"""`cloud-receiver`: serve, config check, canteen/device provisioning, API tokens.

Output for people is Simplified Chinese where it is addressed to an operator; ids, passwords
and URLs are printed on their own lines so scripts can read them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from bk_common import sdnotify
from bk_common.logs import configure_logging, say
from cloud_receiver.admin.devices import add_device, new_password
from cloud_receiver.admin.dynsec import DynsecAdmin
from cloud_receiver.app.factory import create_app, open_configured_storage, storage_url
from cloud_receiver.appkeys import SUBSCRIBER
from cloud_receiver.assets import EXAMPLE_CONFIG
from cloud_receiver.config import ReceiverConfig, load_config, resolve_secret
from cloud_receiver.errors import ConfigError, ReceiverError

log = structlog.get_logger(__name__)
DEFAULT_CONFIG = Path("/etc/brightkitchen/receiver.yaml")
PARSER_LIMIT = 64 * 1024  # longest request line and header the HTTP parser takes
# the cyclic GC: what is loaded at startup (modules, SQLAlchemy's tables and compiled statements, the models) is
# frozen out of its scans, and the youngest generation is collected every 20,000 allocations rather than 700:
# ingest makes ~15 tracked objects per alert, nearly all freed with their batch, and the full collections that
# the default thresholds cascade into scanned the whole heap several times a second under a flood
GC_THRESHOLDS = (20_000, 20, 20)


async def _serve(cfg: ReceiverConfig) -> None:
    # no access log: a stream ticket travels in a URL (docs/api.md), and requests are not worth a line each
    # aiohttp's parser refuses a request line or header over 8190 bytes itself, in plain text; with room
    # up to 64 KiB the API answers a long URL with its own JSON 414 (docs/api.md)
    runner = web.AppRunner(create_app(cfg), handle_signals=False, access_log=None,
                           max_line_size=PARSER_LIMIT, max_field_size=PARSER_LIMIT)
    await runner.setup()
    site = web.TCPSite(runner, cfg.http.host, cfg.http.port)
    await site.start()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    host, port = runner.addresses[0][:2]
    say(f"API: http://{host}:{port}/api/v1")
    sdnotify.notify("READY=1", f"STATUS=API http://{host}:{port}/api/v1")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watchdog = asyncio.create_task(_watchdog(runner.app, stop), name="bk-watchdog")
    await stop.wait()
    log.info("stopping")
    sdnotify.notify("STOPPING=1")
    watchdog.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watchdog
    await runner.cleanup()


async def _watchdog(app: web.Application, stop: asyncio.Event) -> None:
    """WATCHDOG=1 at half systemd's WatchdogSec while the event loop runs and the MQTT ingest thread lives
    (a broker outage is not a reason to be restarted: the thread reconnects by itself)."""
    interval = sdnotify.watchdog_interval_s()
    if interval is None:
        return
    while not stop.is_set():
        sub = app.get(SUBSCRIBER)
        if sub is None or any(t.name == sub.thread_name and t.is_alive() for t in threading.enumerate()):
            sdnotify.notify("WATCHDOG=1")
        else:
            log.error("ingest_thread_dead", action="watchdog pings stop; systemd restarts the receiver")
        await asyncio.sleep(interval / 2)


def cmd_serve(args: argparse.Namespace, cfg: ReceiverConfig) -> int:
    asyncio.run(_serve(cfg))
    return 0


def cmd_migrate(args: argparse.Namespace, cfg: ReceiverConfig) -> int:
    from cloud_receiver.storage import migrate

    if cfg.storage.engine == "postgresql":
        import psycopg

        url = storage_url(cfg)
        revision = migrate.migrate_postgres(lambda: psycopg.connect(url))
        where = "PostgreSQL"
    else:
        revision = migrate.migrate_sqlite(cfg.storage.sqlite_path, cfg.storage.busy_timeout_ms)
        where = str(cfg.storage.sqlite_path)
    say(f"数据库已是最新结构 (schema at revision {revision}): {where}")
    return 0


def cmd_config_check(args: argparse.Namespace, cfg: ReceiverConfig) -> int:
    say(f"配置有效: {args.config}")
    return 0


def print_example_config() -> int:
    say(EXAMPLE_CONFIG.read_text(encoding="utf-8").rstrip("\n"))
    return 0


def cmd_canteen_add(args: argparse.Namespace, cfg: ReceiverConfig) -> int:
    storage = open_configured_storage(cfg)
    try:
        storage.add_canteen(args.id, args.name, args.jurisdiction)
    finally:
        storage.close()
    say(f"食堂已保存: {args.id}")
    return 0


def _admin(cfg: ReceiverConfig) -> DynsecAdmin:
    b = cfg.broker
    password = resolve_secret(b.admin_password_env)
    if password is None:
        raise ConfigError(f"broker admin password: environment variable {b.admin_password_env} is not set")
    return DynsecAdmin(b.host, b.port, b.admin_username, password, tls=b.tls, timeout_s=b.timeout_s)


def cmd_device_add(args: argparse.Namespace, cfg: ReceiverConfig) -> int:
    storage = open_configured_storage(cfg)
    try:
        if args.no_broker:
            creds = add_device(storage, None, args.canteen, args.name, cfg.device_ids)
        else:
            with _admin(cfg) as admin:
                creds = add_device(storage, admin, args.canteen, args.name, cfg.device_ids)
    finally:
        storage.close()
    # the password is shown once, here, and never logged
    say(f"设备编号 device_id: {creds.device_id}")
    say(f"设备密码 password: {creds.password}")
    say("请妥善保存密码, 它不会再次显示。")
    return 0


def cmd_broker_add_receiver(args: argparse.Namespace, cfg: ReceiverConfig) -> int:
    password = new_password()
    with _admin(cfg) as admin:
        admin.add_receiver(args.username, password, cfg.mqtt.group)
    say(f"接收端账号 username: {args.username}")
    say(f"接收端密码 password: {password}")
    say(f"请将密码放入环境变量 {cfg.mqtt.password_env} (或同名 systemd credential), 它不会再次显示。")
    return 0


def cmd_device_list(args: argparse.Namespace, cfg: ReceiverConfig) -> int:
    storage = open_configured_storage(cfg)
    try:
        for d in storage.list_devices():
            state = "在线" if d["online"] else "离线"
            say(f"{d['id']}\t{d['canteen_id']}\t{state}\t{d['last_seen'] or '-'}\t{d['version'] or '-'}\t{d['name']}")
    finally:
        storage.close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    """`-c FILE` is accepted before the sub-command and after any of ours."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config", type=Path, default=argparse.SUPPRESS, help="receiver YAML config")
    p = argparse.ArgumentParser(prog="cloud-receiver", description="BrightKitchen cloud receiver")
    p.add_argument("-c", "--config", type=Path, default=DEFAULT_CONFIG, help=f"receiver YAML config (default {DEFAULT_CONFIG})")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", parents=[common], help="run the MQTT ingest and the HTTP API; prints the API URL").set_defaults(run=cmd_serve)
    conf = sub.add_parser("config", help="configuration").add_subparsers(dest="config_command", required=True)
    conf.add_parser("check", parents=[common], help="validate the config file").set_defaults(run=cmd_config_check)
    sub.add_parser("migrate", parents=[common], help="upgrade the database to the newest schema (serve does it too)"
                   ).set_defaults(run=cmd_migrate)
    conf.add_parser("example", help="print the shipped example config")
    canteen = sub.add_parser("canteen", help="canteens").add_subparsers(dest="canteen_command", required=True)
    cadd = canteen.add_parser("add", parents=[common], help="add or update a canteen")
    cadd.add_argument("--id", required=True, help="canteen id, e.g. canteen-0001")
    cadd.add_argument("--name", default="", help="canteen name, e.g. 沙坡头区第一小学食堂")
    cadd.add_argument("--jurisdiction", required=True, help="6-digit district code, e.g. 640502")
    cadd.set_defaults(run=cmd_canteen_add)
    device = sub.add_parser("device", help="devices (edge boxes)").add_subparsers(dest="device_command", required=True)
    dadd = device.add_parser("add", parents=[common], help="issue an id + password, provision the broker, store the device")
    dadd.add_argument("--canteen", required=True, help="canteen id (must exist)")
    dadd.add_argument("--name", default="", help="name of the box")
    dadd.add_argument("--no-broker", action="store_true", help="store only; do not touch the broker (plain test brokers)")
    dadd.set_defaults(run=cmd_device_add)
    device.add_parser("list", parents=[common], help="list devices").set_defaults(run=cmd_device_list)
    broker = sub.add_parser("broker", help="broker (dynamic security)").add_subparsers(dest="broker_command", required=True)
    badd = broker.add_parser("add-receiver", parents=[common], help="create a receiver client with the shared-subscription role")
    badd.add_argument("--username", default="bk-receiver", help="broker username of the receiver (mqtt.username)")
    badd.set_defaults(run=cmd_broker_add_receiver)
    _add_token_commands(sub)
    return p


def _add_token_commands(sub: Any) -> None:
    """`token …` (cloud_receiver.admin.auth), `user …` (console accounts, .admin.accounts) and `webhook …`
    (push robots): they act on the database."""
    from cloud_receiver.admin.accounts import register_user_cli
    from cloud_receiver.admin.auth import register_token_cli
    from cloud_receiver.push.wiring import register_webhook_cli
    before = set(sub.choices)
    register_token_cli(sub)
    register_user_cli(sub)
    register_webhook_cli(sub)
    for name in set(sub.choices) - before:
        sub.choices[name].set_defaults(run=_run_token)


def _run_token(args: argparse.Namespace, cfg: ReceiverConfig) -> int:
    storage = open_configured_storage(cfg)
    try:
        return int(args.func(args, storage.sql))
    finally:
        storage.close()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "config" and args.config_command == "example":
        return print_example_config()  # needs no config file
    try:
        cfg = load_config(args.config)
        configure_logging(cfg.log.level, cfg.log.format, to_stderr=args.command != "serve")
        return int(args.run(args, cfg))
    except ConfigError as err:
        say(f"配置错误 (config error):\n{err}", err=True)
        return 2
    except ReceiverError as err:
        say(f"错误 (error): {err}", err=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
