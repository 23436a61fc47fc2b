"""The few named exceptions of the cloud receiver."""

from __future__ import annotations


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
