"""The shipped systemd units: `systemd-analyze verify` finds nothing to say, and both are hardened to
an exposure of at most 3.0 (`systemd-analyze security --offline=yes --threshold=30`)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
UNITS = {"brightkitchen-agent.service": "edge-agent", "brightkitchen-receiver.service": "cloud-receiver"}


def _systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    assert path, "systemd-analyze is missing (Debian package systemd)"
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A root directory with the units installed, their ExecStart programs and systemd's own targets."""
    (tmp_path / "etc/systemd/system").mkdir(parents=True)
    (tmp_path / "opt/brightkitchen/venv/bin").mkdir(parents=True)
    (tmp_path / "usr/lib/systemd").mkdir(parents=True)
    shutil.copytree("/usr/lib/systemd/system", tmp_path / "usr/lib/systemd/system", symlinks=True)
    for unit, program in UNITS.items():
        shutil.copy(ROOT / "systemd" / unit, tmp_path / "etc/systemd/system" / unit)
        exe = tmp_path / "opt/brightkitchen/venv/bin" / program
        exe.write_text("#!/bin/sh\n")
        exe.chmod(0o755)
    return tmp_path


def _verify(root: Path, *units: str) -> str:
    result = subprocess.run([_systemd_analyze(), "verify", f"--root={root}", *units], capture_output=True, text=True,
                            timeout=60)
    return (result.stdout + result.stderr).strip()


def test_units_verify_clean(root: Path) -> None:
    """verify prints nothing for either unit (it exits 0 even on unknown keys, so the output is what counts)."""
    assert _verify(root, *UNITS) == ""


def test_verify_would_report_a_bad_key(root: Path) -> None:
    """The check above can fail: an unknown key is reported."""
    with open(root / "etc/systemd/system/brightkitchen-agent.service", "a", encoding="utf-8") as f:
        f.write("[Service]\nWatchDogSecs=5\n")
    assert "Unknown key" in _verify(root, "brightkitchen-agent.service")


@pytest.mark.parametrize("unit", sorted(UNITS))
def test_units_are_hardened(unit: str) -> None:
    """Exposure level at most 3.0 in systemd's own offline security analysis; notify type with a watchdog."""
    result = subprocess.run([_systemd_analyze(), "security", "--offline=yes", "--threshold=30",
                             str(ROOT / "systemd" / unit)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    text = (ROOT / "systemd" / unit).read_text(encoding="utf-8")
    assert "Type=notify" in text and "WatchdogSec=" in text and "LoadCredential=" in text
