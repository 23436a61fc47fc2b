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


ENGINES = ("sqlite", "postgresql")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test (or fixture) asking for `db_engine` runs on both engines; the PostgreSQL run is integration."""
    if "db_engine" in metafunc.fixturenames:
        metafunc.parametrize("db_engine", ["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)],
                             scope="module")


def layer_of(item: pytest.Item) -> str:
    """The item's layer: its module's, unless a parameter of the item sets another (closest wins)."""
    return next(m.name for m in item.iter_markers() if m.name in LAYERS)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        own = [m.name for m in item.own_markers if m.name in LAYERS]
        inherited = [m.name for n in item.listchain()[:-1] for m in n.own_markers if m.name in LAYERS]
        if len(inherited) != 1 or len(own) > 1:
            raise pytest.UsageError(f"{item.nodeid}: must be in exactly one layer of {LAYERS}, has "
                                    f"{inherited or 'none'} (set pytestmark in the module)")
    _deselect_by_effective_layer(config, items)


def _deselect_by_effective_layer(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`-m unit` must not pick the PostgreSQL run of a unit module: judge `-m` by the layer that applies."""
    from _pytest.mark.expression import Expression

    expr = config.option.markexpr
    if not expr:
        return
    compiled = Expression.compile(expr)
    keep, drop = [], []
    for item in items:
        names = {m.name for m in item.iter_markers() if m.name not in LAYERS} | {layer_of(item)}
        (keep if compiled.evaluate(lambda name, names=names, **_: name in names) else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(autouse=True)
def _no_services_in_unit_tests(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A unit test that spawns a service program (or Debian's python3, which runs the RTSP server) fails."""
    if layer_of(request.node) != "unit":
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
