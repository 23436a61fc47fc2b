"""Typed configuration of the edge agent, validated at load.

One small pydantic model per concern; every field described; unknown keys rejected.
Secrets are never written here: a config names an environment variable (`*_env`) or a systemd
credential, and `resolve_secret` reads it at run time.
"""

from __future__ import annotations

import re
from datetime import time
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from bk_common.yamlconf import resolve_secret, validate_file
from edge_agent import assets
from edge_agent.collect.config import CameraCollectConfig, CollectConfig
from edge_agent.errors import ConfigError

GB_ID = re.compile(r"^\d{20}$")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _resolve_path(value: str | Path, info: ValidationInfo) -> Path:
    p = Path(value).expanduser()
    if p.is_absolute():
        return p
    base = (info.context or {}).get("config_dir") if info.context else None
    if base is not None and (Path(base) / p).exists():
        return Path(base) / p
    # a relative path the config's folder does not have may name a shipped file (models/...)
    return assets.shipped(p) or (Path(base or ".") / p)


class DeviceConfig(Section):
    id: str = Field(description="20-digit GB/T 28181 style device code of this box (also its MQTT username).")
    name: str = Field("", description="Human name of the box, e.g. the canteen's name.")
    canteen_id: str = Field("", description="Canteen this box belongs to, as known to the cloud.")
    timezone: str = Field("Asia/Shanghai", description="IANA time zone used by rule schedules.")
    config_trial_s: float = Field(90.0, ge=5, le=3600, description="A pushed config is rolled back when its cameras "
                                  "have not all come online within this long after the restart.")

    @field_validator("id")
    @classmethod
    def _gb_id(cls, v: str) -> str:
        if not GB_ID.match(v):
            raise ValueError("must be 20 digits (GB/T 28181 code), e.g. 64050200001180000001")
        return v


class StorageConfig(Section):
    path: Path = Field(Path("/var/lib/brightkitchen/agent.db"), description="SQLite file of the event store and outbox.")
    quota_mb: float = Field(2048, gt=0, description="Disk quota of the outbox; lowest-priority messages are dropped first beyond it.")


class RecordingConfig(Section):
    enabled: bool = Field(True, description="Keep each camera's main stream on disk for 回放 (packets as they are, "
                          "never re-encoded).")
    dir: Path | None = Field(None, description="Folder of the recordings (default: `recordings` beside storage.path).")
    segment_s: float = Field(60.0, ge=2, le=600, description="Length of one file; a file starts at a keyframe.")
    quota_mb_per_camera: float = Field(2048, gt=0, description="Disk kept per camera; the oldest files go first.")
    keep_h: float = Field(24.0, gt=0, description="Hours kept at most.")
    playback_max_s: float = Field(600.0, gt=0, le=3600, description="Longest range one `playback` command may ask for.")


class DetectorConfig(Section):
    type: Literal["tflite", "onnx", "auto"] = Field("tflite", description="Detector runtime: `tflite` (ai_edge_litert), "
                                                  "`onnx` (onnxruntime, the `onnx` extra) or `auto` (what the model's "
                                                  "manifest names). The output family (nanodet, yolov5, yolov8, ssd) "
                                                  "always comes from the manifest (docs/models.md).")
    model: Path = Field(Path("models/nanodet-coco-int8.tflite"), validate_default=True,
                        description="Model file; its manifest is the .json beside it. A relative path is looked up "
                        "beside the config file, then among the models shipped in the package (edge_agent/assets).")
    threads: int = Field(1, ge=1, le=16, description="Interpreter threads of each inference worker.")
    workers: int = Field(2, ge=1, le=8, description="Inference workers, each with its own interpreter; cameras are "
                         "divided among them. On 2 cores, 2 workers x 1 thread detect ~1.5x more frames per second "
                         "than 1 worker x 2 threads (docs/performance.md).")
    score_threshold: float | None = Field(None, ge=0.0, le=1.0, description="Detections below this score are dropped, "
                                          "for every class. Empty: the model manifest's per-class thresholds "
                                          "(person lower than rare classes, docs/models.md).")
    iou_threshold: float = Field(0.5, gt=0.0, le=1.0, description="NMS IoU threshold.")
    sample_fps: float = Field(5.0, gt=0, le=30, description="Frames per second sampled for detection.")
    input_width: int | None = Field(None, ge=128, le=1920, description="Empty: sampled frames are scaled once (libswscale, "
                                    "area) straight to their size inside the letterboxed model input. A width: scaled "
                                    "to it first and again by the detector (slower, only for comparison).")
    choose_variant: bool = Field(True, description="At start, time every shipped variant of the model (int8, fp32) on "
                                 "this CPU and use the fastest within max_accuracy_loss of the most accurate one.")
    max_accuracy_loss: float = Field(0.05, ge=0.0, le=1.0, description="Accuracy (manifest `accuracy.value`, e.g. "
                                     "person recall) a faster variant may lose against the most accurate one.")
    variant_runs: int = Field(5, ge=1, le=100, description="Timed invokes per variant at start (after one warm-up).")

    @field_validator("model", mode="before")
    @classmethod
    def _model_path(cls, v: str | Path, info: ValidationInfo) -> Path:
        return _resolve_path(v, info)


