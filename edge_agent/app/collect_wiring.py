"""The frame collector wired into a running Agent, without changing the pipeline's own code.

For each camera with `collect.enabled`: the inference workers' detectors are wrapped in
`LowScoreTap` (they also return persons down to the lowest `person_score_min`, kept apart from what
the tracker sees), and the camera's tracker, rule engine and event emitter in thin wrappers that
hand the collector what they see. `collect_mark` is the `cmd` handler by which an operator marks an
alert as a false alarm: the box then keeps that alert's clean frame as an example.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog

from bk_contract import Command
from edge_agent.analysis.types import Detection, Track
from edge_agent.app.commands import CommandFailed
from edge_agent.collect.camera import CameraCollector
from edge_agent.collect.picks import NearMissWatch
from edge_agent.collect.store import ExampleStore, NotPending
from edge_agent.collect.tap import LowScoreTap, take_below
from edge_agent.rules.engine import Observation, Transition

log = structlog.get_logger(__name__)
MB = 1 << 20


class CollectingTracker:
    """The camera's tracker; hands the collector the detections of each detected frame first."""

    def __init__(self, inner: Any, collector: CameraCollector) -> None:
        self.inner, self.collector = inner, collector

    @property
    def tracks(self) -> list[Track]:
        return self.inner.tracks

    def update(self, detections: Sequence[Detection], now: float) -> list[Track]:
        # the inference thread called detect() for this camera's frame just before: its low scores
        self.collector.detected(detections, take_below())
        return self.inner.update(detections, now)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


class CollectingRules:
    """The camera's rule engine, stepped through `NearMissWatch`; the collector judges each step."""

    def __init__(self, engine: Any, watch: NearMissWatch, collector: CameraCollector) -> None:
        self.inner, self.watch, self.collector = engine, watch, collector

    def step(self, obs: Observation) -> list[Transition]:
        transitions, misses = self.watch.step(obs)
        try:
            self.collector.observed(obs, misses)
        except Exception:  # noqa: BLE001 - collecting never costs an alert
            log.exception("collect_failed", camera=self.collector.camera_id)
        return transitions

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


class CollectingEmitter:
    """The camera's event emitter; the frame of each stored alert is held for `collect_mark`."""

    def __init__(self, inner: Any, collector: CameraCollector) -> None:
        self.inner, self.collector = inner, collector

    def emit(self, tr: Transition) -> Any:
        alert = self.inner.emit(tr)
        if alert is not None and tr.frame is not None and tr.rule != "camera_offline":
            try:
                self.collector.alerted(alert.id, tr.frame, tr.marks, tr.frame_size, tr.started_at,
                                       f"{tr.rule} {tr.detail}".strip())
            except Exception:  # noqa: BLE001
                log.exception("collect_hold_failed", camera=self.collector.camera_id, id=alert.id)
        return alert

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def store_for(agent_cfg: Any) -> ExampleStore:
    """The example store the config names (default: `collect` beside storage.path)."""
    c = agent_cfg.collect
    root = c.dir or Path(agent_cfg.storage.path).parent / "collect"
    return ExampleStore(root, quota_bytes=int(c.quota_mb * MB), pending_alerts=c.pending_alerts)


def wire_collector(agent: Any) -> ExampleStore | None:
    """Wire the collector into `agent` (after its cameras are built); None when no camera collects."""
    cams = {cid: cp for cid, cp in agent.cameras.items() if cp.worker.cam.collect.enabled}
    agent.collector = None
    if not cams:
        return None
    store = agent.collector = store_for(agent.cfg)
    floors = [cp.worker.cam.collect.person_score_min for cp in cams.values() if cp.worker.cam.collect.low_score_persons]
    if floors:
        tap = {"person": min(floors)}
        agent.detectors = [LowScoreTap(d, tap) for d in agent.detectors]
        new_detector = agent._new_detector
        agent._new_detector = lambda: LowScoreTap(new_detector(), tap)  # a restarted worker's detector too
    for cid, cp in cams.items():
        c = cp.worker.cam.collect
        collector = CameraCollector(cid, c, store)
        cp.tracker = CollectingTracker(cp.tracker, collector)
        watch = NearMissWatch(cp.rules, persistence_share=c.near_miss_persistence, score_margin=c.near_miss_score_margin)
        cp.rules = CollectingRules(cp.rules, watch, collector)
        cp.emitter = CollectingEmitter(cp.emitter, collector)
    log.info("collect_enabled", cameras=list(cams), dir=str(store.root), quota_mb=agent.cfg.collect.quota_mb,
             kept=store.counts())
    return store


def collect_mark(agent: Any, cmd: Command) -> dict[str, Any]:
    """`collect_mark` (args: alert_id): keep the frame of that alert as a false-alarm example."""
    store: ExampleStore | None = getattr(agent, "collector", None)
    if store is None:
        raise CommandFailed("the frame collector is off on this box (cameras[].collect.enabled)")
    alert_id = str(cmd.args.get("alert_id", ""))
    if not alert_id:
        raise CommandFailed("collect_mark needs args.alert_id")
    try:
        ex = store.mark(alert_id)
    except NotPending as err:
        raise CommandFailed(f"alert {alert_id}: its frame is not kept on this box (collect is off for its camera, "
                            f"or it is older than the last collect.pending_alerts alerts)") from err
    log.info("collect_marked", alert=alert_id, id=ex.id, camera=ex.camera_id, reason=ex.reason)
    return {"example_id": ex.id, "camera_id": ex.camera_id, "reason": ex.reason, "boxes": len(ex.boxes)}
