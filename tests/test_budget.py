"""Budgets users mean: per-sample cosines, top-1 rules that say when they cannot judge, a user's metric."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import onnx
import pytest
from model_builders import few_samples_model, hidden_state_model

from onnxdc.api import (
    Budget,
    ConfigError,
    ModelError,
    check_budget,
    compare,
    evaluate,
    evaluate_candidate,
    prepare_reference,
)
from onnxdc.evaluate import EvalResult, OutputMetrics, output_metrics


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_per_sample_cosines_by_hand() -> None:
    ref = np.array([[3.0, 4.0], [1.0, 0.0], [0.0, 2.0]])
    cand = np.array([[3.0, 4.0], [1.0, 1.0], [0.0, 2.0]])  # sample 1 off by 45 degrees
    m = output_metrics("y", ref, cand, samples=3)
    assert m.per_sample and m.shape == (3, 2)
    assert m.cosine_min == pytest.approx(math.sqrt(0.5))
    assert m.cosine_mean == pytest.approx((2 + math.sqrt(0.5)) / 3)
    assert m.cosine == pytest.approx(_cos(ref.ravel(), cand.ravel()))  # the whole output, as before
    assert m.cosine > m.cosine_mean  # large samples weigh more in the whole-output cosine


def test_zero_samples_count_as_equal_or_orthogonal() -> None:
    ref = np.array([[0.0, 0.0], [1.0, 0.0]])
    m = output_metrics("y", ref, np.array([[0.0, 0.0], [0.0, 0.0]]), samples=2)
    assert (m.cosine_mean, m.cosine_min) == (0.5, 0.0)


def test_output_without_sample_axis_zero_is_one_sample() -> None:
    """A sequence-first (T, N, C) output: axis 0 is not the 3 samples, so the whole output is one."""
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((5, 3, 4))
    cand = ref + 0.3 * rng.standard_normal(ref.shape)
    m = output_metrics("seq", ref, cand, samples=3)
    assert not m.per_sample
    assert m.cosine_mean == m.cosine_min == m.cosine == pytest.approx(_cos(ref.ravel(), cand.ravel()))


def test_compare_is_evaluate_candidate_without_the_run() -> None:
    model, data, rng = few_samples_model()
    other = onnx.ModelProto()
    other.CopyFrom(model)
    w = onnx.numpy_helper.to_array(other.graph.initializer[0])
    other.graph.initializer[0].CopyFrom(onnx.numpy_helper.from_array(
        (w + 0.05 * rng.standard_normal(w.shape)).astype(np.float32), "w"))
    ref = prepare_reference(model, data)
    outs = [o + 0 for o in prepare_reference(other, data).outputs]  # computed elsewhere
    assert compare(ref, outs) == evaluate_candidate(ref, other)
    ev = compare(ref, outs)
    assert ev.samples == 16 and ev.outputs[0].per_sample and ev.outputs[0].cosine_min < ev.outputs[0].cosine_mean < 1
    with pytest.raises(ModelError, match="the candidate has 2 output"):
        compare(ref, outs + outs)


def _ev(*outputs: OutputMetrics, agree: float | None = 1.0, metric_ok: bool | None = None) -> EvalResult:
    return EvalResult(64, None, None, None, None, agree, list(outputs), metric_ok=metric_ok)


def test_budget_judges_mean_and_minimum_per_sample_cosine_of_every_output() -> None:
    good = OutputMetrics("a", 0.9999, 40.0, 0.1, cosine_mean=0.9995, cosine_min=0.99, per_sample=True)
    worn = OutputMetrics("b", 0.9999, 40.0, 0.1, cosine_mean=0.9985, cosine_min=0.99, per_sample=True)
    assert Budget().met(_ev(good))
    assert not Budget().met(_ev(good, worn))  # every output, not their average
    assert not Budget(min_sample_cosine=0.995).met(_ev(good))
    assert Budget(min_sample_cosine=0.98).met(_ev(good))
    assert Budget(min_cosine=None, min_sample_cosine=None).met(_ev(worn))
    with pytest.raises(ConfigError, match="min sample cosine"):
        Budget(min_sample_cosine=1.5)
    with pytest.raises(ConfigError, match="min agreement"):
        Budget(min_agreement=2.0)


def test_budget_is_frozen_and_records_its_rules() -> None:
    def keeps_argmax(ref: list[np.ndarray], cand: list[np.ndarray]) -> bool:
        return bool(np.all(ref[0].argmax(-1) == cand[0].argmax(-1)))

    b = Budget(min_sample_cosine=0.99, metric=keeps_argmax)
    with pytest.raises(dataclasses.FrozenInstanceError):
        b.min_cosine = 0.5  # type: ignore[misc]
    doc = b.to_json()
    assert doc == {"max_drop": None, "min_agreement": 0.995, "min_cosine": 0.999, "min_sample_cosine": 0.99,
                   "metric": "test_budget_is_frozen_and_records_its_rules.<locals>.keeps_argmax"}
    json.dumps(doc)
    assert b.explicit() == {"min_sample_cosine", "metric"}
    with pytest.raises(ConfigError, match="callable"):
        Budget(metric=3)  # type: ignore[arg-type]


def test_user_metric_is_run_by_compare_and_judged_by_the_budget() -> None:
    model, data, _ = few_samples_model()
    seen: list[tuple[int, tuple[int, ...]]] = []

    def strict(ref: list[np.ndarray], cand: list[np.ndarray]) -> bool:
        seen.append((len(ref), ref[0].shape))
        return bool(np.max(np.abs(ref[0] - cand[0])) < 1e-3)

    same = evaluate(model, model, data, metric=strict)
    assert same.metric_ok is True and seen == [(1, (16, 8))]
    assert Budget(metric=strict).met(same)
    ref = prepare_reference(model, data)
    off = compare(ref, [ref.outputs[0] + 0.01], metric=strict)
    assert off.metric_ok is False and not Budget(metric=strict).met(off)
    assert off.to_json()["metric_ok"] is False
    with pytest.raises(ConfigError, match="'test_user_metric_is_run_by_compare_and_judged_by_the_budget.<locals>.strict' "
                                          "was not run"):
        Budget(metric=strict).met(compare(ref, [ref.outputs[0]]))


def _hidden_data(n: int = 12) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(3).standard_normal((n, 4, 32)).astype(np.float32)}


def test_top1_rules_on_a_hidden_state_error_when_asked_notice_when_default() -> None:
    model, data = hidden_state_model(), _hidden_data()
    ref = prepare_reference(model, data)
    notes: list[str] = []
    out = Budget().check_applies(ref, notice=notes.append)
    assert out == notes and len(notes) == 1
    assert "top-1 agreement" in notes[0] and "'state'" in notes[0] and "(12, 4, 32)" in notes[0]
    for budget, rule in ((Budget(max_drop=1.0, min_agreement=None), "max_drop"),
                         (Budget(min_agreement=0.9), "min_agreement")):
        with pytest.raises(ConfigError, match=rf"budget rule {rule} cannot be judged: .*'state' has shape \(12, 4, 32\)"):
            budget.check_applies(ref)
    with pytest.raises(ConfigError, match="min_agreement"):  # the CLI names what the user typed
        Budget().check_applies(ref, explicit={"min_agreement"})
    assert Budget(min_agreement=None).check_applies(ref) == []  # the cosine rules judge a hidden state
    assert check_budget(model, data, budget=Budget(min_agreement=None)) == []
    classifier, cdata, _ = few_samples_model()
    assert Budget(max_drop=0.5).check_applies(prepare_reference(classifier, cdata), explicit={"max_drop"}) == []


def test_per_sample_fallback_is_announced() -> None:
    """An output whose axis 0 is not the samples: the cosine rules say they judge it whole."""
    model, data = hidden_state_model(), _hidden_data()
    ref = prepare_reference(model, data)
    seq_first = dataclasses.replace(ref, outputs=[np.swapaxes(ref.outputs[0], 0, 1)])
    notes = Budget(min_agreement=None).check_applies(seq_first)
    assert notes == ["output 'state' of shape (4, 12, 32) has no sample axis 0 for 12 samples: its per-sample "
                     "cosine is taken over the whole output"]


def test_compress_auto_checks_the_budget_before_searching() -> None:
    from onnxdc.api import SharingConfig, compress_auto

    model, data = hidden_state_model(), _hidden_data(64)
    with pytest.raises(ConfigError, match="budget rule max_drop cannot be judged"):
        compress_auto(model, base=SharingConfig(min_elements=256), data=data, budget=Budget(max_drop=1.0))
    notes: list[str] = []
    auto = compress_auto(model, base=SharingConfig(min_elements=256), data=data, budget=Budget(), notice=notes.append)
    assert any("top-1 agreement rule is not judged" in n for n in notes)
    assert auto.budget_met and auto.verified is not None and auto.verified.agreement_top1 is None
    assert auto.verified.outputs[0].cosine_mean >= 0.999
