"""Rules with injected time: persistence, grace, cooldown, schedule, zones, crowding, phone, offline."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from edge_agent.analysis.types import Box, Track
from edge_agent.config import (
    AnimalRule,
    CrowdingRule,
    IntrusionRule,
    PhoneUseRule,
    Schedule,
    StationUnattendedRule,
)
from edge_agent.rules.engine import Observation, OfflineMonitor, RuleEngine, in_zone, near
from edge_agent.rules.schedule import local_time, schedule_active

pytestmark = pytest.mark.unit

SH = ZoneInfo("Asia/Shanghai")
W, H = 640, 360
MONDAY_10AM = datetime(2026, 11, 30, 10, 0, tzinfo=SH).timestamp()  # 2026-11-30 is a Monday


def person(tid: int, x: float = 100, y: float = 50, w: float = 100, h: float = 250, score: float = 0.8,
           label: str = "person") -> Track:
    return Track(tid, label, Box(x, y, x + w, y + h), 0, 0, scores=[score] * 5)


def phone(tid: int, x: float, y: float, score: float = 0.6) -> Track:
    return Track(tid, "cell phone", Box(x, y, x + 20, y + 30), 0, 0, scores=[score] * 5)


def run(engine: RuleEngine, t0: float, seconds: float, tracks: list[Track], step: float = 0.2):
    """Feed the same tracks every `step` s; returns (transitions, end time)."""
    out = []
    t = t0
    while t < t0 + seconds - 1e-9:
        out += engine.step(Observation(t, tracks, W, H, frame=f"frame@{t:.1f}"))
        t += step
    return out, t


def test_phone_use_needs_persistence_then_one_event() -> None:
    """A phone near a person for persistence_s gives one start; nothing before, no repeats."""
    eng = RuleEngine([PhoneUseRule(type="phone_use", persistence_s=3.0, min_score=0.5)])
    scene = [person(1), phone(2, 150, 150)]
    early, t = run(eng, MONDAY_10AM, 2.8, scene)
    assert early == []
    trs, t = run(eng, t, 10.0, scene)
    assert [x.state for x in trs] == ["start"]
    assert trs[0].started_at == MONDAY_10AM
    assert {m.label for m in trs[0].marks} == {"person", "cell phone"}
    assert trs[0].frame is not None and trs[0].frame_size == (W, H)


def test_phone_far_from_person_is_not_phone_use() -> None:
    """A phone on the other side of the frame is not held by the person."""
    eng = RuleEngine([PhoneUseRule(type="phone_use", persistence_s=0.0)])
    trs, _ = run(eng, MONDAY_10AM, 3, [person(1), phone(2, 600, 10)])
    assert trs == []
    assert near(Box(150, 150, 170, 180), Box(100, 50, 200, 300))
    assert not near(Box(600, 10, 620, 40), Box(100, 50, 200, 300))


def test_low_median_score_is_ignored() -> None:
    """min_score applies to the track's median score."""
    eng = RuleEngine([IntrusionRule(type="intrusion_off_hours", persistence_s=0, min_score=0.5)])
    trs, _ = run(eng, MONDAY_10AM, 2, [person(1, score=0.4)])
    assert trs == []


def test_grace_bridges_short_gaps_and_end_follows_absence() -> None:
    """A 1 s gap does not restart persistence; a gap longer than grace ends the event."""
    eng = RuleEngine([IntrusionRule(type="intrusion_off_hours", persistence_s=3.0, cooldown_s=0)], grace_s=1.5)
    p = [person(1)]
    a, t = run(eng, MONDAY_10AM, 2.0, p)
    b, t = run(eng, t, 1.0, [])  # short gap
    c, t = run(eng, t, 0.4, p)
    assert a == b == [] and [x.state for x in c] == ["start"]
    assert c[0].started_at == MONDAY_10AM
    last_seen = t - 0.2
    d, t = run(eng, t, 3.0, [])
    assert [x.state for x in d] == ["end"]
    assert d[0].ended_at == pytest.approx(last_seen)


