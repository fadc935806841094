"""The task metrics and synthetic data behind ``auto_speed.py --models``' figures (numpy only, no torch)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))
from exported_build import BOS, digit_sequences, text_images, token_ids  # noqa: E402
from task_metrics import cosines, pixel_f1, task_metric, token_accuracy  # noqa: E402


def test_pixel_f1_counts_pixels_over_the_split() -> None:
    mask = np.zeros((2, 4, 4), np.uint8)
    mask[0, :2] = 1  # 8 text pixels
    prob = np.zeros((2, 1, 4, 4), np.float32)
    prob[0, 0, :1] = 0.9  # 4 true positives
    prob[1, 0, 0, :2] = 0.6  # 2 false positives; 4 false negatives
    assert pixel_f1(prob, mask) == pytest.approx(2 * 4 / (2 * 4 + 2 + 4))
    assert pixel_f1(prob, mask, threshold=0.95) == 0.0
    assert pixel_f1(np.zeros((1, 1, 2, 2)), np.zeros((1, 2, 2))) == 1.0  # nothing to find, nothing found


def test_token_accuracy_and_cosines() -> None:
    logits = np.zeros((2, 3, 5), np.float32)
    logits[0, :, 1] = logits[1, :, 4] = 1
    targets = np.array([[1, 1, 2], [4, 4, 4]])
    assert token_accuracy(logits, targets) == pytest.approx(5 / 6)
    assert task_metric("token_accuracy", logits, targets) == pytest.approx(5 / 6)
    a = np.arange(12, dtype=np.float32).reshape(2, 2, 3) + 1
    b = a.copy()
    b[1] *= -2
    assert cosines(a, b) == pytest.approx([1.0, -1.0])
    with pytest.raises(ValueError, match="needs targets"):
        task_metric("pixel_f1", a, None)


def test_synthetic_splits_are_seeded_and_sensible() -> None:
    x1, m1 = text_images(3, 64, np.random.default_rng(4))
    x2, m2 = text_images(3, 64, np.random.default_rng(4))
    assert np.array_equal(x1, x2) and np.array_equal(m1, m2)
    assert x1.shape == (3, 3, 64, 64) and x1.dtype == np.float32 and 0 <= x1.min() and x1.max() <= 1
    assert 0 < m1.mean() < 0.5
    pixels, text = x1.transpose(0, 2, 3, 1), m1.astype(bool)
    assert pixels[text].mean() < pixels[~text].mean()  # text lines are darker
    src, tgt_in, tgt = digit_sequences(5, np.random.default_rng(0))
    assert np.array_equal(tgt, src[:, ::-1]) and np.all(tgt_in[:, 0] == BOS)
    assert np.array_equal(tgt_in[:, 1:], tgt[:, :-1])
    ids = token_ids(4, np.random.default_rng(0))
    assert ids.dtype == np.int64 and ids.min() >= 0 and ids.max() < 30_000
