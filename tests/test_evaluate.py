"""Evaluation metrics on hand-made outputs, and evaluate() on small graphs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxdc.errors import DataError
from onnxdc.evaluate import evaluate, load_data, output_metrics, topk_accuracy


def test_topk_accuracy_by_hand() -> None:
    logits = np.array([[0.1, 0.9, 0.0], [0.8, 0.05, 0.15], [0.2, 0.3, 0.5], [0.4, 0.35, 0.25]])
    labels = np.array([1, 1, 2, 1])
    assert topk_accuracy(logits, labels, 1) == 0.5
    assert topk_accuracy(logits, labels, 2) == 0.75
    assert topk_accuracy(logits, labels, 5) == 1.0  # k larger than the classes


def test_output_metrics_by_hand() -> None:
    ref = np.array([3.0, 4.0])
    same = output_metrics("y", ref, ref.copy())
    assert same.cosine == pytest.approx(1.0) and math.isinf(same.snr_db) and same.max_abs_error == 0
    m = output_metrics("y", ref, np.array([3.0, 3.0]))
    # signal 25, noise 1 -> 10*log10(25) dB; cosine = 21 / (5 * sqrt(18))
    assert m.snr_db == pytest.approx(10 * math.log10(25))
    assert m.cosine == pytest.approx(21 / (5 * math.sqrt(18)))
    assert m.max_abs_error == 1.0
    opposite = output_metrics("y", ref, -ref)
    assert opposite.cosine == pytest.approx(-1.0)


def _linear_model(w: np.ndarray):  # noqa: ANN202
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", w.shape[0]])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", w.shape[1]])],
                          initializer=[numpy_helper.from_array(w, "w")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_evaluate_identical_and_perturbed() -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 5)).astype(np.float32)
    x = rng.standard_normal((300, 8)).astype(np.float32)
    labels = (x @ w).argmax(1)
    data = {"x": x, "labels": labels}
    same = evaluate(_linear_model(w), _linear_model(w), data, batch_size=64)
    assert same.samples == 300 and same.reference_top1 == 1.0 and same.agreement_top1 == 1.0
    assert same.top1_drop_points == 0.0 and same.outputs[0].cosine == pytest.approx(1.0)
    other = evaluate(_linear_model(w), _linear_model(w + 0.5 * rng.standard_normal(w.shape).astype(np.float32)),
                     data)
    assert other.candidate_top1 < 1.0
    assert other.top1_drop_points == pytest.approx(100 * (1 - other.candidate_top1))
    assert other.outputs[0].snr_db < 40


def test_evaluate_rejects_mismatched_data() -> None:
    w = np.ones((4, 3), dtype=np.float32)
    with pytest.raises(DataError, match="lacks model input.*'x'"):
        evaluate(_linear_model(w), _linear_model(w), {"input": np.zeros((2, 4), np.float32)})
    with pytest.raises(DataError, match="not model inputs"):
        evaluate(_linear_model(w), _linear_model(w), {"x": np.zeros((2, 4), np.float32),
                                                      "extra": np.zeros(2)})
    with pytest.raises(DataError, match="labels"):
        evaluate(_linear_model(w), _linear_model(w), {"x": np.zeros((2, 4), np.float32),
                                                      "labels": np.zeros(3, np.int64)})


def test_load_data_refuses_pickles_and_garbage(tmp_path) -> None:  # noqa: ANN001
    obj = tmp_path / "obj.npz"
    np.savez(obj, a=np.array([{"x": 1}], dtype=object))
    with pytest.raises(DataError):
        load_data(obj)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(DataError):
        load_data(junk)
    with pytest.raises(DataError, match="no such"):
        load_data(tmp_path / "missing.npz")


def test_batches_join_along_their_batch_axis() -> None:
    from onnxdc.evaluate import concat_batches

    time_major = [np.zeros((7, 256, 3)), np.ones((7, 44, 3))]  # e.g. a GRU's [seq, batch, hidden]
    joined = concat_batches(time_major)
    assert joined.shape == (7, 300, 3) and joined[:, 256:].all()
    assert concat_batches([np.zeros((4, 2)), np.zeros((4, 2))]).shape == (8, 2)
    assert concat_batches([np.float32(1), np.float32(2)]).shape == (2,)
