#!/usr/bin/env python3
"""Vendor the web console's browser libraries from their npm packages into the receiver package.

Nothing is fetched from a CDN at run time: each pinned file is copied from its package tarball
(`npm pack PKG@VERSION`, which checks the tarball against the registry's integrity hash) into
`cloud_receiver/web/static/vendor/<package>/`, beside the package's LICENSE (and NOTICE if it ships
one). `vendor.json` there lists every written file — assets and licence texts alike — as
{package, version, file, sha256, license_file, spdx, integrity}; `file` and `license_file` are relative
to the vendor directory, `spdx` is package.json's "license", `integrity` the tarball's npm hash.

    python scripts/vendor_assets.py           # re-vendor from the npm registry (needs `npm`)
    python scripts/vendor_assets.py --check   # offline: every listed file present with its sha256,
                                              # and the manifest matches the pins below; exit 1 naming
                                              # the bad file

To add or bump a library, edit ASSETS and re-run; tests/test_vendor_assets.py checks the result.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath

from cloud_receiver.web import VENDOR_DIR, VENDOR_MANIFEST


@dataclass(frozen=True)
class Asset:
    """Files to take from one npm package at one exact version (paths inside the package)."""

    package: str
    version: str
    files: tuple[str, ...]


ASSETS: tuple[Asset, ...] = (
    Asset("echarts", "5.6.0", ("dist/echarts.min.js",)),
)

LICENSE_NAME = re.compile(r"^licen[cs]e(\.md|\.txt)?$", re.IGNORECASE)
NOTICE_NAME = re.compile(r"^notice(\.md|\.txt)?$", re.IGNORECASE)
TARBALL_ROOT = "package"  # npm tarballs keep the package under package/
NPM_TIMEOUT_S = 300


@dataclass(frozen=True)
class VendoredFile:
    """One entry of vendor.json."""

    package: str
    version: str
    file: str
    sha256: str
    license_file: str
    spdx: str
    integrity: str


class VendorError(Exception):
    """The registry, a tarball or the vendored tree is not as the pins say."""


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def npm_pack(spec: str, workdir: Path) -> tuple[Path, str]:
    """Download `spec` (e.g. echarts@5.6.0) with `npm pack`; return the tarball and its integrity hash."""
    try:
        done = subprocess.run(["npm", "pack", spec, "--json", "--pack-destination", str(workdir)], cwd=workdir,
                              capture_output=True, text=True, timeout=NPM_TIMEOUT_S, check=False)
    except FileNotFoundError as err:
        raise VendorError("npm is not installed (apt-get install npm)") from err
    if done.returncode != 0:
        raise VendorError(f"npm pack {spec} failed: {done.stderr.strip()}")
    info = json.loads(done.stdout)[0]
    return workdir / info["filename"], info["integrity"]


def spdx_of(manifest: dict) -> str:
    """package.json's licence as an SPDX expression (old packages give {"type": ...})."""
    lic = manifest.get("license")
    if isinstance(lic, dict):
        lic = lic.get("type")
    if not isinstance(lic, str) or not lic:
        raise VendorError(f"{manifest.get('name')}: package.json has no \"license\"")
    return lic


def root_file(names: list[str], pattern: re.Pattern[str]) -> str | None:
    """The member at the package root whose name matches `pattern`, if any."""
    for name in sorted(names):
        path = PurePosixPath(name)
        if path.parent == PurePosixPath(TARBALL_ROOT) and pattern.match(path.name):
            return name
    return None


def read_member(tar: tarfile.TarFile, name: str) -> bytes:
    member = tar.getmember(name)
    handle = tar.extractfile(member) if member.isfile() else None
    if handle is None:
        raise VendorError(f"{name} is not a regular file in the tarball")
    return handle.read()


