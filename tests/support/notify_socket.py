"""NotifySocket: a datagram socket standing in for systemd's NOTIFY_SOCKET in tests (what systemd would receive)."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path


class NotifySocket:
    """A datagram socket standing in for systemd's NOTIFY_SOCKET; records (monotonic time, message)."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                self.messages.append((time.monotonic(), self.sock.recv(4096).decode()))
            except TimeoutError:
                continue

    def times(self, message: str) -> list[float]:
        return [t for t, m in list(self.messages) if message in m.split("\n")]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()
