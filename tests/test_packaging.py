"""The package installs and runs anywhere: a wheel outside the checkout, and setup on Debian's own Python.

Needs Debian's /usr/bin/python3 with its PEP 668 marker (EXTERNALLY-MANAGED) and python3-venv, which
scripts/setup.sh installs when missing; pip reaches PyPI (or its cache) for the dependencies.
"""

from __future__ import annotations

import os
import subprocess
import sysconfig
import zipfile
from pathlib import Path

import pytest
from PIL import Image
from skimage import data

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parents[1]
DEBIAN_PYTHON = Path("/usr/bin/python3")
SHIPPED = {"edge_agent/assets/models/nanodet-coco-int8.tflite", "edge_agent/assets/models/nanodet-coco-int8.json",
           "edge_agent/assets/models/nanodet-coco-fp32.tflite", "edge_agent/assets/models/nanodet-coco-fp32.json",
           "edge_agent/assets/agent.example.yaml", "cloud_receiver/assets/receiver.example.yaml"}


def _run(cmd: list[str], *, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{cmd} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def _debian_marker() -> Path:
    stdlib = subprocess.run([str(DEBIAN_PYTHON), "-c", "import sysconfig; print(sysconfig.get_path('stdlib'))"],
                            capture_output=True, text=True, check=True).stdout.strip()
    return Path(stdlib) / "EXTERNALLY-MANAGED"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    _run([str(Path(sysconfig.get_paths()["scripts"]) / "python"), "-m", "pip", "wheel", "-q", "--no-deps",
          "--disable-pip-version-check", "-w", str(out), str(ROOT)], cwd=out)
    (whl,) = out.glob("brightkitchen-*.whl")
    return whl


def test_wheel_contains_models_and_example_configs_and_no_dev_tools(wheel: Path) -> None:
    """The wheel ships the models, their manifests and the example configs; tests and devkit stay out."""
    names = set(zipfile.ZipFile(wheel).namelist())
    assert names >= SHIPPED
    assert {n.split("/")[0] for n in names} == {"edge_agent", "cloud_receiver", "bk_contract", "bk_common",
                                                 wheel.name.split("-py3")[0] + ".dist-info"}


def test_wheel_in_a_fresh_venv_runs_from_anywhere(wheel: Path, tmp_path: Path) -> None:
    """pip install of the wheel into a new venv; from outside the checkout detect, config check and --help work."""
    venv = tmp_path / "venv"
    _run([str(DEBIAN_PYTHON), "-m", "venv", str(venv)], cwd=tmp_path)
    _run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(wheel)], cwd=tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    photo = elsewhere / "astronaut.jpg"
    Image.fromarray(data.astronaut()).save(photo)

    det = _run([str(venv / "bin" / "edge-agent"), "detect", str(photo)], cwd=elsewhere, env=env)
    assert [line for line in det.stdout.splitlines() if line.split("\t")[1] == "person"]
    assert (elsewhere / "astronaut.detected.jpg").stat().st_size > 1000
    assert str(venv) in det.stderr and str(ROOT) not in det.stderr  # the model came from the installed package

    example = _run([str(venv / "bin" / "edge-agent"), "config", "example"], cwd=elsewhere, env=env).stdout
    (elsewhere / "agent.yaml").write_text(example, encoding="utf-8")
    check = _run([str(venv / "bin" / "edge-agent"), "config", "check", "agent.yaml"], cwd=elsewhere, env=env)
    assert "agent.yaml: OK" in check.stdout and "nanodet-coco-int8.tflite" in check.stdout
    shipped = _run([str(venv / "bin" / "edge-agent"), "config", "check"], cwd=elsewhere, env=env)
    assert f"{venv}/lib/" in shipped.stdout and ": OK" in shipped.stdout

    helptext = _run([str(venv / "bin" / "cloud-receiver"), "--help"], cwd=elsewhere, env=env).stdout
    assert "serve" in helptext and "device" in helptext
    receiver_example = _run([str(venv / "bin" / "cloud-receiver"), "config", "example"], cwd=elsewhere, env=env).stdout
    (elsewhere / "receiver.yaml").write_text(receiver_example, encoding="utf-8")
    assert "配置有效" in _run([str(venv / "bin" / "cloud-receiver"), "-c", "receiver.yaml", "config", "check"],
                          cwd=elsewhere, env=env).stdout


def test_setup_and_tests_with_debian_python(tmp_path: Path) -> None:
    """scripts/setup.sh with Debian's own python3 (PEP 668) makes a venv and the README's test command runs in it."""
    assert _debian_marker().is_file(), f"{_debian_marker()} missing: this test needs Debian's python3 (PEP 668)"
    venv = tmp_path / "venv"
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "PYTHON": str(DEBIAN_PYTHON),
           "BK_VENV": str(venv)}
    _run(["bash", "scripts/setup.sh"], cwd=ROOT, env=env, timeout=900)
    base = _run([str(venv / "bin" / "python"), "-c", "import sys; print(sys.base_prefix)"], cwd=tmp_path).stdout
    assert base.strip() == "/usr"  # the venv is Debian's interpreter, not another one
    again = _run(["bash", "scripts/setup.sh"], cwd=ROOT, env=env)
    assert "pip install" not in again.stderr  # idempotent: nothing to do the second time
    tests = _run(["bash", "scripts/test.sh", "-m", "unit", "-p", "no:cacheprovider", "tests/test_logs.py",
                  "tests/test_config.py"], cwd=ROOT, env=env)
    assert " passed" in tests.stdout and "failed" not in tests.stdout
