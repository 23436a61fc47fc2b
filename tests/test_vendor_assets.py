"""The vendored browser libraries (scripts/vendor_assets.py): present, unaltered, licensed, as pinned.

Offline only: nothing here runs npm or any other process.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from cloud_receiver.web import VENDOR_DIR, VENDOR_MANIFEST
from scripts.vendor_assets import ASSETS, VendoredFile, load_manifest, verify

pytestmark = pytest.mark.unit

ENTRIES = load_manifest(VENDOR_MANIFEST)


def entry_for(package: str, name: str) -> VendoredFile:
    matches = [e for e in ENTRIES if e.package == package and Path(e.file).name == name]
    assert len(matches) == 1, f"vendor.json lists {len(matches)} entries for {package}/{name}"
    return matches[0]


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.file)
def test_vendored_file_matches_its_sha256(entry: VendoredFile) -> None:
    """Each file listed in vendor.json is in the package with the listed sha256."""
    path = VENDOR_DIR / entry.file
    assert path.is_file(), f"{path} is listed in vendor.json but missing"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == entry.sha256, f"{path} differs from vendor.json"


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.file)
def test_vendored_file_has_its_licence(entry: VendoredFile) -> None:
    """Each vendored file names a licence text that is shipped and non-empty, and an SPDX licence."""
    licence = VENDOR_DIR / entry.license_file
    assert licence.is_file() and licence.stat().st_size > 0, f"{licence} (licence of {entry.file}) missing or empty"
    assert entry.spdx, f"{entry.file} has no SPDX licence"


def test_manifest_matches_the_pins() -> None:
    """Every pinned file of scripts/vendor_assets.py is vendored, at its pinned version, and nothing else."""
    pinned = {(a.package, a.version) for a in ASSETS}
    assert {(e.package, e.version) for e in ENTRIES} == pinned
    assert verify(VENDOR_DIR) == []


def test_echarts_is_the_minified_bundle() -> None:
    """The echarts file is the UMD minified build, with its licence header and its version inside."""
    entry = entry_for("echarts", "echarts.min.js")
    text = (VENDOR_DIR / entry.file).read_text(encoding="utf-8")
    assert text.lstrip().startswith("/*\n* Licensed to the Apache Software Foundation (ASF)")
    assert '!function(t,e){"object"==typeof exports' in text[:2000], "not the UMD bundle"
    assert f'version="{entry.version}"' in text, f"echarts {entry.version} not found in the bundle"
    assert text.count("\n") < 200, "not minified"


def test_check_names_a_tampered_file(tmp_path: Path) -> None:
    """`--check` (verify) names a vendored file whose bytes changed and one that is missing."""
    copy = tmp_path / "vendor"
    shutil.copytree(VENDOR_DIR, copy)
    bundle = copy / entry_for("echarts", "echarts.min.js").file
    bundle.write_bytes(bundle.read_bytes() + b"\n")
    (copy / entry_for("echarts", "NOTICE").file).unlink()
    problems = verify(copy)
    assert any(str(bundle) in p and "sha256" in p for p in problems), problems
    assert any("NOTICE: missing" in p for p in problems), problems
