"""The few named exceptions of the cloud receiver."""

from __future__ import annotations

from pydantic import ValidationError


class ReceiverError(Exception):
    """Base of the receiver's own errors."""


class ConfigError(ReceiverError):
    """The configuration is invalid; the message names the file, line and key path."""


class StorageError(ReceiverError):
    """The store failed (disk, lock, schema); retryable unless the message says otherwise."""


class Rejected(ReceiverError):
    """An MQTT message was refused by validation; `reason` is stored in `rejects`."""

    def __init__(self, reason: str, device_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.device_id = device_id


class ProvisioningError(ReceiverError):
    """The broker refused or did not answer a dynamic-security command (needs a human)."""


def validation_problem(err: ValidationError, whole: str) -> str:
    """The first problem of a pydantic error as `where: what (+N more)`; `whole` names the top (e.g. "(body)")."""
    first = err.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or whole
    more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{where}: {first['msg']}{more}"
