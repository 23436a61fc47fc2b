"""The authorization matrix (tests/support/authz_matrix.py) against a real receiver: every role, every
endpoint, a target in the caller's own canteen, another canteen of its region and another region."""

from __future__ import annotations

import pytest
import pytest_asyncio
from support.api_kit import DEVICES, make_world, now
from support.api_server import seed_alerts
from support.authz_matrix import HIDDEN, MATRIX, PROBES, ROLES, SEEN, TARGETS, Target, cases

from cloud_receiver.api import PREFIX
from cloud_receiver.control import commands as control

pytestmark = pytest.mark.unit

TOKENS = {"admin": "admin", "regulator": "reg", "canteen": "c1", "anonymous": None}
# routes the matrix does not probe, and why
NOT_PROBED = {("GET", "/openapi.json"): "public document, the same for everyone",
              ("GET", "/alerts/stream"): "filtered per role in tests/test_api_stream.py"}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def shared(tmp_path_factory, db_engine):
    w = await make_world(tmp_path_factory.mktemp("authz"), db_engine)
    w.alerts, w.snapshots = seed_alerts(w.storage, w.media_dir)
    for device in DEVICES.values():  # what "get command" asks about
        control.record(w.storage.sql, device, control.new_command("status", "ops", now()).model_copy(
            update={"id": "probe-cmd"}))
    pages = {r["id"]: r["public_json"] for r in w.storage.sql.rows("SELECT id, public_json FROM canteens")}
    yield w, pages
    await w.close()


@pytest_asyncio.fixture(loop_scope="module")
async def world(shared):
    """The shared receiver, back in its seeded state after each cell (open alerts, no transitions, pages)."""
    w, pages = shared
    yield w
    db = w.storage.sql
    db.rows("UPDATE alerts SET status = '待整改', deadline = NULL")
    db.rows("DELETE FROM transitions")
    db.rows("DELETE FROM media WHERE device_id = 'api-upload'")
    for canteen, page in pages.items():
        db.rows("UPDATE canteens SET public_json = :page WHERE id = :id", page=page, id=canteen)


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(("endpoint", "role", "target", "expected"), cases(),
                         ids=[f"{e}|{r}|{t}" for e, r, t, _ in cases()])
async def test_authorization_matrix(world, endpoint, role, target, expected):
    """The answer to one cell of the matrix is the one the table gives."""
    canteen = TARGETS[target]
    t = Target(canteen=canteen, device=DEVICES[canteen], alert=world.alerts[canteen], snapshot=world.snapshots[canteen])
    probe = PROBES[endpoint]
    r = await world.client.request(probe.method, probe.path.format(**vars(t)), json=probe.body,
                                   headers=world.h(TOKENS[role]))
    if expected in (SEEN, HIDDEN):
        assert r.status == 200, await r.text()
        assert probe.shows is not None
        assert probe.shows(await r.json(), t) == (expected == SEEN), await r.text()
    else:
        assert r.status == expected, await r.text()


def test_every_probe_has_a_row_for_every_role():
    """The table is complete: each probed endpoint has a row for each role, and each row a probe."""
    assert {(e, r) for e in PROBES for r in ROLES} == set(MATRIX)


@pytest.mark.asyncio(loop_scope="module")
async def test_every_route_is_probed(world):
    """A new /api/v1 route cannot be added without a row in the matrix (or a reason it needs none)."""
    routes = {(route.method, route.resource.canonical[len(PREFIX):]) for route in world.client.app.router.routes()
              if route.resource and route.resource.canonical.startswith(PREFIX) and route.method != "HEAD"}
    probed = {(p.method, _template(p.path)) for p in PROBES.values()}
    assert routes - probed - set(NOT_PROBED) == set()


def _template(path: str) -> str:
    """`/api/v1/alerts/{alert}/review?x=y` -> `/alerts/{id}/review` (the route's own placeholder names)."""
    path = path.split("?")[0][len(PREFIX):]
    for ours, theirs in (("{alert}", "{id}"), ("{canteen}", "{id}"), ("{snapshot}", "{sha256}"), ("{device}", "{id}"),
                         ("probe-cmd", "{cid}"), ("/cam1", "/{camera}")):
        path = path.replace(ours, theirs)
    return path
