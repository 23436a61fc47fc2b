"""`edge-agent model check MODEL [--labelled DIR]`: is a deployment's own model fit to install?

Validates the manifest beside the model (a broken one is named down to the field), loads the model
with the plugin its manifest calls for, times detect() on this CPU the way the agent does when it
chooses a variant (`variants.time_detect_ms`), and with `--labelled` measures precision and recall
per labelled class at the manifest's thresholds. Output for people in Chinese; exit 0 when the
model passes, 2 when it does not.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_agent.analysis.types import Box
from edge_agent.errors import ModelError

EXIT_OK, EXIT_FAILED = 0, 2
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# the 80 category ids of COCO 2017 in label order, for COCO files without `categories`
COCO_2017_IDS = (*range(1, 12), *range(13, 26), 27, 28, *range(31, 45), *range(46, 66), 67, 70, *range(72, 83),
                 *range(84, 91))


class LabelledSetError(ValueError):
    """The --labelled folder cannot be read as images with COCO or YOLO labels."""


@dataclass(frozen=True, slots=True)
class LabelledImage:
    path: Path
    boxes: tuple[tuple[str, Box], ...]  # (model label, box in image pixels)


def _coco_names(raw: dict, path: Path, model_labels: list[str]) -> dict[int, str]:
    if raw.get("categories"):
        return {int(c["id"]): str(c["name"]) for c in raw["categories"]}
    if len(model_labels) == len(COCO_2017_IDS):
        return dict(zip(COCO_2017_IDS, model_labels, strict=True))
    raise LabelledSetError(f"{path}: no `categories`, and the model's {len(model_labels)} labels are not COCO's 80")


def load_coco(path: Path, model_labels: list[str]) -> list[LabelledImage]:
    """The images a COCO instances file names (beside it) with their boxes; crowd boxes left out."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        names = _coco_names(raw, path, model_labels)
        boxes: dict[int, list[tuple[str, Box]]] = {}
        for a in raw["annotations"]:
            if a.get("iscrowd"):
                continue
            x, y, w, h = (float(v) for v in a["bbox"])
            boxes.setdefault(int(a["image_id"]), []).append((names[int(a["category_id"])], Box(x, y, x + w, y + h)))
        images = [(path.parent / im["file_name"], int(im["id"])) for im in raw["images"]]
    except (KeyError, TypeError, ValueError) as err:
        raise LabelledSetError(f"{path}: not a COCO instances file: {err!r}") from err
    missing = [str(p) for p, _ in images if not p.is_file()]
    if missing:
        raise LabelledSetError(f"{path}: images not found: {', '.join(missing[:3])}")
    return [LabelledImage(p, tuple(boxes.get(i, []))) for p, i in images]


def _yolo_txt(image: Path) -> Path | None:
    for cand in (image.with_suffix(".txt"),
                 Path(*["labels" if part == "images" else part for part in image.parts]).with_suffix(".txt")):
        if cand.is_file():
            return cand
    return None


