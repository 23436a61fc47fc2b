"""Violation rules: tracks in, start/update/end transitions out (pure; time is injected).

Zones are normalised polygons; a box is in a zone when its bottom-centre (where a person stands)
is inside. A condition must hold for `persistence_s` (gaps up to `grace_s` are bridged, so one
missed detection does not restart the clock) before a `start`; it ends after `grace_s` without
it; a new event of the same rule starts no earlier than `cooldown_s` after the previous one ended.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal
from zoneinfo import ZoneInfo

import numpy as np

from edge_agent.analysis.motion import points_in_polygon
from edge_agent.analysis.tracker import median_score
from edge_agent.analysis.types import Box, Track
from edge_agent.config import (
    REQUIRED_LABELS,
    AnimalRule,
    CrowdingRule,
    IntrusionRule,
    ModelRule,
    PhoneUseRule,
    RuleBase,
    StationUnattendedRule,
)
from edge_agent.rules.schedule import local_time, schedule_active

PERSON = "person"
PHONE = "cell phone"


@dataclass(frozen=True, slots=True)
class Mark:
    """A box to draw and report: label, median score, box in detection-frame pixels, track id."""

    label: str
    score: float
    box: Box
    track_id: int | None = None


@dataclass(frozen=True, slots=True)
class Observation:
    now: float  # epoch seconds
    tracks: Sequence[Track]
    width: int  # detection frame size: the pixel space of track boxes
    height: int
    frame: object = None  # opaque handle of the frame, kept for the snapshot of the best moment


@dataclass(frozen=True, slots=True)
class Finding:
    hit: bool
    score: float = 0.0
    marks: tuple[Mark, ...] = ()
    detail: str = ""


@dataclass(slots=True)
class Transition:
    rule: str  # violation type
    state: Literal["start", "update", "end"]
    started_at: float
    ended_at: float | None
    score: float
    marks: tuple[Mark, ...]
    detail: str
    level: str
    zone: list[tuple[float, float]] | None
    frame: object = None  # frame to snapshot (None: keep the previous snapshot)
    frame_size: tuple[int, int] | None = None  # size of the detection frame the marks belong to
    key: str = ""  # which rule of the camera (an event is open per key)


def in_zone(box: Box, zone: Sequence[tuple[float, float]] | None, width: int, height: int) -> bool:
    """Bottom-centre of the box inside the normalised polygon (the whole frame when no zone)."""
    if not zone:
        return True
    x = np.array([(box.x1 + box.x2) / 2.0 / width])
    y = np.array([min(box.y2 / height, 0.999999)])
    return bool(points_in_polygon(x, y, zone)[0])


def qualifies(track: Track, rule: RuleBase, width: int, height: int, *, min_score: float | None = None,
              min_size: float | None = None) -> bool:
    """Track passes the rule's median-score, size and zone filters."""
    if median_score(track) < (rule.min_score if min_score is None else min_score):
        return False
    if track.box.area / float(width * height) < (rule.min_size if min_size is None else min_size):
        return False
    return in_zone(track.box, rule.zone, width, height)


def _mark(t: Track) -> Mark:
    return Mark(t.label, round(median_score(t), 3), t.box, t.track_id)


def near(phone: Box, person: Box, margin: float = 0.15) -> bool:
    """Phone centre inside the person box grown by `margin` of its size on each side."""
    cx, cy = phone.center
    mx, my = person.width * margin, person.height * margin
    return person.x1 - mx <= cx <= person.x2 + mx and person.y1 - my <= cy <= person.y2 + my


def evaluate(rule: RuleBase, obs: Observation, tz: ZoneInfo, *, phone_min_score: float | None = None) -> Finding:
    """What one rule sees in one observation."""
    w, h = obs.width, obs.height
    scheduled = schedule_active(rule.schedule, local_time(obs.now, tz)) if rule.schedule else True
    if isinstance(rule, IntrusionRule):
        # the schedule is the working hours; without one every hour is off-hours
        off_hours = not schedule_active(rule.schedule, local_time(obs.now, tz)) if rule.schedule else True
        persons = [t for t in obs.tracks if t.label == PERSON and qualifies(t, rule, w, h)]
        if not off_hours or not persons:
            return Finding(False)
        return Finding(True, max(median_score(t) for t in persons), tuple(map(_mark, persons)),
                       f"persons={len(persons)}")
    if not scheduled:
        return Finding(False)
    if isinstance(rule, PhoneUseRule):
        persons = [t for t in obs.tracks if t.label == PERSON and qualifies(t, rule, w, h)]
        phone_score = rule.min_score if phone_min_score is None else phone_min_score
        phones = [t for t in obs.tracks if t.label == PHONE and median_score(t) >= phone_score]
        marks: list[Mark] = []
        best = 0.0
        for p in persons:
            held = [ph for ph in phones if near(ph.box, p.box)]
            if held:
                marks.append(_mark(p))
                marks.extend(_mark(ph) for ph in held)
                best = max(best, min(median_score(p), max(median_score(ph) for ph in held)))
        return Finding(bool(marks), best, tuple(marks), f"persons_with_phone={sum(m.label == PERSON for m in marks)}")
    if isinstance(rule, AnimalRule):
        animals = [t for t in obs.tracks if t.label in rule.labels and qualifies(t, rule, w, h)]
        if not animals:
            return Finding(False)
        return Finding(True, max(median_score(t) for t in animals), tuple(map(_mark, animals)),
                       ",".join(sorted({t.label for t in animals})))
    if isinstance(rule, StationUnattendedRule):
        persons = [t for t in obs.tracks if t.label == PERSON and qualifies(t, rule, w, h)]
        return Finding(not persons, 0.0, (), "persons=0" if not persons else "")
    if isinstance(rule, CrowdingRule):
        persons = [t for t in obs.tracks if t.label == PERSON and qualifies(t, rule, w, h)]
        if len(persons) <= rule.max_persons:
            return Finding(False)
        return Finding(True, statistics.fmean(median_score(t) for t in persons), tuple(map(_mark, persons)),
                       f"persons={len(persons)}")
    if isinstance(rule, ModelRule):  # no_chef_hat, no_mask, ...: tracks of the label the type needs
        found = [t for t in obs.tracks if t.label in REQUIRED_LABELS[rule.type] and qualifies(t, rule, w, h)]
        if not found:
            return Finding(False)
        return Finding(True, max(median_score(t) for t in found), tuple(map(_mark, found)), f"{rule.type}={len(found)}")
    return Finding(False)


