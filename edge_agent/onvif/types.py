"""Dataclasses for what ONVIF devices tell us; filled by the pure parsers in this package."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Scopes:
    """The human-facing parts of a device's WS-Discovery scopes (URL-decoded)."""

    name: str = ""
    hardware: str = ""
    location: str = ""
    profiles: tuple[str, ...] = ()
    raw: tuple[str, ...] = ()


@dataclass(frozen=True)
class ProbeMatch:
    """One device that answered a WS-Discovery Probe."""

    endpoint: str
    xaddrs: tuple[str, ...]
    scopes: Scopes = field(default_factory=Scopes)
    types: tuple[str, ...] = ()
    metadata_version: int | None = None
    responder: str = ""

    @property
    def device_service(self) -> str | None:
        """First HTTP(S) XAddr with an IPv4 or host name (cameras often list IPv6 ones too)."""
        for addr in self.xaddrs:
            if addr.startswith(("http://", "https://")) and "://[" not in addr:
                return addr
        return self.xaddrs[0] if self.xaddrs else None


@dataclass(frozen=True)
class Profile:
    """A media profile with a video encoder (profiles without video are not kept)."""

    token: str
    name: str
    encoding: str
    width: int
    height: int
    fps: float | None = None

    @property
    def resolution(self) -> str:
        return f"{self.width}x{self.height}"


@dataclass(frozen=True)
class StreamInfo:
    """Where to get a profile's video: RTSP URI (without credentials) and snapshot URI."""

    profile: Profile
    uri: str
    snapshot_uri: str | None = None


@dataclass(frozen=True)
class DeviceInformation:
    manufacturer: str = ""
    model: str = ""
    firmware: str = ""
    serial: str = ""
    hardware_id: str = ""


@dataclass(frozen=True)
class OnvifDevice:
    """A camera as the agent needs it: identity, main stream (snapshots/clips), sub stream (detection)."""

    host: str
    port: int
    info: DeviceInformation
    profiles: tuple[Profile, ...]
    main: StreamInfo | None
    sub: StreamInfo | None
    name: str = ""
    clock_offset_s: float = 0.0

    @property
    def onvif_host(self) -> str:
        return f"{self.host}:{self.port}"
