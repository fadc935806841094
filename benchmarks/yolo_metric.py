"""The YOLO sample model's head decoding, NMS and box-F1, in numpy (no torch), shared by its trainer,
the coder study and the tests.

``models/yolo.onnx`` outputs ``[batch, B * (5 + C), S, S]`` (YOLOv2 layout: per anchor ``tx, ty, tw,
th, objectness`` and ``C`` class logits). A box's centre is ``((col + sigmoid(tx)) / S, (row +
sigmoid(ty)) / S)`` and its size ``anchor * exp(tw, th)``, all in fractions of the image side. The
ground truth, ``models/yolo.test_targets.npz`` (key ``targets``), is one row per object: ``image,
class, x0, y0, x1, y1`` (float32, fractions of the side), so a variable number of objects per image
fits one array.
"""

from __future__ import annotations

import numpy as np

#: Anchors (width, height) in fractions of the image side; the trainer and the decoder share them.
ANCHORS = np.array([[0.16, 0.16], [0.28, 0.28]], dtype=np.float32)
CLASSES = ("circle", "square", "triangle")
#: A prediction counts above this score (objectness times class probability).
SCORE_THRESHOLD = 0.5
NMS_IOU = 0.45
MATCH_IOU = 0.5


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def decode(output: np.ndarray, *, anchors: np.ndarray = ANCHORS) -> list[np.ndarray]:
    """Per image, every anchor's box as rows ``score, class, x0, y0, x1, y1`` (before thresholds)."""
    n, ch, s, s2 = output.shape
    b = len(anchors)
    if s != s2 or ch % b or ch // b < 6:
        raise ValueError(f"yolo output shape {output.shape} does not fit {b} anchors on a square grid")
    p = output.astype(np.float64).reshape(n, b, ch // b, s, s)
    cols = np.arange(s)[None, None, None, :]
    rows = np.arange(s)[None, None, :, None]
    cx = (cols + _sigmoid(p[:, :, 0])) / s
    cy = (rows + _sigmoid(p[:, :, 1])) / s
    w = anchors[None, :, 0, None, None] * np.exp(np.clip(p[:, :, 2], -8, 8))
    h = anchors[None, :, 1, None, None] * np.exp(np.clip(p[:, :, 3], -8, 8))
    logits = p[:, :, 5:]
    prob = np.exp(logits - logits.max(axis=2, keepdims=True))
    prob /= prob.sum(axis=2, keepdims=True)
    score = _sigmoid(p[:, :, 4]) * prob.max(axis=2)
    cls = prob.argmax(axis=2)
    boxes = np.stack([score, cls, cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1)
    return [boxes[i].reshape(-1, 6) for i in range(n)]


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of boxes ``[..., 4]`` (x0, y0, x1, y1): a ``[len(a), len(b)]`` matrix."""
    a = a[:, None, :]
    b = b[None, :, :]
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def nms(dets: np.ndarray, *, score_threshold: float = SCORE_THRESHOLD, iou_threshold: float = NMS_IOU) -> np.ndarray:
    """Greedy per-class NMS of rows ``score, class, x0, y0, x1, y1``: the kept rows, best first."""
    dets = dets[dets[:, 0] > score_threshold]
    dets = dets[np.argsort(-dets[:, 0], kind="stable")]
    keep: list[int] = []
    for i in range(len(dets)):
        same = [k for k in keep if dets[k, 1] == dets[i, 1]]
        if not same or iou(dets[i:i + 1, 2:], dets[same, 2:]).max() <= iou_threshold:
            keep.append(i)
    return dets[keep]


def detections(output: np.ndarray) -> list[np.ndarray]:
    """The model's output decoded and suppressed, per image."""
    return [nms(d) for d in decode(output)]


def box_f1(dets: list[np.ndarray], targets: np.ndarray, *, match_iou: float = MATCH_IOU) -> float:
    """F1 of detections against the ground truth at IoU ``match_iou``, pooled over the split.

    A detection is a true positive when it matches a still unmatched object of its class with IoU at
    least ``match_iou`` (detections taken best first, each object matched once). Nothing to find
    and nothing found scores 1.0.
    """
    tp = fp = 0
    n_true = len(targets)
    for i, d in enumerate(dets):
        truth = targets[targets[:, 0] == i]
        used = np.zeros(len(truth), dtype=bool)
        for row in d[np.argsort(-d[:, 0], kind="stable")]:
            cand = np.flatnonzero((truth[:, 1] == row[1]) & ~used)
            if cand.size:
                ious = iou(row[None, 2:6], truth[cand, 2:6])[0]
                best = int(np.argmax(ious))
                if ious[best] >= match_iou:
                    used[cand[best]] = True
                    tp += 1
                    continue
            fp += 1
    fn = n_true - tp
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0


def yolo_box_f1(output: np.ndarray, targets: np.ndarray) -> float:
    """Box-F1 at IoU 0.5 of the model's raw output against the ``targets`` rows."""
    return box_f1(detections(output), targets)
