"""Task metrics of the exported benchmark models, in numpy (no torch), shared by the build and the benchmark.

The build (``exported_models.py --build``) scores the original ONNX model with these functions, and
``auto_speed.py --models`` scores the compressed one with the same code, so the two figures are
comparable. Each metric takes the model's first output on the test split and, where the task has
one, the ground truth stored in ``<name>.test_targets.npz`` (key ``targets``).
"""

from __future__ import annotations

import numpy as np

#: Threshold of the detector's probability map, as DB-style detectors binarize it.
PIXEL_THRESHOLD = 0.5


def pixel_f1(prob: np.ndarray, mask: np.ndarray, *, threshold: float = PIXEL_THRESHOLD) -> float:
    """F1 of the thresholded probability map against the text mask, over every test pixel.

    Pooled over the split (not averaged per image), so an image with little text weighs what its
    pixels weigh.
    """
    pred = prob.reshape(mask.shape) > threshold
    truth = mask.astype(bool)
    tp = int(np.count_nonzero(pred & truth))
    fp = int(np.count_nonzero(pred & ~truth))
    fn = int(np.count_nonzero(~pred & truth))
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0


def token_accuracy(logits: np.ndarray, targets: np.ndarray) -> float:
    """Fraction of target tokens whose logit is the largest ([batch, T, vocab] against [batch, T])."""
    return float(np.mean(logits.argmax(-1) == targets))


def cosines(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """Per-sample cosine similarity of two outputs, each sample flattened."""
    a = reference.reshape(len(reference), -1).astype(np.float64)
    b = candidate.reshape(len(candidate), -1).astype(np.float64)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.where(den > 0, np.sum(a * b, axis=1) / np.where(den > 0, den, 1.0), 1.0)


def task_metric(task: str, output: np.ndarray, targets: np.ndarray | None) -> float:
    """The metric ``task`` is judged by, on its first output: ``pixel_f1``, ``token_accuracy``.

    Raises:
        ValueError: an unknown task, or a task whose ground truth is missing.
    """
    if task not in ("pixel_f1", "token_accuracy"):
        raise ValueError(f"unknown task metric {task!r}")
    if targets is None:
        raise ValueError(f"task metric {task!r} needs targets")
    return pixel_f1(output, targets) if task == "pixel_f1" else token_accuracy(output, targets)
