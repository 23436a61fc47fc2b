"""`edge-agent doctor -c CONFIG`: what an installer checks before leaving a box in a kitchen.

Each check gives one line, in Chinese with the English word beside it: the config, the model (and
its speed on this CPU), the disk, the broker with this box's credentials, the clock, and every
camera (reachable and decoding a frame). The exit code is non-zero when anything failed.
"""

from __future__ import annotations

import email.utils
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edge_agent.config import AgentConfig, CameraConfig, load_config, resolve_secret
from edge_agent.errors import EdgeError

MIN_FREE_MB = 512  # below this the outbox cannot keep a day of alerts with their pictures
CLOCK_TOLERANCE_S = 5.0  # an HTTP Date has 1 s resolution; alerts are judged by the minute

OK, FAIL, SKIP = "正常 OK", "故障 FAIL", "未查 SKIP"


@dataclass(frozen=True)
class Finding:
    status: str  # OK, FAIL or SKIP
    what: str  # the thing checked, in Chinese
    detail: str

    def line(self) -> str:
        return f"[{self.status}] {self.what}: {self.detail}"


def check_model(cfg: AgentConfig, runs: int = 10) -> Finding:
    from edge_agent.analysis.detector.variants import cpu_summary, select_variant, time_detect_ms

    d = cfg.detector
    try:
        choice = select_variant(d.model, d.threads, d.max_accuracy_loss, runs) if d.choose_variant else None
        model = choice.chosen.path if choice is not None else d.model
        ms = choice.chosen.ms if choice is not None else time_detect_ms(model, d.threads, runs)
    except EdgeError as err:
        return Finding(FAIL, "模型 model", f"{d.model}: {err}")
    cpu = f"{d.threads} 线程, {cpu_summary()}"
    chosen = ""
    if choice is not None:
        timed = ", ".join(f"{p} {t} ms" for p, t in choice.as_dict()["timings_ms"].items())
        chosen = f"(选用 chosen {choice.chosen.precision}: {timed}; {choice.reason}) "
    return Finding(OK, "模型 model", f"{model.name} 加载成功, 每帧 {ms:.1f} ms {chosen}({cpu})")


def check_disk(cfg: AgentConfig) -> Finding:
    where = cfg.storage.path.parent
    while not where.exists() and where != where.parent:
        where = where.parent
    usage = shutil.disk_usage(where)
    free_mb = usage.free / (1 << 20)
    detail = f"{where} 可用 {free_mb / 1024:.1f} GiB, 队列配额 {cfg.storage.quota_mb / 1024:.1f} GiB"
    if free_mb < MIN_FREE_MB:
        return Finding(FAIL, "磁盘 disk", f"{detail}: 不足 {MIN_FREE_MB} MiB (free space too low)")
    return Finding(OK, "磁盘 disk", detail)


def check_broker(cfg: AgentConfig, timeout_s: float) -> Finding:
    from edge_agent.uplink.session import Connack, MqttSession

    b = cfg.uplink.broker
    where = f"{b.host}:{b.port}{' (TLS)' if b.tls else ''}"
    if not cfg.uplink.enabled:
        return Finding(SKIP, "消息服务器 broker", "uplink.enabled 为 false")
    password = resolve_secret(b.password_env)
    if password is None:
        return Finding(FAIL, "消息服务器 broker", f"{b.password_env} 未设置 (password not set)")
    session = MqttSession(host=b.host, port=b.port, client_id=f"{cfg.device.id}-doctor",
                          username=b.username or cfg.device.id, password=password, keepalive_s=b.keepalive_s,
                          tls=b.tls, ca_file=b.ca_file, connect_timeout_s=timeout_s)
    try:
        session.connect()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for event in session.poll(0.1):
                if isinstance(event, Connack):
                    if event.ok:
                        return Finding(OK, "消息服务器 broker", f"{where} 已连接, 账号 {b.username or cfg.device.id}")
                    why = "用户名或密码错误" if event.auth_failed else "拒绝连接"
                    return Finding(FAIL, "消息服务器 broker", f"{where} {why} (CONNACK 0x{event.code:02X} {event.reason})")
        return Finding(FAIL, "消息服务器 broker", f"{where} {timeout_s:g} 秒内无应答 (no CONNACK)")
    except EdgeError as err:
        return Finding(FAIL, "消息服务器 broker", f"{where} 无法连接 (unreachable): {err}")
    finally:
        session.close()


