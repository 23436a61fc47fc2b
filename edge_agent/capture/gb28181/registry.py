"""Devices registered to the box and their channels (cameras), with online state."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from edge_agent.capture.gb28181.manscdp import CatalogItem


@dataclass(frozen=True)
class GbEvent:
    """Something that happened to a device: `kind` is one of device_online, device_offline,
    catalog, registration_rejected, session_ended."""

    kind: str
    device_id: str
    detail: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ChannelInfo:
    channel_id: str
    device_id: str
    name: str
    manufacturer: str
    model: str
    status: str
    online: bool


@dataclass
class Device:
    device_id: str
    transport: str  # "udp" | "tcp"
    addr: tuple[str, int]
    online: bool = False
    registered_at: float = 0.0
    expires_at: float = 0.0
    last_seen: float = 0.0
    catalog_at: float = 0.0  # monotonic time the last complete catalog arrived (0: never)
    channels: dict[str, CatalogItem] = field(default_factory=dict)
    info: dict[str, str] = field(default_factory=dict)
    # Catalog pages being collected, by SN: (SumNum, items so far)
    pending_catalog: dict[int, tuple[int, dict[str, CatalogItem]]] = field(default_factory=dict)

    def touch(self) -> None:
        self.last_seen = time.monotonic()


class DeviceRegistry:
    def __init__(self) -> None:
        self.devices: dict[str, Device] = {}

    def channel(self, channel_id: str) -> tuple[Device, CatalogItem] | None:
        for dev in self.devices.values():
            item = dev.channels.get(channel_id)
            if item is not None:
                return dev, item
        # A device without a catalog can still be invited on its own id (a single IPC).
        dev = self.devices.get(channel_id)
        if dev is not None:
            return dev, CatalogItem(device_id=channel_id, status="ON")
        return None

    def channels(self) -> list[ChannelInfo]:
        out = []
        for dev in self.devices.values():
            for item in dev.channels.values():
                out.append(ChannelInfo(channel_id=item.device_id, device_id=dev.device_id, name=item.name,
                                       manufacturer=item.manufacturer, model=item.model, status=item.status,
                                       online=dev.online and item.online))
        return sorted(out, key=lambda c: (c.device_id, c.channel_id))
