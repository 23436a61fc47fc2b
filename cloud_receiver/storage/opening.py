"""Opening the configured store: SQLite at a path, or PostgreSQL at a URL (password from the environment)."""

from __future__ import annotations

from pathlib import Path

from cloud_receiver.storage.db import url_with_password
from cloud_receiver.storage.postgres import PostgresStorage
from cloud_receiver.storage.sqlite import SqliteStorage, Storage


def open_store(*, url: str | None, password_env: str | None, sqlite_path: Path, busy_timeout_ms: int = 5000,
               push_owner: str = "", push_lease_s: float | None = None, migrate: bool = True) -> Storage:
    """PostgreSQL when `url` is a postgresql:// URL, else SQLite at `sqlite_path`; migrated unless told not to
    (a second store of a running receiver's database needs no migration)."""
    if url and url.startswith("postgresql"):
        extra = {"push_lease_s": push_lease_s} if push_lease_s is not None else {}
        return PostgresStorage(url_with_password(url, password_env), push_owner=push_owner, migrate=migrate, **extra)
    return SqliteStorage(sqlite_path, busy_timeout_ms=busy_timeout_ms, push_owner=push_owner, migrate=migrate)
