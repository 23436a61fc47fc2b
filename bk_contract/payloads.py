"""JSON payload models of contract version 1. Unknown fields are rejected, sizes bounded."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

VIOLATION_TYPES = (
    "phone_use", "intrusion_off_hours", "animal", "station_unattended", "crowding",
    "no_chef_hat", "no_mask", "no_uniform", "smoking", "bin_open", "fire",
    "camera_offline", "camera_tampered",
)
ViolationType = Literal[
    "phone_use", "intrusion_off_hours", "animal", "station_unattended", "crowding",
    "no_chef_hat", "no_mask", "no_uniform", "smoking", "bin_open", "fire",
    "camera_offline", "camera_tampered",
]
DeviceId = Field(pattern=r"^[0-9]{20}$", description="20-digit device code")
Id = Field(pattern=r"^[0-9A-Za-z_-]{1,64}$")


Count = Annotated[int, Field(ge=0, le=2**63 - 1)]  # what a 64-bit database column holds


def _utc_representable(value: datetime) -> datetime:
    try:
        value.astimezone(UTC)  # 9999-12-31T23:59:59-14:00 is past the end of the calendar in UTC
    except (OverflowError, ValueError) as err:
        raise ValueError("time cannot be expressed in UTC (out of range)") from err
    return value


Time = Annotated[datetime, AfterValidator(_utc_representable)]


class Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    v: Literal[1] = Field(1, description="Contract version.")


class AlertBox(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    label: str = Field(max_length=64)
    score: float = Field(ge=0, le=1)
    box: list[float] = Field(min_length=4, max_length=4, description="x1, y1, x2, y2 in pixels of `frame_size`.")
    track_id: Count | None = None


class MediaRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Id
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0, le=64 * 1024 * 1024)
    content_type: str = Field("image/jpeg", max_length=64)


class Alert(Payload):
    """`bk/v1/{device_id}/alert`, QoS 1. One event has one id; `rev` grows with each state change."""

    id: str = Id
    device_id: str = DeviceId
    camera_id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    type: ViolationType
    level: Literal["info", "warning", "critical"] = "warning"
    state: Literal["start", "update", "end"] = "start"
    rev: Count = Field(0, description="Revision; the receiver keeps the highest.")
    started_at: Time
    ended_at: Time | None = None
    score: float = Field(0.0, ge=0, le=1)
    boxes: list[AlertBox] = Field(default_factory=list, max_length=200)
    frame_size: list[Annotated[int, Field(ge=1, le=65535)]] | None = Field(None, min_length=2, max_length=2)
    zone: list[list[float]] | None = Field(None, max_length=64)
    snapshot: MediaRef | None = None
    clip: MediaRef | None = None
    detail: str = Field("", max_length=500, description="Short machine text, e.g. 'persons=9'.")


class CameraHealth(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    name: str = Field("", max_length=128)
    state: Literal["online", "offline", "degraded", "starting"] = "starting"
    fps: float = 0.0
    reconnects: Count = 0
    error: str = Field("", max_length=500)


class Status(Payload):
    """`bk/v1/{device_id}/status`, retained, QoS 1; the last will sets online false."""

    device_id: str = DeviceId
    online: bool
    version: str = Field("", max_length=32)
    ts: Time
    cameras: list[CameraHealth] = Field(default_factory=list, max_length=256)
    problems: list[str] = Field(default_factory=list, max_length=20,
                                description="What needs a human, e.g. a publish the broker refused.")


class Telemetry(Payload):
    """`bk/v1/{device_id}/telemetry`, QoS 0."""

    device_id: str = DeviceId
    ts: Time
    fps: dict[str, float] = Field(default_factory=dict)
    inference_ms: float = 0.0
    cpu_percent: float = 0.0
    temperature_c: float | None = None
    outbox_depth: Count = 0
    outbox_dropped: Count = 0
    outbox_dropped_by_priority: dict[str, Count] = Field(default_factory=dict)
    outbox_refused: Count = 0
    budget_bps: float = 0.0
    live_bps: dict[str, float] = Field(default_factory=dict, description="Cameras sending live video: their bit/s.")
    ring_hours: dict[str, float] = Field(default_factory=dict, description="Hours of recording (回放) kept per camera.")


COMMAND_NAMES = ("status", "snapshot_now", "live_start", "live_stop", "playback", "reload", "config_push",
                 "collect_mark")
CommandName = Literal["status", "snapshot_now", "live_start", "live_stop", "playback", "reload", "config_push",
                      "collect_mark"]
CameraId = Field(None, pattern=r"^[A-Za-z0-9_.-]{1,64}$")


class Command(Payload):
    """`bk/v1/{device_id}/cmd` (cloud → device). Only the receivers may publish here (the broker's ACL):
    that is its proof of origin. The box refuses a command past `expires_at`, one whose `id` it has
    already seen, and one it does not know, answering on `cmd/result` with the reason."""

    id: str = Id
    name: CommandName
    issuer: str = Field(min_length=1, max_length=64, description="Who asked (user or token name), for the box's log.")
    issued_at: Time
    expires_at: Time
    camera_id: str | None = CameraId
    args: dict[str, str | int | float | bool] = Field(default_factory=dict, max_length=32)


class CommandResult(Payload):
    """`bk/v1/{device_id}/cmd/result`: the outcome of one command; `data` what it produced (e.g. status)."""

    id: str = Id
    ok: bool
    error: str = Field("", max_length=500)
    data: dict[str, str | int | float | bool | None] = Field(default_factory=dict, max_length=64)
