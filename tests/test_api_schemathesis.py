"""Schemathesis against the live receiver's OpenAPI document, as an admin and as a canteen: every check,
a fixed seed, a few hundred cases per role; any server error or schema violation fails the test."""

from __future__ import annotations

import pytest
from support.api_fuzz import run_schemathesis
from support.api_server import live_api

pytestmark = pytest.mark.integration

EXAMPLES = 10  # per operation and phase: about 700 cases per role (the coverage phase adds its own), ~12 s each
SEED = 20260905


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    with live_api(tmp_path_factory.mktemp("live-api")) as live:
        yield live


@pytest.mark.parametrize("role", ["admin", "canteen"])
def test_schemathesis_finds_nothing(api, role, tmp_path):
    """All checks pass for every generated case: no 5xx, no response outside the schema, no valid request refused."""
    run = run_schemathesis(api, role, max_examples=EXAMPLES, seed=SEED, workdir=tmp_path)
    assert run.generated >= 300, run.output[-3000:]
    assert run.ok, run.output[-6000:]
