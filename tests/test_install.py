"""scripts/install.sh into a directory tree: a working install, idempotent (a re-run gives the same tree
and keeps an edited config), both roles sharing one venv, and an uninstall that keeps config and data."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parents[1]


def _install(root: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "NOTIFY_SOCKET")}
    res = subprocess.run(["bash", str(ROOT / "scripts" / "install.sh"), "--root", str(root), *args],
                         capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res.stdout


def _tree(root: Path) -> dict[str, str]:
    """Every file: its sha256 outside the venv; inside it only that it exists (pip rewrites pyc)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            rel = str(p.relative_to(root))
            out[rel] = "" if rel.startswith("opt/brightkitchen/venv/") else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def test_install_twice_uninstall_keeps_data(tmp_path: Path) -> None:
    """Install, edit the config, install again: same tree, edit kept; the installed agent works; uninstall."""
    root = tmp_path / "root"
    out = _install(root)
    assert "安装完成 (installed): agent" in out
    config = root / "etc/brightkitchen/agent.yaml"
    unit = root / "etc/systemd/system/brightkitchen-agent.service"
    agent = root / "opt/brightkitchen/venv/bin/edge-agent"
    assert unit.read_text() == (ROOT / "systemd/brightkitchen-agent.service").read_text()
    assert (root / "etc/brightkitchen/credentials").stat().st_mode & 0o777 == 0o700
    check = subprocess.run([str(agent), "config", "check", str(config)], capture_output=True, text=True, timeout=120,
                           cwd=tmp_path)
    assert check.returncode == 0 and ": OK" in check.stdout, check.stdout + check.stderr

    config.write_text(config.read_text() + "# 安装人员的修改 (an installer's edit)\n", encoding="utf-8")
    edited = config.read_bytes()
    (root / "var/lib/brightkitchen/agent.db").write_bytes(b"alerts kept here")
    before = _tree(root)
    _install(root)
    assert _tree(root) == before  # nothing added, nothing changed; no agent.yaml.new for unchanged defaults
    assert config.read_bytes() == edited

    _install(root, "--receiver")
    assert (root / "etc/brightkitchen/receiver.yaml").is_file()
    assert (root / "opt/brightkitchen/venv/bin/cloud-receiver").is_file()
    _install(root, "--uninstall")
    assert not unit.exists() and agent.exists()  # the receiver still uses the venv
    _install(root, "--receiver", "--uninstall")
    assert not (root / "opt/brightkitchen").exists()
    assert not (root / "etc/systemd/system/brightkitchen-receiver.service").exists()
    assert config.read_bytes() == edited and (root / "var/lib/brightkitchen/agent.db").read_bytes() == b"alerts kept here"

    _install(root, "--uninstall", "--purge")
    assert not config.exists() and not (root / "var/lib/brightkitchen").exists()


def test_bad_arguments_are_named(tmp_path: Path) -> None:
    """An unknown argument and --purge without --uninstall: exit 2 with the reason."""
    for args, why in ((["--frobnicate"], "(unknown argument): --frobnicate"), (["--purge"], "only with --uninstall")):
        res = subprocess.run(["bash", str(ROOT / "scripts" / "install.sh"), "--root", str(tmp_path), *args],
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 2 and why in res.stderr, res.stderr
