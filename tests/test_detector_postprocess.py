"""Pure frame math of the detector: quantization, NanoDet decoding, NMS, resize maps."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.analysis.detector.postprocess import (
    InputMap,
    Quant,
    anchor_centres,
    boxes_to_frame,
    class_nms,
    content_size,
    decode_level,
    distribution_to_distances,
    exact_map,
    nms,
    plan_resize,
)

pytestmark = pytest.mark.unit

BINS = 11


def one_hot_dist(distances: list[int], bins: int = BINS, peak: float = 40.0) -> np.ndarray:
    """Logits whose softmax is (almost) one-hot at the given bin for l, t, r, b."""
    logits = np.zeros((4, bins), np.float32)
    for side, d in enumerate(distances):
        logits[side, d] = peak
    return logits.reshape(-1)


@pytest.mark.parametrize("quant", [Quant(1 / 256, -128), Quant(0.076, 11), Quant(0.05, -4)])
@pytest.mark.parametrize("threshold", [0.0, 0.2, 0.35, 0.5, 0.999])
def test_raw_threshold_equals_dequantized_comparison(quant: Quant, threshold: float) -> None:
    """Thresholding raw int8 values selects exactly what thresholding real values would."""
    q = np.arange(-128, 128, dtype=np.int8)
    expected = quant.dequantize(q) >= np.float32(threshold)
    assert np.array_equal(q >= quant.raw_threshold(threshold), expected)


def test_dequantize_affine_and_identity() -> None:
    """Dequantize applies (q - zp) * scale; the identity quant leaves floats alone."""
    q = np.array([-128, 0, 127], np.int8)
    np.testing.assert_allclose(Quant(0.5, -128).dequantize(q), [0.0, 64.0, 127.5])
    x = np.array([0.25, 0.5], np.float32)
    assert Quant().dequantize(x) is x


def test_distribution_expectation_one_hot_and_uniform() -> None:
    """Softmax expectation: a peaked bin gives its index, uniform logits give the middle."""
    d = distribution_to_distances(one_hot_dist([0, 3, 7, 10])[None], BINS)
    np.testing.assert_allclose(d, [[0, 3, 7, 10]], atol=1e-4)
    u = distribution_to_distances(np.zeros((2, 4 * BINS), np.float32), BINS)
    np.testing.assert_allclose(u, np.full((2, 4), 5.0), atol=1e-5)


def test_anchor_centres_row_major_with_half_offset() -> None:
    """Flattened anchor i sits at column i % w, row i // w, centred in its cell."""
    c = anchor_centres(np.array([0, 1, 5]), grid_w=4, stride=8)
    np.testing.assert_allclose(c, [[4, 4], [12, 4], [12, 12]])


def test_decode_level_float_box_and_class() -> None:
    """One confident anchor on a 2x2 grid decodes to its exact box and class."""
    scores = np.zeros((4, 3), np.float32)
    scores[3, 2] = 0.9  # anchor (row 1, col 1), class 2
    scores[0, 0] = 0.1  # below threshold
    dists = np.stack([one_hot_dist([1, 1, 1, 1])] * 4)
    dists[3] = one_hot_dist([1, 2, 3, 4])
    boxes, s, c = decode_level(scores, dists, stride=8, grid_w=2, bins=BINS, score_threshold=0.5)
    # centre (12, 12); left 8, top 16, right 24, bottom 32
    np.testing.assert_allclose(boxes, [[4, -4, 36, 44]], atol=1e-3)
    np.testing.assert_allclose(s, [0.9])
    assert c.tolist() == [2]


def test_decode_level_int8_matches_float() -> None:
    """Raw int8 outputs with their quant params decode like their dequantized floats."""
    rng = np.random.default_rng(1)
    sq, dq = Quant(1 / 256, -128), Quant(0.07, 5)
    raw_scores = rng.integers(-128, -40, size=(16, 5), dtype=np.int8)  # below 0.35
    raw_scores[[2, 9], [1, 4]] = [100, 60]
    raw_dists = rng.integers(-60, 60, size=(16, 4 * BINS), dtype=np.int8)
    a = decode_level(
        raw_scores, raw_dists, stride=16, grid_w=4, bins=BINS, score_threshold=0.4, score_quant=sq, dist_quant=dq
    )
    b = decode_level(
        sq.dequantize(raw_scores), dq.dequantize(raw_dists), stride=16, grid_w=4, bins=BINS, score_threshold=0.4
    )
    assert a[2].tolist() == b[2].tolist() == [1, 4]
    np.testing.assert_allclose(a[0], b[0], rtol=1e-5)
    np.testing.assert_allclose(a[1], b[1])


def test_decode_level_class_mask_and_empty() -> None:
    """A class mask drops unwanted classes; nothing above threshold gives empty arrays."""
    scores = np.array([[0.9, 0.8]], np.float32)
    dists = one_hot_dist([1, 1, 1, 1])[None]
    _, s, c = decode_level(
        scores, dists, stride=8, grid_w=1, bins=BINS, score_threshold=0.5, class_mask=np.array([False, True])
    )
    assert c.tolist() == [1] and s.tolist() == pytest.approx([0.8])
    boxes, s, c = decode_level(scores, dists, stride=8, grid_w=1, bins=BINS, score_threshold=0.95)
    assert boxes.shape == (0, 4) and s.size == 0 and c.size == 0


