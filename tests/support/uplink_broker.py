"""Test helpers of the uplink tests: a real Mosquitto on a free port, a subscriber that records
what arrives, a byte-counting TCP proxy, and a child-process agent for the kill -9 test.

Missing tools raise (mosquitto, mosquitto_passwd), so a test fails rather than skips.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from devkit.localbroker import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
DEVICE = "64050200001180000001"
OTHER_DEVICE = "64050200001180000002"


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


class Broker:
    """`mosquitto -c conf` in a temp dir; optional password file + ACL (`pattern readwrite bk/v1/%u/#`)."""

    def __init__(self, workdir: Path, *, users: dict[str, str] | None = None, persistence: bool = False) -> None:
        if shutil.which("mosquitto") is None:
            raise RuntimeError("mosquitto is not installed (apt-get install mosquitto)")
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log = self.dir / "mosquitto.log"
        # as root, mosquitto would drop to user "mosquitto" and could not write our temp dir
        lines = [f"listener {self.port} 127.0.0.1", f"log_dest file {self.log}", "log_type all"]
        if os.geteuid() == 0:
            lines.append("user root")
        if users:
            if shutil.which("mosquitto_passwd") is None:
                raise RuntimeError("mosquitto_passwd is not installed")
            pw = self.dir / "passwd"
            pw.write_text("")
            for user, password in users.items():
                subprocess.run(["mosquitto_passwd", "-b", str(pw), user, password], check=True)
            acl = self.dir / "acl"
            acl.write_text("user receiver\ntopic read bk/v1/#\n\npattern readwrite bk/v1/%u/#\n")
            lines += ["allow_anonymous false", f"password_file {pw}", f"acl_file {acl}"]
        else:
            lines.append("allow_anonymous true")
        if persistence:
            lines += ["persistence true", f"persistence_location {self.dir}/", "autosave_interval 1"]
        self.conf = self.dir / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen | None = None

    def start(self) -> Broker:
        self.proc = subprocess.Popen(["mosquitto", "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        try:
            wait_port(self.port)
        except TimeoutError:
            self.proc.kill()
            raise RuntimeError(f"mosquitto did not start: {self.proc.stderr.read().decode()}") from None
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)
        self.proc = None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class Received:
    topic: str
    payload: bytes
    t: float


@dataclass
class Receiver:
    """A v5 subscriber (persistent session, QoS 1) recording every message in arrival order; a message the broker
    delivers again (DUP) after a restart that was already recorded is counted, not recorded again: what is
    recorded twice was sent twice."""

    port: int
    topics: tuple[str, ...] = ("bk/v1/+/alert", "bk/v1/+/media/+/+")
    username: str | None = None
    password: str | None = None
    messages: list[Received] = field(default_factory=list)
    redelivered: int = 0  # messages the broker sent again (DUP) that were already recorded

    def start(self, client_id: str = "test-receiver") -> Receiver:
        self._lock = threading.Lock()
        self._ready = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        if self.username:
            c.username_pw_set(self.username, self.password)
        c.reconnect_delay_set(0.1, 0.5)

        def on_connect(client, userdata, flags, rc, props):
            if not rc.is_failure:
                client.subscribe([(t, 1) for t in self.topics])

        def on_subscribe(client, userdata, mid, rcs, props):
            self._ready.set()

        def on_message(client, userdata, msg):
            with self._lock:
                payload = bytes(msg.payload)
                if msg.dup and any(m.topic == msg.topic and m.payload == payload for m in self.messages):
                    # the broker sending again what we already have (it did not see our PUBACK before it
                    # stopped): QoS 1 on the broker -> us leg, not a message the device sent twice
                    self.redelivered += 1
                    return
                self.messages.append(Received(msg.topic, payload, time.monotonic()))

        c.on_connect, c.on_subscribe, c.on_message = on_connect, on_subscribe, on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600  # the broker queues for us while we are away
        c.connect("127.0.0.1", self.port, clean_start=False, properties=props)
        c.loop_start()
        self.client = c
        if not self._ready.wait(10):
            raise TimeoutError("receiver did not subscribe")
        return self

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.messages)

    def alerts(self) -> list[dict]:
        return [json.loads(m.payload) for m in self.snapshot() if m.topic.endswith("/alert")]

    def wait_for(self, predicate, timeout: float) -> bool:
        from support.waiting import wait_until  # here: this file also runs as a script, without tests/ on sys.path

        return bool(wait_until(lambda: predicate(self), timeout, step=0.05))

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class CountingProxy:
    """TCP proxy 127.0.0.1:port → broker that records (time, bytes) of client→broker traffic."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.port = free_port()
        self.samples: list[tuple[float, int]] = []
        self._lock = threading.Lock()
        self._srv = socket.create_server(("127.0.0.1", self.port))
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True, name="proxy-accept").start()

    def _accept(self) -> None:
        self._srv.settimeout(0.2)
        while not self._stop.is_set():
            try:
                client, _ = self._srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, count: bool) -> None:
        try:
            while data := src.recv(65536):
                if count:
                    with self._lock:
                        self.samples.append((time.monotonic(), len(data)))
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def bytes_between(self, t0: float, t1: float) -> int:
        with self._lock:
            return sum(n for t, n in self.samples if t0 <= t < t1)

    def total(self) -> int:
        with self._lock:
            return sum(n for _, n in self.samples)

    def close(self) -> None:
        self._stop.set()
        self._srv.close()


def agent_command(db: Path, port: int, *, kbps: float, device: str = DEVICE) -> list[str]:
    """argv of a child agent that drains `db` to the broker until killed."""
    return [sys.executable, str(Path(__file__).resolve()), "--db", str(db), "--port", str(port),
            "--kbps", str(kbps), "--device", device]


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
    return env


def _run_child_agent() -> None:
    """Child process: open the outbox, run the uplink, print health lines until SIGKILL/SIGTERM."""
    sys.path.insert(0, str(REPO_ROOT))
    from edge_agent.config import BrokerConfig, UplinkConfig
    from edge_agent.outbox.store import Outbox
    from edge_agent.uplink.client import Uplink

    ap = argparse.ArgumentParser()
    ap.add_argument("--db", type=Path, required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--kbps", type=float, required=True)
    ap.add_argument("--device", default=DEVICE)
    args = ap.parse_args()
    cfg = UplinkConfig(broker=BrokerConfig(port=args.port, password_env="BK_TEST_UNSET_PASSWORD"),
                       budget_kbps_per_camera=args.kbps, reconnect_max_s=0.5, telemetry_s=3600)
    outbox = Outbox(args.db, device_id=args.device)
    uplink = Uplink(cfg, device_id=args.device, outbox=outbox, n_cameras=1, status=list, version="test")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    uplink.start()
    while not stop.wait(0.2):
        h = uplink.health()
        print(json.dumps({"connected": h["connected"], "depth": h["outbox"]["depth_total"],
                          "sent": h["sent"]}), flush=True)
    uplink.stop()
    outbox.close()


if __name__ == "__main__":
    _run_child_agent()