Point = tuple[float, float]


class MotionConfig(Section):
    enabled: bool = Field(True, description="Run the detector only on frames with motion (plus periodic full checks).")
    width: int = Field(160, ge=32, le=640, description="Width of the grayscale frame used for motion.")
    threshold: int = Field(25, ge=1, le=255, description="Pixel difference counted as change.")
    min_area: float = Field(0.002, ge=0, le=1, description="Fraction of the frame that must change to count as motion.")
    alpha: float = Field(0.1, gt=0, le=1, description="Running-average weight of the newest frame.")
    full_check_s: float = Field(10.0, gt=0, description="Run the detector at least this often even without motion.")
    masks: list[list[Point]] = Field(default_factory=list, description="Polygons (normalised 0..1) ignored by motion, e.g. a TV or clock.")


class BrokerConfig(Section):
    host: str = Field("127.0.0.1", description="MQTT broker host.")
    port: int = Field(1883, ge=1, le=65535, description="MQTT broker port.")
    tls: bool = Field(False, description="Use TLS to the broker.")
    ca_file: Path | None = Field(None, description="CA bundle for TLS (system default if empty).")
    username: str | None = Field(None, description="MQTT username; defaults to the device id.")
    password_env: str = Field("BK_DEVICE_PASSWORD", description="Environment variable or systemd credential holding the MQTT password.")
    keepalive_s: int = Field(30, ge=5, le=600, description="MQTT keepalive.")


class UplinkConfig(Section):
    enabled: bool = Field(True, description="Ship events to the cloud over MQTT.")
    broker: BrokerConfig = Field(default_factory=BrokerConfig, description="Broker connection.")
    budget_kbps_per_camera: float = Field(500, gt=0, description="Upload budget per configured camera in kbit/s: the "
                                          "bytes on the box's socket (TLS framing included) stay within it over every 60 s.")
    ack_timeout_s: float = Field(10.0, gt=0, description="A publish not acknowledged within this time is retried.")
    chunk_bytes: int = Field(32768, ge=1024, le=262144, description="Media chunk size.")
    telemetry_s: float = Field(60.0, gt=0, description="Telemetry interval.")
    reconnect_max_s: float = Field(60.0, gt=0, description="Longest reconnect back-off.")


