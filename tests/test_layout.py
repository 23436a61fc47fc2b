"""The tree follows the data flow: which package may import which (docs/architecture.md), no import
cycles between modules, no module over 400 lines, and nothing shipped reads files from the checkout."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("bk_contract", "bk_common", "edge_agent", "cloud_receiver")

# stage -> the stages it may import (besides itself); "*" = any. Kept in step with docs/architecture.md.
ALLOWED: dict[str, set[str]] = {
    "bk_contract": set(),
    "bk_common": set(),
    "edge_agent": {"edge_agent.assets"},  # the package root: version only
    "edge_agent.errors": set(),
    "edge_agent.assets": set(),
    "edge_agent.config": {"bk_common", "edge_agent", "edge_agent.errors", "edge_agent.assets",
                          "edge_agent.collect"},  # edge_agent.collect.config: the collector's sections
    "edge_agent.collect": {"bk_common", "edge_agent.analysis", "edge_agent.rules"},
    "edge_agent.capture": {"edge_agent.config", "edge_agent.errors"},
    "edge_agent.analysis": {"edge_agent.errors", "edge_agent.assets"},
    "edge_agent.rules": {"edge_agent.config", "edge_agent.analysis"},
    "edge_agent.events": {"bk_contract", "edge_agent.rules", "edge_agent.outbox"},
    "edge_agent.outbox": {"bk_contract"},
    "edge_agent.uplink": {"bk_contract", "edge_agent.config", "edge_agent.errors", "edge_agent.outbox"},
    "edge_agent.onvif": {"edge_agent.config", "edge_agent.errors"},
    "edge_agent.live": {"bk_contract", "edge_agent.outbox"},
    "edge_agent.app": {"*"},
    "cloud_receiver": set(),
    "cloud_receiver.errors": set(),
    "cloud_receiver.assets": set(),
    "cloud_receiver.config": {"bk_common", "cloud_receiver.errors"},
    "cloud_receiver.storage": {"bk_common", "bk_contract", "cloud_receiver.errors"},
    "cloud_receiver.ingest": {"bk_common", "bk_contract", "cloud_receiver.config", "cloud_receiver.errors",
                              "cloud_receiver.storage"},
    "cloud_receiver.admin": {"bk_common", "cloud_receiver.config", "cloud_receiver.errors", "cloud_receiver.storage",
                             "cloud_receiver.ingest"},
    "cloud_receiver.workflow": {"bk_contract", "cloud_receiver.admin", "cloud_receiver.storage"},
    "cloud_receiver.push": {"bk_common", "bk_contract", "cloud_receiver.config", "cloud_receiver.storage",
                            "cloud_receiver.workflow"},
    "cloud_receiver.control": {"bk_common", "bk_contract", "cloud_receiver.admin", "cloud_receiver.config",
                               "cloud_receiver.errors", "cloud_receiver.storage"},
    "cloud_receiver.live": {"bk_contract"},
    "cloud_receiver.ledgers": {"bk_common", "bk_contract", "cloud_receiver.admin", "cloud_receiver.config",
                               "cloud_receiver.errors", "cloud_receiver.storage", "cloud_receiver.workflow"},
    "cloud_receiver.appkeys": {"cloud_receiver.config", "cloud_receiver.control", "cloud_receiver.ingest",
                               "cloud_receiver.live", "cloud_receiver.storage"},
    "cloud_receiver.api": {"bk_common", "bk_contract", "cloud_receiver.admin", "cloud_receiver.appkeys", "cloud_receiver.config",
                           "cloud_receiver.control", "cloud_receiver.errors", "cloud_receiver.live", "cloud_receiver.ingest", "cloud_receiver.push",
                           "cloud_receiver.storage", "cloud_receiver.workflow", "cloud_receiver.ledgers"},
    "cloud_receiver.privacy": {"bk_common"},  # pure image work (blurring faces for the public page)
    "cloud_receiver.web": {"bk_common", "bk_contract", "cloud_receiver.admin", "cloud_receiver.api", "cloud_receiver.appkeys",
                           "cloud_receiver.config", "cloud_receiver.control", "cloud_receiver.errors", "cloud_receiver.ingest", "cloud_receiver.push",
                           "cloud_receiver.storage", "cloud_receiver.workflow", "cloud_receiver.ledgers", "cloud_receiver.privacy"},
    "cloud_receiver.app": {"*"},
}


def _modules() -> dict[str, Path]:
    out = {}
    for top in PRODUCT:
        for path in (ROOT / top).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _stage(module: str) -> str:
    parts = module.split(".")
    return parts[0] if parts[0] in ("bk_contract", "bk_common") else ".".join(parts[:2])


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules that `path` imports anywhere in it (`from a.b import c` counts a.b.c when c is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m in modules}


def test_every_stage_imports_only_what_the_architecture_allows() -> None:
    """No package reaches upstream or sideways outside the table in docs/architecture.md."""
    modules = _modules()
    wrong = []
    for name, path in modules.items():
        stage = _stage(name)
        assert stage in ALLOWED, f"{name}: stage {stage} is not in the architecture table"
        allowed = ALLOWED[stage]
        for dep in _imports(path, modules):
            target = _stage(dep)
            if target != stage and "*" not in allowed and target not in allowed:
                wrong.append(f"{name} imports {dep} ({stage} -> {target})")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles_between_modules() -> None:
    """No cycle, counting imports inside functions too (a late import is how the app <-> api cycle hid)."""
    modules = _modules()
    graph = {name: _imports(path, modules) - {name} for name, path in modules.items()}
    state: dict[str, int] = defaultdict(int)  # 0 new, 1 on the stack, 2 done
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state[nxt] == 1 and not nxt.startswith(node + ".") and not node.startswith(nxt + "."):
                cycles.append(" -> ".join([*stack[stack.index(nxt):], nxt]) if nxt in stack else f"{node} -> {nxt}")
            elif state[nxt] == 0:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for name in sorted(graph):
        if state[name] == 0:
            visit(name, [name])
    assert not cycles, "\n".join(cycles)


def test_modules_are_at_most_400_lines() -> None:
    """Small modules: split by responsibility past 400 lines."""
    long = [f"{p.relative_to(ROOT)}: {n}" for p in _modules().values()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 400]
    assert not long, long


def test_shipped_code_finds_no_file_relative_to_the_checkout() -> None:
    """Models and example configs come through importlib.resources, never from parents[...] of a module."""
    offenders = [str(p.relative_to(ROOT)) for p in _modules().values()
                 if ".parents[" in p.read_text(encoding="utf-8") or "REPO_ROOT" in p.read_text(encoding="utf-8")]
    assert not offenders, offenders
