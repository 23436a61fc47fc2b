#!/usr/bin/env python3
"""Refresh the JSON schemas in docs/mqtt.md from the pydantic models of bk_contract.

docs/mqtt.md holds the prose of the contract; between the markers

    <!-- schema:Alert -->
    ...generated...
    <!-- /schema:Alert -->

this script writes each model's `model_json_schema()`. `--check` exits 1 if the file is stale
(tests/test_uplink_contract_docs.py runs the same comparison, so the docs cannot drift).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import bk_contract  # noqa: E402

DOC = REPO_ROOT / "docs" / "mqtt.md"
MODELS = {
    "Alert": bk_contract.Alert,
    "Status": bk_contract.Status,
    "Telemetry": bk_contract.Telemetry,
    "Command": bk_contract.Command,
    "CommandResult": bk_contract.CommandResult,
}
BLOCK = re.compile(r"(<!-- schema:(?P<name>\w+) -->\n)(?P<body>.*?)(<!-- /schema:(?P=name) -->)", re.S)


def schema_json(name: str) -> str:
    """The schema of one model as written into the doc (2-space JSON, keys in model order)."""
    return json.dumps(MODELS[name].model_json_schema(), indent=2, ensure_ascii=False)


def render(text: str) -> str:
    """`text` with every schema block regenerated; raises if a model has no block or a block no model."""
    found = {m.group("name") for m in BLOCK.finditer(text)}
    missing, unknown = set(MODELS) - found, found - set(MODELS)
    if missing or unknown:
        raise SystemExit(f"{DOC}: schema blocks missing for {sorted(missing)}, unknown blocks {sorted(unknown)}")
    return BLOCK.sub(lambda m: f"{m.group(1)}```json\n{schema_json(m.group('name'))}\n```\n{m.group(4)}", text)


def doc_schemas(text: str) -> dict[str, dict]:
    """The schemas currently written in the doc, parsed."""
    out = {}
    for m in BLOCK.finditer(text):
        body = m.group("body").strip()
        body = body.removeprefix("```json").removesuffix("```")
        out[m.group("name")] = json.loads(body)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if docs/mqtt.md is out of date; write nothing")
    ap.add_argument("--doc", type=Path, default=DOC)
    args = ap.parse_args(argv)
    text = args.doc.read_text(encoding="utf-8")
    new = render(text)
    if args.check:
        if new != text:
            print(f"{args.doc} is out of date: run scripts/gen_contract_docs.py", file=sys.stderr)
            return 1
        return 0
    if new != text:
        args.doc.write_text(new, encoding="utf-8")
        print(f"updated {args.doc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
