"""The cloud-receiver command line against a real dynsec Mosquitto and a real SQLite file."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families
from support.notify_socket import NotifySocket
from support.receiver_harness import DeviceClient, make_alert
from support.waiting import wait_until

from bk_contract import topic
from cloud_receiver.app.cli import main
from devkit.localbroker import running_broker

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _reset_logging():
    yield
    structlog.reset_defaults()  # main() configures structlog for the process


@pytest.fixture
def broker(tmp_path):
    with running_broker(tmp_path / "broker", dynsec=True) as b:
        yield b


def _config(tmp_path: Path, broker, http_port: int = 0) -> Path:
    path = tmp_path / "receiver.yaml"
    path.write_text(
        f"http:\n  port: {http_port}\n"
        f"mqtt:\n  port: {broker.port}\n  client_id: cli-test\n  username: bk-receiver\n  password_env: BK_TEST_RX_PW\n"
        f"storage:\n  path: data/receiver.db\n  media_dir: data/media\n"
        f"broker:\n  port: {broker.port}\n  admin_username: {broker.admin[0]}\n  admin_password_env: BK_TEST_ADMIN_PW\n"
        f"log:\n  format: json\n")
    return path


def test_device_add_provisions_broker_and_database(broker, tmp_path, capsys, monkeypatch):
    """`device add` prints an id and password once; the device may publish only under its own prefix."""
    cfg = _config(tmp_path, broker)
    monkeypatch.setenv("BK_TEST_ADMIN_PW", broker.admin[1])
    assert main(["-c", str(cfg), "canteen", "add", "--id", "c1", "--name", "一小", "--jurisdiction", "640502"]) == 0
    outputs = []
    for name in ("一号机", "二号机"):
        assert main(["device", "add", "-c", str(cfg), "--canteen", "c1", "--name", name]) == 0
        outputs.append(capsys.readouterr().out)
    creds = [(re.search(r"device_id: (\d{20})", o).group(1), re.search(r"password: (\S+)", o).group(1)) for o in outputs]
    assert [c[0] for c in creds] == ["64050200001180000001", "64050200001180000002"]
    assert main(["device", "list", "-c", str(cfg)]) == 0
    listing = capsys.readouterr().out
    assert "64050200001180000001\tc1\t离线" in listing and "二号机" in listing
    assert creds[0][1] not in listing

    dev = DeviceClient(broker, *creds[0])
    try:
        assert dev.publish(topic(creds[0][0], "alert"), make_alert(creds[0][0], 1).model_dump_json()) in (0, 0x10)
        assert dev.publish(topic(creds[1][0], "alert"), make_alert(creds[1][0], 1).model_dump_json()) == 0x87
        assert dev.subscribe("$share/receivers/bk/v1/+/alert")[0] >= 0x80
    finally:
        dev.close()


def test_device_add_errors_are_reported_not_raised(broker, tmp_path, capsys, monkeypatch):
    """Unknown canteen, missing admin password and wrong admin password give exit codes and messages."""
    cfg = _config(tmp_path, broker)
    monkeypatch.delenv("BK_TEST_ADMIN_PW", raising=False)
    assert main(["device", "add", "-c", str(cfg), "--canteen", "c1"]) == 2
    assert "BK_TEST_ADMIN_PW is not set" in capsys.readouterr().err
    monkeypatch.setenv("BK_TEST_ADMIN_PW", "wrong")
    main(["-c", str(cfg), "canteen", "add", "--id", "c1", "--jurisdiction", "640502"])
    assert main(["device", "add", "-c", str(cfg), "--canteen", "c1"]) == 1
    assert "refused the admin login" in capsys.readouterr().err
    monkeypatch.setenv("BK_TEST_ADMIN_PW", broker.admin[1])
    assert main(["device", "add", "-c", str(cfg), "--canteen", "nope"]) == 1
    assert "unknown canteen" in capsys.readouterr().err


def test_bad_config_exit_code_names_line(tmp_path, capsys):
    """A config error exits 2 and names file, line and key."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("mqtt:\n  prot: 1883\n")
    assert main(["config", "check", "-c", str(bad)]) == 2
    assert f"{bad}:2: mqtt.prot: unknown key" in capsys.readouterr().err


def _poll_health(url: str, ok, timeout: float = 10.0, token: str | None = None) -> bool:
    request = urllib.request.Request(url + "/healthz", headers={"Authorization": f"Bearer {token}"} if token else {})

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(request, timeout=2) as resp:
                return bool(ok(json.loads(resp.read())))
        except OSError:
            return False  # not listening yet, or 503 while MQTT is not connected

    return bool(wait_until(healthy, timeout, step=0.1))


