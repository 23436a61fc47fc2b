"""systemd's notify protocol (sd_notify(3)): a datagram of `KEY=value` lines to $NOTIFY_SOCKET.

Both services are `Type=notify`: READY=1 once they can do their job, WATCHDOG=1 while they are
healthy (within `WatchdogSec`), STOPPING=1 on the way down. Outside systemd (no NOTIFY_SOCKET) every
call is a no-op, so the programs run the same by hand.
"""

from __future__ import annotations

import os
import socket

import structlog

log = structlog.get_logger(__name__)


def notify(*states: str) -> bool:
    """Send `states` (e.g. "READY=1", "STATUS=…") in one datagram; False when not under systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall("\n".join(states).encode("utf-8"))
    except OSError as err:
        log.warning("sd_notify_failed", socket=os.environ.get("NOTIFY_SOCKET"), error=str(err))
        return False
    return True


def watchdog_interval_s() -> float | None:
    """systemd's WatchdogSec for this process (WATCHDOG_USEC), or None when no watchdog is set."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid.isdigit() and int(pid) != os.getpid()):
        return None
    try:
        return int(usec) / 1e6 or None
    except ValueError:
        return None
