"""Editing a canteen's public page: who may change what, validation, and what the public then sees."""

from __future__ import annotations

import pytest
from support.api_kit import DEVICES, jpeg, make_world

pytestmark = pytest.mark.unit


@pytest.fixture
async def world(tmp_path, db_engine):
    w = await make_world(tmp_path, db_engine)
    yield w
    await w.close()


async def _patch(world, canteen: str, who: str | None, body):
    return await world.client.patch(f"/api/v1/canteens/{canteen}/public", headers=world.h(who), json=body)


async def test_regulator_sets_rating_and_sampling_and_the_public_sees_them(world):
    body = {"rating": "A", "sampling": [{"date": "2026-11-20", "item": "餐具", "result": "合格"}]}
    r = await _patch(world, "C1", "reg", body)
    assert r.status == 200
    page = await r.json()
    assert page["rating"] == "A" and page["sampling"] == body["sampling"]
    assert page["licences"][0]["name"] == "食品经营许可证"  # not given: kept
    public = await (await world.client.get("/api/v1/public/canteens/C1")).json()
    assert public == page


async def test_canteen_sets_its_licences_and_own_snapshots_only(world):
    own = world.add_media(jpeg("c3-kitchen"), "k3", DEVICES["C3"])
    body = {"licences": [{"name": "食品经营许可证", "number": "JY16405210000003", "valid_until": "2030-01-01"}],
            "snapshots": [{"sha256": own, "taken_at": "2026-11-28T09:00:00+08:00", "caption": "后厨全景"}]}
    r = await _patch(world, "C3", "c3", body)
    assert r.status == 200
    page = await r.json()
    assert page["licences"] == body["licences"] and page["snapshots"][0]["url"] == f"/p/C3/snapshots/{own}.jpg"
    assert (await world.client.get(f"/api/v1/media/{own}")).status == 404  # public: as a blurred copy only, never this
    r = await _patch(world, "C3", "c3", {"rating": "A"})
    assert r.status == 403 and "rating" in (await r.json())["error"]["message"]
    # another canteen's picture is refused
    foreign = world.add_media(jpeg("c1-kitchen"), "k1", DEVICES["C1"])
    r = await _patch(world, "C3", "c3", {"snapshots": [{"sha256": foreign, "taken_at": "2026-11-28T09:00:00Z"}]})
    assert r.status == 422 and "not a stored picture of this canteen's boxes" in (await r.json())["error"]["message"]
    assert (await world.client.get(f"/api/v1/media/{foreign}")).status == 404  # still not public


@pytest.mark.parametrize(("who", "canteen", "status"), [
    (None, "C1", 401), ("c3", "C1", 404), ("reg", "C3", 404), ("city", "C3", 200), ("admin", "C3", 200),
    ("admin", "NOPE", 404),
])
async def test_scope(world, who, canteen, status):
    assert (await _patch(world, canteen, who, {"rating": "B"})).status == status


@pytest.mark.parametrize(("body", "problem"), [
    ({"rating": "A+"}, "rating: Input should be 'A', 'B' or 'C'"),
    ({"licences": [{"name": "许可证"}]}, "licences.0.number: Field required"),
    ({"sampling": [{"date": "yesterday", "item": "x", "result": "合格"}]}, "sampling.0.date"),
    ({"snapshots": [{"sha256": "abc", "taken_at": "2026-11-28T09:00:00Z"}]}, "snapshots.0.sha256"),
    ({"secret": 1}, "secret: Extra inputs are not permitted"),
    ({}, "nothing to change"),
])
async def test_bad_bodies_name_the_problem(world, body, problem):
    r = await _patch(world, "C1", "admin", body)
    err = (await r.json())["error"]
    assert r.status == 400 and err["code"] == "invalid_input" and problem in err["message"], err


async def test_adding_the_canteen_again_keeps_its_public_page(world):
    """`cloud-receiver canteen add` for an existing id renames it; the page edited through the API stays."""
    assert (await _patch(world, "C1", "admin", {"rating": "C"})).status == 200
    world.storage.add_canteen("C1", "第一中学食堂（新）", "64050201")
    public = await (await world.client.get("/api/v1/public/canteens/C1")).json()
    assert public["name"] == "第一中学食堂（新）" and public["rating"] == "C" and public["licences"]
