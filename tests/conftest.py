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
    # done here: pytest's own `-m` filter would judge the PostgreSQL run of a unit module by the module's
    # `unit` mark too, and drop it from `-m integration`
    config.option.markexpr = ""


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


@pytest.fixture
async def world(tmp_path, db_engine):
    """The receiver app with the seeded world of support/api_kit.make_world, on each engine (modules that
    need more in it define their own `world`)."""
    from support.api_kit import make_world

    w = await make_world(tmp_path, db_engine)
    yield w
    await w.close()


@pytest.fixture
def cheap_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """argon2 with small parameters, for tests about the console rather than the hash (test_console_accounts).

    Use it with `pytest.mark.usefixtures("cheap_hashes")` in the module's `pytestmark`."""
    from argon2 import PasswordHasher

    from cloud_receiver.admin import accounts

    monkeypatch.setattr(accounts, "PASSWORD_HASHER", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium, headless, shared by a module's browser tests (support/browser.py)."""
    from support.browser import chromium_browser

    with chromium_browser() as b:
        yield b


@pytest.fixture(autouse=True)
def _structlog_defaults():
    """A CLI test configures structlog; later tests expect its defaults (print to stdout)."""
    yield
    structlog.reset_defaults()
