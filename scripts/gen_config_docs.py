#!/usr/bin/env python3
"""Write docs/config.md, the agent config reference, from the pydantic models (the single source).

`python scripts/gen_config_docs.py` rewrites it; `--check` exits 1 when it is out of date
(tests/test_config.py runs the check, so the reference cannot drift from the code).
"""

from __future__ import annotations

import sys
import typing
from pathlib import Path

from pydantic import BaseModel

from edge_agent import config as C

OUT = Path(__file__).resolve().parents[1] / "docs" / "config.md"
SECTIONS: list[tuple[str, type[BaseModel]]] = [
    ("(top level)", C.AgentConfig),
    ("device", C.DeviceConfig),
    ("storage", C.StorageConfig),
    ("detector", C.DetectorConfig),
    ("motion", C.MotionConfig),
    ("uplink", C.UplinkConfig),
    ("uplink.broker", C.BrokerConfig),
    ("gb28181", C.GbConfig),
    ("collect", C.CollectConfig),
    ("cameras[]", C.CameraConfig),
    ("cameras[].source", C.SourceConfig),
    ("cameras[].collect", C.CameraCollectConfig),
    ("cameras[].rules[] (common to every rule)", C.RuleBase),
    ("rules: phone_use", C.PhoneUseRule),
    ("rules: intrusion_off_hours", C.IntrusionRule),
    ("rules: animal", C.AnimalRule),
    ("rules: station_unattended", C.StationUnattendedRule),
    ("rules: crowding", C.CrowdingRule),
    ("rules: no_chef_hat, no_mask, no_uniform, smoking, bin_open, fire", C.ModelRule),
    ("schedule (inside a rule)", C.Schedule),
]


def _type_name(tp: object) -> str:
    text = str(tp).replace("typing.", "").replace("pathlib.", "").replace("edge_agent.config.", "")
    text = text.replace("edge_agent.collect.config.", "")
    return text.replace("<class '", "").replace("'>", "").replace("|", "\\|")


def _default(field) -> str:
    if field.is_required():
        return "**required**"
    if field.default_factory is not None:
        value = field.default_factory()
        if isinstance(value, BaseModel):
            return "(section defaults)"
        return f"`{value!r}`"
    return f"`{field.default!r}`" if field.default is not None else "empty"


def render() -> str:
    lines = [
        "# Edge agent configuration reference",
        "",
        "Generated from `edge_agent/config.py` by `scripts/gen_config_docs.py`; do not edit by hand.",
        "Unknown keys are rejected; every error names the file, line and key path. Validate a file with",
        "`edge-agent config check FILE`. Secrets are never written in the file: `*_env` fields name an",
        "environment variable or a systemd credential (`LoadCredential=`) that holds the secret.",
        "",
    ]
    base_fields = set(C.RuleBase.model_fields)
    for title, model in SECTIONS:
        lines += [f"## {title}", ""]
        lines += ["| key | type | default | description |", "|---|---|---|---|"]
        hints = typing.get_type_hints(model)
        for name, field in model.model_fields.items():
            if "rules:" in title and name in base_fields and name not in model.__dict__.get("__annotations__", {}):
                continue
            desc = (field.description or "").replace("|", "\\|")
            lines.append(f"| `{name}` | {_type_name(hints.get(name, field.annotation))} | {_default(field)} | {desc} |")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    text = render()
    if "--check" in sys.argv:
        if not OUT.exists() or OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT} is out of date: run scripts/gen_config_docs.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
