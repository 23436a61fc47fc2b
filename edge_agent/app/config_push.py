"""Remote configuration (`config_push`, `reload`): validate, apply by a restart, keep it only if it works.

The installer's file (`/etc/brightkitchen/agent.yaml`) is never written by the box (systemd keeps
/etc read-only for it). A pushed config lives in the box's data folder, `agent.pushed.yaml` beside the
outbox database; when that file exists `edge-agent run` runs it instead of the installer's
(`load_active`); deleting it goes back to the installer's file.

The box never applies a config it has not validated: `config_push` parses the pushed YAML like
`edge-agent config check` does (an error names the line and key) and refuses one for another
device. A valid config is written atomically as the pushed file, the running one kept beside it
(`<pushed>.previous`), and a *trial* marker written (`<pushed>.trial`); then the agent stops with
exit code 75 and systemd starts it again (`Restart=always`) — the cameras and models are built at
start, so a restart is how a new config is applied. `reload` does the same for the installer's file.

On start, `Trial.begin` finds the marker: the agent runs the new config for at most `trial_s`; when
every enabled camera has come online once, the marker goes and the config is kept. When they have
not, the previous config is put back, a rollback note written (`<config>.rollback`), and the agent
restarts again; the note is reported in the box's status (`problems`) until a config is applied.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from bk_common.yamlconf import validate_text
from edge_agent.config import AgentConfig
from edge_agent.errors import ConfigError

log = structlog.get_logger(__name__)

EXIT_RESTART = 75  # EX_TEMPFAIL: systemd's Restart=always starts the agent again with the new config
TRIAL_S = 90.0


class PushRefused(Exception):
    """The pushed config is not valid for this box; the message says where."""


def _version_file(config: Path) -> Path:
    return config.with_name(config.name + ".version")


def applied_version(config: Path | None) -> str:
    """The version of the config file in place ("" for one never pushed)."""
    try:
        return _version_file(config).read_text(encoding="utf-8").strip() if config else ""
    except OSError:
        return ""


def _paths(config: Path) -> tuple[Path, Path, Path]:
    return (config.with_name(config.name + ".previous"), config.with_name(config.name + ".trial"),
            config.with_name(config.name + ".rollback"))


def check_pushed(text: str, config: Path, device_id: str) -> AgentConfig:
    """The pushed YAML as a config, validated like the file itself; PushRefused naming line and key."""
    try:
        cfg = validate_text(text, "config_push", AgentConfig, {"config_dir": config.parent.resolve()}, error=ConfigError)
    except ConfigError as err:
        raise PushRefused(str(err)) from err
    assert isinstance(cfg, AgentConfig)
    if cfg.device.id != device_id:
        raise PushRefused(f"config_push: device.id is {cfg.device.id}, this box is {device_id}")
    return cfg


def _write_atomically(path: Path, data: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def stage(config: Path, text: str, version: str, running: str, now: float | None = None) -> None:
    """Put `text` in place of the config file for a trial; `running` (the config the agent runs now) is
    kept as `.previous`, what a rollback restores."""
    previous, trial, rollback = _paths(config)
    _write_atomically(previous, running)
    _write_atomically(config, text)
    _write_atomically(trial, json.dumps({"version": version, "previous_version": applied_version(config),
                                         "at": now or time.time()}))
    _write_atomically(_version_file(config), version)
    rollback.unlink(missing_ok=True)
    log.info("config_staged", config=str(config), version=version)


@dataclass
class Trial:
    """A config on trial after a push or reload (None when the running config is not on trial)."""

    config: Path
    version: str
    started: float
    trial_s: float = TRIAL_S
    previous_version: str = ""

    @classmethod
    def begin(cls, config: Path | None, trial_s: float = TRIAL_S, now: float | None = None) -> Trial | None:
        if config is None:
            return None
        _, trial, _ = _paths(config)
        try:
            marker = json.loads(trial.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return cls(config, str(marker.get("version", "")), now if now is not None else time.monotonic(), trial_s,
                   str(marker.get("previous_version", "")))

    def judge(self, cameras_started: dict[str, bool], now: float) -> str | None:
        """"kept", "rolled_back" or None (still on trial), given which cameras have come online once."""
        if cameras_started and all(cameras_started.values()):
            _paths(self.config)[1].unlink(missing_ok=True)
            log.info("config_kept", version=self.version)
            return "kept"
        if now - self.started < self.trial_s:
            return None
        failed = sorted(c for c, ok in cameras_started.items() if not ok)
        self.roll_back(f"cameras {', '.join(failed) or '(none configured)'} did not start within {self.trial_s:g} s")
        return "rolled_back"

    def roll_back(self, why: str) -> None:
        previous, trial, rollback = _paths(self.config)
        if previous.is_file():
            _write_atomically(self.config, previous.read_text(encoding="utf-8"))
            _write_atomically(_version_file(self.config), self.previous_version)
        _write_atomically(rollback, json.dumps({"version": self.version, "reason": why, "at": time.time()}))
        trial.unlink(missing_ok=True)
        log.error("config_rolled_back", version=self.version, reason=why)


def rollback_note(config: Path | None) -> str | None:
    """The problem to report after a rollback (until the next config is applied), or None."""
    if config is None:
        return None
    try:
        note: dict[str, Any] = json.loads(_paths(config)[2].read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return f"config {note.get('version') or '?'} rolled back: {note.get('reason', '')}"[:300]


def pushed_path(cfg: AgentConfig) -> Path:
    """Where a pushed config lives: the box's data folder (writable under systemd's ProtectSystem=strict)."""
    return Path(cfg.storage.path).parent / "agent.pushed.yaml"


def load_active(base: Path, control_class: type[ConfigControl]) -> tuple[AgentConfig, ConfigControl]:
    """The config to run (the pushed one when there is one, else the installer's) and its ConfigControl."""
    from edge_agent.config import load_config

    cfg = load_config(base)
    pushed = pushed_path(cfg)
    text = base.read_text(encoding="utf-8")
    if pushed.is_file():
        text = pushed.read_text(encoding="utf-8")
        try:
            cfg = check_pushed(text, base, cfg.device.id)
        except PushRefused as err:  # damaged on disk: run the installer's file, and say so
            log.error("pushed_config_unusable", path=str(pushed), error=str(err))
            text = base.read_text(encoding="utf-8")
    return cfg, control_class(pushed, cfg.device.id, lambda: None, trial_s=cfg.device.config_trial_s,
                              running=text, base=base)


class ConfigControl:
    """The agent's side of remote configuration: its config file, the trial of a new config, restarts."""

    def __init__(self, config: Path | None, device_id: str, stop_agent: Any, *, trial_s: float = TRIAL_S,
                 running: str | None = None, base: Path | None = None) -> None:
        self.config, self.device_id, self.stop_agent = config, device_id, stop_agent
        self.base = base or config  # the installer's file: what `reload` re-reads
        self.trial = Trial.begin(config, trial_s)
        self.version = applied_version(config)
        self.exit_code = 0
        self._online_once: set[str] = set()
        if running is None:
            running = config.read_text(encoding="utf-8") if config is not None and config.is_file() else ""
        self.running = running  # the config running now: what a rollback restores

    def problems(self) -> list[str]:
        note = rollback_note(self.config)
        return [note] if note else []

    def step(self, cameras_online: dict[str, bool], now: float) -> None:
        """Each supervisor pass: judge a config on trial by whether every camera has come online once."""
        if self.trial is None:
            return
        self._online_once |= {c for c, up in cameras_online.items() if up}
        verdict = self.trial.judge({c: c in self._online_once for c in cameras_online}, now)
        if verdict == "kept":
            rollback = _paths(self.trial.config)[2]
            rollback.unlink(missing_ok=True)
            self.trial = None
        elif verdict == "rolled_back":
            self.trial = None
            self.restart("rolled back to the previous config")

    def push(self, text: str, version: str) -> dict[str, Any]:
        if self.config is None:
            raise PushRefused("this agent was not started from a config file (edge-agent run -c FILE)")
        check_pushed(text, self.base or self.config, self.device_id)
        stage(self.config, text, version, self.running)
        self.restart(f"config {version} pushed")
        return {"version": version, "applied": "restarting", "trial_s": self.trial_s}

    def reload(self) -> dict[str, Any]:
        """Run the installer's file again (e.g. after editing it on the box), on trial like a push."""
        if self.config is None or self.base is None:
            raise PushRefused("this agent was not started from a config file (edge-agent run -c FILE)")
        text = self.base.read_text(encoding="utf-8")
        check_pushed(text, self.base, self.device_id)
        stage(self.config, text, "reload", self.running)
        self.restart("reload")
        return {"version": "reload", "applied": "restarting", "trial_s": self.trial_s}

    @property
    def trial_s(self) -> float:
        return self.trial.trial_s if self.trial else TRIAL_S

    def restart(self, why: str) -> None:
        """Stop the agent with EXIT_RESTART: systemd starts it again with the config on disk."""
        log.warning("agent_restarting", reason=why)
        self.exit_code = EXIT_RESTART
        self.stop_agent()