def check_clock(time_url: str | None, timeout_s: float) -> Finding:
    """Against a server's HTTP Date (the receiver's URL) when given, else systemd's NTP state."""
    if time_url:
        try:
            with urllib.request.urlopen(time_url, timeout=timeout_s) as resp:
                date = resp.headers.get("Date")
        except OSError as err:
            return Finding(FAIL, "时钟 clock", f"{time_url} 无法访问: {err}")
        if not date:
            return Finding(FAIL, "时钟 clock", f"{time_url} 的应答没有 Date 头")
        offset = time.time() - email.utils.parsedate_to_datetime(date).timestamp()
        status = OK if abs(offset) <= CLOCK_TOLERANCE_S + 1 else FAIL
        return Finding(status, "时钟 clock", f"与 {time_url} 相差 {offset:+.0f} 秒 (允许 ±{CLOCK_TOLERANCE_S:g})")
    timedatectl = shutil.which("timedatectl")
    if timedatectl:
        res = subprocess.run([timedatectl, "show", "--property=NTPSynchronized", "--value"], capture_output=True,
                             text=True, timeout=timeout_s)
        if res.returncode == 0 and res.stdout.strip() in ("yes", "no"):
            synced = res.stdout.strip() == "yes"
            return Finding(OK if synced else FAIL, "时钟 clock", "NTP 已同步" if synced else "NTP 未同步 (not synchronized)")
    return Finding(SKIP, "时钟 clock", "无 timedatectl 结果; 用 --time-url 指定接收端地址来核对")


def check_camera(cam: CameraConfig, timeout_s: float, gb_enabled: bool) -> Finding:
    from edge_agent.capture.sources import open_source

    what = f"摄像头 camera {cam.id} ({cam.name})" if cam.name else f"摄像头 camera {cam.id}"
    if not cam.enabled:
        return Finding(SKIP, what, "已停用 (enabled: false)")
    if cam.source.type == "gb28181":
        state = "SIP 服务已启用" if gb_enabled else "gb28181.enabled 为 false"
        return Finding(SKIP if gb_enabled else FAIL, what, f"GB/T 28181 设备主动注册, 由运行中的 agent 检查 ({state})")
    got: list[object] = []
    errors: list[str] = []
    stop = threading.Event()

    def read() -> None:
        try:
            for frame in open_source(cam).frames(stop):
                got.append(frame)
                return
        except Exception as err:  # noqa: BLE001 - reported as the camera's finding
            errors.append(f"{err.__class__.__name__}: {err}")

    t0 = time.monotonic()
    thread = threading.Thread(target=read, name=f"doctor-{cam.id}", daemon=True)
    thread.start()
    thread.join(timeout_s)
    stop.set()
    if got:
        frame = got[0]
        return Finding(OK, what, f"解码成功 {frame.width}x{frame.height}, 用时 {time.monotonic() - t0:.1f} 秒")  # type: ignore[attr-defined]
    why = errors[0] if errors else f"{timeout_s:g} 秒内没有画面 (no frame)"
    return Finding(FAIL, what, f"无法取流 (not decoding): {why}")


def run_doctor(config: Path, *, time_url: str | None = None, timeout_s: float = 15.0, model_runs: int = 10,
               say: Callable[[str], None] = print) -> int:
    """Run every check, print a line each and a verdict; 0 when nothing failed, 1 otherwise."""
    try:
        cfg = load_config(config)
    except EdgeError as err:
        say(Finding(FAIL, "配置 config", str(err)).line())
        say("结论 verdict: 配置无效, 其余未检查")
        return 1
    findings = [Finding(OK, "配置 config", f"{config}: 设备 {cfg.device.id}, {len(cfg.cameras)} 路摄像头")]
    say(findings[0].line())
    checks: list[Callable[[], Finding]] = [
        lambda: check_model(cfg, model_runs), lambda: check_disk(cfg), lambda: check_broker(cfg, timeout_s),
        lambda: check_clock(time_url, timeout_s),
        *[(lambda c=cam: check_camera(c, timeout_s, cfg.gb28181.enabled)) for cam in cfg.cameras]]
    for check in checks:
        finding = check()
        findings.append(finding)
        say(finding.line())
    failed = [f for f in findings if f.status == FAIL]
    if failed:
        say(f"结论 verdict: {len(failed)} 项故障 (failed): " + "; ".join(f.what for f in failed))
        return 1
    say("结论 verdict: 全部正常 (all checks passed)")
    return 0
