"""Which frames are hard examples (pure; time is injected).

- a low-confidence person: a detection the detector returned below its person threshold but at or
  above the camera's `person_score_min` (`low_score_persons`; `tap.LowScoreTap` makes the detector
  return them);
- a near miss: a rule whose condition held for at least `near_miss_persistence` of its
  `persistence_s` and then vanished before the alert ("persistence"), or whose condition held only
  with the rule's `min_score` lowered by `near_miss_score_margin` ("score"). `NearMissWatch` reads
  the rule engine's state around each step, so the rules themselves are unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from edge_agent.analysis.types import Detection
from edge_agent.rules.engine import Mark, Observation, RuleEngine, evaluate

PERSON = "person"


def low_score_persons(below: Sequence[Detection], floor: float, label: str = PERSON) -> list[Detection]:
    """The detections of `label` scored at least `floor` among those below the model's threshold."""
    return [d for d in below if d.label == label and d.score >= floor]


class RateLimit:
    """At most one example of each kind per `interval_s` (a scene at 5 fps is not 5 examples a second)."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.last: dict[str, float] = {}

    def allow(self, kind: str, now: float) -> bool:
        if now - self.last.get(kind, float("-inf")) < self.interval_s:
            return False
        self.last[kind] = now
        return True


@dataclass(frozen=True, slots=True)
class NearMiss:
    rule: str  # violation type
    kind: str  # "persistence" or "score"
    marks: tuple[Mark, ...]
    frame: object  # the frame handle of the rule's best moment (persistence) or of this step (score)
    size: tuple[int, int]  # the detection frame size the marks belong to
    detail: str


class NearMissWatch:
    """Near misses of one camera's rules, judged around `RuleEngine.step`."""

    def __init__(self, engine: RuleEngine, *, persistence_share: float, score_margin: float) -> None:
        self.engine = engine
        self.persistence_share = persistence_share
        self.score_margin = score_margin
        # a lower min_score can only make a rule fire more, except station_unattended (fewer persons -> absent)
        self.relaxed = [st.rule.model_copy(update={"min_score": max(0.0, st.rule.min_score - score_margin)})
                        if st.rule.type != "station_unattended" and score_margin > 0 else None
                        for st in engine.states]

    def step(self, obs: Observation) -> tuple[list, list[NearMiss]]:
        """Run the engine on `obs`; returns its transitions and the near misses this step showed."""
        before = [(st.pending_since, st.last_hit, st.active, st.best) for st in self.engine.states]
        transitions = self.engine.step(obs)
        misses = []
        for st, relaxed, (pending, last_hit, active, best) in zip(self.engine.states, self.relaxed, before, strict=True):
            if pending is not None and not active and st.pending_since != pending and best is not None:
                held = (last_hit if last_hit is not None else pending) - pending
                need = st.rule.persistence_s
                if need > 0 and self.persistence_share * need <= held < need:
                    misses.append(NearMiss(st.rule.type, "persistence", best.marks, best.frame, best.size,
                                           f"{st.rule.type}: held {held:.1f}s of {need:g}s"))
            if relaxed is None or st.active or st.pending_since is not None:
                continue  # the condition holds as configured: not a near miss by score
            found = evaluate(relaxed, obs, self.engine.tz, phone_min_score=self.engine.phone_min_score)
            if found.hit:
                misses.append(NearMiss(st.rule.type, "score", found.marks, obs.frame, (obs.width, obs.height),
                                       f"{st.rule.type}: fires at min_score {relaxed.min_score:.2f}, "
                                       f"not at {st.rule.min_score:.2f}"))
        return transitions, misses
