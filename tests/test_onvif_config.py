"""Merging discovered ONVIF cameras into an agent config file: diff, confirmation, .bak, validation."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import pytest
import yaml

from edge_agent.config import load_config
from edge_agent.errors import ConfigError
from edge_agent.onvif import configfile
from edge_agent.onvif.command import format_table, update_config_file
from edge_agent.onvif.types import DeviceInformation, OnvifDevice, Profile, StreamInfo

pytestmark = pytest.mark.unit

BASE = """\
# box of canteen 7 -- top comment kept
device:
  id: "64050200001180000001"  # inline comment kept

cameras:
  # comment inside the block (lost, documented)
  - id: stove
    name: 灶台
    source:
      type: rtsp
      url: rtsp://192.0.2.20/old-main
      onvif_host: 192.0.2.20:80
    rules:
      - type: phone_use
        persistence_s: 5
  - id: door
    source:
      type: rtsp
      url: rtsp://192.0.2.99/door

# comment before the next key kept
status_port: 0
"""


def device(host: str, port: int = 80, name: str = "Cam", sub: bool = True) -> OnvifDevice:
    main_p, sub_p = Profile("m", "main", "H264", 1920, 1080), Profile("s", "sub", "H264", 640, 360)
    return OnvifDevice(
        host=host, port=port, info=DeviceInformation(manufacturer="HIK", model="DS-2CD"),
        profiles=(main_p, sub_p), name=name,
        main=StreamInfo(main_p, f"rtsp://{host}:554/main", f"http://{host}/snap.jpg"),
        sub=StreamInfo(sub_p, f"rtsp://{host}:554/sub") if sub else None,
    )


def args(**kw) -> argparse.Namespace:
    return argparse.Namespace(username=kw.get("username", "admin"), password_env=kw.get("password_env", "BK_CAM_PW"),
                              yes=kw.get("yes", False))


def test_merge_updates_same_onvif_host_and_keeps_others():
    """A device at a known onvif_host updates that camera's source only; rules, names, other cameras kept."""
    cams = configfile.existing_cameras(BASE)
    result = configfile.merge_cameras(cams, [device("192.0.2.20"), device("192.0.2.21", 8000, name="后厨")], "admin", "BK_CAM_PW")
    assert result.updated == ["stove"]
    assert result.added == ["onvif-192-0-2-21-8000"]
    stove, door, new = result.cameras
    assert stove["name"] == "灶台" and stove["rules"] == [{"type": "phone_use", "persistence_s": 5}]
    assert stove["source"] == {"type": "rtsp", "url": "rtsp://192.0.2.20:554/main", "onvif_host": "192.0.2.20:80",
                               "sub_url": "rtsp://192.0.2.20:554/sub", "transport": "tcp", "username": "admin",
                               "password_env": "BK_CAM_PW"}
    assert door == cams[1]
    assert new["name"] == "后厨" and new["source"]["onvif_host"] == "192.0.2.21:8000"
    assert "password" not in new["source"]


def test_merge_is_idempotent_and_ids_unique():
    """Merging the same device twice changes nothing; a colliding generated id gets a suffix."""
    first = configfile.merge_cameras([], [device("192.0.2.30")], None, None)
    again = configfile.merge_cameras(first.cameras, [device("192.0.2.30")], None, None)
    assert again.cameras == first.cameras and again.unchanged == ["onvif-192-0-2-30-80"] and not again.added
    clash = [{"id": "onvif-192-0-2-31-80", "source": {"type": "file", "url": "x.mp4"}}]
    assert configfile.merge_cameras(clash, [device("192.0.2.31")], None, None).added == ["onvif-192-0-2-31-80-2"]
    assert "username" not in first.cameras[0]["source"]


def test_replace_cameras_keeps_text_outside_block_and_validates(tmp_path: Path):
    """Only the cameras block changes; comments elsewhere survive; the result passes load_config."""
    merged = configfile.merge_cameras(configfile.existing_cameras(BASE), [device("192.0.2.21")], "admin", "BK_CAM_PW")
    new = configfile.replace_cameras(BASE, merged.cameras)
    for kept in ("# box of canteen 7 -- top comment kept", '  id: "64050200001180000001"  # inline comment kept',
                 "# comment before the next key kept\nstatus_port: 0\n"):
        assert kept in new
    assert "comment inside the block" not in new
    assert "  - id: stove" in new  # the file's own list indentation is kept
    path = tmp_path / "agent.yaml"
    path.write_text(new, encoding="utf-8")
    cfg = load_config(path)
    assert [c.id for c in cfg.cameras] == ["stove", "door", "onvif-192-0-2-21-80"]
    assert cfg.cameras[2].source.sub_url == "rtsp://192.0.2.21:554/sub"