def test_cooldown_suppresses_a_new_event_until_it_passes() -> None:
    """After an event ends, the same rule starts again only after cooldown_s."""
    eng = RuleEngine([IntrusionRule(type="intrusion_off_hours", persistence_s=1.0, cooldown_s=60)], grace_s=0.5)
    p = [person(1)]
    a, t = run(eng, MONDAY_10AM, 2, p)
    b, t = run(eng, t, 2, [])
    c, t = run(eng, t, 30, p)  # within cooldown: nothing
    assert [x.state for x in a + b] == ["start", "end"] and c == []
    d, t = run(eng, t, 40, p)  # cooldown over (ended ~2 s, +60 s)
    assert [x.state for x in d] == ["start"]


def test_intrusion_only_outside_the_schedule() -> None:
    """The schedule is the working hours: a person at 10:00 Monday is fine, at 23:00 it is intrusion."""
    rule = IntrusionRule(type="intrusion_off_hours", persistence_s=1,
                         schedule=Schedule(weekdays=[1, 2, 3, 4, 5], ranges=["06:00-20:00"]))
    eng = RuleEngine([rule])
    day, _ = run(eng, MONDAY_10AM, 5, [person(1)])
    assert day == []
    night = datetime(2026, 11, 30, 23, 0, tzinfo=SH).timestamp()
    trs, _ = run(RuleEngine([rule]), night, 5, [person(1)])
    assert [x.state for x in trs] == ["start"]
    saturday = datetime(2026, 12, 5, 10, 0, tzinfo=SH).timestamp()
    trs, _ = run(RuleEngine([rule]), saturday, 5, [person(1)])
    assert [x.state for x in trs] == ["start"]


def test_schedule_ranges_cross_midnight_and_use_device_zone() -> None:
    """22:00-06:00 on Friday covers Saturday 03:00 but not Friday 03:00; times are Asia/Shanghai."""
    s = Schedule(weekdays=[5], ranges=["22:00-06:00"])
    assert schedule_active(s, datetime(2026, 12, 4, 23, 0, tzinfo=SH))  # Friday 23:00
    assert schedule_active(s, datetime(2026, 12, 5, 3, 0, tzinfo=SH))  # Saturday 03:00
    assert not schedule_active(s, datetime(2026, 12, 4, 3, 0, tzinfo=SH))  # Friday 03:00
    assert schedule_active(Schedule(ranges=["08:00-24:00"]), datetime(2026, 12, 4, 23, 59, tzinfo=SH))
    # 02:00 UTC is 10:00 in Shanghai
    utc_2am = datetime(2026, 11, 30, 2, 0, tzinfo=ZoneInfo("UTC")).timestamp()
    assert local_time(utc_2am, "Asia/Shanghai").hour == 10
    assert schedule_active(Schedule(ranges=["09:00-11:00"]), local_time(utc_2am, "Asia/Shanghai"))


def test_zone_uses_the_bottom_centre_of_the_box() -> None:
    """A person whose feet are in the zone counts; one whose feet are outside does not."""
    zone = [(0.0, 0.5), (0.5, 0.5), (0.5, 1.0), (0.0, 1.0)]  # bottom-left quarter
    assert in_zone(Box(100, 50, 200, 300), zone, W, H)  # head above the zone, feet inside
    assert not in_zone(Box(100, 10, 200, 150), zone, W, H)
    assert not in_zone(Box(400, 50, 500, 300), zone, W, H)
    eng = RuleEngine([IntrusionRule(type="intrusion_off_hours", persistence_s=0, zone=zone)])
    assert run(eng, MONDAY_10AM, 1, [person(1, x=400)])[0] == []
    assert [x.state for x in run(eng, MONDAY_10AM + 10, 1, [person(1, x=100)])[0]] == ["start"]


