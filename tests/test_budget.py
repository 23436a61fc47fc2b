"""Upload budget (pure token bucket) on an injected clock, and the PUBLISH size it charges."""

from __future__ import annotations

import pytest

from edge_agent.uplink.budget import Priority, UploadBudget, budget_bytes_per_s
from edge_agent.uplink.session import publish_packet_size

pytestmark = pytest.mark.unit


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


@pytest.mark.parametrize(("kbps", "cams", "expected"), [(500, 2, 125_000), (500, 1, 62_500), (64, 0, 8_000)])
def test_budget_rate(kbps, cams, expected):
    """0.5 Mbit/s per configured camera, in bytes per second (at least one camera)."""
    assert budget_bytes_per_s(kbps, cams) == expected


@pytest.mark.parametrize("size", [100, 1500, 4200])
def test_long_run_rate_within_budget(size):
    """Greedy sending over 100 simulated seconds stays within rate * t + burst."""
    clock = FakeClock()
    b = UploadBudget.for_cameras(32, 2, max_packet=4200, clock=clock)
    sent = 0
    while clock.t < 100:
        if b.try_take(size, Priority.SNAPSHOT):
            sent += size
        else:
            clock.t += max(1e-4, b.delay_for(size, Priority.SNAPSHOT))
    assert sent <= b.rate * 100 + b.burst
    assert sent >= b.rate * 100 * 0.97


def test_reserve_keeps_room_for_alerts():
    """Snapshots stop above their reserve; an alert may still take the rest."""
    clock = FakeClock()
    b = UploadBudget(rate=1000, burst=16000, clock=clock)
    while b.try_take(1000, Priority.SNAPSHOT):
        pass
    assert b.tokens >= 16000 / 16  # the snapshot reserve is left
    assert not b.try_take(1000, Priority.LIVE)
    assert b.try_take(1000, Priority.ALERT)
    assert b.delay_for(1000, Priority.SNAPSHOT) > 0


def test_delay_for_is_exact():
    """delay_for says when a refused take will succeed."""
    clock = FakeClock()
    b = UploadBudget(rate=1000, burst=2000, clock=clock)
    assert b.try_take(2000, Priority.ALERT)
    assert not b.try_take(500, Priority.ALERT)
    wait = b.delay_for(500, Priority.ALERT)
    assert wait == pytest.approx(0.5)
    clock.t += wait
    assert b.try_take(500, Priority.ALERT)


def test_packet_larger_than_reserve_room_goes_on_full_bucket():
    """A packet that cannot fit above the reserve is not starved: it goes when the bucket is full."""
    clock = FakeClock()
    b = UploadBudget(rate=1000, burst=4000, clock=clock)
    assert b.try_take(3990, Priority.TELEMETRY)
    clock.t += 10
    assert b.try_take(3990, Priority.TELEMETRY)


def test_charge_goes_into_debt_and_spare():
    """Forced control traffic may overdraw; spare_bps reports what urgent traffic leaves for live."""
    clock = FakeClock()
    b = UploadBudget(rate=1000, burst=1000, clock=clock, history_s=10)
    b.charge(3000, Priority.ALERT)
    assert b.tokens == -2000 and b.delay_for(1, Priority.ALERT) > 2
    assert b.spare_bps(Priority.LIVE) == pytest.approx(8000 - 3000 * 8 / 10)
    assert b.spent[Priority.ALERT] == 3000 and b.total_spent == 3000


@pytest.mark.parametrize(("topic", "n", "qos", "expected"), [
    ("a/b", 10, 1, 1 + 1 + 2 + 3 + 2 + 1 + 10),
    ("a/b", 10, 0, 1 + 1 + 2 + 3 + 1 + 10),
    ("t", 200, 1, 1 + 2 + 2 + 1 + 2 + 1 + 200),  # remaining length 206 needs 2 varint bytes
])
def test_publish_packet_size(topic, n, qos, expected):
    """The charged size is the MQTT v5 PUBLISH size: header, varint, topic, packet id, props, payload."""
    assert publish_packet_size(topic, n, qos) == expected


@pytest.mark.parametrize(("kbps", "max_packet"), [(500, 33_000), (32, 4200), (8, 33_000)])
def test_every_window_keeps_to_the_limit_with_framing(kbps, max_packet):
    """Greedy from a full bucket, the first 60 s (the worst window) carry at most the limit once TLS framing is added."""
    from edge_agent.uplink.budget import WINDOW_S, WIRE_FRAMING

    clock = FakeClock()
    b = UploadBudget.for_cameras(kbps, 1, max_packet=max_packet, clock=clock)
    sent, size = 0, min(1500, max_packet)
    while clock.t < WINDOW_S:
        if b.try_take(size, Priority.ALERT):
            sent += size
        else:
            clock.t += max(1e-4, b.delay_for(size, Priority.ALERT))
    limit = kbps * 1000 / 8 * WINDOW_S
    assert sent * WIRE_FRAMING <= limit and sent * WIRE_FRAMING >= 0.9 * limit