def load_yolo(folder: Path, images: list[Path], model_labels: list[str]) -> list[LabelledImage]:
    """Images with YOLO txt labels (class cx cy w h, normalised) beside them or under labels/; an image
    without a txt has no objects. Class ids name `classes.txt` lines when there is one, else model labels."""
    from PIL import Image

    names_file = folder / "classes.txt"
    names = names_file.read_text(encoding="utf-8").split() if names_file.is_file() else model_labels
    found, out = 0, []
    for image in images:
        txt = _yolo_txt(image)
        boxes = []
        if txt is not None:
            found += 1
            with Image.open(image) as im:
                w, h = im.size
            for n, line in enumerate(txt.read_text(encoding="utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    cls, cx, cy, bw, bh = line.split()[:5]
                    name = names[int(cls)]
                    cx, cy, bw, bh = float(cx) * w, float(cy) * h, float(bw) * w, float(bh) * h
                except (ValueError, IndexError) as err:
                    raise LabelledSetError(f"{txt}:{n}: not `class cx cy w h` with a known class: {line!r}") from err
                boxes.append((name, Box(cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2)))
        out.append(LabelledImage(image, tuple(boxes)))
    if not found:
        raise LabelledSetError(f"{folder}: no COCO .json and no YOLO .txt labels for its images")
    return out


def load_labelled(folder: Path, model_labels: list[str]) -> list[LabelledImage]:
    """A folder of images with a COCO instances .json, or with YOLO .txt labels."""
    if not folder.is_dir():
        raise LabelledSetError(f"{folder}: not a folder")
    for js in sorted(folder.glob("*.json")):
        try:
            raw = json.loads(js.read_text(encoding="utf-8"))
        except ValueError:
            continue
        if isinstance(raw, dict) and "images" in raw and "annotations" in raw:
            return load_coco(js, model_labels)
    images = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise LabelledSetError(f"{folder}: no .jpg or .png images")
    return load_yolo(folder, images, model_labels)


def _rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def run_model_check(args: argparse.Namespace, say: Callable[..., None]) -> int:
    """The `model check` command; every problem is said in Chinese with the English detail, exit 2."""
    from edge_agent.analysis.detector import load_manifest, open_detector
    from edge_agent.analysis.detector.evaluate import evaluate_set
    from edge_agent.analysis.detector.variants import cpu_summary, time_detect_ms

    model: Path = args.model
    try:
        m = load_manifest(model)
    except ModelError as err:
        say(f"模型清单无效 (manifest invalid): {err}", err=True)
        return EXIT_FAILED
    i = m.input
    say(f"模型清单有效: {model.with_suffix('.json')} — 输出家族 {m.family}, 运行时 {m.runtime}, 精度 {m.precision}, "
        f"输入 {i.width}x{i.height} {i.layout} {i.color}, {len(m.labels)} 个类别")
    shown = [f"{lab}→{m.rule_labels[lab]}" if lab in m.rule_labels else lab for lab in m.labels]
    say(f"类别: {', '.join(shown[:12])}{' …' if len(shown) > 12 else ''}")
    say(f"许可证: {m.licence.spdx}; 来源: {json.dumps(m.source, ensure_ascii=False)[:160]}")
    if m.accuracy is not None:
        say(f"清单记录的准确率: {m.accuracy.metric} = {m.accuracy.value:.3f} ({m.accuracy.measured_on})")
    try:
        det = open_detector(model, num_threads=args.threads)
        ms = time_detect_ms(model, args.threads, args.runs)
    except ModelError as err:
        say(f"模型无法加载或运行 (cannot load or run): {err}", err=True)
        return EXIT_FAILED
    say(f"加载成功: {det.backend}")
    say(f"速度: 每帧检测中位数 {ms:.1f} ms (含缩放与解码, {args.runs} 次, {args.threads} 线程; "
        f"CPU: {cpu_summary()}); 单个推理线程约 {1000.0 / ms:.0f} 帧/秒")
    if args.labelled is None:
        say("结果: 通过 (未给出 --labelled, 未测准确率)")
        return EXIT_OK
    try:
        labelled = load_labelled(args.labelled, m.labels)
    except LabelledSetError as err:
        say(f"标注数据无法读取 (labelled set): {err}", err=True)
        return EXIT_FAILED
    thresholds = dict(zip(det.labels, det.thresholds.tolist(), strict=True))
    pairs = [(det.detect(_rgb(im.path)), [(m.rule_labels.get(lab, lab), b) for lab, b in im.boxes])
             for im in labelled]
    counts = evaluate_set(pairs, iou=args.iou)
    say(f"准确率 (IoU ≥ {args.iou}, 清单阈值, {len(labelled)} 张图像, {args.labelled}):")
    for label, c in counts.items():
        thr = thresholds.get(label)
        say(f"  {label}: 召回率 {_pct(c.recall)} ({c.tp}/{c.labelled}), 精确率 {_pct(c.precision)} ({c.tp}/{c.found}), "
            f"阈值 {'模型无此类别' if thr is None else f'{thr:.2f}'}")
    say("结果: 通过")
    return EXIT_OK


def register(sub: argparse._SubParsersAction, say: Callable[..., None]) -> None:
    """Add `model check` to the edge-agent command line."""
    model = sub.add_parser("model", help="model tools: check a deployment's own model before installing it")
    msub = model.add_subparsers(dest="model_command", required=True)
    check = msub.add_parser("check", help="validate the manifest, load the model, time it on this CPU and "
                            "(--labelled) measure precision/recall; exit 0 ok, 2 not fit")
    check.add_argument("model", type=Path, help="model file (.tflite or .onnx) with its manifest .json beside it")
    check.add_argument("--labelled", type=Path, default=None,
                       help="folder of images with a COCO instances .json or YOLO .txt labels (classes.txt names)")
    check.add_argument("--threads", type=int, default=1, help="interpreter threads (as detector.threads)")
    check.add_argument("--runs", type=int, default=10, help="timed detect() runs after one warm-up")
    check.add_argument("--iou", type=float, default=0.5, help="IoU a detection needs to match a labelled box")
    check.set_defaults(func=lambda args: run_model_check(args, say))
