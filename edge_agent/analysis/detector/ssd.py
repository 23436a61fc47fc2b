"""Pure numpy reading of TFLite's detection postprocess outputs (SSD MobileNet and the like).

The model's own `TFLite_Detection_PostProcess` op has already decoded anchors and run NMS: what is
left is to keep the first `count` rows, turn class values into label indices, apply the per-class
thresholds and scale the normalised ymin, xmin, ymax, xmax boxes to input pixels.
"""

from __future__ import annotations

import numpy as np


def decode_ssd(
    boxes: np.ndarray,
    classes: np.ndarray,
    scores: np.ndarray,
    count: float | np.ndarray,
    *,
    input_size: tuple[int, int],
    num_classes: int,
    score_threshold: float | np.ndarray,
    class_offset: int = 0,
    class_mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, 4) yxyx 0..1 boxes, (N,) class values, (N,) scores, valid count -> x1y1x2y2 pixels, scores, ids.

    Class value c is label index c - class_offset; rows whose index falls outside the labels are
    dropped (a model's background or unused ids).
    """
    n = int(np.clip(np.asarray(count, np.float64).reshape(-1)[0], 0, boxes.shape[0]))
    ids = np.rint(classes[:n]).astype(np.intp) - class_offset
    sc = scores[:n].astype(np.float32)
    valid = (ids >= 0) & (ids < num_classes)
    ids, sc, rows = ids[valid], sc[valid], np.flatnonzero(valid)
    thr = np.asarray(score_threshold, np.float64)
    keep = sc >= (thr if thr.ndim == 0 else thr[ids])
    if class_mask is not None:
        keep &= class_mask[ids]
    w, h = input_size
    yxyx = boxes[rows[keep]].astype(np.float32)
    xyxy = np.stack([yxyx[:, 1] * w, yxyx[:, 0] * h, yxyx[:, 3] * w, yxyx[:, 2] * h], axis=1)
    return xyxy.reshape(-1, 4), sc[keep], ids[keep]
