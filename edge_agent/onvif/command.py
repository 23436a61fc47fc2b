"""`edge-agent discover`: find ONVIF cameras, read their streams, add them to the agent config.

Progress goes to stderr, the result table and the config diff to stdout. The camera password is
read from the environment variable named by `--password-env`; it is never taken on the command
line, logged, or written to the config (the config gets `username` and `password_env`).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import unicodedata
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from edge_agent.config import resolve_secret
from edge_agent.errors import AuthFailed, ConfigError, EdgeError
from edge_agent.onvif import configfile
from edge_agent.onvif.client import fetch_device, service_address
from edge_agent.onvif.discovery import DISCOVERY_PORT, MULTICAST_GROUP, parse_target, probe
from edge_agent.onvif.types import OnvifDevice

DEFAULT_ONVIF_PORT = 80
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NOT_WRITTEN = 0, 1, 2, 3


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `discover` sub-command; its handler is `args.func(args) -> exit code`."""
    p = subparsers.add_parser(
        "discover",
        help="搜索局域网内的 ONVIF 摄像头并写入配置",
        description="通过 WS-Discovery 搜索 ONVIF 摄像头，读取主/子码流地址，并（确认后）写入配置文件的 cameras 部分。",
    )
    p.add_argument("--config", type=Path, help="要写入/更新 cameras 部分的配置文件")
    p.add_argument("--address", action="append", default=[], metavar="HOST[:PORT]",
                   help="单播探测此地址（可重复）；无 WS-Discovery 应答时直接访问 http://HOST:PORT（默认端口 80）")
    p.add_argument("--timeout", type=float, default=3.0, help="等待 WS-Discovery 应答的秒数（默认 3）")
    p.add_argument("--device-timeout", type=float, default=15.0, help="读取每台摄像头信息的超时秒数（默认 15）")
    p.add_argument("--username", help="摄像头 ONVIF 用户名")
    p.add_argument("--password-env", metavar="NAME", help="存放摄像头密码的环境变量名（密码不要写在命令行上）")
    p.add_argument("--yes", action="store_true", help="不询问，直接写入配置文件")
    p.set_defaults(func=run_discover)
    return p


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def format_table(devices: Sequence[OnvifDevice]) -> str:
    """Plain-text table: name, host, model, main stream, sub stream (URIs carry no credentials)."""
    header = ("名称", "地址", "型号", "主码流", "子码流")
    rows = [header]
    for d in devices:
        main = f"{d.main.profile.resolution} {d.main.uri}" if d.main else "-"
        sub = f"{d.sub.profile.resolution} {d.sub.uri}" if d.sub else "-"
        model = " ".join(x for x in (d.info.manufacturer, d.info.model) if x) or "-"
        rows.append((d.name or "-", d.onvif_host, model, main, sub))
    widths = [max(_width(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell + " " * (widths[i] - _width(cell)) for i, cell in enumerate(r)).rstrip() for r in rows]
    return "\n".join(lines) + "\n"


def _targets(args: argparse.Namespace, err: TextIO) -> list[tuple[str, int, str]]:
    """(host, port, name) of every device to ask: probe answers plus unanswered --address entries."""
    addresses = [parse_target(a, DEFAULT_ONVIF_PORT) for a in args.address]
    if addresses:
        where = ", ".join(f"{h}:{DISCOVERY_PORT}" for h, _ in addresses)
        print(f"正在单播探测 {where}（等待 {args.timeout:g} 秒）…", file=err)
    else:
        print(f"正在组播搜索 ONVIF 摄像头 {MULTICAST_GROUP}:{DISCOVERY_PORT}（等待 {args.timeout:g} 秒）…", file=err)
    matches = probe(timeout=args.timeout, multicast=not addresses, unicast=[(h, DISCOVERY_PORT) for h, _ in addresses])
    targets: list[tuple[str, int, str]] = []
    for m in matches:
        xaddr = m.device_service
        if not xaddr:
            continue
        host, port = service_address(xaddr)
        targets.append((host, port, m.scopes.name))
        print(f"  发现 {m.scopes.name or '(未命名)'}  {xaddr}  {m.scopes.hardware}".rstrip(), file=err)
    answered = {m.responder for m in matches} | {h for h, _, _ in targets}
    for host, port in addresses:
        if host not in answered:
            print(f"  {host} 未应答 WS-Discovery，直接访问 http://{host}:{port}/onvif/device_service", file=err)
            targets.append((host, port, ""))
    return list(dict.fromkeys(targets))


async def _fetch_all(
    targets: list[tuple[str, int, str]], username: str | None, password: str | None, timeout: float, err: TextIO
) -> tuple[list[OnvifDevice], list[EdgeError]]:
    async def one(host: str, port: int, name: str) -> OnvifDevice | EdgeError:
        try:
            device = await fetch_device(host, port, username, password, timeout=timeout, name=name)
        except EdgeError as exc:
            label = "认证失败 (auth failed)" if isinstance(exc, AuthFailed) else "失败"
            print(f"  {host}:{port} {label}: {exc}", file=err)
            return exc
        print(f"  {host}:{port} 读取成功：{len(device.profiles)} 个视频配置", file=err)
        return device

    print(f"正在读取 {len(targets)} 台摄像头的码流信息…", file=err)
    results = await asyncio.gather(*(one(*t) for t in targets))
    return [r for r in results if isinstance(r, OnvifDevice)], [r for r in results if isinstance(r, EdgeError)]


def _confirm(args: argparse.Namespace, ask: Callable[[str], str], out: TextIO, err: TextIO) -> bool:
    if args.yes:
        return True
    if not sys.stdin.isatty():
        print("未写入：需要确认。请在终端中运行，或加 --yes 直接写入。", file=err)
        return False
    return ask("写入以上修改？[y/N] ").strip().lower() in ("y", "yes", "是")


def update_config_file(
    path: Path, devices: Sequence[OnvifDevice], args: argparse.Namespace,
    out: TextIO, err: TextIO, ask: Callable[[str], str] = input,
) -> str:
    """Show the diff of the merged config and write it after confirmation.

    Returns "written", "unchanged" or "declined".
    """
    if not path.exists():
        raise ConfigError(f"{path}: 配置文件不存在；请先创建（至少含 device.id），再运行 discover")
    old = path.read_text(encoding="utf-8")
    merged = configfile.merge_cameras(configfile.existing_cameras(old), devices, args.username, args.password_env)
    new = configfile.replace_cameras(old, merged.cameras)
    if new == old:
        print(f"{path}: 配置无变化。", file=err)
        return "unchanged"
    out.write(configfile.unified_diff(old, new, str(path)))
    print(f"新增 {len(merged.added)} 台：{', '.join(merged.added) or '-'}；"
          f"更新 {len(merged.updated)} 台：{', '.join(merged.updated) or '-'}；其余摄像头保持不变。", file=err)
    if merged.updated:
        print("注意：已存在相同 onvif_host 的摄像头将被更新（仅码流地址和凭据字段）。", file=err)
    if not _confirm(args, ask, out, err):
        return "declined"
    backup = configfile.write_config(path, new)
    print(f"已写入 {path}" + (f"（原文件备份为 {backup}）" if backup else "") +
          "。注意：原 cameras 部分内的注释不会保留。", file=err)
    return "written"


def run_discover(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Handler of `edge-agent discover`; returns the process exit code."""
    out, err = out or sys.stdout, err or sys.stderr
    password = None
    if args.password_env:
        password = resolve_secret(args.password_env)
        if password is None:
            print(f"环境变量 {args.password_env} 未设置（应存放摄像头密码）。", file=err)
            return EXIT_USAGE
    try:
        targets = _targets(args, err)
    except ValueError as exc:
        print(f"地址无效：{exc}", file=err)
        return EXIT_USAGE
    if not targets:
        print("未发现 ONVIF 摄像头。可用 --address 指定摄像头地址，或加长 --timeout。", file=err)
        return EXIT_FAILED
    devices, failures = asyncio.run(_fetch_all(targets, args.username, password, args.device_timeout, err))
    if devices:
        out.write(format_table(devices))
    if args.config and devices:
        try:
            outcome = update_config_file(args.config, devices, args, out, err)
        except ConfigError as exc:
            print(f"配置未写入：{exc}", file=err)
            return EXIT_NOT_WRITTEN
        if outcome == "declined":
            return EXIT_NOT_WRITTEN
    if any(isinstance(f, AuthFailed) for f in failures):
        print("部分摄像头认证失败 (auth failed)：请检查 --username 和 --password-env 指向的密码。", file=err)
    return EXIT_OK if devices and not failures else EXIT_FAILED
