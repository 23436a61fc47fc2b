"""The failed-REGISTER throttle (pure, on a fake clock) and the GB retry settings it and the catalog use."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from edge_agent.capture.gb28181.throttle import RegisterThrottle
from edge_agent.config import GbConfig

pytestmark = pytest.mark.unit

KEY = ("192.0.2.7", "64050200001180000001")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def throttle(limit: int = 3, window_s: float = 10.0, **kw) -> tuple[RegisterThrottle, Clock]:
    clock = Clock()
    return RegisterThrottle(limit, window_s, clock=clock, **kw), clock


def test_only_the_first_failure_of_a_burst_is_reported():
    """Failures less than the window apart are one burst: failures == 1 only for the first."""
    t, clock = throttle(limit=5)
    counts = []
    for _ in range(4):
        counts.append(t.failed(KEY).failures)
        clock.now += 9.0  # each within the window of the previous one
    assert counts == [1, 2, 3, 4]
    clock.now += 1.0  # 10 s after the last failure: the burst is over
    assert t.failed(KEY).failures == 1


def test_lock_after_limit_does_not_extend_and_ends_one_window_after_last_failure():
    """At the limit the key is refused at once; refusals do not extend the lock; it ends window_s after the last failure."""
    t, clock = throttle(limit=3, window_s=10.0)
    for _ in range(2):
        t.failed(KEY)
        assert not t.locked(KEY)
    t.failed(KEY)
    last = clock.now
    assert t.locked(KEY) and t.retry_in(KEY) == pytest.approx(10.0)
    for _ in range(5):
        clock.now += 1.9
        assert t.locked(KEY)  # refused, not counted as failures
    assert t.retry_in(KEY) == pytest.approx(last + 10.0 - clock.now)
    clock.now = last + 10.0
    assert not t.locked(KEY) and t.retry_in(KEY) == 0.0 and len(t) == 0


def test_keys_are_separate_and_success_clears():
    """Another device id or another address is its own key; a successful REGISTER ends the burst."""
    t, _ = throttle(limit=1)
    t.failed(KEY)
    assert t.locked(KEY)
    assert not t.locked((KEY[0], "64050200001180000002")) and not t.locked(("192.0.2.8", KEY[1]))
    t.locked(KEY)
    burst = t.succeeded(KEY)
    assert burst is not None and burst.failures == 1 and burst.refused == 2
    assert not t.locked(KEY) and t.succeeded(KEY) is None


def test_memory_is_bounded_under_a_flood_of_keys():
    """Spoofed addresses and ids never hold more than max_keys entries; expired ones go first."""
    t, clock = throttle(limit=2, window_s=5.0, max_keys=100)
    for i in range(50):
        t.failed((f"10.0.0.{i}", KEY[1]))
    clock.now += 6.0
    for i in range(1000):
        t.failed((f"10.1.{i // 256}.{i % 256}", KEY[1]))
        assert len(t) <= 100
    assert ("10.0.0.1", KEY[1]) not in t._bursts


def test_gb_config_retry_settings_validated():
    """catalog_retry_max_s below catalog_retry_s and a zero failure limit are refused, naming the keys."""
    with pytest.raises(ValidationError, match="catalog_retry_max_s .* must be at least catalog_retry_s"):
        GbConfig(catalog_retry_s=30, catalog_retry_max_s=10)
    with pytest.raises(ValidationError, match="register_fail_limit"):
        GbConfig(register_fail_limit=0)
    cfg = GbConfig()
    assert (cfg.catalog_retry_s, cfg.catalog_retry_max_s) == (10.0, 300.0)
    assert (cfg.register_fail_limit, cfg.register_fail_window_s) == (5, 60.0)
