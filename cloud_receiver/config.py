"""Typed configuration of the cloud receiver, validated at load.

One small pydantic model per concern; every field described; unknown keys rejected; errors name
the file, line and key path. Secrets are never written here: the config names an environment
variable (`*_env`), read at run time by `resolve_secret` (or a systemd credential of that name).
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from bk_common.yamlconf import resolve_secret, validate_file, validate_text
from cloud_receiver.errors import ConfigError

KIB = 1024


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _relative_to_config(value: Path, info: ValidationInfo) -> Path:
    value = Path(value).expanduser()
    base = (info.context or {}).get("config_dir")
    return value if value.is_absolute() or base is None else Path(base) / value


class HttpConfig(Section):
    host: str = Field("127.0.0.1", description="Address the HTTP API listens on.")
    port: int = Field(8080, ge=0, le=65535, description="Port of the HTTP API (0 = any free port).")


class MqttConfig(Section):
    host: str = Field("127.0.0.1", description="Broker host.")
    port: int = Field(1883, ge=1, le=65535, description="Broker port.")
    client_id: str = Field("bk-receiver-1", min_length=1, max_length=64,
                           description="MQTT client id; unique per receiver instance, stable across restarts (persistent session).")
    username: str | None = Field(None, description="Broker username of this receiver (dynsec client).")
    password_env: str | None = Field("BK_RECEIVER_MQTT_PASSWORD", description="Environment variable holding the broker password.")
    group: str = Field("receivers", pattern=r"^[A-Za-z0-9_-]{1,64}$",
                       description="Shared-subscription group; all receivers of one deployment use the same group.")
    shared: bool = Field(True, description="Subscribe through the shared group (several receivers). Mosquitto 2.0 does not restore shared "
                         "subscriptions after a broker restart; with one receiver, false (plain subscriptions) keeps them. A broker "
                         "without shared subscriptions (ejabberd) needs false. See docs/receiver.md.")
    session_expiry_s: int = Field(7 * 24 * 3600, ge=60, description="MQTT v5 session expiry: how long the broker queues messages for a stopped receiver "
                                  "(at least 60 s: redelivery after a dropped connection needs the session).")
    keepalive_s: int = Field(30, ge=1, le=3600, description="MQTT keepalive: PINGREQ after half of it without sending, and the link is "
                             "given up when no whole packet answers within it (also when the broker's Server Keep Alive is 0); "
                             "also the TCP keepalive idle time. The broker's Server Keep Alive, when not 0, replaces it.")
    clean_start: bool = Field(False, description="Start the first connection of each run with a fresh session (Clean Start): what the "
                              "broker queued for the receiver while it was stopped is discarded. For one run after changing "
                              "`group` or `shared`, so the old subscriptions leave the broker's session; later reconnects "
                              "always resume the session.")
    reconnect_min_s: float = Field(0.5, gt=0, description="First reconnect delay; doubles up to reconnect_max_s.")
    reconnect_max_s: float = Field(30.0, gt=0, description="Longest reconnect delay (also the delay while the broker cannot serve the "
                                   "receiver as configured, e.g. no shared subscriptions).")
    healthy_after_s: float = Field(30.0, gt=0, description="A connection that acknowledged a message, or stayed subscribed this long, "
                                   "counts as working: the reconnect delay starts again from reconnect_min_s. Otherwise it keeps "
                                   "doubling, so a broker that drops the receiver at once is not hammered.")
    tls: bool = Field(False, description="Connect with TLS.")
    ca_file: Path | None = Field(None, description="CA bundle for TLS (system store when empty).")
    store_retries: int = Field(3, ge=0, description="Store attempts after a storage error before the message is left unacknowledged for redelivery.")
    store_retry_s: float = Field(0.2, ge=0, description="Delay between store attempts.")
    batch_max: int = Field(200, ge=1, le=10000, description="Group commit: most messages stored in one transaction (and acknowledged after it).")
    batch_max_ms: float = Field(20.0, ge=0, description="Group commit: a batch is stored at the latest this long after its first message "
                                "(sooner when no further message is waiting).")
    receive_maximum: int = Field(400, ge=1, le=65535, description="MQTT v5 Receive Maximum: unacknowledged QoS 1 messages the broker may send "
                                 "us at once; at least 2 x batch_max so the next batch arrives while one is stored.")

    _rel = field_validator("ca_file")(lambda v, info: None if v is None else _relative_to_config(v, info))


class StorageConfig(Section):
    url: str | None = Field(None, description="Database: `sqlite:///ABSOLUTE/PATH.db` or `postgresql://USER@HOST:PORT/DB` "
                            "(password from `password_env`). Empty: SQLite at `path`.")
    password_env: str | None = Field(None, description="Environment variable (or systemd credential) holding the "
                                      "PostgreSQL password.")
    path: Path = Field(Path("/var/lib/brightkitchen/receiver.db"), description="SQLite database file (WAL mode), "
                       "when `url` is empty.")
    media_dir: Path = Field(Path("/var/lib/brightkitchen/media"), description="Folder of media files, stored by content hash.")
    busy_timeout_ms: int = Field(5000, ge=0, description="How long a writer waits for SQLite's lock.")
    rollup_interval_s: float = Field(30.0, gt=0, le=3600, description="How often the alert count rollups of /stats and "
                                     "the dashboard are brought up to date (days changed since are counted live meanwhile).")

    _rel = field_validator("path", "media_dir")(lambda v, info: _relative_to_config(v, info))

    @field_validator("url")
    @classmethod
    def _known_engine(cls, v: str | None) -> str | None:
        if v is None or v.startswith(("postgresql://", "postgresql+psycopg://")) or v.startswith("sqlite:///"):
            return v
        raise ValueError("must start with sqlite:/// or postgresql://")

    @property
    def engine(self) -> Literal["sqlite", "postgresql"]:
        return "postgresql" if self.url and self.url.startswith("postgresql") else "sqlite"

    @property
    def sqlite_path(self) -> Path:
        """The SQLite file: from `url` when it names one, else `path`."""
        return Path(self.url.removeprefix("sqlite:///")) if self.url and self.url.startswith("sqlite:///") else self.path


class LimitsConfig(Section):
    alert_json_bytes: int = Field(64 * KIB, ge=1 * KIB, le=4 * KIB * KIB,
                                  description="Largest accepted alert/status/telemetry JSON payload (at most 4 MiB: the subscriber "
                                  "announces an 8 MiB Maximum Packet Size).")
    chunk_data_bytes: int = Field(256 * KIB, ge=1 * KIB, le=4 * KIB * KIB,
                                  description="Largest accepted data part of one media chunk (the chunk header comes on top; at most 4 MiB).")
    media_max_bytes: int = Field(32 * KIB * KIB, ge=1 * KIB, description="Largest accepted whole snapshot or clip.")
    incomplete_media_ttl_s: int = Field(24 * 3600, ge=60, description="Chunks of media that never completes are discarded after this long.")


class BrokerAdminConfig(Section):
    host: str = Field("127.0.0.1", description="Broker host for dynamic-security administration.")
    port: int = Field(1883, ge=1, le=65535, description="Broker port for administration.")
    admin_username: str = Field("bk-admin", description="Dynsec admin client (created with `mosquitto_ctrl dynsec init`).")
    admin_password_env: str = Field("BK_BROKER_ADMIN_PASSWORD", description="Environment variable holding the admin password.")
    tls: bool = Field(False, description="Connect with TLS.")
    timeout_s: float = Field(5.0, gt=0, description="How long to wait for the broker's answer to a command.")


class DeviceIdConfig(Section):
    industry: str = Field("00", pattern=r"^\d{2}$", description="GB/T 28181 industry code of issued device ids.")
    type_code: str = Field("118", pattern=r"^\d{3}$", description="GB/T 28181 type code of issued device ids (118 = NVR / edge box).")
    network: str = Field("0", pattern=r"^\d$", description="GB/T 28181 network code of issued device ids.")


class LogConfig(Section):
    level: Literal["debug", "info", "warning", "error"] = Field("info", description="Lowest level logged.")
    format: Literal["auto", "json", "console"] = Field("auto", description="auto = console on a TTY, JSON otherwise.")
    summary_interval_s: float = Field(60.0, gt=0, description="Ingest logs one `ingest summary` line (counts) at most this often; "
                                      "each stored alert is logged at debug level only.")


class ApiConfig(Section):
    default_deadline_hours: float | None = Field(24.0, gt=0, description="Rectification deadline of an alert nobody set one for "
                                                 "(hours after it started); empty = no default deadline.")
    photo_max_bytes: int = Field(5 * KIB * KIB, ge=1 * KIB, description="Largest accepted rectification photo upload.")
    sse_max_streams: int = Field(500, ge=1, description="Open alert streams (SSE) in all; one more is refused with 429.")
    sse_max_streams_per_token: int = Field(8, ge=1, description="Open alert streams of one token (its stream tickets "
                                           "included); one more is refused with 429.")


class PushConfig(Section):
    public_base_url: str = Field("", pattern=r"^(https?://\S+)?$",
                                 description="Public address of this receiver (e.g. https://bk.example.gov.cn): robot messages "
                                 "link to the alert's console page (/alerts/{id}, after login); empty = no link.")
    limit: int = Field(20, ge=1, description="Messages per robot per window (WeCom and DingTalk accept 20 a minute).")
    window_s: float = Field(60.0, gt=0, description="Length of the rolling rate-limit window.")
    merge_when_left: int = Field(5, ge=0, description="Merge waiting alerts into one summary message once this few sends are left in the window.")
    retry_base_s: float = Field(2.0, gt=0, description="First delay after a failed send; doubles up to retry_max_s.")
    retry_max_s: float = Field(300.0, gt=0, description="Longest delay between attempts of a failed send.")
    timeout_s: float = Field(10.0, gt=0, description="HTTP timeout of one send.")
    claim_lease_s: float = Field(300.0, ge=1, description="Several receivers on one PostgreSQL: how long a receiver's claim on the "
                                 "pushes it owes lasts unless renewed (it renews every quarter lease, at most every 60 s); "
                                 "after it, another receiver takes the pushes of a receiver that died over.")


class ExportConfig(Section):
    key_env: str | None = Field("BK_EXPORT_KEY", description="Environment variable (or systemd credential) holding the key "
                                "(at least 16 bytes) that signs every answer of /api/v1/export with HMAC-SHA256; while it is "
                                "unset the export endpoints answer 503 (docs/api.md, \"Export for an upper platform\").")
    key_id: str = Field("1", pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Name of that key, sent as X-BK-Key-Id so the "
                        "upper platform knows which key to verify with; give the new key a new name when rotating it.")


Meal = Literal["早", "午", "晚"]
LocalTime = Annotated[str, Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]


class LedgersConfig(Section):
    rules: bool = Field(True, description="Run the ledger rules periodically (alerts from the canteens' 自律 ledgers, "
                        "docs/ledgers.md); they also run after each ledger write they concern.")
    rules_interval_s: float = Field(300.0, gt=0, description="How often the ledger rules run; the first run comes one "
                                    "interval after the start.")
    lookback_days: int = Field(3, ge=1, le=31, description="Days each run checks, today included, so days missed while "
                               "the receiver was stopped are checked after its restart.")
    tz_hours: int = Field(8, ge=-12, le=14, description="UTC offset of the canteens' local time (China Standard Time: 8): "
                          "local days and the times of day below.")
    school_days: list[int] = Field([1, 2, 3, 4, 5], description="ISO weekdays (1 = Monday) on which meals are served "
                                   "and morning checks are due.")
    holidays: list[date] = Field([], description="Dates without school: no morning check or sample is due.")
    morning_check_by: LocalTime = Field("09:00", description="Local time by which a school day's 晨检 must be recorded "
                                        "(for canteens with active staff); later without one: `morning_check_missing`.")
    meals: list[Meal] = Field(["午"], description="Meals served on a school day (早, 午, 晚), each needing a 留样 sample.")
    canteen_meals: dict[str, list[Meal]] = Field({}, description="Meals served, per canteen id, instead of `meals`.")
    sample_due: dict[Meal, LocalTime] = Field({"早": "10:00", "午": "14:00", "晚": "20:00"},
                                              description="Local time by which a served meal's sample must be recorded "
                                              "(for canteens that keep the sample ledger); later: `sample_missing`.")
    health_cert_warn_days: int = Field(30, ge=0, le=365, description="A 健康证 expiring within this many days of a "
                                       "morning check raises `health_cert_expiring`.")

    @field_validator("school_days")
    @classmethod
    def _weekdays(cls, v: list[int]) -> list[int]:
        if any(not 1 <= d <= 7 for d in v):
            raise ValueError("ISO weekdays are 1 (Monday) to 7 (Sunday)")
        return v


OpeningHours = Annotated[str, Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]-(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$")]


class PublicLookConfig(Section):
    enabled: bool = Field(True, description="Offer the public page's 看看后厨 button: a short near-live look made of fresh "
                          "snapshots of the canteen's cameras, faces blurred at the receiver (docs/public.md).")
    hours: OpeningHours = Field("06:00-20:00", description="Opening hours of the look, local time `HH:MM-HH:MM` (end "
                                "24:00 = midnight); outside them the button says the kitchen is closed to viewing.")
    canteen_hours: dict[str, OpeningHours] = Field({}, description="Opening hours per canteen id, instead of `hours`.")
    tz_hours: int = Field(8, ge=-12, le=14, description="UTC offset of the opening hours (China Standard Time: 8).")
    look_s: float = Field(60.0, ge=5, le=600, description="How long one look lasts; then the visitor clicks again.")
    refresh_s: float = Field(4.0, ge=1, le=60, description="A camera is asked for a fresh snapshot at most this often, "
                             "however many people look: every visitor of that camera gets the same blurred frame.")
    looks_per_window: int = Field(5, ge=1, description="Looks one client address (an IPv6 /64) may start per `window_s`; "
                                  "one more is refused with 429.")
    window_s: float = Field(600.0, gt=0, description="Length of the per-address window.")
    max_looks: int = Field(20, ge=1, description="Looks running at once on this receiver, all canteens together; one "
                           "more is refused with 503, so the public cannot flood the boxes or this receiver's CPU.")
    frame_timeout_s: float = Field(10.0, gt=0, description="How long a request waits for a box's snapshot and its "
                                   "blurring before it gets the previous frame (or 503 when there is none).")
    long_side: int = Field(640, ge=320, le=800, description="Long side in pixels of the frames served (they are "
                           "searched for faces at 800).")


class ReceiverConfig(Section):
    """The whole receiver configuration (one YAML file)."""

    http: HttpConfig = Field(default_factory=HttpConfig, description="HTTP API listener.")
    mqtt: MqttConfig = Field(default_factory=MqttConfig, description="Subscriber connection to the broker.")
    storage: StorageConfig = Field(default_factory=StorageConfig, description="Database and media files.")
    limits: LimitsConfig = Field(default_factory=LimitsConfig, description="Size limits of accepted messages.")
    broker: BrokerAdminConfig = Field(default_factory=BrokerAdminConfig, description="Dynamic-security admin access used by `device add`.")
    device_ids: DeviceIdConfig = Field(default_factory=DeviceIdConfig, description="How new device ids are composed.")
    log: LogConfig = Field(default_factory=LogConfig, description="Logging.")
    api: ApiConfig = Field(default_factory=ApiConfig, description="HTTP API behaviour (docs/api.md).")
    push: PushConfig = Field(default_factory=PushConfig, description="WeCom / DingTalk robot push (docs/api.md); robots themselves are "
                             "configured with `cloud-receiver webhook add`.")
    export: ExportConfig = Field(default_factory=ExportConfig, description="Signed data export to an upper platform (docs/api.md).")
    ledgers: LedgersConfig = Field(default_factory=LedgersConfig, description="The canteens' 自律 ledgers and the alerts "
                                   "raised from them (docs/ledgers.md).")
    public_look: PublicLookConfig = Field(default_factory=PublicLookConfig, description="The public page's short look "
                                          "into the kitchen during opening hours, faces blurred (docs/public.md).")


def load_config(path: Path | str) -> ReceiverConfig:
    """Load and validate a receiver config file; raises ConfigError naming file, line and key."""
    cfg = validate_file(Path(path), ReceiverConfig, error=ConfigError)
    assert isinstance(cfg, ReceiverConfig)
    return cfg


def parse_config(text: str, source: str = "<config>", config_dir: Path | None = None) -> ReceiverConfig:
    """Validate config text (tests, `config check` of a pasted file)."""
    cfg = validate_text(text, source, ReceiverConfig, {"config_dir": config_dir} if config_dir else None,
                        error=ConfigError)
    assert isinstance(cfg, ReceiverConfig)
    return cfg


__all__ = ["ConfigError", "ReceiverConfig", "load_config", "parse_config", "resolve_secret"]
