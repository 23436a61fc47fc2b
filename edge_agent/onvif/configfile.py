"""Merge discovered ONVIF cameras into the `cameras:` section of an agent config file.

Only the `cameras:` block is rewritten; every other line of the file (comments included) is kept
byte for byte. Comments *inside* the old `cameras:` block are lost, because that block is
re-emitted from data. Cameras are matched by `source.onvif_host`; unmatched ones are kept as they are.
"""

from __future__ import annotations

import difflib
import os
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from edge_agent.config import load_config
from edge_agent.errors import ConfigError
from edge_agent.onvif.types import OnvifDevice

CAMERAS_KEY = "cameras"


@dataclass
class MergeResult:
    cameras: list[dict[str, Any]]
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


def camera_id_for(device: OnvifDevice, taken: Iterable[str]) -> str:
    """A stable, unique id from the ONVIF address, e.g. `onvif-192-168-1-64-80`."""
    base = "onvif-" + re.sub(r"[^A-Za-z0-9]+", "-", f"{device.host}-{device.port}").strip("-")
    base = base[:60]
    taken = set(taken)
    candidate, n = base, 2
    while candidate in taken:
        candidate, n = f"{base}-{n}", n + 1
    return candidate


def source_for(device: OnvifDevice, username: str | None, password_env: str | None) -> dict[str, Any]:
    """The `source:` mapping of a camera: main and sub URIs without credentials, secrets by env name."""
    if device.main is None:
        raise ValueError(f"{device.onvif_host} offers no video profile")
    source: dict[str, Any] = {"type": "rtsp", "url": device.main.uri}
    if device.sub is not None:
        source["sub_url"] = device.sub.uri
    source["transport"] = "tcp"
    if username:
        source["username"] = username
    if password_env:
        source["password_env"] = password_env
    source["onvif_host"] = device.onvif_host
    return source


def merge_cameras(
    existing: list[dict[str, Any]],
    devices: Iterable[OnvifDevice],
    username: str | None,
    password_env: str | None,
) -> MergeResult:
    """Update cameras whose `source.onvif_host` matches a device, append the others; keep the rest."""
    cameras = [dict(c) for c in existing]
    result = MergeResult(cameras=cameras)
    by_host = {}
    for index, cam in enumerate(cameras):
        host = (cam.get("source") or {}).get("onvif_host") if isinstance(cam.get("source"), dict) else None
        if host:
            by_host[host] = index
    for device in devices:
        if device.main is None:
            continue
        source = source_for(device, username, password_env)
        index = by_host.get(device.onvif_host)
        if index is None:
            cam_id = camera_id_for(device, (str(c.get("id")) for c in cameras))
            cameras.append({"id": cam_id, "name": device.name or device.info.model or cam_id, "source": source})
            by_host[device.onvif_host] = len(cameras) - 1
            result.added.append(cam_id)
            continue
        old = cameras[index]
        new_source = dict(old.get("source") or {})
        if new_source.get("type") != "rtsp":
            new_source = {}
        new_source.update(source)
        if device.sub is None:
            new_source.pop("sub_url", None)
        new = dict(old, source=new_source)
        if not new.get("name") and device.name:
            new["name"] = device.name
        cameras[index] = new
        (result.unchanged if new == old else result.updated).append(str(old.get("id")))
    return result


def _cameras_span(text: str) -> tuple[int, int] | None:
    """Line span [start, end) of the top-level `cameras:` entry, trailing comments excluded."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as err:
        raise ConfigError(f"not valid YAML: {err}") from err
    if root is None:
        return None
    if not isinstance(root, yaml.MappingNode) or root.flow_style:
        raise ConfigError("the config's top level must be a block mapping (key: value lines)")
    lines = text.splitlines(keepends=True)
    pairs = root.value
    for i, (key, _value) in enumerate(pairs):
        if key.value != CAMERAS_KEY:
            continue
        start = key.start_mark.line
        end = pairs[i + 1][0].start_mark.line if i + 1 < len(pairs) else len(lines)
        if end <= start:
            raise ConfigError("the `cameras:` key shares a line with another key; write one key per line")
        while end > start + 1 and (not lines[end - 1].strip() or lines[end - 1].lstrip().startswith("#")):
            end -= 1
        return start, end
    return None


def existing_cameras(text: str) -> list[dict[str, Any]]:
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise ConfigError("the config's top level must be a mapping")
    cams = data.get(CAMERAS_KEY) or []
    if not isinstance(cams, list) or not all(isinstance(c, dict) for c in cams):
        raise ConfigError("`cameras` must be a list of mappings")
    return cams


def render_cameras(cameras: list[dict[str, Any]], item_indent: str = "") -> str:
    """`cameras:` block; list items indented by `item_indent` to match the file's own style."""
    if not cameras:
        return f"{CAMERAS_KEY}: []\n"
    body = yaml.safe_dump(cameras, allow_unicode=True, sort_keys=False, default_flow_style=False)
    return f"{CAMERAS_KEY}:\n" + "".join(item_indent + line for line in body.splitlines(True))


def _item_indent(lines: list[str], start: int, end: int) -> str:
    for line in lines[start + 1:end]:
        stripped = line.lstrip(" ")
        if stripped.startswith("- ") or stripped.rstrip() == "-":
            return line[: len(line) - len(stripped)]
    return "  "


def replace_cameras(text: str, cameras: list[dict[str, Any]]) -> str:
    """Return `text` with its `cameras:` block replaced (or appended) by `cameras`."""
    span = _cameras_span(text)
    lines = text.splitlines(keepends=True)
    if span is None:
        sep = "" if not text or text.endswith("\n") else "\n"
        return text + sep + render_cameras(cameras, "  ")
    start, end = span
    return "".join(lines[:start]) + render_cameras(cameras, _item_indent(lines, start, end)) + "".join(lines[end:])


def unified_diff(old: str, new: str, path: str) -> str:
    return "".join(difflib.unified_diff(old.splitlines(True), new.splitlines(True), f"{path} (旧)", f"{path} (新)"))


def write_config(path: Path, new_text: str) -> Path | None:
    """Validate `new_text` with load_config, keep the old file as `.bak`, replace atomically.

    Returns the backup path (None when the file did not exist). Raises ConfigError, writing
    nothing, if the new text does not validate.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(new_text)
            f.flush()
            os.fsync(f.fileno())
        try:
            load_config(tmp)
        except ConfigError as err:
            raise ConfigError(f"{path}: the merged config would not be valid, nothing written:\n{err}") from err
        backup = None
        if path.exists():
            backup = path.with_name(path.name + ".bak")
            backup.write_bytes(path.read_bytes())
            os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
        return backup
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
