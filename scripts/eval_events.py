#!/usr/bin/env python3
"""Event recall and false alerts per camera-hour of the person-in-zone rule, on labelled video.

    python scripts/eval_events.py                         # the test split (the figures reported)
    python scripts/eval_events.py --split tune --sweep    # choose persistence_s / min_score on the tune split
    python scripts/eval_events.py --model models/nanodet-coco-fp32.tflite --quiet-hours 2

Labels: scripts/data/event-labels.json (intervals with a person in a clip's zone, tune/test
segments, quiet stretches; files relative to --data, default ../shared/data). What runs is the
agent's own chain on decoded frames: the sampler (by pts, `--sample-fps`), one area scaling to
the letterboxed model input (`FrameScaler`), the real detector of the manifest, `IouTracker` and
`RuleEngine` with an `intrusion_off_hours` rule without schedule (a person in the zone is a
violation at every hour) and the pipeline's default tracking and grace constants. The motion gate
is off: every sampled frame is detected.

Scoring (pure, tests/test_eval_events.py): a labelled interval is found when an alert starts within
[start - slack, end]; more alerts starting in it are duplicates (the event was split); an alert
overlapping no interval (grown by the slack) is a false alert. Quiet footage for false alerts per
camera-hour is made from the clips' quiet stretches of the same split: played forwards and
backwards, plain and mirrored, looped up to --quiet-hours of camera time. Each distinct frame is
detected once and its detections replayed (the detector is deterministic); tracker and rules run
on every sampled frame of the whole timeline.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge_agent.analysis.types import Detection  # noqa: E402

LABELS = Path(__file__).with_name("data") / "event-labels.json"
DATA = REPO.parent / "shared" / "data"

Interval = tuple[float, float]


# --- scoring (pure) ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RuleAlert:
    started_at: float  # when the condition began (the alert's started_at)
    ended_at: float  # when it ended (the segment's end for an alert still open)
    fired_at: float  # when the rule raised it (persistence reached)


@dataclass
class EventScore:
    events: int = 0
    found: int = 0
    duplicates: int = 0
    false_alerts: int = 0
    seconds: float = 0.0
    delays: list[float] = field(default_factory=list)  # fired_at - interval start, per found event

    @property
    def recall(self) -> float | None:
        return self.found / self.events if self.events else None

    @property
    def false_per_hour(self) -> float | None:
        return self.false_alerts / (self.seconds / 3600.0) if self.seconds > 0 else None

    def __add__(self, other: EventScore) -> EventScore:
        return EventScore(self.events + other.events, self.found + other.found, self.duplicates + other.duplicates,
                          self.false_alerts + other.false_alerts, self.seconds + other.seconds,
                          self.delays + other.delays)


def clip_intervals(intervals: Iterable[Interval], lo: float, hi: float) -> list[Interval]:
    """The intervals inside the segment [lo, hi), cut to it (empty ones dropped)."""
    return [(max(a, lo), min(b, hi)) for a, b in intervals if min(b, hi) > max(a, lo)]


def score_events(intervals: Sequence[Interval], alerts: Sequence[RuleAlert], seconds: float, *,
                 slack_s: float = 1.0) -> EventScore:
    """Events found (an alert starts in [start - slack, end]), duplicates and false alerts."""
    out = EventScore(events=len(intervals), seconds=seconds)
    for a, b in intervals:
        starting = sorted((al for al in alerts if a - slack_s <= al.started_at <= b), key=lambda al: al.started_at)
        if starting:
            out.found += 1
            out.duplicates += len(starting) - 1
            out.delays.append(starting[0].fired_at - a)
    out.false_alerts = sum(1 for al in alerts
                           if not any(al.started_at <= b + slack_s and al.ended_at >= a - slack_s for a, b in intervals))
    return out


def quiet_order(stretches: int, loop: int) -> list[tuple[int, bool, bool]]:
    """(stretch, backwards, mirrored) in the order loop `loop` plays them: rotated, alternating direction."""
    return [((s + loop) % stretches, (s + loop) % 2 == 1, loop % 2 == 1) for s in range(stretches)]


# --- the agent's chain on decoded frames ------------------------------------------------------
@dataclass
class Setup:
    detector: object
    sample_fps: float
    persistence_s: float
    min_score: float
    cooldown_s: float
    slack_s: float


def decode(path: Path, lo: float, hi: float, scaler, *, sample_fps: float | None) -> list[tuple[float, object]]:
    """(media time, RGB array at the detector's fit size) of the frames in [lo, hi), sampled like the agent."""
    import av

    from edge_agent.capture.sampler import Sampler

    sampler = Sampler(sample_fps) if sample_fps else None
    out = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            t = float(frame.time or 0.0)
            if t >= hi:
                break
            if t < lo or (sampler is not None and not sampler.due(t)):
                continue
            out.append((t, scaler.rgb(frame)))
    return out


def alerts_of(steps: Iterable[tuple[float, Sequence[Detection], tuple[int, int]]], setup: Setup,
              zone: list | None, end: float) -> list[RuleAlert]:
    """Run tracker and rules over (t, detections, frame size) steps; the alerts they raise."""
    from edge_agent.analysis.tracker import IouTracker
    from edge_agent.app.agent import PipelineTuning
    from edge_agent.config import IntrusionRule
    from edge_agent.rules.engine import Observation, RuleEngine

    tu = PipelineTuning()
    tracker = IouTracker(iou_threshold=tu.track_iou, max_misses=tu.track_max_misses, max_age_s=tu.track_max_age_s,
                         history=tu.track_history)
    rule = IntrusionRule(type="intrusion_off_hours", zone=zone, persistence_s=setup.persistence_s,
                         min_score=setup.min_score, cooldown_s=setup.cooldown_s)
    engine = RuleEngine([rule], tz="UTC", grace_s=tu.grace_s, update_min_s=tu.update_min_s)
    out, open_ = [], None
    for t, dets, (w, h) in steps:
        for tr in engine.step(Observation(t, tracker.update(dets, t), w, h)):
            if tr.state == "start":
                open_ = (tr.started_at, t)
            elif tr.state == "end" and open_ is not None:
                out.append(RuleAlert(open_[0], tr.ended_at or t, open_[1]))
                open_ = None
    if open_ is not None:
        out.append(RuleAlert(open_[0], end, open_[1]))
    return out


class Evaluation:
    """Decoded, detected frames of the labelled clips (cached), scored for one rule setup at a time."""

    def __init__(self, labels: dict, data: Path, detector, sample_fps: float) -> None:
        from edge_agent.capture.sampler import FrameScaler

        self.labels, self.data, self.detector = labels, data, detector
        self.scaler = FrameScaler(None, 160, detect_fit=detector.input_size)
        self.sample_fps = sample_fps
        self._segments: dict[tuple[str, float], list] = {}
        self._quiet: dict[str, list] = {}
        self.detect_ms: list[float] = []

    def _detect(self, rgb) -> list[Detection]:
        t0 = time.perf_counter()
        found = [d for d in self.detector.detect(rgb) if d.label == "person"]
        self.detect_ms.append((time.perf_counter() - t0) * 1000)
        return found

    def segment_steps(self, clip: dict, seg: dict) -> list:
        key = (clip["name"], seg["from"])
        if key not in self._segments:
            frames = decode(self.data / clip["file"], seg["from"], seg["to"], self.scaler, sample_fps=self.sample_fps)
            steps = [(t, self._detect(rgb), (rgb.shape[1], rgb.shape[0])) for t, rgb in frames]
            length, looped = seg["to"] - seg["from"], list(steps)
            while seg.get("loop_to") and looped[-1][0] + length < seg["from"] + seg["loop_to"]:  # a GIF plays in a loop
                looped += [(t + len(looped) // len(steps) * length, d, s) for t, d, s in steps]
            self._segments[key] = [st for st in looped if st[0] < seg["from"] + seg.get("loop_to", length)]
        return self._segments[key]

    def quiet_stretches(self, clip: dict, split: str) -> list[list]:
        """Per quiet stretch of `split`: every source frame as (t, dets plain, dets mirrored, size)."""
        import numpy as np

        if clip["name"] + split not in self._quiet:
            stretches = []
            for a, b in clip["quiet"]:
                if not any(s["split"] == split and s["from"] <= a and b <= s["to"] for s in clip["segments"]):
                    continue
                frames = decode(self.data / clip["file"], a, b, self.scaler, sample_fps=None)
                stretches.append([(t, self._detect(rgb), self._detect(np.ascontiguousarray(rgb[:, ::-1])),
                                   (rgb.shape[1], rgb.shape[0])) for t, rgb in frames])
            self._quiet[clip["name"] + split] = [s for s in stretches if s]
        return self._quiet[clip["name"] + split]

    def labelled(self, split: str, setup: Setup) -> dict[str, EventScore]:
        scores = {}
        for clip in self.labels["clips"]:
            for seg in clip["segments"]:
                if seg["split"] != split:
                    continue
                steps = self.segment_steps(clip, seg)
                length = seg.get("loop_to") or seg["to"] - seg["from"]
                alerts = alerts_of(((t - seg["from"], d, s) for t, d, s in steps), setup, clip["zone"], length)
                truth = [(a - seg["from"], b - seg["from"])
                         for a, b in clip_intervals(clip["intervals"], seg["from"], seg["from"] + length)]
                loop = f", looped to {length:g} s" if seg.get("loop_to") else ""
                scores[f"{clip['name']} [{seg['from']:g}-{seg['to']:g} s{loop}]"] = score_events(
                    truth, alerts, length, slack_s=setup.slack_s)
        return scores

    def quiet(self, split: str, setup: Setup, hours: float) -> tuple[EventScore, float]:
        """False alerts on the looped quiet footage; also the seconds of distinct footage it is made of."""
        from edge_agent.capture.sampler import Sampler

        stretches = [s for clip in self.labels["clips"] if clip["quiet"] for s in self.quiet_stretches(clip, split)]
        if not stretches:
            return EventScore(), 0.0
        distinct = sum(s[-1][0] - s[0][0] for s in stretches)
        period = min(b[0] - a[0] for s in stretches for a, b in zip(s, s[1:], strict=False))
        sampler = Sampler(setup.sample_fps)

        def timeline() -> Iterator[tuple[float, Sequence[Detection], tuple[int, int]]]:
            t, loop = 0.0, 0
            while t < hours * 3600:
                for index, backwards, mirrored in quiet_order(len(stretches), loop):
                    for _, plain, mirror, size in (reversed(stretches[index]) if backwards else stretches[index]):
                        t += period
                        if sampler.due(t):
                            yield t, (mirror if mirrored else plain), size
                loop += 1

        steps = list(timeline())
        end = steps[-1][0]
        return score_events([], alerts_of(steps, setup, None, end), end, slack_s=setup.slack_s), distinct


def cpu_line() -> str:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "?")
    return f"{name}, {'avx512_vnni' if 'avx512_vnni' in info else 'no avx512_vnni'}"


def _fmt(v: float | None, spec: str = ".3f") -> str:
    return "—" if v is None else format(v, spec)


def report(ev: Evaluation, split: str, setup: Setup, hours: float) -> EventScore:
    scores = ev.labelled(split, setup)
    print(f"split {split}: rule intrusion_off_hours (no schedule), persistence_s {setup.persistence_s:g}, "
          f"min_score {setup.min_score:g}, cooldown_s {setup.cooldown_s:g}; sampled at {setup.sample_fps:g} fps; "
          f"slack {setup.slack_s:g} s")
    print("segment                                   events found dup false  seconds  delay_s")
    for name, s in scores.items():
        delay = sum(s.delays) / len(s.delays) if s.delays else None
        print(f"{name:41s} {s.events:6d} {s.found:5d} {s.duplicates:3d} {s.false_alerts:5d} {s.seconds:8.1f}  {_fmt(delay, '.1f')}")
    total = sum(scores.values(), EventScore())
    quiet, distinct = ev.quiet(split, setup, hours)
    frames = [d for clip in ev.labels["clips"] if clip["quiet"] for st in ev.quiet_stretches(clip, split)
              for _, plain, mirror, _ in st for d in (plain, mirror)]
    hit = sum(1 for dets in frames if any(x.score >= setup.min_score for x in dets))
    print(f"labelled: event recall {_fmt(total.recall)} ({total.found}/{total.events}), duplicates {total.duplicates}, "
          f"false alerts {total.false_alerts} in {total.seconds:.0f} s")
    print(f"quiet: {quiet.false_alerts} false alerts in {quiet.seconds / 3600:.2f} camera-hours "
          f"(made from {distinct:.1f} s of distinct empty footage, plain and mirrored) = "
          f"{_fmt(quiet.false_per_hour, '.2f')} per camera-hour; distinct empty frames with a person "
          f"scored >= min_score: {hit} of {len(frames)}")
    both = total + quiet
    print(f"all: false alerts per camera-hour {_fmt(both.false_per_hour, '.2f')} "
          f"({both.false_alerts} in {both.seconds / 3600:.2f} h)")
    return both


def main() -> None:
    from edge_agent.analysis.detector import create_detector, default_model_path

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=Path, default=LABELS)
    parser.add_argument("--data", type=Path, default=DATA, help="folder the labels' files are relative to")
    parser.add_argument("--split", choices=("tune", "test"), default="test")
    parser.add_argument("--model", type=Path, default=default_model_path("int8"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sample-fps", type=float, default=5.0)
    parser.add_argument("--persistence", type=float, default=3.0, help="rule persistence_s (chosen on the tune split)")
    parser.add_argument("--min-score", type=float, default=0.4, help="rule min_score (chosen on the tune split)")
    parser.add_argument("--cooldown", type=float, default=0.0, help="rule cooldown_s (0: every event counts)")
    parser.add_argument("--slack", type=float, default=1.0, help="seconds an alert may start before its interval")
    parser.add_argument("--quiet-hours", type=float, default=1.0, help="camera-hours of looped quiet footage")
    parser.add_argument("--sweep", action="store_true", help="score a grid of persistence_s x min_score")
    args = parser.parse_args()
    labels = json.loads(args.labels.read_text(encoding="utf-8"))
    det = create_detector("auto", args.model, num_threads=args.threads)
    person_thr = float(det.thresholds[det.labels.index("person")])
    print(f"model {args.model.name} (person threshold {person_thr:g}), {det.backend}, {args.threads} thread; "
          f"CPU {cpu_line()}")
    ev = Evaluation(labels, args.data, det, args.sample_fps)
    t0 = time.perf_counter()
    if args.sweep:
        print("persistence_s min_score  recall  found/events  dup  false/camera-hour")
        for persistence in (0.5, 1.0, 2.0, 3.0):
            for min_score in (0.3, 0.4, 0.5):
                setup = Setup(det, args.sample_fps, persistence, min_score, args.cooldown, args.slack)
                total = sum(ev.labelled(args.split, setup).values(), EventScore())
                both = total + ev.quiet(args.split, setup, args.quiet_hours)[0]
                print(f"{persistence:13g} {min_score:9g}  {_fmt(total.recall)}  {total.found:5d}/{total.events:<6d} "
                      f"{total.duplicates:4d}  {_fmt(both.false_per_hour, '.2f')}")
    else:
        report(ev, args.split, Setup(det, args.sample_fps, args.persistence, args.min_score, args.cooldown,
                                     args.slack), args.quiet_hours)
    ms = sorted(ev.detect_ms)
    print(f"detect() median {ms[len(ms) // 2]:.1f} ms over {len(ms)} distinct frames; "
          f"evaluation took {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
