"""Device ids and provisioning: a GB/T 28181 style id, a random password, a row and a broker account.

Id layout (20 digits): district code (6, from the canteen's jurisdiction) + "00" (base unit, so
the 8-digit centre code) + industry (2) + type (3, 118 = NVR / edge box) + network (1) + serial (6).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

import structlog

from cloud_receiver.admin.dynsec import DynsecAdmin
from cloud_receiver.config import DeviceIdConfig
from cloud_receiver.errors import ProvisioningError, StorageError
from cloud_receiver.storage.sqlite import Storage

log = structlog.get_logger(__name__)

DISTRICT = re.compile(r"^\d{6}$")
SERIAL_DIGITS = 6


@dataclass(frozen=True)
class DeviceCredentials:
    device_id: str
    password: str

    def __repr__(self) -> str:  # never show the password in logs or tracebacks
        return f"DeviceCredentials(device_id={self.device_id!r}, password='***')"


def device_id_prefix(district: str, ids: DeviceIdConfig) -> str:
    """The first 14 digits of ids issued in `district`."""
    if not DISTRICT.match(district):
        raise ValueError(f"jurisdiction {district!r} is not a 6-digit district code")
    return f"{district}00{ids.industry}{ids.type_code}{ids.network}"


def compose_device_id(district: str, serial: int, ids: DeviceIdConfig) -> str:
    """e.g. compose_device_id("640502", 1, DeviceIdConfig()) == "64050200001180000001"."""
    if not 0 < serial < 10**SERIAL_DIGITS:
        raise ValueError(f"serial {serial} does not fit in {SERIAL_DIGITS} digits")
    return f"{device_id_prefix(district, ids)}{serial:0{SERIAL_DIGITS}d}"


def new_password() -> str:
    return secrets.token_urlsafe(24)


def add_device(storage: Storage, admin: DynsecAdmin | None, canteen_id: str, name: str = "",
               ids: DeviceIdConfig | None = None) -> DeviceCredentials:
    """Issue an id and password, provision the broker (when `admin` is given), then store the device.

    The broker account comes first: a broker account without a row is harmless (its messages are
    rejected as unknown device), a row without an account would look provisioned and not be.
    """
    ids = ids or DeviceIdConfig()
    canteen = storage.get_canteen(canteen_id)
    if canteen is None:
        raise ProvisioningError(f"unknown canteen {canteen_id!r}: add it first (cloud-receiver canteen add)")
    prefix = device_id_prefix(canteen["jurisdiction"], ids)
    creds = DeviceCredentials(compose_device_id(canteen["jurisdiction"], storage.max_device_serial(prefix) + 1, ids),
                              new_password())
    if admin is not None:
        admin.add_device(creds.device_id, creds.password)
    try:
        storage.add_device(creds.device_id, canteen_id, name)
    except StorageError:
        if admin is not None:
            admin.remove_device(creds.device_id)
        raise
    log.info("device added", device_id=creds.device_id, canteen_id=canteen_id, broker=admin is not None)
    return creds
