"""Remote configuration on the box: a pushed config is validated, staged for a trial and kept or rolled back."""

from __future__ import annotations

import json

import pytest

from edge_agent.app.config_push import (
    EXIT_RESTART,
    ConfigControl,
    PushRefused,
    Trial,
    applied_version,
    check_pushed,
    rollback_note,
)

pytestmark = pytest.mark.unit

DEV = "64050200001180000001"
GOOD = f"""device:
  id: "{DEV}"
  config_trial_s: 30
cameras:
  - id: cam1
    source: {{type: file, url: /tmp/kitchen.mp4}}
"""


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "agent.yaml"
    path.write_text(GOOD.replace("cam1", "old1"), encoding="utf-8")
    return path


def test_a_bad_config_is_refused_naming_line_and_key(config):
    """A wrong value is refused with the line and key path; another device's config is refused too."""
    with pytest.raises(PushRefused, match=r"config_push:6: cameras\[0\]\.source\.type"):
        check_pushed(GOOD.replace("type: file", "type: fax"), config, DEV)
    with pytest.raises(PushRefused, match="this box is"):
        check_pushed(GOOD.replace(DEV, "64050200001180000009"), config, DEV)
    assert check_pushed(GOOD, config, DEV).cameras[0].id == "cam1"


def test_push_stages_a_trial_and_asks_for_a_restart(config):
    """A good push replaces the file, keeps the running one as .previous, marks a trial and stops the agent."""
    stopped = []
    control = ConfigControl(config, DEV, lambda: stopped.append(True))
    answer = control.push(GOOD, "v2")
    assert answer["version"] == "v2" and stopped == [True] and control.exit_code == EXIT_RESTART
    assert config.read_text() == GOOD and "old1" in config.with_name("agent.yaml.previous").read_text()
    assert json.loads(config.with_name("agent.yaml.trial").read_text())["version"] == "v2"
    assert applied_version(config) == "v2"


def test_trial_kept_when_every_camera_came_online(config):
    """After the restart, the config is kept once each camera has been online at least once."""
    ConfigControl(config, DEV, lambda: None).push(GOOD, "v2")
    control = ConfigControl(config, DEV, lambda: None, trial_s=30)
    assert control.trial is not None and control.trial.version == "v2"
    control.step({"cam1": False, "cam2": True}, control.trial.started + 1)
    assert control.trial is not None  # cam1 not yet
    control.step({"cam1": True, "cam2": False}, control.trial.started + 2)  # each has been online once
    assert control.trial is None and not config.with_name("agent.yaml.trial").exists()
    assert control.exit_code == 0 and applied_version(config) == "v2" and control.problems() == []


def test_trial_rolled_back_when_a_camera_never_starts(config):
    """A camera that never comes online within the trial brings the previous config back, reported, and a restart."""
    ConfigControl(config, DEV, lambda: None).push(GOOD, "v2")
    stopped = []
    control = ConfigControl(config, DEV, lambda: stopped.append(True), trial_s=30)
    control.step({"cam1": False}, control.trial.started + 29)
    assert stopped == []
    control.step({"cam1": False}, control.trial.started + 31)
    assert stopped == [True] and control.exit_code == EXIT_RESTART
    assert "old1" in config.read_text() and applied_version(config) == ""
    note = rollback_note(config)
    assert note is not None and "config v2 rolled back" in note and "cam1" in note
    after = ConfigControl(config, DEV, lambda: None)
    assert after.trial is None and after.problems() == [note]  # reported until the next config is applied


def test_no_trial_without_marker(config):
    """An agent started normally is not on trial."""
    assert Trial.begin(config) is None and Trial.begin(None) is None


def test_the_pushed_config_wins_and_a_damaged_one_is_ignored(tmp_path):
    """`edge-agent run` runs the pushed file beside the outbox when there is one; the installer's file otherwise."""
    from edge_agent.app.config_push import ConfigControl, load_active, pushed_path

    base = tmp_path / "etc" / "agent.yaml"
    base.parent.mkdir()
    base.write_text(GOOD.replace('  config_trial_s: 30\n', f'  config_trial_s: 30\nstorage: {{path: {tmp_path}/data/agent.db}}\n'))
    cfg, control = load_active(base, ConfigControl)
    assert cfg.cameras[0].id == "cam1" and control.config == pushed_path(cfg) == tmp_path / "data" / "agent.pushed.yaml"
    control.config.parent.mkdir()
    control.config.write_text(base.read_text().replace("cam1", "pushed1"))
    cfg, control = load_active(base, ConfigControl)
    assert cfg.cameras[0].id == "pushed1" and "pushed1" in control.running
    control.config.write_text("cameras: [")  # damaged on disk
    cfg, _ = load_active(base, ConfigControl)
    assert cfg.cameras[0].id == "cam1"