@dataclass(slots=True)
class _Best:
    score: float
    marks: tuple[Mark, ...]
    frame: object
    size: tuple[int, int]


@dataclass
class RuleState:
    """Persistence, grace, cooldown and the start/update/end lifecycle of one rule."""

    rule: RuleBase
    grace_s: float = 2.0
    update_min_s: float = 10.0
    pending_since: float | None = None
    last_hit: float | None = None
    active: bool = False
    cooldown_until: float = float("-inf")
    best: _Best | None = None
    sent_score: float = 0.0
    detail: str = ""
    last_update: float = 0.0

    def step(self, obs: Observation, f: Finding) -> Transition | None:
        now = obs.now
        if f.hit:
            if self.pending_since is None or (self.last_hit is not None and now - self.last_hit > self.grace_s):
                self.pending_since, self.best = now, None
            self.last_hit = now
            if self.best is None or f.score >= self.best.score:
                self.best = _Best(f.score, f.marks, obs.frame, (obs.width, obs.height))
            if not self.active:
                if now - self.pending_since >= self.rule.persistence_s and now >= self.cooldown_until:
                    self.active, self.detail, self.last_update = True, f.detail, now
                    self.sent_score = self.best.score
                    return self._transition("start", self.best.frame)
                return None
            if f.detail != self.detail and now - self.last_update >= self.update_min_s:
                self.detail, self.last_update = f.detail, now
                return self._transition("update", self._better_frame())
            return None
        if self.pending_since is not None and (self.last_hit is None or now - self.last_hit > self.grace_s):
            was_active = self.active
            end = self.last_hit if self.last_hit is not None else now
            frame = self._better_frame() if was_active else None
            tr = self._transition("end", frame, ended_at=end) if was_active else None
            if was_active:
                self.cooldown_until = end + self.rule.cooldown_s
            self.pending_since, self.active, self.best = None, False, None
            return tr
        return None

    def _better_frame(self) -> object:
        """The best frame if it beats the one already sent, else None (keep the sent snapshot)."""
        if self.best is not None and self.best.score > self.sent_score + 0.05:
            self.sent_score = self.best.score
            return self.best.frame
        return None

    def _transition(self, state: Literal["start", "update", "end"], frame: object,
                    ended_at: float | None = None) -> Transition:
        best = self.best
        assert best is not None and self.pending_since is not None
        return Transition(self.rule.type, state, self.pending_since, ended_at, best.score, best.marks,
                          self.detail, self.rule.level, list(self.rule.zone) if self.rule.zone else None,
                          frame, best.size)


class RuleEngine:
    """All rules of one camera."""

    def __init__(self, rules: Sequence[RuleBase], *, tz: str = "Asia/Shanghai", grace_s: float = 2.0,
                 update_min_s: float = 10.0, phone_min_score: float | None = None) -> None:
        self.tz = ZoneInfo(tz)
        self.phone_min_score = phone_min_score
        self.states = [RuleState(r, grace_s=grace_s, update_min_s=update_min_s) for r in rules]

    def step(self, obs: Observation) -> list[Transition]:
        out = []
        for i, st in enumerate(self.states):
            tr = st.step(obs, evaluate(st.rule, obs, self.tz, phone_min_score=self.phone_min_score))
            if tr is not None:
                tr.key = f"rule{i}"
                out.append(tr)
        return out


@dataclass
class OfflineMonitor:
    """camera_offline: `start` once a camera has been offline `offline_after_s`, `end` when it is back."""

    offline_after_s: float
    active_since: float | None = None

    def step(self, online: bool, offline_since: float | None, now: float) -> Transition | None:
        if not online and offline_since is not None and self.active_since is None \
                and now - offline_since >= self.offline_after_s:
            self.active_since = offline_since
            return Transition("camera_offline", "start", offline_since, None, 0.0, (),
                              f"offline_for={now - offline_since:.0f}s", "critical", None, key="offline")
        if online and self.active_since is not None:
            started, self.active_since = self.active_since, None
            return Transition("camera_offline", "end", started, now, 0.0, (), "back online", "critical", None, key="offline")
        return None