def test_min_size_filters_small_boxes() -> None:
    """A box smaller than min_size (area fraction) does not count."""
    eng = RuleEngine([IntrusionRule(type="intrusion_off_hours", persistence_s=0, min_size=0.2)])
    assert run(eng, MONDAY_10AM, 1, [person(1, w=50, h=100)])[0] == []  # 5000 / 230400 ≈ 0.02
    assert run(eng, MONDAY_10AM + 5, 1, [person(1, w=400, h=300)])[0]


def test_crowding_counts_persons_in_the_zone() -> None:
    """More than max_persons gives an event with every person's box and the count."""
    eng = RuleEngine([CrowdingRule(type="crowding", max_persons=2, persistence_s=1)])
    three = [person(i, x=10 + 150 * i) for i in range(3)]
    assert run(eng, MONDAY_10AM, 3, three[:2])[0] == []
    trs, _ = run(eng, MONDAY_10AM + 3, 3, three)
    assert [x.state for x in trs] == ["start"]
    assert trs[0].detail == "persons=3" and len(trs[0].marks) == 3


def test_station_unattended_only_during_the_schedule() -> None:
    """No person in the stove zone for persistence_s during work hours starts an event; a person ends it."""
    rule = StationUnattendedRule(type="station_unattended", persistence_s=60, cooldown_s=0,
                                 schedule=Schedule(ranges=["06:00-20:00"]))
    eng = RuleEngine([rule], grace_s=1)
    trs, t = run(eng, MONDAY_10AM, 59, [], step=1.0)
    assert trs == []
    trs, t = run(eng, t, 3, [], step=1.0)
    assert [x.state for x in trs] == ["start"] and trs[0].detail == "persons=0"
    trs, t = run(eng, t, 3, [person(1)], step=1.0)
    assert [x.state for x in trs] == ["end"]
    night = datetime(2026, 11, 30, 22, 0, tzinfo=SH).timestamp()
    assert run(RuleEngine([rule]), night, 120, [], step=1.0)[0] == []


def test_animal_rule_and_best_frame() -> None:
    """An animal gives an event whose snapshot frame is the one with the highest score."""
    eng = RuleEngine([AnimalRule(type="animal", persistence_s=1, min_score=0.3)])
    out = []
    for i, s in enumerate([0.4, 0.9, 0.5, 0.5, 0.5, 0.5, 0.5]):
        cat = Track(7, "cat", Box(10, 10, 110, 110), 0, 0, scores=[s])
        out += eng.step(Observation(MONDAY_10AM + i * 0.2, [cat], W, H, frame=f"f{i}"))
    assert [x.state for x in out] == ["start"]
    assert out[0].frame == "f1" and out[0].score == 0.9 and out[0].detail == "cat"


def test_update_on_changed_detail_is_rate_limited() -> None:
    """Crowding count changes give an update, at most one per update_min_s."""
    eng = RuleEngine([CrowdingRule(type="crowding", max_persons=1, persistence_s=0)], update_min_s=5)
    two = [person(i, x=10 + 150 * i) for i in range(2)]
    three = [person(i, x=10 + 150 * i) for i in range(3)]
    a, t = run(eng, MONDAY_10AM, 1, two)
    b, t = run(eng, t, 2, three)
    c, t = run(eng, t, 4, three)
    assert [x.state for x in a] == ["start"] and b == []
    assert [x.state for x in c] == ["update"] and c[0].detail == "persons=3"


def test_camera_offline_after_delay_and_end_when_back() -> None:
    """camera_offline starts after offline_after_s and ends when the camera is online again."""
    mon = OfflineMonitor(offline_after_s=30)
    assert mon.step(False, 1000.0, 1010.0) is None
    start = mon.step(False, 1000.0, 1031.0)
    assert start is not None and start.state == "start" and start.started_at == 1000.0
    assert mon.step(False, 1000.0, 1040.0) is None
    end = mon.step(True, None, 1050.0)
    assert end is not None and end.state == "end" and end.ended_at == 1050.0
    assert mon.step(True, None, 1060.0) is None