class GbConfig(Section):
    enabled: bool = Field(False, description="Run the GB/T 28181 SIP server for legacy cameras and NVRs.")
    host: str = Field("0.0.0.0", description="Address the SIP server listens on.")
    port: int = Field(5060, ge=1, le=65535, description="SIP port (UDP and TCP).")
    server_id: str = Field("64050200002000000001", description="20-digit SIP server id (type 200).")
    realm: str = Field("6405020000", description="SIP domain / realm (first 10 digits of the server id).")
    password_env: str = Field("BK_GB_PASSWORD", description="Environment variable with the global device password.")
    device_password_envs: dict[str, str] = Field(default_factory=dict, description="Per-device password variables: device id -> env name.")
    keepalive_timeout_s: float = Field(60.0, gt=0, description="Keepalive interval; three missed mark the device offline.")
    media_port_range: tuple[int, int] = Field((30000, 30100), description="RTP ports for INVITE sessions; (0, 0) lets the OS choose.")
    media_ip: str = Field("127.0.0.1", description="Address put into SDP for devices to send media to.")
    catalog_retry_s: float = Field(10.0, gt=0, description="While an online device has sent no complete catalog "
                                   "since it registered, the Catalog query is sent again after this long; the "
                                   "interval doubles after each unanswered query.")
    catalog_retry_max_s: float = Field(300.0, gt=0, description="Longest interval between two Catalog re-queries.")
    register_fail_limit: int = Field(5, ge=1, description="Failed REGISTERs (wrong or no password) from one source "
                                     "address and device id within a burst before its REGISTERs are refused with "
                                     "403 at once, without a challenge.")
    register_fail_window_s: float = Field(60.0, gt=0, description="Failed REGISTERs less than this apart form one "
                                          "burst: one registration_rejected event per burst; a refused source may "
                                          "register again this long after its last failure.")

    @field_validator("media_port_range")
    @classmethod
    def _port_range(cls, v: tuple[int, int]) -> tuple[int, int]:
        lo, hi = v
        if not 0 <= lo <= hi <= 65535:
            raise ValueError(f"media_port_range must satisfy 0 <= low <= high <= 65535, got {list(v)}")
        return v

    @model_validator(mode="after")
    def _catalog_retry(self) -> GbConfig:
        if self.catalog_retry_max_s < self.catalog_retry_s:
            raise ValueError(f"catalog_retry_max_s ({self.catalog_retry_max_s:g}) must be at least "
                             f"catalog_retry_s ({self.catalog_retry_s:g})")
        return self


class Schedule(Section):
    weekdays: list[int] = Field(default_factory=lambda: [1, 2, 3, 4, 5, 6, 7], description="ISO weekdays (1 = Monday).")
    ranges: list[str] = Field(default_factory=lambda: ["00:00-24:00"], description="Time ranges HH:MM-HH:MM in the device time zone; may cross midnight.")

    @field_validator("weekdays")
    @classmethod
    def _weekdays(cls, v: list[int]) -> list[int]:
        bad = [d for d in v if not 1 <= d <= 7]
        if bad:
            raise ValueError(f"weekdays are 1..7 (Monday=1), got {bad}")
        return v

    @field_validator("ranges")
    @classmethod
    def _ranges(cls, v: list[str]) -> list[str]:
        for r in v:
            parse_range(r)
        return v

    def parsed(self) -> list[tuple[time, time | None]]:
        return [parse_range(r) for r in self.ranges]


def parse_range(text: str) -> tuple[time, time | None]:
    """`"07:00-19:30"` -> (07:00, 19:30); an end of 24:00 is returned as None (end of day)."""
    m = re.fullmatch(r"(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})", text.strip())
    if not m:
        raise ValueError(f"time range {text!r} is not HH:MM-HH:MM")
    h1, m1, h2, m2 = map(int, m.groups())
    if h1 > 23 or m1 > 59 or h2 > 24 or m2 > 59 or (h2 == 24 and m2):
        raise ValueError(f"time range {text!r} has an invalid time")
    return time(h1, m1), (None if h2 == 24 else time(h2, m2))


class RuleBase(Section):
    zone: list[Point] | None = Field(None, description="Polygon in normalised coordinates (0..1); whole frame if empty.")
    schedule: Schedule | None = Field(None, description="When the rule is active; always if empty.")
    persistence_s: float = Field(3.0, ge=0, description="How long the condition must hold before an alert.")
    cooldown_s: float = Field(300.0, ge=0, description="Minimum time between two alerts of this rule.")
    min_score: float = Field(0.5, ge=0, le=1, description="Median of a track's recent scores must reach this.")
    min_size: float = Field(0.0, ge=0, le=1, description="Minimum box area as a fraction of the frame.")
    level: Literal["info", "warning", "critical"] = Field("warning", description="Alert level.")

    @field_validator("zone")
    @classmethod
    def _zone(cls, v: list[Point] | None) -> list[Point] | None:
        if v is None:
            return v
        if len(v) < 3:
            raise ValueError("a zone polygon needs at least 3 points")
        for x, y in v:
            if not (0 <= x <= 1 and 0 <= y <= 1):
                raise ValueError(f"zone point ({x}, {y}) is outside 0..1 (coordinates are normalised)")
        return v


