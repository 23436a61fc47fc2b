"""Login throttling: after `limit` failed logins for one name, or from one client address, within
`window_s`, login is refused until the oldest of them leaves the window.

Each failure is a row of `login_attempts` (kind `name` or `ip`, the key, the time), so the count holds
across every receiver sharing the database and across restarts. Rows older than the window are
deleted whenever a failure is written. A successful login forgets its name's failures (not its
address's: one account an attacker holds must not reset the count of the address it guesses from).
A refused attempt is not counted, so the wait does not grow while someone keeps trying.

The address is the peer of the TCP connection (`request.remote`): behind a reverse proxy every client
has the proxy's address, and the per-address limit then applies to all of them together.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from cloud_receiver.storage.db import Db, parse_iso
from cloud_receiver.storage.schema import login_attempts

KEY_MAX = 128


def _keys(name: str, ip: str | None) -> list[tuple[str, str]]:
    return [("name", (name or "").strip().casefold()[:KEY_MAX]), ("ip", (ip or "unknown")[:KEY_MAX])]


@dataclass(frozen=True, slots=True)
class LoginThrottle:
    db: Db
    limit: int = 5
    window_s: float = 15 * 60.0

    def retry_at(self, name: str, ip: str | None, now: datetime | None = None) -> datetime | None:
        """When login may be tried again for this name and address; None if it may be tried now."""
        now = now or datetime.now(UTC)
        since = now - timedelta(seconds=self.window_s)
        a = login_attempts.c
        latest: datetime | None = None
        with self.db.read() as conn:
            for kind, key in _keys(name, ip):
                times = self.db.all(sa.select(a.at).where(a.kind == kind, a.key == key, a.at > since)
                                    .order_by(a.at.desc()).limit(self.limit), conn)
                if len(times) >= self.limit:
                    # free again when the limit-th newest failure leaves the window
                    free = parse_iso(times[self.limit - 1]["at"]) + timedelta(seconds=self.window_s)
                    latest = free if latest is None or free > latest else latest
        return latest

    def record_failure(self, name: str, ip: str | None, now: datetime | None = None) -> None:
        """Count one failed login against the name and the address."""
        now = now or datetime.now(UTC)
        with self.db.write() as conn:
            conn.execute(login_attempts.delete().where(login_attempts.c.at <= now - timedelta(seconds=self.window_s)))
            conn.execute(login_attempts.insert(), [{"kind": kind, "key": key, "at": now}
                                                   for kind, key in _keys(name, ip)])

    def forget_name(self, name: str) -> None:
        """A successful login: the name's failures no longer count."""
        (kind, key), _ = _keys(name, None)
        with self.db.write() as conn:
            conn.execute(login_attempts.delete().where(login_attempts.c.kind == kind, login_attempts.c.key == key))
