"""YAML loading that remembers where every key came from, so config errors name the line.

The receiver must not import edge_agent, so this is its own small copy of the idea.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from cloud_receiver.errors import ConfigError

KeyPath = tuple[str | int, ...]


def _walk(node: yaml.Node, path: KeyPath, lines: dict[KeyPath, int]) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = yaml.safe_load(yaml.serialize(key_node))
            if key in out:
                raise ConfigError(f"line {key_node.start_mark.line + 1}: duplicate key {key!r}")
            lines[path + (key,)] = key_node.start_mark.line + 1
            out[key] = _walk(value_node, path + (key,), lines)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_walk(item, path + (i,), lines) for i, item in enumerate(node.value)]
    return yaml.safe_load(yaml.serialize(node))


def load_yaml_with_lines(text: str, source: str) -> tuple[Any, dict[KeyPath, int]]:
    """Parse YAML text into plain data plus a map from key path to 1-based line number."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        lines: dict[KeyPath, int] = {}
        data = {} if node is None else _walk(node, (), lines)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise ConfigError(f"{where}: not valid YAML: {getattr(err, 'problem', err)}") from err
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from err
    return data, lines


def format_path(path: KeyPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _line_for(path: KeyPath, lines: dict[KeyPath, int]) -> int | None:
    for end in range(len(path), -1, -1):
        if path[:end] in lines:
            return lines[path[:end]]
    return None


def describe_validation_error(err: ValidationError, source: str, lines: dict[KeyPath, int]) -> str:
    """One line per problem: `file:line: key.path: message`."""
    out = []
    for problem in err.errors():
        path: KeyPath = tuple(p for p in problem["loc"] if isinstance(p, str | int))
        line = _line_for(path, lines)
        where = f"{source}:{line}" if line else source
        msg = problem["msg"]
        if problem["type"] == "extra_forbidden":
            msg = "unknown key (not part of the configuration schema)"
        out.append(f"{where}: {format_path(path)}: {msg}")
    return "\n".join(out)


def validate_text(text: str, source: str, model: type[BaseModel], context: dict[str, Any] | None = None) -> BaseModel:
    """Validate YAML text against `model`; every error names the source, line and key path."""
    data, lines = load_yaml_with_lines(text, source)
    if not isinstance(data, dict):
        raise ConfigError(f"{source}:1: the config must be a mapping of sections")
    try:
        return model.model_validate(data, context=context)
    except ValidationError as err:
        raise ConfigError(describe_validation_error(err, source, lines)) from err


def validate_file(path: Path, model: type[BaseModel]) -> BaseModel:
    """Load a YAML file into `model`; relative paths in it resolve against the file's folder."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config: {err.strerror}") from err
    return validate_text(text, str(path), model, {"config_dir": path.parent.resolve()})
