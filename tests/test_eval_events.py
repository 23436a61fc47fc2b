"""scripts/eval_events.py's scoring: interval matching into event recall, duplicates and false alerts per hour.

Pure functions on hand-made intervals and alerts, and the real tracker and rules on made-up
detections; nothing here reads the footage in ../shared (the script does, the tests do not).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from edge_agent.analysis.types import Box, Detection

pytestmark = pytest.mark.unit

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "eval_events.py"
_spec = importlib.util.spec_from_file_location("eval_events", SCRIPT)
ev = importlib.util.module_from_spec(_spec)
sys.modules["eval_events"] = ev  # its dataclasses look their module up while being defined
_spec.loader.exec_module(ev)


def alert(start: float, end: float, fired: float | None = None):
    return ev.RuleAlert(start, end, start + 3.0 if fired is None else fired)


def test_every_interval_with_an_alert_starting_in_it_is_found() -> None:
    """Two of three intervals have an alert starting inside (one within the slack before): recall 2/3."""
    intervals = [(10.0, 20.0), (30.0, 40.0), (50.0, 60.0)]
    alerts = [alert(10.5, 22.0, 13.5), alert(29.2, 41.0, 32.2)]
    s = ev.score_events(intervals, alerts, 3600.0, slack_s=1.0)
    assert (s.events, s.found, s.duplicates, s.false_alerts) == (3, 2, 0, 0)
    assert s.recall == pytest.approx(2 / 3)
    assert s.delays == [pytest.approx(3.5), pytest.approx(2.2)]


def test_an_alert_starting_too_early_or_after_the_end_does_not_find_the_event() -> None:
    """An alert starting 2 s before (slack 1 s) or after the interval's end finds nothing; far away it is false."""
    s = ev.score_events([(10.0, 20.0)], [alert(8.0, 9.5), alert(20.5, 21.0), alert(25.0, 26.0)], 100.0, slack_s=1.0)
    assert s.found == 0 and s.recall == 0.0
    assert s.false_alerts == 1  # the first two touch the interval grown by the slack (9-21): late or early, not false


def test_a_split_event_counts_once_and_its_extra_alerts_as_duplicates() -> None:
    """Three alerts starting inside one interval: found once, two duplicates, no false alert."""
    s = ev.score_events([(0.0, 100.0)], [alert(1, 10), alert(20, 30), alert(50, 60)], 100.0)
    assert (s.found, s.duplicates, s.false_alerts) == (1, 2, 0)


@pytest.mark.parametrize(("alerts", "seconds", "per_hour"), [
    ([], 3600.0, 0.0),
    ([(500.0, 510.0)], 1800.0, 2.0),
    ([(500.0, 510.0), (900.0, 905.0), (1000.0, 1001.0)], 7200.0, 1.5),
])
def test_false_alerts_per_camera_hour(alerts: list, seconds: float, per_hour: float) -> None:
    """Alerts away from every interval count as false, divided by the footage's hours."""
    s = ev.score_events([(0.0, 60.0)], [alert(a, b) for a, b in alerts], seconds)
    assert s.false_per_hour == pytest.approx(per_hour)
    assert ev.EventScore().false_per_hour is None and ev.EventScore().recall is None


def test_scores_add_up_over_segments() -> None:
    """Segment scores sum: events, found, false alerts and seconds, so the per-hour rate is pooled."""
    a = ev.score_events([(0, 10)], [alert(1, 5)], 1800.0)
    b = ev.score_events([(0, 10)], [alert(100, 105)], 1800.0)
    total = a + b
    assert (total.events, total.found, total.false_alerts, total.seconds) == (2, 1, 1, 3600.0)
    assert total.false_per_hour == 1.0 and total.recall == 0.5


def test_intervals_are_cut_to_their_segment() -> None:
    """An interval crossing the segment edge is cut; one outside it is dropped."""
    assert ev.clip_intervals([(0, 10), (65, 80), (90, 95)], 72.0, 139.4) == [(72.0, 80), (90, 95)]
    assert ev.clip_intervals([(0, 10)], 10.0, 20.0) == []


def test_quiet_loops_vary_direction_and_mirroring() -> None:
    """Each loop plays every stretch once, rotated, alternating direction; odd loops are mirrored."""
    first, second = ev.quiet_order(3, 0), ev.quiet_order(3, 1)
    assert sorted(s for s, _, _ in first) == sorted(s for s, _, _ in second) == [0, 1, 2]
    assert [b for _, b, _ in first] == [False, True, False] and not any(m for _, _, m in first)
    assert all(m for _, _, m in second) and first != second


def test_the_rule_chain_raises_one_alert_per_visit() -> None:
    """Real tracker and rules: a person seen 0-10 s and 30-40 s gives two alerts, fired after persistence."""
    setup = ev.Setup(None, 5.0, persistence_s=3.0, min_score=0.4, cooldown_s=0.0, slack_s=1.0)
    person = [Detection("person", 0.8, Box(100, 50, 200, 300))]
    steps = [(i * 0.2, person if (i * 0.2 < 10 or 30 <= i * 0.2 < 40) else [], (416, 234)) for i in range(300)]
    alerts = ev.alerts_of(steps, setup, None, 60.0)
    assert [(a.started_at, round(a.fired_at, 1)) for a in alerts] == [(0.0, 3.0), (30.0, 33.0)]
    s = ev.score_events([(0.0, 10.0), (30.0, 40.0)], alerts, 60.0)
    assert (s.found, s.false_alerts, s.duplicates) == (2, 0, 0)
    weak = [(t, [Detection("person", 0.3, d[0].box)] if d else [], size) for t, d, size in steps]
    assert ev.alerts_of(weak, setup, None, 60.0) == []  # below the rule's min_score


def test_labels_are_split_and_attributed() -> None:
    """The labels file names each clip's licence, puts every segment in tune or test, and has test events."""
    labels = json.loads(ev.LABELS.read_text(encoding="utf-8"))
    assert all(c["file"] in labels["attribution"] for c in labels["clips"])
    segments = [s for c in labels["clips"] for s in c["segments"]]
    assert {s["split"] for s in segments} == {"tune", "test"}
    for clip in labels["clips"]:
        for a, b in clip["intervals"] + clip["quiet"]:
            assert a < b
        for q in clip["quiet"]:  # quiet stretches never touch a labelled interval
            assert all(q[1] <= a or q[0] >= b for a, b in clip["intervals"])