class PhoneUseRule(RuleBase):
    type: Literal["phone_use"] = Field(description="Person holding a cell phone.")
    persistence_s: float = Field(10.0, ge=0, description="Seconds the phone must be seen before an alert.")


class IntrusionRule(RuleBase):
    type: Literal["intrusion_off_hours"] = Field(description="Person in the zone OUTSIDE the schedule (the schedule is the working hours).")


class AnimalRule(RuleBase):
    type: Literal["animal"] = Field(description="Cat, dog, bird or other animal.")
    labels: list[str] = Field(default_factory=lambda: ["cat", "dog", "bird", "mouse"], description="Detector labels that count as animals (labels the model lacks are ignored).")
    persistence_s: float = Field(1.0, ge=0, description="Seconds before an alert.")


class StationUnattendedRule(RuleBase):
    type: Literal["station_unattended"] = Field(description="No person in the (stove) zone for `persistence_s` during the schedule.")
    persistence_s: float = Field(300.0, ge=0, description="Seconds without a person before an alert.")


class CrowdingRule(RuleBase):
    type: Literal["crowding"] = Field(description="More than `max_persons` persons in the zone.")
    max_persons: int = Field(5, ge=1, description="Alert when more persons than this are present.")


class ModelRule(RuleBase):
    """Types that need a dedicated model; refused unless the installed model outputs their labels."""

    type: Literal["no_chef_hat", "no_mask", "no_uniform", "smoking", "bin_open", "fire"] = Field(description="Violation type needing a dedicated model.")


REQUIRED_LABELS: dict[str, set[str]] = {
    "phone_use": {"person", "cell phone"},
    "intrusion_off_hours": {"person"},
    "animal": set(),
    "station_unattended": {"person"},
    "crowding": {"person"},
    "no_chef_hat": {"no_chef_hat"},
    "no_mask": {"no_mask"},
    "no_uniform": {"no_uniform"},
    "smoking": {"smoking"},
    "bin_open": {"bin_open"},
    "fire": {"fire"},
}

Rule = Annotated[
    PhoneUseRule | IntrusionRule | AnimalRule | StationUnattendedRule | CrowdingRule | ModelRule,
    Field(discriminator="type"),
]


class SourceConfig(Section):
    type: Literal["rtsp", "file", "gb28181"] = Field(description="Where frames come from.")
    url: str | None = Field(None, description="rtsp:// URL (main stream) or file path.")
    sub_url: str | None = Field(None, description="Sub-stream URL used for detection when the camera offers one.")
    transport: Literal["tcp", "udp"] = Field("tcp", description="RTSP transport.")
    username: str | None = Field(None, description="Camera user (inserted into the RTSP URL at run time).")
    password_env: str | None = Field(None, description="Environment variable / systemd credential with the camera password.")
    loop: bool = Field(True, description="Files: start again at the end.")
    realtime: bool = Field(True, description="Files: pace frames at their timestamps, like a camera.")
    gb_device_id: str | None = Field(None, description="GB/T 28181 device that owns the channel.")
    gb_channel_id: str | None = Field(None, description="GB/T 28181 channel id (a camera).")
    gb_media_transport: Literal["udp", "tcp_passive", "tcp_active"] = Field(
        "udp", description="GB/T 28181 media transport: RTP over UDP, or TCP with the box listening (passive) or connecting (active).")
    onvif_host: str | None = Field(None, description="ONVIF host:port this camera was discovered at (for reference).")

    @model_validator(mode="after")
    def _needs(self) -> SourceConfig:
        if self.type in ("rtsp", "file") and not self.url:
            raise ValueError(f"a {self.type} source needs `url`")
        if self.type == "rtsp" and not self.url.startswith(("rtsp://", "rtsps://")):
            raise ValueError("an rtsp source url must start with rtsp://")
        if self.type == "gb28181" and not self.gb_channel_id:
            raise ValueError("a gb28181 source needs `gb_channel_id`")
        return self