def test_nms_suppresses_overlap_keeps_separate() -> None:
    """The lower of two overlapping boxes goes; a distant box stays; order is by score."""
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    keep = nms(boxes, np.array([0.6, 0.9, 0.7], np.float32), iou_threshold=0.5)
    assert keep.tolist() == [1, 2]


def test_nms_threshold_is_inclusive_boundary() -> None:
    """Boxes overlapping at exactly the IoU threshold are kept (suppress only above it)."""
    boxes = np.array([[0, 0, 10, 10], [5, 0, 15, 10]], np.float32)  # IoU = 50/150 = 1/3
    assert nms(boxes, np.array([0.9, 0.8], np.float32), 1 / 3 + 1e-6).tolist() == [0, 1]
    assert nms(boxes, np.array([0.9, 0.8], np.float32), 0.3).tolist() == [0]


def test_class_nms_is_per_class_and_capped() -> None:
    """Overlapping boxes of different classes both survive; max_detections caps the list."""
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    classes = np.array([0, 1, 0])
    assert class_nms(boxes, scores, classes, 0.5).tolist() == [0, 1]
    assert class_nms(boxes, scores, classes, 0.5, max_detections=1).tolist() == [0]
    empty = class_nms(np.zeros((0, 4), np.float32), np.zeros(0), np.zeros(0, int), 0.5)
    assert empty.size == 0


def test_letterbox_plan_for_16_9() -> None:
    """640x360 into 416x416 scales by 0.65 and pads 91 rows above and below; content 416x234."""
    m = plan_resize(640, 360, 416, 416, "letterbox")
    assert (m.scale_x, m.scale_y, m.pad_x, m.pad_y) == (0.65, 0.65, 0, 91)
    assert content_size(m) == (416, 234)


def test_exact_map_uses_the_rounded_content_size() -> None:
    """1920x1080 -> 416x234: the vertical scale is 234/1080, not 416/1920, so boxes map back exactly."""
    m = exact_map(plan_resize(1920, 1080, 416, 416, "letterbox"))
    assert content_size(m) == (416, 234)
    assert m.scale_x == 416 / 1920 and m.scale_y == 234 / 1080 and m.pad_y == 91
    bottom = boxes_to_frame(np.array([[0.0, 91.0 + 234.0, 416.0, 91.0 + 234.0]], np.float32), m)
    assert bottom[0, 1] == pytest.approx(1080.0)


def test_per_class_thresholds_in_the_raw_int8_domain() -> None:
    """A (C,) threshold vector keeps class 0 at 0.3 but drops class 1 at the same score."""
    sq = Quant(1 / 256, -128)
    raw = np.full((2, 2), -128, np.int8)
    raw[0, 0] = round(0.3 * 256) - 128  # anchor 0, class 0 at 0.3
    raw[1, 1] = round(0.3 * 256) - 128  # anchor 1, class 1 at 0.3
    dists = np.zeros((2, 4 * BINS), np.int8)
    thresholds = np.array([0.25, 0.5])
    _, s, c = decode_level(raw, dists, stride=8, grid_w=2, bins=BINS, score_threshold=thresholds,
                           score_quant=sq, dist_quant=Quant(0.1, 0))
    assert c.tolist() == [0] and s[0] == pytest.approx(0.3, abs=0.01)
    _, _, c = decode_level(raw, dists, stride=8, grid_w=2, bins=BINS, score_threshold=0.25,
                           score_quant=sq, dist_quant=Quant(0.1, 0))
    assert sorted(c.tolist()) == [0, 1]


@pytest.mark.parametrize("mode", ["stretch", "letterbox"])
def test_boxes_to_frame_inverts_the_input_map(mode: str) -> None:
    """A frame box mapped into the model input and back comes out unchanged."""
    m = plan_resize(768, 432, 416, 416, mode)  # type: ignore[arg-type]
    frame_box = np.array([[100.0, 50.0, 300.0, 400.0]], np.float32)
    model_box = frame_box.copy()
    model_box[:, [0, 2]] = model_box[:, [0, 2]] * m.scale_x + m.pad_x
    model_box[:, [1, 3]] = model_box[:, [1, 3]] * m.scale_y + m.pad_y
    np.testing.assert_allclose(boxes_to_frame(model_box, m), frame_box, atol=1e-3)


def test_boxes_to_frame_clips_to_frame() -> None:
    """Boxes reaching into the padding or past the edge are clipped to the frame."""
    m = InputMap(0.5, 0.5, 0, 10, frame_w=100, frame_h=50)
    out = boxes_to_frame(np.array([[-10, 0, 60, 60]], np.float32), m)
    np.testing.assert_allclose(out, [[0, 0, 100, 50]])