def test_replace_cameras_appends_when_missing_and_handles_empty():
    """A file without cameras gets the block appended; an empty list renders as []."""
    text = 'device:\n  id: "64050200001180000001"'
    new = configfile.replace_cameras(text, [{"id": "a", "source": {"type": "rtsp", "url": "rtsp://h/x"}}])
    assert new.startswith(text + "\n") and yaml.safe_load(new)["cameras"][0]["id"] == "a"
    assert configfile.replace_cameras("cameras:\n  - id: x\n", []) == "cameras: []\n"


def test_flow_style_top_level_is_refused():
    """A one-line flow mapping cannot be edited safely: ConfigError, not a mangled file."""
    with pytest.raises(ConfigError):
        configfile.replace_cameras('{device: {id: "64050200001180000001"}, cameras: []}', [])


def test_write_config_makes_backup_and_refuses_invalid(tmp_path: Path):
    """A valid write keeps the old file as .bak; an invalid merged config writes nothing."""
    path = tmp_path / "agent.yaml"
    path.write_text(BASE, encoding="utf-8")
    new = configfile.replace_cameras(BASE, configfile.existing_cameras(BASE)[:1])
    backup = configfile.write_config(path, new)
    assert backup == tmp_path / "agent.yaml.bak" and backup.read_text("utf-8") == BASE
    assert path.read_text("utf-8") == new
    bad = configfile.replace_cameras(new, [{"id": "x", "source": {"type": "rtsp", "url": "http://not-rtsp"}}])
    with pytest.raises(ConfigError, match="nothing written"):
        configfile.write_config(path, bad)
    assert path.read_text("utf-8") == new
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agent.yaml", "agent.yaml.bak"]


def test_update_config_file_asks_and_respects_no(tmp_path: Path, monkeypatch):
    """Without --yes the diff is shown and an answer of 'n' leaves the file untouched; 'y' writes it."""
    path = tmp_path / "agent.yaml"
    path.write_text(BASE, encoding="utf-8")
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    out, err = io.StringIO(), io.StringIO()
    assert update_config_file(path, [device("192.0.2.20")], args(), out, err, ask=lambda _q: "n") == "declined"
    assert path.read_text("utf-8") == BASE and not (tmp_path / "agent.yaml.bak").exists()
    assert "-      url: rtsp://192.0.2.20/old-main" in out.getvalue()
    assert "+      url: rtsp://192.0.2.20:554/main" in out.getvalue()
    assert "更新 1 台：stove" in err.getvalue()
    assert update_config_file(path, [device("192.0.2.20")], args(), out, err, ask=lambda _q: "y") == "written"
    assert load_config(path).cameras[0].source.url == "rtsp://192.0.2.20:554/main"
    assert update_config_file(path, [device("192.0.2.20")], args(), out, err, ask=lambda _q: "y") == "unchanged"


def test_update_config_file_without_tty_needs_yes(tmp_path: Path, monkeypatch):
    """Without a terminal and without --yes nothing is written; a missing file is a clear ConfigError."""
    path = tmp_path / "agent.yaml"
    path.write_text(BASE, encoding="utf-8")
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    err = io.StringIO()
    assert update_config_file(path, [device("192.0.2.40")], args(), io.StringIO(), err) == "declined"
    assert "--yes" in err.getvalue() and path.read_text("utf-8") == BASE
    assert update_config_file(path, [device("192.0.2.40")], args(yes=True), io.StringIO(), err) == "written"
    with pytest.raises(ConfigError, match="不存在"):
        update_config_file(tmp_path / "missing.yaml", [device("192.0.2.40")], args(yes=True), io.StringIO(), err)


def test_table_lists_streams_without_credentials():
    """The table shows name, host, model and both streams."""
    table = format_table([device("192.0.2.50", name="后厨")])
    header, row = table.splitlines()
    assert header.split() == ["名称", "地址", "型号", "主码流", "子码流"]
    assert "后厨" in row and "192.0.2.50:80" in row and "HIK DS-2CD" in row
    assert "1920x1080 rtsp://192.0.2.50:554/main" in row and "640x360 rtsp://192.0.2.50:554/sub" in row