def test_serve_prints_url_ingests_and_stops_on_sigterm(broker, tmp_path, capsys, monkeypatch):
    """`serve` prints the API URL, stores a device's alert, answers /healthz and exits 0 on SIGTERM; under
    systemd (NOTIFY_SOCKET, WATCHDOG_USEC) it sends READY=1 once listening, WATCHDOG=1 pings, STOPPING=1;
    /metrics answers an admin token only."""
    cfg = _config(tmp_path, broker)
    monkeypatch.setenv("BK_TEST_ADMIN_PW", broker.admin[1])
    main(["-c", str(cfg), "canteen", "add", "--id", "c1", "--jurisdiction", "640502"])
    main(["device", "add", "-c", str(cfg), "--canteen", "c1"])
    assert main(["broker", "add-receiver", "-c", str(cfg)]) == 0
    out = capsys.readouterr().out
    device_id, device_pw = re.search(r"device_id: (\d{20})", out).group(1), re.search(r"设备密码 password: (\S+)", out).group(1)
    rx_pw = re.search(r"接收端密码 password: (\S+)", out).group(1)
    assert main(["-c", str(cfg), "token", "create", "--role", "admin", "--name", "ops"]) == 0
    admin = capsys.readouterr().out.strip().splitlines()[-1]
    notify = NotifySocket(tmp_path / "notify")
    env = {**os.environ, "BK_TEST_RX_PW": rx_pw, "PYTHONPATH": str(ROOT), "NOTIFY_SOCKET": str(tmp_path / "notify"),
           "WATCHDOG_USEC": "400000"}
    proc = subprocess.Popen([sys.executable, "-m", "cloud_receiver.app.cli", "serve", "-c", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path)
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], name="serve-stdout", daemon=True)
    reader.start()
    try:
        url = None
        seen = []
        deadline = time.monotonic() + 20
        while url is None and time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                continue
            seen.append(line)
            if m := re.match(r"API: (http://127\.0\.0\.1:\d+)/api/v1$", line.strip()):
                url = m.group(1)
        assert url, "".join(seen)
        assert wait_until(lambda: notify.times("READY=1"), 5), notify.messages
        assert wait_until(lambda: len(notify.times("WATCHDOG=1")) >= 3, 5), notify.messages
        assert _poll_health(url, lambda h: h == {"status": "up"}), "receiver never subscribed"  # public: up/down only
        assert _poll_health(url, lambda h: h["mqtt_connected"] and h["mqtt_subscribed"], token=admin), "no details"
        dev = DeviceClient(broker, device_id, device_pw)
        assert dev.publish_alert(make_alert(device_id, 5)) == 0
        dev.close()
        assert _poll_health(url, lambda h: h["ingest"].get("stored") == 1, token=admin), "alert not stored"
        with pytest.raises(urllib.error.HTTPError) as anonymous:
            urllib.request.urlopen(url + "/metrics", timeout=5)
        assert anonymous.value.code == 401  # like the details of /healthz: admin only
        scrape = urllib.request.Request(url + "/metrics", headers={"Authorization": f"Bearer {admin}"})
        with urllib.request.urlopen(scrape, timeout=5) as resp:
            metrics = {(s.name, tuple(sorted(s.labels.items()))): s.value
                       for fam in text_string_to_metric_families(resp.read().decode()) for s in fam.samples}
        assert metrics[("bk_ingest_messages_total", (("outcome", "stored"),))] == 1
        assert metrics[("bk_mqtt_connected", ())] == 1 and metrics[("bk_push_owed", ())] == 0
        long_url = url + "/api/v1/alerts?since=" + "9" * 20_000  # past aiohttp's own 8190-byte line limit
        with pytest.raises(urllib.error.HTTPError) as too_long:
            urllib.request.urlopen(long_url, timeout=5)
        assert too_long.value.code == 414 and json.loads(too_long.value.read())["error"]["code"] == "uri_too_long"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        assert notify.times("STOPPING=1"), notify.messages
        reader.join(5)
        rest = "".join(seen + list(lines.queue))
        events = [json.loads(x) for x in rest.splitlines() if x.startswith("{")]
        # per-alert lines are debug; at info, ingest logs a summary (at the latest when it stops)
        assert any(e["event"] == "ingest summary" and e["stored"] == 1 for e in events), rest
        assert not any(e["event"] == "alert stored" for e in events), rest
        assert device_pw not in rest and rx_pw not in rest
    finally:
        notify.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
