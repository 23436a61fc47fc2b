"""One camera's collector: turns what the pipeline saw into kept examples.

The inference worker calls, for each detected frame, `detected` (the detections the tracker got and
the low-confidence ones of `tap.take_below`) and then `observed` (the rules' observation and the
near misses of `picks.NearMissWatch`); the event emitter calls `alerted` with each alert that has a
frame, whose clean picture is held until an operator marks it (`ExampleStore.mark`). Boxes are kept
in the pixels of the picture written (the main stream's when there is one), heads obscured first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import structlog
from PIL import Image

from edge_agent.analysis.types import Detection
from edge_agent.collect.config import CameraCollectConfig
from edge_agent.collect.picks import NearMiss, RateLimit, low_score_persons
from edge_agent.collect.privacy import obscure_people
from edge_agent.collect.store import Example, ExampleStore, LabelledBox, scale_boxes
from edge_agent.rules.engine import Mark, Observation

log = structlog.get_logger(__name__)


def picture_of(handle: object) -> Image.Image | None:
    """The RGB picture of a frame handle: a clips.Moment is decoded, an av.VideoFrame converted."""
    picture = getattr(handle, "picture", None)
    frame = picture() if callable(picture) else handle
    if frame is None:
        return None
    if isinstance(frame, Image.Image):
        return frame.convert("RGB")
    if isinstance(frame, np.ndarray):
        return Image.fromarray(frame, "RGB")
    to_image = getattr(frame, "to_image", None)  # av.VideoFrame: converted by libswscale
    return to_image().convert("RGB") if callable(to_image) else None


def _boxes(items: Sequence[Detection | Mark]) -> list[LabelledBox]:
    return [LabelledBox(d.label, round(float(d.score), 3), (d.box.x1, d.box.y1, d.box.x2, d.box.y2)) for d in items]


class CameraCollector:
    """Hard examples of one camera into the shared store; `now` is the frame's wall time."""

    def __init__(self, camera_id: str, cfg: CameraCollectConfig, store: ExampleStore, *,
                 picture: Callable[[object], Image.Image | None] = picture_of) -> None:
        self.camera_id = camera_id
        self.cfg = cfg
        self.store = store
        self.picture = picture
        self.limit = RateLimit(cfg.min_interval_s)
        self._detected: tuple[list[Detection], list[Detection]] | None = None
        self.log = log.bind(camera=camera_id)

    def detected(self, kept: Sequence[Detection], below: Sequence[Detection]) -> None:
        """The detections of the frame about to be observed (kept: what the tracker got)."""
        self._detected = (list(kept), list(below))

    def observed(self, obs: Observation, near_misses: Sequence[NearMiss]) -> list[Example]:
        """Keep this frame if it is a hard example; returns what was kept."""
        detected, self._detected = self._detected, None
        kept: list[Example] = []
        size = (obs.width, obs.height)
        if detected is not None and self.cfg.low_score_persons:
            unsure = low_score_persons(detected[1], self.cfg.person_score_min)
            if unsure and self.limit.allow("low_score_person", obs.now):
                scores = ",".join(f"{d.score:.2f}" for d in unsure)
                ex = self._keep("low_score_person", obs.frame, size, [*detected[0], *unsure], obs.now,
                                f"person scores {scores}")
                kept += [ex] if ex else []
        if self.cfg.near_misses:
            for miss in near_misses:
                if self.limit.allow("near_miss", obs.now):
                    ex = self._keep("near_miss", miss.frame, miss.size, miss.marks, obs.now, f"{miss.kind}: {miss.detail}")
                    kept += [ex] if ex else []
        return kept

    def alerted(self, alert_id: str, handle: object, marks: Sequence[Mark], size: tuple[int, int] | None,
                t: float, detail: str) -> None:
        """Hold the clean frame of an alert, in case an operator marks it as a false alarm."""
        if not self.cfg.false_alarms or handle is None:
            return
        prepared = self._prepare(handle, size, marks)
        if prepared is None:
            return
        image, boxes = prepared
        self.store.hold_alert(alert_id, image, self._example("false_alarm", image, boxes, t, detail))

    # --- helpers ---------------------------------------------------------------------------
    def _prepare(self, handle: object, size: tuple[int, int] | None,
                 items: Sequence[Detection | Mark]) -> tuple[Image.Image, tuple[LabelledBox, ...]] | None:
        try:
            image = self.picture(handle)
        except Exception:  # noqa: BLE001 - a frame that cannot be decoded is no example; detection goes on
            self.log.warning("collect_picture_failed", exc_info=True)
            return None
        if image is None:
            return None
        boxes = scale_boxes(_boxes(items), size or image.size, image.size)
        return obscure_people(image, boxes, self.cfg.blur), boxes

    def _example(self, reason: str, image: Image.Image, boxes: tuple[LabelledBox, ...], t: float,
                 detail: str) -> Example:
        return Example("", self.camera_id, reason, t, image.width, image.height, boxes, detail[:300],
                       self.cfg.consent, self.cfg.blur)

    def _keep(self, reason: str, handle: object, size: tuple[int, int], items: Sequence[Detection | Mark],
              t: float, detail: str) -> Example | None:
        prepared = self._prepare(handle, size, items)
        if prepared is None:
            return None
        image, boxes = prepared
        try:
            ex = self.store.keep(image, self._example(reason, image, boxes, t, detail))
        except OSError as err:  # disk full or gone: the collector pauses this example, the pipeline goes on
            self.log.warning("collect_write_failed", reason=reason, error=str(err))
            return None
        self.log.info("collect_kept", reason=reason, id=ex.id, boxes=len(boxes), detail=detail[:120])
        return ex
