"""Broker processes for tests, the demo and benchmarks: wait until one listens, stop one."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any


def wait_listening(proc: subprocess.Popen, host: str, port: int, timeout_s: float, what: str,
                   log_text: Callable[[], str], step_s: float = 0.05) -> None:
    """Return once `host:port` accepts a connection; raise (with the log) if `proc` exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{log_text()}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        time.sleep(step_s)
    raise RuntimeError(f"{what} did not listen on {port} within {timeout_s:g} s:\n{log_text()}")


@contextlib.contextmanager
def running(broker: Any, own_dir: bool) -> Iterator[Any]:
    """Yield a started broker; stop it after, and remove its folder when it made its own."""
    try:
        yield broker
    finally:
        broker.stop()
        if own_dir:
            shutil.rmtree(broker.dir, ignore_errors=True)


def stop_process(proc: subprocess.Popen | None, timeout_s: float) -> None:
    """SIGTERM and wait; SIGKILL if it does not end within `timeout_s`."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
