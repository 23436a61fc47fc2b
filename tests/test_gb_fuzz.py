"""Property tests: every GB/T 28181 parser returns or raises ParseError, never anything else or a hang.

A small hypothesis sample per parser on every run; scripts/fuzz_parsers.py runs >= 100,000 per parser.
"""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.errors import ParseError

pytestmark = pytest.mark.unit

_spec = importlib.util.spec_from_file_location("fuzz_parsers", Path(__file__).parents[1] / "scripts" / "fuzz_parsers.py")
assert _spec is not None and _spec.loader is not None
fuzz = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fuzz)
SEEDS = fuzz.load_seeds()


def test_captures_cover_every_parser():
    """Seeds recorded from the emulator and sipp exist for every parser, including sipp's own messages."""
    assert set(SEEDS) == set(fuzz.TARGETS)
    assert all(SEEDS[name] for name in fuzz.TARGETS)
    assert any(b"SIPp" in s for s in SEEDS["sip"]) and any(b"INVITE" in s for s in SEEDS["sip"])


def test_seeds_parse_cleanly():
    """The real captures themselves parse without error (the fuzzer mutates valid inputs)."""
    for name in ("sdp", "manscdp", "rtp", "framing"):
        for seed in SEEDS[name]:
            fuzz.TARGETS[name](seed)


def _inputs(name: str):
    seeds = SEEDS[name]
    mutated = st.integers(0, 2**32).map(lambda n: fuzz.mutate(random.Random(n), seeds))
    return st.one_of(st.binary(max_size=600), mutated)


@pytest.mark.parametrize("name", sorted(fuzz.TARGETS))
def test_parser_only_raises_parse_error(name):
    """300 generated and mutated inputs: the parser returns or raises ParseError within the deadline."""
    target = fuzz.TARGETS[name]

    @settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow], database=None)
    @given(_inputs(name))
    def check(data: bytes) -> None:
        try:
            target(data)
        except ParseError as err:
            assert str(err)  # a ParseError always says what and where

    check()
