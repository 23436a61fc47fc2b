"""Output families a model manifest can name, and the output tensors each one must have.

- `nanodet`: per stride a `scores` (1, cells, nc) and a `box_distribution` (1, cells, 4 x bins) tensor
  (checked by the manifest itself, `postprocess.decode_level`);
- `yolov5`: one `predictions` tensor (1, N, 5 + nc): cx, cy, w, h, objectness, nc class scores;
- `yolov8` (also YOLO11, the same head): one `predictions` tensor (1, 4 + nc, N): cx, cy, w, h, nc
  class scores, no objectness;
- `ssd`: the four outputs of TFLite's detection postprocess: `boxes` (1, N, 4) ymin, xmin, ymax,
  xmax normalised, `classes` (1, N), `scores` (1, N) and `count` (1,).
"""

from __future__ import annotations

from typing import Literal, get_args

Family = Literal["nanodet", "yolov5", "yolov8", "ssd"]
FAMILIES: tuple[str, ...] = get_args(Family)

SSD_KINDS = ("boxes", "classes", "scores", "count")


def _one(family: str, outputs: list[tuple[str, list[int]]], kind: str) -> tuple[int, list[int]]:
    found = [(i, shape) for i, (k, shape) in enumerate(outputs) if k == kind]
    if len(found) != 1:
        raise ValueError(f"outputs: {family} needs exactly one `{kind}` output, found {len(found)}")
    return found[0]


def check_outputs(family: str, outputs: list[tuple[str, list[int]]], num_labels: int) -> None:
    """Raise ValueError naming `outputs[i].shape` (or `outputs`) when the tensors do not fit the family."""
    if family in ("yolov5", "yolov8"):
        if len(outputs) != 1:
            raise ValueError(f"outputs: {family} has one `predictions` output, the manifest lists {len(outputs)}")
        i, shape = _one(family, outputs, "predictions")
        if len(shape) != 3 or shape[0] != 1:
            raise ValueError(f"outputs[{i}].shape: {shape} is not [1, ., .]")
        if family == "yolov5" and shape[2] != 5 + num_labels:
            raise ValueError(f"outputs[{i}].shape: {shape} is not [1, N, 5 + {num_labels} labels] (yolov5)")
        if family == "yolov8" and shape[1] != 4 + num_labels:
            raise ValueError(f"outputs[{i}].shape: {shape} is not [1, 4 + {num_labels} labels, N] (yolov8)")
        return
    if family == "ssd":
        if sorted(k for k, _ in outputs) != sorted(SSD_KINDS):
            raise ValueError(f"outputs: ssd needs one each of {', '.join(SSD_KINDS)}, got {[k for k, _ in outputs]}")
        i, boxes = _one(family, outputs, "boxes")
        if len(boxes) != 3 or boxes[0] != 1 or boxes[2] != 4:
            raise ValueError(f"outputs[{i}].shape: boxes {boxes} is not [1, N, 4]")
        for kind in ("classes", "scores"):
            j, shape = _one(family, outputs, kind)
            if shape != [1, boxes[1]]:
                raise ValueError(f"outputs[{j}].shape: {kind} {shape} is not [1, {boxes[1]}]")
        k, count = _one(family, outputs, "count")
        if count != [1]:
            raise ValueError(f"outputs[{k}].shape: count {count} is not [1]")
        return
    raise ValueError(f"family: {family!r} has no output check")  # nanodet is checked by the manifest