def vendor_package(asset: Asset, tarball: Path, integrity: str, dest: Path) -> list[VendoredFile]:
    """Copy the asset's files and licence texts from `tarball` into `dest`/<package>/."""
    out_dir = dest / asset.package
    out_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tarball, "r:gz") as tar:
        names = tar.getnames()
        manifest = json.loads(read_member(tar, f"{TARBALL_ROOT}/package.json"))
        if manifest.get("version") != asset.version:
            raise VendorError(f"{asset.package}: tarball is version {manifest.get('version')}, pinned {asset.version}")
        spdx = spdx_of(manifest)
        license_member = root_file(names, LICENSE_NAME)
        if license_member is None:
            raise VendorError(f"{asset.package}@{asset.version} ships no LICENSE file")
        notice_member = root_file(names, NOTICE_NAME)
        wanted = [license_member, *([notice_member] if notice_member else [])]
        wanted += [f"{TARBALL_ROOT}/{f}" for f in asset.files]
        license_file = f"{asset.package}/{PurePosixPath(license_member).name}"
        entries = []
        for member in wanted:
            name = PurePosixPath(member).name
            if (out_dir / name).exists():
                raise VendorError(f"{asset.package}: two vendored files are named {name}")
            try:
                data = read_member(tar, member)
            except KeyError as err:
                raise VendorError(f"{asset.package}@{asset.version} has no {member}") from err
            (out_dir / name).write_bytes(data)
            entries.append(VendoredFile(asset.package, asset.version, f"{asset.package}/{name}",
                                        hashlib.sha256(data).hexdigest(), license_file, spdx, integrity))
    return entries


def vendor_all(assets: tuple[Asset, ...], dest: Path) -> list[VendoredFile]:
    """Re-vendor every asset into `dest`, replacing it whole only once every package has succeeded."""
    with tempfile.TemporaryDirectory(prefix="bk-vendor-") as tmp:
        staging = Path(tmp) / "vendor"
        staging.mkdir()
        entries: list[VendoredFile] = []
        for asset in assets:
            tarball, integrity = npm_pack(f"{asset.package}@{asset.version}", Path(tmp))
            entries += vendor_package(asset, tarball, integrity, staging)
        (staging / "vendor.json").write_text(
            json.dumps([asdict(e) for e in entries], indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(staging, dest)
    return entries


def load_manifest(manifest: Path) -> list[VendoredFile]:
    return [VendoredFile(**row) for row in json.loads(manifest.read_text(encoding="utf-8"))]


def verify(vendor_dir: Path, assets: tuple[Asset, ...] = ASSETS) -> list[str]:
    """Problems with the vendored tree, each naming its file; empty when all is well (no network)."""
    manifest = vendor_dir / "vendor.json"
    if not manifest.is_file():
        return [f"{manifest}: missing (run scripts/vendor_assets.py)"]
    entries = load_manifest(manifest)
    problems = []
    for entry in entries:
        path = vendor_dir / entry.file
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif sha256_of(path) != entry.sha256:
            problems.append(f"{path}: sha256 {sha256_of(path)} is not the listed {entry.sha256}")
        license_path = vendor_dir / entry.license_file
        if not license_path.is_file() or license_path.stat().st_size == 0:
            problems.append(f"{license_path}: licence of {entry.file} missing or empty")
    listed = {(e.package, e.version, e.file) for e in entries}
    for asset in assets:
        for f in asset.files:
            key = (asset.package, asset.version, f"{asset.package}/{PurePosixPath(f).name}")
            if key not in listed:
                problems.append(f"{vendor_dir / key[2]}: pinned {asset.package}@{asset.version} "
                                "but not in vendor.json (re-run scripts/vendor_assets.py)")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="verify the vendored files offline instead of re-vendoring")
    parser.add_argument("--dest", type=Path, default=VENDOR_DIR, help=f"vendor directory (default {VENDOR_DIR})")
    args = parser.parse_args(argv)
    if args.check:
        problems = verify(args.dest)
        for problem in problems:
            print(f"vendor_assets: {problem}", file=sys.stderr)
        if not problems:
            print(f"vendor_assets: {len(load_manifest(args.dest / VENDOR_MANIFEST.name))} files OK in {args.dest}")
        return 1 if problems else 0
    try:
        entries = vendor_all(ASSETS, args.dest)
    except VendorError as err:
        print(f"vendor_assets: {err}", file=sys.stderr)
        return 1
    for e in entries:
        print(f"{e.package}@{e.version} {e.file} {e.sha256} ({e.spdx})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
