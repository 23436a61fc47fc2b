"""Suite-wide fixtures and the test layers.

Every test is in exactly one layer, set by `pytestmark` in its module (pyproject lists them):
- unit: in-process only (SQLite, the model, aiohttp's in-process test server); the fast loop,
  `pytest -m unit`. A unit test that starts a real service fails: see `_no_services_in_unit_tests`.
- integration: one real service or peer (Mosquitto, PostgreSQL, gst-rtsp-server, sipp, ffmpeg, ipycam).
- system: the whole chain, network namespaces, fault windows.
"""

from __future__ import annotations

import os
import subprocess

import pytest
import structlog

LAYERS = ("unit", "integration", "system")
# what a unit test must not start: the real services and peers of the other layers
SERVICE_PROGRAMS = {"mosquitto", "sipp", "chromium", "postgres", "psql", "pg_ctl", "ejabberdctl",
                    "ip", "unshare", "openssl"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        layers = [m.name for m in item.iter_markers() if m.name in LAYERS]
        if len(layers) != 1:
            raise pytest.UsageError(f"{item.nodeid}: must be in exactly one layer of {LAYERS}, has {layers or 'none'} "
                                    "(set pytestmark in the module)")


@pytest.fixture(autouse=True)
def _no_services_in_unit_tests(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A unit test that spawns a service program (or Debian's python3, which runs the RTSP server) fails."""
    if request.node.get_closest_marker("unit") is None:
        return
    real_init = subprocess.Popen.__init__

    def guarded(self, args, *a, **kw):  # noqa: ANN001, ANN202
        argv = [args] if isinstance(args, str | bytes | os.PathLike) else list(args)
        program = os.path.basename(os.fsdecode(argv[0]).split()[0]) if argv else ""
        if program in SERVICE_PROGRAMS or os.fsdecode(argv[0]) == "/usr/bin/python3":
            raise AssertionError(f"unit test started {program!r}: mark it integration or system")
        return real_init(self, args, *a, **kw)

    monkeypatch.setattr(subprocess.Popen, "__init__", guarded)


@pytest.fixture(autouse=True)
def _structlog_defaults():
    """A CLI test configures structlog; later tests expect its defaults (print to stdout)."""
    yield
    structlog.reset_defaults()
