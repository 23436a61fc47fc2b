"""Agent config: typed validation, errors that name file, line and key path, docs kept complete."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent import assets
from edge_agent.app.cli import main
from edge_agent.config import check_rules_against_labels, load_config, parse_range, resolve_secret
from edge_agent.errors import ConfigError

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
MINIMAL = 'device:\n  id: "64050200001180000001"\n'


def write(tmp_path: Path, text: str, name: str = "agent.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("path", sorted(assets.ROOT.glob("*agent*.yaml")), ids=lambda p: p.name)
def test_shipped_agent_configs_load(path: Path) -> None:
    """Every agent config shipped in the package (edge_agent/assets) validates."""
    cfg = load_config(path)
    assert cfg.device.id.isdigit() and len(cfg.device.id) == 20


@pytest.mark.parametrize(
    ("text", "line", "keypath", "words"),
    [
        ('device:\n  id: "123"\n', 2, "device.id", "20 digits"),
        (MINIMAL + "detektor: {}\n", 3, "detektor", "unknown key"),
        (MINIMAL + "cameras:\n  - id: k1\n    source: {type: rtsp, url: 'rtsp://h/s'}\n    rules:\n"
         "      - type: phone_use\n        persistance_s: 3\n", 8, "cameras[0].rules[0].persistance_s", "unknown key"),
        (MINIMAL + "cameras:\n  - id: k1\n    source: {type: rtsp, url: 'rtsp://h/s'}\n    rules:\n"
         "      - type: crowding\n        max_persons: 0\n", 8, "cameras[0].rules[0].max_persons", "greater than or equal"),
        (MINIMAL + "cameras:\n  - id: k1\n    source: {type: rtsp, url: 'http://h/s'}\n", 5, "cameras[0].source", "rtsp://"),
        (MINIMAL + "cameras:\n  - id: k1\n    source: {type: file, url: a.mp4}\n    rules:\n"
         "      - type: animal\n        zone: [[0, 0], [2, 0], [1, 1]]\n", 8, "cameras[0].rules[0].zone", "outside 0..1"),
        (MINIMAL + "cameras:\n  - id: k1\n    source: {type: file, url: a.mp4}\n    rules:\n"
         "      - type: intrusion_off_hours\n        schedule: {ranges: ['7:00-25:00']}\n", 8,
         "cameras[0].rules[0].schedule.ranges", "invalid time"),
        (MINIMAL + "cameras:\n  - id: k1\n    source: {type: file, url: a.mp4}\n    rules:\n"
         "      - type: teleport\n", 7, "cameras[0].rules[0]", "does not match any of the expected tags"),
        ("device: [unclosed\n", 2, "", "not valid YAML"),
    ],
)
def test_invalid_config_names_line_and_key_path(tmp_path: Path, text: str, line: int, keypath: str, words: str) -> None:
    """An invalid config is refused with file:line, the key path and what is wrong."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert f"{path}:{line}" in message
    assert keypath in message
    assert words in message


def test_duplicate_camera_ids_refused(tmp_path: Path) -> None:
    """Two cameras with one id are refused."""
    text = MINIMAL + "cameras:\n" + "  - id: k1\n    source: {type: file, url: a.mp4}\n" * 2
    with pytest.raises(ConfigError, match="used twice"):
        load_config(write(tmp_path, text))


def test_rules_needing_missing_labels_are_named(tmp_path: Path) -> None:
    """A violation type whose labels the model lacks is refused, naming the labels."""
    text = MINIMAL + ("cameras:\n  - id: k1\n    source: {type: file, url: a.mp4}\n    rules:\n"
                      "      - type: phone_use\n      - type: no_chef_hat\n      - type: smoking\n")
    path = write(tmp_path, text)
    cfg = load_config(path)
    problems = check_rules_against_labels(cfg, {"person", "cell phone", "cat"}, path)
    assert len(problems) == 2
    assert "rules[1] (no_chef_hat)" in problems[0] and "lacks the labels no_chef_hat" in problems[0]
    assert "rules[2] (smoking)" in problems[1]


def test_config_check_cli_refuses_missing_labels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`edge-agent config check` exits non-zero and names the rule whose labels the model lacks."""
    model = tmp_path / "m.tflite"
    model.write_bytes(b"not used by config check")
    (tmp_path / "m.json").write_text(json.dumps({"labels": ["person", "cell phone"]}), encoding="utf-8")
    text = MINIMAL + (f"detector: {{model: {model}}}\nuplink: {{enabled: false}}\n"
                      "cameras:\n  - id: k1\n    source: {type: file, url: a.mp4}\n    rules:\n"
                      "      - type: phone_use\n      - type: no_mask\n")
    path = write(tmp_path, text)
    assert main(["config", "check", str(path)]) == 1
    err = capsys.readouterr().err
    assert "rules[1] (no_mask)" in err and "no_mask" in err


def test_config_check_cli_accepts_valid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A valid config passes `config check` with a one-line summary."""
    model = tmp_path / "m.tflite"
    model.write_bytes(b"x")
    (tmp_path / "m.json").write_text(json.dumps({"labels": ["person", "cell phone", "cat"]}), encoding="utf-8")
    path = write(tmp_path, MINIMAL + f"detector: {{model: {model}}}\nuplink: {{enabled: false}}\n"
                 "cameras:\n  - id: k1\n    source: {type: file, url: a.mp4}\n    rules: [{type: animal}]\n")
    assert main(["config", "check", str(path)]) == 0
    assert "OK" in capsys.readouterr().out


def test_config_check_cli_reports_line_for_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A broken file gives exit code 2 and the line in the message."""
    path = write(tmp_path, MINIMAL + "motion:\n  threshold: 999\n")
    assert main(["config", "check", str(path)]) == 2
    assert f"{path}:4: motion.threshold" in capsys.readouterr().err


@pytest.mark.parametrize(("text", "start", "end"), [("07:00-19:30", (7, 0), (19, 30)), ("22:00-24:00", (22, 0), None)])
def test_parse_range(text: str, start: tuple[int, int], end: tuple[int, int] | None) -> None:
    """Schedule ranges parse, 24:00 meaning end of day."""
    s, e = parse_range(text)
    assert (s.hour, s.minute) == start
    assert (e if e is None else (e.hour, e.minute)) == end


def test_secret_from_env_then_systemd_credential(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Secrets come from the environment first, then from $CREDENTIALS_DIRECTORY."""
    monkeypatch.delenv("BK_TEST_SECRET", raising=False)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert resolve_secret("BK_TEST_SECRET") is None
    (tmp_path / "BK_TEST_SECRET").write_text("from-credential\n", encoding="utf-8")
    assert resolve_secret("BK_TEST_SECRET") == "from-credential"
    monkeypatch.setenv("BK_TEST_SECRET", "from-env")
    assert resolve_secret("BK_TEST_SECRET") == "from-env"


def test_config_reference_is_complete() -> None:
    """docs/config.md is what the models generate: every field documented."""
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_config_docs.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_duplicate_key_is_refused_with_its_line(tmp_path: Path) -> None:
    """A key given twice (YAML would silently keep the last) is an error naming its line."""
    path = write(tmp_path, MINIMAL + "motion:\n  threshold: 20\n  threshold: 30\n")
    with pytest.raises(ConfigError, match=rf"{path}:5: motion.threshold: duplicate key"):
        load_config(path)
