"""A local Mosquitto on a free 127.0.0.1 port in a folder of its own, for the demo, tests and benchmarks.

API (everything else here is private):

    start_broker(tmp_dir=None, *, dynsec=False, group="receivers", tls_dir=None) -> Broker
        Plain broker (anonymous allowed, no ACL) or, with dynsec=True, Mosquitto's
        dynamic-security plugin initialised with an admin client and one receiver client
        (role: the shared subscriptions of `group`). Persistence on, so restart() keeps sessions.
        tls_dir: a folder with ca.crt, server.crt and server.key; adds a TLS listener (Broker.tls_port).
    running_broker(tmp_dir=None, *, dynsec=False, group="receivers", tls_dir=None)   context manager, same args
    Broker.host, .port, .dir          where it listens / keeps its files (mosquitto.conf, .log, .db)
    Broker.tls_port                   the TLS listener's port, None without tls_dir
    Broker.admin                      (username, password) of the dynsec admin, None when plain
    Broker.receiver                   (username, password) of the receiver client, None when plain
    Broker.add_device(device_id=None) -> (device_id, password)
        dynsec: creates the device's client and role (publish bk/v1/{id}/#, subscribe bk/v1/{id}/cmd);
        plain: only issues an id (password ""). A new 20-digit id when none is given.
    Broker.start()                    run mosquitto on dir/mosquitto.conf (start_broker writes it; a test may
                                      write its own) and wait until it listens on `port`
    Broker.stop()                     SIGTERM and wait; Broker.restart() stops and starts on the same port
    tool(name) -> str                 path of a Mosquitto program (mosquitto, mosquitto_ctrl)
    Broker.log_text() -> str          the broker's log, for failure messages

The broker runs config/mosquitto/demo.conf, moved to the free port and the temp dir.
A missing mosquitto / mosquitto_ctrl / dynsec plugin raises RuntimeError (tests fail, never skip).
Production brokers are configured from config/mosquitto/production.conf instead.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cloud_receiver.admin.dynsec import DynsecAdmin
from devkit.process import running, stop_process, wait_listening

_SERIALS = itertools.count(1)


def free_port(*, udp_too: bool = False) -> int:
    """A TCP port free on 127.0.0.1 now (and free for UDP as well with `udp_too`, as SIP needs)."""
    for _ in range(50):
        with socket.socket() as t:
            t.bind(("127.0.0.1", 0))
            port = t.getsockname()[1]
            if not udp_too:
                return port
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                try:
                    u.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port on 127.0.0.1")


def tool(name: str) -> str:
    path = shutil.which(name) or (f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None)
    if path is None:
        raise RuntimeError(f"{name} is not installed (apt-get install mosquitto mosquitto-clients)")
    return path


def dynsec_plugin() -> str:
    found = glob.glob("/usr/lib/*/mosquitto_dynamic_security.so") + glob.glob("/usr/lib/mosquitto_dynamic_security.so")
    if not found:
        raise RuntimeError("mosquitto_dynamic_security.so not found (Debian package mosquitto >= 2.0)")
    return found[0]


@dataclass
class Broker:
    host: str
    port: int
    dir: Path
    dynsec: bool
    admin: tuple[str, str] | None = None
    receiver: tuple[str, str] | None = None
    tls_port: int | None = None
    tls_dir: Path | None = None
    _proc: subprocess.Popen | None = field(default=None, repr=False)

    def start(self) -> None:
        """Run mosquitto on `dir/mosquitto.conf` and wait until it listens on `port`."""
        log = open(self.dir / "mosquitto.stdout", "ab")  # noqa: SIM115 - owned by the process
        self._proc = subprocess.Popen([tool("mosquitto"), "-c", str(self.dir / "mosquitto.conf")],
                                      stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_listening(self._proc, self.host, self.port, 10, "mosquitto", self.log_text)

    def stop(self) -> None:
        stop_process(self._proc, 10)
        self._proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_text(self) -> str:
        parts = [p.read_text(errors="replace") for p in (self.dir / "mosquitto.log", self.dir / "mosquitto.stdout")
                 if p.exists()]
        return "\n".join(parts)

    def admin_client(self) -> DynsecAdmin:
        if self.admin is None:
            raise RuntimeError("plain broker: no dynsec admin")
        return DynsecAdmin(self.host, self.port, *self.admin)

    def add_device(self, device_id: str | None = None) -> tuple[str, str]:
        device_id = device_id or f"64050200001180{next(_SERIALS) + 900000:06d}"
        if not self.dynsec:
            return device_id, ""
        password = secrets.token_urlsafe(16)
        with self.admin_client() as admin:
            admin.add_device(device_id, password)
        return device_id, password


DEMO_CONF = Path(__file__).resolve().parents[1] / "config" / "mosquitto" / "demo.conf"  # read from the checkout


def _replace(text: str, old: str, new: str) -> str:
    if old not in text:
        raise RuntimeError(f"{DEMO_CONF} no longer contains {old!r}; update devkit/localbroker.py")
    return text.replace(old, new)


def _config(b: Broker) -> str:
    """The project's demo config (config/mosquitto/demo.conf) moved to this broker's port and folder."""
    text = DEMO_CONF.read_text()
    text = _replace(text, "listener 18883 127.0.0.1", f"listener {b.port} {b.host}")
    text = _replace(text, "/tmp/bk-broker/", f"{b.dir}/")
    text = _replace(text, "log_dest stdout", f"log_dest file {b.dir}/mosquitto.log")
    text = _replace(text, "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so", dynsec_plugin())
    if not b.dynsec:
        text = _replace(text, "allow_anonymous false", "allow_anonymous true")
        text = "\n".join(line for line in text.splitlines() if not line.startswith("plugin")) + "\n"
    if b.tls_dir is not None:
        t = b.tls_dir
        text += (f"listener {b.tls_port} {b.host}\ncafile {t}/ca.crt\ncertfile {t}/server.crt\n"
                 f"keyfile {t}/server.key\n")
    if os.geteuid() == 0:
        text += "user root\n"  # else mosquitto drops to user 'mosquitto', which cannot write the temp dir
    return text


def start_broker(tmp_dir: Path | None = None, *, dynsec: bool = False, group: str = "receivers",
                 tls_dir: Path | None = None) -> Broker:
    d = Path(tmp_dir) if tmp_dir else Path(tempfile.mkdtemp(prefix="bk-broker-"))
    d.mkdir(parents=True, exist_ok=True)
    b = Broker("127.0.0.1", free_port(), d, dynsec)
    if tls_dir is not None:
        b.tls_dir, b.tls_port = Path(tls_dir).resolve(), free_port()
    if dynsec:
        b.admin = ("bk-admin", secrets.token_urlsafe(16))
        subprocess.run([tool("mosquitto_ctrl"), "dynsec", "init", str(d / "dynamic-security.json"), *b.admin],
                       check=True, capture_output=True)
    (d / "mosquitto.conf").write_text(_config(b))
    b.start()
    if dynsec:
        b.receiver = ("bk-receiver-test", secrets.token_urlsafe(16))
        try:
            with b.admin_client() as admin:
                admin.add_receiver(*b.receiver, group=group)
        except Exception:
            b.stop()
            raise
    return b


@contextlib.contextmanager
def running_broker(tmp_dir: Path | None = None, *, dynsec: bool = False, group: str = "receivers",
                   tls_dir: Path | None = None) -> Iterator[Broker]:
    with running(start_broker(tmp_dir, dynsec=dynsec, group=group, tls_dir=tls_dir), own_dir=tmp_dir is None) as b:
        yield b
