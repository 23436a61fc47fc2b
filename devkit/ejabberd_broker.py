"""A private ejabberd (Debian's other MQTT v5 broker) on a free 127.0.0.1 port, for tests that must not
only pass on Mosquitto.

API:

    start_ejabberd(tmp_dir=None) -> EjabberdBroker      its own config, spool (Mnesia) and log in tmp_dir
    running_ejabberd(tmp_dir=None)                       context manager, same argument
    EjabberdBroker.host, .port, .dir                    where it listens / keeps its files
    EjabberdBroker.receiver                             (username, password) for the receiver (any password:
                                                        anonymous login)
    EjabberdBroker.receiver_mqtt                        the receiver's `mqtt` settings this broker needs:
                                                        {"shared": False} (no shared subscriptions)
    EjabberdBroker.add_device(device_id=None) -> (device_id, password)
    EjabberdBroker.stop(), .log_text()

What differs from Mosquitto, and why the receiver cares: CONNACK says Shared Subscription
Available 0 (a `$share/...` SUBSCRIBE is answered with DISCONNECT 0x9E), the session expiry granted
is the broker's `session_expiry` (3,600 s here) however long the client asks, and the Server Keep
Alive is 30 s. Not the system service: no ejabberdctl, no Erlang distribution (the node is
`nonode@nohost`, so no epmd), nothing outside tmp_dir. A missing ejabberd raises RuntimeError naming
the package (scripts/setup.sh installs it), so tests fail, never skip.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devkit.localbroker import free_port
from devkit.process import running, stop_process, wait_listening

SESSION_EXPIRY_S = 3600
_SERIALS = itertools.count(1)


def ejabberd_libs() -> str:
    """The folder holding ejabberd's Erlang application (ERL_LIBS), or RuntimeError naming what to install."""
    found = sorted(glob.glob("/usr/lib/*/ejabberd-*/ebin/ejabberd.app") + glob.glob("/usr/lib/ejabberd*/ebin/ejabberd.app"))
    if not found or shutil.which("erl") is None:
        raise RuntimeError("ejabberd is not installed (apt-get install ejabberd; scripts/setup.sh installs it)")
    return str(Path(found[-1]).parents[2])


@dataclass
class EjabberdBroker:
    host: str
    port: int
    dir: Path
    receiver: tuple[str, str] = ("bk-receiver", "anonymous")
    receiver_mqtt: dict[str, Any] = field(default_factory=lambda: {"shared": False})
    _proc: subprocess.Popen | None = field(default=None, repr=False)

    def start(self) -> None:
        (self.dir / "spool").mkdir(parents=True, exist_ok=True)
        (self.dir / "ejabberd.yml").write_text(_config(self))
        env = dict(os.environ, ERL_LIBS=ejabberd_libs(), EJABBERD_CONFIG_PATH=str(self.dir / "ejabberd.yml"),
                   EJABBERD_LOG_PATH=str(self.dir / "ejabberd.log"), ERL_CRASH_DUMP=str(self.dir / "erl_crash.dump"),
                   ERL_CRASH_DUMP_BYTES="0", HOME=str(self.dir))
        out = open(self.dir / "ejabberd.stdout", "ab")  # noqa: SIM115 - owned by the process
        self._proc = subprocess.Popen(["erl", "-noinput", "-mnesia", "dir", f'"{self.dir / "spool"}"', "-s", "ejabberd"],
                                      env=env, cwd=self.dir, stdout=out, stderr=subprocess.STDOUT)
        out.close()
        try:  # Erlang and Mnesia start in ~1 s; a busy 2-core machine takes longer
            wait_listening(self._proc, self.host, self.port, 30, "ejabberd", self.log_text, step_s=0.1)
        except RuntimeError:
            self.stop()
            raise

    def stop(self) -> None:
        """SIGTERM (Erlang stops its applications in order) and wait."""
        stop_process(self._proc, 15)
        self._proc = None

    def add_device(self, device_id: str | None = None) -> tuple[str, str]:
        """A device id (20 digits) and a password; anonymous login takes any password, but paho sends a user name
        only with one."""
        return device_id or f"64050200001180{next(_SERIALS) + 950000:06d}", "anonymous"

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in (self.dir / "ejabberd.log", self.dir / "ejabberd.stdout")
                         if p.exists())


def _config(b: EjabberdBroker) -> str:
    """MQTT only: anonymous login (any user name and password), one mod_mqtt listener."""
    return f"""hosts:
  - localhost
loglevel: info
log_rotate_count: 0
auth_method: [anonymous]
anonymous_protocol: login_anon
listen:
  -
    port: {b.port}
    ip: "{b.host}"
    module: mod_mqtt
    backlog: 1000
modules:
  mod_mqtt:
    session_expiry: {SESSION_EXPIRY_S}
"""


def start_ejabberd(tmp_dir: Path | None = None) -> EjabberdBroker:
    d = Path(tmp_dir) if tmp_dir else Path(tempfile.mkdtemp(prefix="bk-ejabberd-"))
    d.mkdir(parents=True, exist_ok=True)
    b = EjabberdBroker("127.0.0.1", free_port(), d)
    b.start()
    return b


@contextlib.contextmanager
def running_ejabberd(tmp_dir: Path | None = None) -> Iterator[EjabberdBroker]:
    with running(start_ejabberd(tmp_dir), own_dir=tmp_dir is None) as b:
        yield b
