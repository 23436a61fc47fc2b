"""Receiver configuration: typed, unknown keys rejected, errors name file, line and key path."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from cloud_receiver.assets import EXAMPLE_CONFIG
from cloud_receiver.config import ReceiverConfig, load_config, parse_config
from cloud_receiver.errors import ConfigError

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]


def test_example_config_is_valid():
    """The shipped receiver.example.yaml loads with the documented values."""
    cfg = load_config(EXAMPLE_CONFIG)
    assert cfg.mqtt.group == "receivers" and cfg.limits.alert_json_bytes == 64 * 1024
    assert cfg.storage.path == Path("/var/lib/brightkitchen/receiver.db")


@pytest.mark.parametrize(("text", "expected"), [
    ("mqtt:\n  port: 1883\n  colour: red\n", "cfg.yaml:3: mqtt.colour: unknown key"),
    ("storage:\n  path: x.db\nlimits:\n  alert_json_bytes: 12\n", "cfg.yaml:4: limits.alert_json_bytes: Input should be greater than or equal to 1024"),
    ("log:\n  level: loud\n", "cfg.yaml:2: log.level: Input should be"),
    ("device_ids:\n  industry: '7'\n", "cfg.yaml:2: device_ids.industry: String should match pattern"),
    ("mqtt:\n  port: [1\n", "cfg.yaml:3: not valid YAML"),
    ("mqtt:\n  port: 1\n  port: 2\n", "cfg.yaml:3: mqtt.port: duplicate key"),
    ("- 1\n- 2\n", "cfg.yaml:1: the config must be a mapping"),
    ("surprise: 1\n", "cfg.yaml:1: surprise: unknown key"),
])
def test_config_errors_name_line_and_key(text, expected):
    """Each config error names the source, the line and the key path."""
    with pytest.raises(ConfigError) as err:
        parse_config(text, "cfg.yaml")
    assert expected in str(err.value)


def test_relative_paths_resolve_against_the_config_folder(tmp_path):
    """storage.path and media_dir given relative are relative to the config file."""
    (tmp_path / "r.yaml").write_text("storage:\n  path: data/r.db\n  media_dir: data/media\n")
    cfg = load_config(tmp_path / "r.yaml")
    assert cfg.storage.path == tmp_path / "data" / "r.db" and cfg.storage.media_dir == tmp_path / "data" / "media"


def test_missing_file_is_a_config_error(tmp_path):
    """A missing file is reported as a config error naming it."""
    with pytest.raises(ConfigError, match="nope.yaml: cannot read config"):
        load_config(tmp_path / "nope.yaml")


def _paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, field in model.model_fields.items():
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            out += _paths(sub, f"{prefix}{name}.")
        else:
            out.append(prefix + name)
    return out


def test_config_reference_in_docs_is_complete():
    """docs/receiver.md documents every config key (and every field has a description)."""
    doc = (ROOT / "docs" / "receiver.md").read_text()
    documented = set(re.findall(r"^\| `([a-z_]+\.[a-z_.]+)` \|", doc, flags=re.M))
    keys = _paths(ReceiverConfig)
    assert set(keys) - documented == set()
    assert documented - set(keys) == set()


def test_every_config_field_has_a_description():
    """Every field of every section carries a description (it feeds the docs table)."""
    def walk(model: type[BaseModel]) -> list[str]:
        missing = []
        for name, field in model.model_fields.items():
            if not field.description:
                missing.append(f"{model.__name__}.{name}")
            if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
                missing += walk(field.annotation)
        return missing
    assert walk(ReceiverConfig) == []


def test_api_and_push_sections_reach_the_app(tmp_path):
    """`api:` and `push:` are validated and handed to setup_api as ApiSettings / PushSettings."""
    from cloud_receiver.api import API_SETTINGS, PUSH_SETTINGS
    from cloud_receiver.app.factory import create_app
    cfg = parse_config(f"storage:\n  path: {tmp_path}/r.db\n  media_dir: {tmp_path}/m\n"
                       "api:\n  default_deadline_hours: 48\n  photo_max_bytes: 2097152\n"
                       "push:\n  public_base_url: https://bk.example.gov.cn\n  limit: 10\n  window_s: 30\n"
                       "  retry_base_s: 1.5\n  retry_max_s: 60\n", "cfg.yaml")
    app = create_app(cfg, subscriber=False)
    api, push = app[API_SETTINGS], app[PUSH_SETTINGS]
    assert (api.default_deadline_hours, api.photo_max_bytes) == (48, 2 * 1024 * 1024)
    assert (push.public_base_url, push.limit, push.window_s, push.retry_base_s, push.retry_max_s) == (
        "https://bk.example.gov.cn", 10, 30, 1.5, 60)
    assert push.default_deadline_hours == 48
    with pytest.raises(ConfigError, match="cfg.yaml:2: push.public_base_url: String should match"):
        parse_config("push:\n  public_base_url: ftp://x\n", "cfg.yaml")
    with pytest.raises(ConfigError, match="cfg.yaml:2: api.colour: unknown key"):
        parse_config("api:\n  colour: red\n", "cfg.yaml")
