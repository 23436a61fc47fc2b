"""Collected examples out as COCO JSON or YOLO txt folders, for Label Studio and CVAT.

COCO: `instances.json` (`file_name` relative to it: `images/{id}.jpg`), boxes `[x, y, w, h]` in
pixels, the model's score and the reason the frame was kept on each image and annotation.
YOLO: `images/{id}.jpg`, `labels/{id}.txt` (`class cx cy w h`, normalised to 0..1), `classes.txt`
and `data.yaml`. Both carry `LICENCE.txt` with the licence and every camera's consent note, and the
reminder that the boxes are the model's guesses: review each image before training. Both formats
load back with `edge-agent model check MODEL --labelled DIR`.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from edge_agent.collect.store import Example, ExampleStore

REVIEW_NOTE = ("The boxes are the installed model's detections (pre-annotations), including the ones it was "
               "unsure of and those of alerts an operator marked as false alarms: review every image before "
               "training.")


class ExportError(ValueError):
    """The export folder cannot be written (not empty, or nothing to export)."""


def label_order(examples: Sequence[Example]) -> list[str]:
    """Every label of the examples, person first, then alphabetical: the category / class order."""
    labels = {b.label for ex in examples for b in ex.boxes}
    return sorted(labels, key=lambda lab: (lab != "person", lab))


def consent_notes(examples: Sequence[Example]) -> dict[str, str]:
    """camera id -> its consent note (the latest one kept with its examples)."""
    return {ex.camera_id: ex.consent for ex in sorted(examples, key=lambda e: e.t)}


def notice(licence: str, examples: Sequence[Example], device_id: str = "") -> str:
    """The text of LICENCE.txt."""
    lines = ["Frames collected by a BrightKitchen edge agent" + (f" (device {device_id})" if device_id else "") + ".",
             "", f"Licence: {licence or '(none given in the agent config: collect.licence)'}", "",
             "Consent, per camera:"]
    lines += [f"- {cam}: {note}" for cam, note in sorted(consent_notes(examples).items())]
    lines += ["", "Faces: " + ", ".join(sorted({f'{ex.blurred} ({ex.camera_id})' for ex in examples})) +
              " obscured before the frames were written on the box.", "", REVIEW_NOTE, ""]
    return "\n".join(lines)


def _prepare(out: Path, examples: Sequence[Example]) -> None:
    if not examples:
        raise ExportError("no examples to export (is collect enabled on a camera, and has it kept anything?)")
    if out.exists() and any(out.iterdir()):
        raise ExportError(f"{out}: folder is not empty")
    (out / "images").mkdir(parents=True, exist_ok=True)


def export_coco(store: ExampleStore, examples: Sequence[Example], out: Path, *, licence: str = "",
                device_id: str = "") -> Path:
    """Write a COCO instances folder; returns the path of instances.json."""
    _prepare(out, examples)
    labels = label_order(examples)
    cat_id = {lab: i + 1 for i, lab in enumerate(labels)}
    images, annotations = [], []
    for n, ex in enumerate(examples, 1):
        shutil.copyfile(store.image_path(ex), out / "images" / f"{ex.id}.jpg")
        images.append({"id": n, "file_name": f"images/{ex.id}.jpg", "width": ex.width, "height": ex.height,
                       "license": 1, "date_captured": datetime.fromtimestamp(ex.t, UTC).isoformat(),
                       "camera_id": ex.camera_id, "reason": ex.reason, "detail": ex.detail})
        for b in ex.boxes:
            x1, y1, x2, y2 = b.box
            annotations.append({"id": len(annotations) + 1, "image_id": n, "category_id": cat_id[b.label],
                                "bbox": [round(x1, 1), round(y1, 1), round(x2 - x1, 1), round(y2 - y1, 1)],
                                "area": round((x2 - x1) * (y2 - y1), 1), "iscrowd": 0, "score": b.score,
                                "attributes": {"source": "model", "reason": ex.reason}})
    doc = {
        "info": {"description": "BrightKitchen collected frames (hard examples)", "version": "1",
                 "date_created": datetime.now(UTC).isoformat(), "contributor": device_id,
                 "licence": licence, "consent": consent_notes(examples), "note": REVIEW_NOTE},
        "licenses": [{"id": 1, "name": licence or "see LICENCE.txt", "url": ""}],
        "images": images, "annotations": annotations,
        "categories": [{"id": cat_id[lab], "name": lab, "supercategory": ""} for lab in labels],
    }
    path = out / "instances.json"
    path.write_text(json.dumps(doc, ensure_ascii=False, indent=1), encoding="utf-8")
    (out / "LICENCE.txt").write_text(notice(licence, examples, device_id), encoding="utf-8")
    return path


def yolo_line(cls: int, box: tuple[float, float, float, float], width: int, height: int) -> str:
    """`class cx cy w h`, normalised to the image and clipped to 0..1."""
    x1, y1, x2, y2 = (max(0.0, min(1.0, v)) for v in (box[0] / width, box[1] / height, box[2] / width, box[3] / height))
    return f"{cls} {(x1 + x2) / 2:.6f} {(y1 + y2) / 2:.6f} {x2 - x1:.6f} {y2 - y1:.6f}"


def export_yolo(store: ExampleStore, examples: Sequence[Example], out: Path, *, licence: str = "",
                device_id: str = "") -> Path:
    """Write a YOLO folder (images/, labels/, classes.txt, data.yaml); returns the folder."""
    _prepare(out, examples)
    (out / "labels").mkdir(exist_ok=True)
    labels = label_order(examples)
    cls = {lab: i for i, lab in enumerate(labels)}
    for ex in examples:
        shutil.copyfile(store.image_path(ex), out / "images" / f"{ex.id}.jpg")
        lines = [yolo_line(cls[b.label], b.box, ex.width, ex.height) for b in ex.boxes]
        (out / "labels" / f"{ex.id}.txt").write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    (out / "classes.txt").write_text("".join(f"{lab}\n" for lab in labels), encoding="utf-8")
    names = "".join(f"  {i}: {json.dumps(lab, ensure_ascii=False)}\n" for i, lab in enumerate(labels))
    one_line = " ".join(licence.split()) or "see LICENCE.txt"
    (out / "data.yaml").write_text(f"# {REVIEW_NOTE}\n# Licence: {one_line}\n"
                                   f"path: .\ntrain: images\nval: images\nnames:\n{names}", encoding="utf-8")
    (out / "LICENCE.txt").write_text(notice(licence, examples, device_id), encoding="utf-8")
    return out
