"""Pure numpy decoding of YOLO heads: v5 (with objectness) and v8 / 11 (without).

Both return boxes (K, 4) float32 x1, y1, x2, y2 in model-input pixels, scores (K,) float32 and
class ids (K,) for every (anchor, class) pair at or above its class's threshold (multi-label, as
Ultralytics' NMS does); class-wise NMS (`postprocess.class_nms`) runs after. Raw values may be
quantized: thresholds are compared in the raw domain, so only candidates are dequantized.
"""

from __future__ import annotations

import numpy as np

from edge_agent.analysis.detector.postprocess import Quant

Decoded = tuple[np.ndarray, np.ndarray, np.ndarray]
NO_QUANT = Quant()  # float outputs


def _empty() -> Decoded:
    return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.intp)


def cxcywh_to_xyxy(boxes: np.ndarray, scale: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """(K, 4) centre x, centre y, width, height -> x1, y1, x2, y2, times (sx, sy) per axis."""
    sx, sy = scale
    cx, cy, w, h = (boxes[:, i].astype(np.float32) for i in range(4))
    return np.stack([(cx - w / 2) * sx, (cy - h / 2) * sy, (cx + w / 2) * sx, (cy + h / 2) * sy], axis=1)


def _thresholds(score_threshold: float | np.ndarray, nc: int) -> np.ndarray:
    thr = np.asarray(score_threshold, np.float64)
    return np.full(nc, float(thr)) if thr.ndim == 0 else thr


def decode_yolov8(
    pred: np.ndarray,
    *,
    score_threshold: float | np.ndarray,
    box_scale: tuple[float, float] = (1.0, 1.0),
    quant: Quant = NO_QUANT,
    class_mask: np.ndarray | None = None,
) -> Decoded:
    """(4 + nc, N) raw head: rows cx, cy, w, h, then nc class scores (sigmoid applied), one column per anchor.

    `box_scale` turns box units into input pixels: (input_w, input_h) for normalised boxes.
    """
    nc = pred.shape[0] - 4
    raw_thr = quant.raw_thresholds(_thresholds(score_threshold, nc))
    # flatnonzero on the raveled mask is much faster than 2-D nonzero on (80, 8400)
    flat = np.flatnonzero((pred[4:] >= raw_thr[:, None]).reshape(-1))
    cls_idx, anchor_idx = np.divmod(flat, pred.shape[1])
    if class_mask is not None:
        wanted = class_mask[cls_idx]
        cls_idx, anchor_idx = cls_idx[wanted], anchor_idx[wanted]
    if anchor_idx.size == 0:
        return _empty()
    scores = quant.dequantize(pred[4 + cls_idx, anchor_idx])
    boxes = cxcywh_to_xyxy(quant.dequantize(pred[:4, anchor_idx].T), box_scale)
    return boxes, scores, cls_idx.astype(np.intp)


def decode_yolov5(
    pred: np.ndarray,
    *,
    score_threshold: float | np.ndarray,
    box_scale: tuple[float, float] = (1.0, 1.0),
    quant: Quant = NO_QUANT,
    class_mask: np.ndarray | None = None,
) -> Decoded:
    """(N, 5 + nc) raw head: cx, cy, w, h, objectness, nc class probabilities; score = objectness x class."""
    nc = pred.shape[1] - 5
    thr = _thresholds(score_threshold, nc)
    if class_mask is not None:
        thr = np.where(class_mask, thr, np.inf)
    lowest = float(thr.min())
    if not np.isfinite(lowest):
        return _empty()
    # class probabilities are <= 1, so score >= thr needs objectness >= thr: filter anchors on it first
    rows = np.flatnonzero(pred[:, 4] >= quant.raw_threshold(lowest))
    if rows.size == 0:
        return _empty()
    cand = quant.dequantize(pred[rows])
    scores = cand[:, 4:5] * cand[:, 5:]
    r, cls_idx = np.nonzero(scores >= thr[None, :])
    if r.size == 0:
        return _empty()
    return cxcywh_to_xyxy(cand[r, :4], box_scale), scores[r, cls_idx].astype(np.float32), cls_idx.astype(np.intp)