class CameraConfig(Section):
    id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Short id, unique in this box (letters, digits, _ . -).")
    name: str = Field("", description="Human name, e.g. 后厨操作间.")
    enabled: bool = Field(True, description="Disabled cameras are not opened.")
    source: SourceConfig = Field(description="Stream source.")
    open_timeout_s: float = Field(10.0, gt=0, description="Opening the stream fails after this long.")
    read_timeout_s: float = Field(10.0, gt=0, description="A stream with no packet for this long is considered stalled.")
    reconnect_min_s: float = Field(1.0, gt=0, description="First reconnect delay (doubles up to reconnect_max_s).")
    reconnect_max_s: float = Field(60.0, gt=0, description="Longest reconnect delay.")
    offline_after_s: float = Field(30.0, gt=0, description="A camera_offline event is raised after it has been offline this long.")
    clip_pre_s: float = Field(5.0, ge=1, le=30, description="Seconds of video before an event start in its clip (kept in a ring of encoded packets).")
    clip_post_s: float = Field(5.0, ge=1, le=30, description="Seconds of video after an event start in its clip.")
    rules: list[Rule] = Field(default_factory=list, description="Violation rules for this camera.")
    collect: CameraCollectConfig = Field(default_factory=CameraCollectConfig,
                                         description="Consented frame collector (hard examples for training).")


class AgentConfig(Section):
    device: DeviceConfig = Field(description="This box.")
    storage: StorageConfig = Field(default_factory=StorageConfig, description="Local store.")
    detector: DetectorConfig = Field(default_factory=DetectorConfig, description="Object detector.")
    motion: MotionConfig = Field(default_factory=MotionConfig, description="Motion gate.")
    uplink: UplinkConfig = Field(default_factory=UplinkConfig, description="MQTT uplink to the cloud.")
    gb28181: GbConfig = Field(default_factory=GbConfig, description="GB/T 28181 SIP server.")
    recording: RecordingConfig = Field(default_factory=RecordingConfig, description="On-disk recording for 回放.")
    collect: CollectConfig = Field(default_factory=CollectConfig, description="Store of the frame collector "
                                   "(enabled per camera: cameras[].collect).")
    status_port: int = Field(0, ge=0, le=65535, description="Port of the local status endpoint on 127.0.0.1: "
                             "GET /healthz and Prometheus GET /metrics (0 = off).")
    cameras: list[CameraConfig] = Field(default_factory=list, description="Cameras of this box.")

    @model_validator(mode="after")
    def _unique_ids(self) -> AgentConfig:
        seen: set[str] = set()
        for cam in self.cameras:
            if cam.id in seen:
                raise ValueError(f"camera id {cam.id!r} is used twice")
            seen.add(cam.id)
        return self


def load_config(path: str | Path) -> AgentConfig:
    """Load and validate an agent config; raises ConfigError naming file, line and key path."""
    return validate_file(Path(path), AgentConfig, error=ConfigError)  # type: ignore[return-value]


def check_rules_against_labels(cfg: AgentConfig, labels: set[str], path: str | Path) -> list[str]:
    """Problems with rules whose violation type needs labels the installed model lacks."""
    problems = []
    for ci, cam in enumerate(cfg.cameras):
        for ri, rule in enumerate(cam.rules):
            missing = sorted(REQUIRED_LABELS.get(rule.type, set()) - labels)
            if isinstance(rule, AnimalRule) and not set(rule.labels) & labels:
                missing = sorted(rule.labels)
            if missing:
                problems.append(
                    f"{path}: cameras[{ci}].rules[{ri}] ({rule.type}): the installed model "
                    f"({cfg.detector.model.name}) lacks the labels {', '.join(missing)}; "
                    "install a model that outputs them or remove the rule"
                )
    return problems


__all__ = ["AgentConfig", "CameraConfig", "ConfigError", "load_config", "resolve_secret"]
