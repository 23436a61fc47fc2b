"""YAML config loading shared by the edge agent and the cloud receiver: it remembers where every
key came from, so each validation error names the file, the line and the key path.

Each side passes its own `ConfigError` class (`error=`), so errors stay in that side's words.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

KeyPath = tuple[str | int, ...]


class YamlConfigError(ValueError):
    """Default error class when a caller passes none."""


class _DuplicateKey(Exception):
    pass


def _walk(node: yaml.Node, path: KeyPath, lines: dict[KeyPath, int]) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = yaml.safe_load(yaml.serialize(key_node))
            if key in out:
                raise _DuplicateKey(f"{key_node.start_mark.line + 1}: {format_path(path + (key,))}: duplicate key")
            lines[path + (key,)] = key_node.start_mark.line + 1
            out[key] = _walk(value_node, path + (key,), lines)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_walk(item, path + (i,), lines) for i, item in enumerate(node.value)]
    return yaml.safe_load(yaml.serialize(node))


def load_yaml_with_lines(text: str, source: str, *, error: type[Exception] = YamlConfigError
                         ) -> tuple[Any, dict[KeyPath, int]]:
    """Parse YAML text into plain data plus a map from key path to 1-based line number."""
    lines: dict[KeyPath, int] = {}
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = {} if node is None else _walk(node, (), lines)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise error(f"{where}: not valid YAML: {getattr(err, 'problem', err)}") from err
    except _DuplicateKey as err:
        raise error(f"{source}:{err}") from None
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


def _data_path(loc: tuple, lines: dict[KeyPath, int]) -> KeyPath:
    # discriminated unions insert the tag value (e.g. "phone_use") and validators insert
    # "function-..." parts into loc: keep only parts that exist in the document, plus a final
    # missing key
    loc = tuple(p for p in loc if isinstance(p, str | int) and not str(p).startswith("function-"))
    path: KeyPath = ()
    for i, part in enumerate(loc):
        candidate = path + (part,)
        if candidate in lines or i == len(loc) - 1:
            path = candidate
    return path


def describe_validation_error(err: ValidationError, source: str, lines: dict[KeyPath, int]) -> str:
    """One line per problem: `file:line: key.path: message`."""
    out = []
    for problem in err.errors():
        path = _data_path(tuple(problem["loc"]), lines)
        line = _line_for(path, lines)
        where = f"{source}:{line}" if line else source
        msg = problem["msg"]
        if problem["type"] == "extra_forbidden":
            msg = "unknown key (not part of the configuration schema)"
        out.append(f"{where}: {format_path(path)}: {msg}")
    return "\n".join(out)


def validate_text(text: str, source: str, model: type[BaseModel], context: dict[str, Any] | None = None, *,
                  error: type[Exception] = YamlConfigError) -> BaseModel:
    """Validate YAML text against `model`; every error names the source, line and key path."""
    data, lines = load_yaml_with_lines(text, source, error=error)
    if not isinstance(data, dict):
        raise error(f"{source}:1: the config must be a mapping of sections")
    try:
        return model.model_validate(data, context=context)
    except ValidationError as err:
        raise error(describe_validation_error(err, source, lines)) from err


def validate_file(path: Path, model: type[BaseModel], *, error: type[Exception] = YamlConfigError) -> BaseModel:
    """Load a YAML file into `model`; relative paths in it resolve against the file's folder."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise error(f"{path}: cannot read config: {err.strerror}") from err
    return validate_text(text, str(path), model, {"config_dir": path.parent.resolve()}, error=error)


def resolve_secret(env_name: str | None) -> str | None:
    """A secret named by a config (`*_env`): from the environment, else from the systemd credential
    of the same name ($CREDENTIALS_DIRECTORY/NAME); None when neither has it."""
    if not env_name:
        return None
    if env_name in os.environ:
        return os.environ[env_name]
    cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    if cred_dir and (Path(cred_dir) / env_name).is_file():
        return (Path(cred_dir) / env_name).read_text(encoding="utf-8").strip()
    return None
