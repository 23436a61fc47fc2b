"""The OpenAPI document matches the registered routes, both ways."""

from __future__ import annotations

import pytest
from support.api_kit import make_world

from cloud_receiver.api import PREFIX
from cloud_receiver.api.openapi import DOCUMENT

pytestmark = pytest.mark.unit


@pytest.fixture
async def world(tmp_path):
    w = await make_world(tmp_path)
    yield w
    await w.client.close()


def _registered(app) -> set[tuple[str, str]]:
    out = set()
    for route in app.router.routes():
        path = route.resource.canonical if route.resource else ""
        if path.startswith(PREFIX) and route.method != "HEAD":
            out.add((path[len(PREFIX):], route.method.lower()))
    return out


def _documented() -> set[tuple[str, str]]:
    return {(path, method) for path, ops in DOCUMENT["paths"].items() for method in ops}


async def test_every_route_documented_and_vice_versa(world):
    """Each /api/v1 route has an OpenAPI operation and each operation is a registered route."""
    registered = _registered(world.client.app)
    assert len(registered) >= 13
    assert registered - _documented() == set(), "routes missing from openapi.py"
    assert _documented() - registered == set(), "documented paths that are not registered"


async def test_document_served_and_well_formed(world):
    """/api/v1/openapi.json is public, OpenAPI 3.1, and every $ref resolves."""
    r = await world.get("/openapi.json")
    assert r.status == 200
    doc = await r.json()
    assert doc["openapi"] == "3.1.0" and doc["servers"] == [{"url": "/api/v1"}]
    refs: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            refs.extend(v for k, v in node.items() if k == "$ref")
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(doc)
    assert refs
    for ref in refs:
        assert ref.split("/")[-1] in doc["components"]["schemas"], ref
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert op.get("summary") and "200" in op["responses"], (path, method)
            params = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert params == {seg[1:-1] for seg in path.split("/") if seg.startswith("{")}, (path, method)
