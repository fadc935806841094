"""Gates for any output: the parser, each metric against numpy, gates that cannot judge failing by
name, ``eval``'s exit codes and the automatic budget honouring a per-output gate."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from cli_helpers import assert_error, run
from onnx import TensorProto, helper, numpy_helper

from onnxdc.api import (
    GATE_METRICS,
    Budget,
    ConfigError,
    Gate,
    Reference,
    SharingConfig,
    check_budget,
    compare,
    compress_auto,
    evaluate,
    judge_gates,
    parse_gate,
    prepare_reference,
)

MODELS = Path(__file__).parent.parent / "models"
LENET = MODELS / "lenet300.onnx"
TEST_DATA = MODELS / "lenet300.test.npz"


def two_output_model(seed: int = 0) -> onnx.ModelProto:
    """``x (n, 4, 32)`` -> MatMul, Tanh -> ``state (n, 4, 32)``, a hidden state; flattened -> MatMul
    -> ``logits (n, 10)``: one output a classifier's, one without a class axis."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array((rng.standard_normal((32, 32)) * 0.2).astype(np.float32), "w1"),
             numpy_helper.from_array((rng.standard_normal((128, 10)) * 0.2).astype(np.float32), "w2")]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Tanh", ["h"], ["state"]),
             helper.make_node("Flatten", ["state"], ["f"], axis=1), helper.make_node("MatMul", ["f", "w2"], ["logits"])]
    g = helper.make_graph(nodes, "two", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, 32])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 10]),
                           helper.make_tensor_value_info("state", TensorProto.FLOAT, ["n", 4, 32])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _inputs(n: int, seed: int = 1) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(seed).standard_normal((n, 4, 32)).astype(np.float32)}


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(("text", "output", "metric", "op", "limit", "optional"), [
    ("logits:top1-drop<=0.5", "logits", "top1-drop", "<=", 0.5, False),
    ("state:cosine>=0.999", "state", "cosine", ">=", 0.999, False),
    ("*:snr>=30", "*", "snr", ">=", 30.0, False),
    ("snr>=-5", None, "snr", ">=", -5.0, False),
    ("agreement>=0.99?", None, "agreement", ">=", 0.99, True),
    (" enc_*:min-cosine >= 0.98 ? ", "enc_*", "min-cosine", ">=", 0.98, True),
    ("Identity:0:max-abs<=1e-3", "Identity:0", "max-abs", "<=", 0.001, False),  # the last ':' ends the name
    ("logits:top1>=0.9", "logits", "top1", ">=", 0.9, False),
])
def test_parse_good_gates(text: str, output: str | None, metric: str, op: str, limit: float, optional: bool) -> None:
    g = parse_gate(text)
    assert (g.output, g.metric, g.op, g.limit, g.optional, g.source) == (output, metric, op, limit, optional, None)
    assert parse_gate(str(g)) == g  # the canonical text parses back to the same gate


@pytest.mark.parametrize(("text", "why"), [
    ("cosine", "is not [OUTPUT:]METRIC>=LIMIT"),
    ("state:cosine>0.9", "the comparison must be >= or <=, got '>'"),
    ("state:cosine=0.9", "the comparison must be >= or <=, got '='"),
    ("state:cosine<=0.9", "cosine is better higher, so its gate is cosine>=LIMIT"),
    ("max-abs>=0.1", "max-abs is better lower, so its gate is max-abs<=LIMIT"),
    ("state:psnr>=30", "unknown metric 'psnr'; metrics are agreement, top1, top1-drop, cosine"),
    ("cosine>=high", "the limit 'high' is not a number"),
    ("cosine>=nan", "the limit must be a finite number"),
    ("cosine>=1.5", "cosine limit must be in [-1, 1], got 1.5"),
    ("top1-drop<=-1", "top1-drop limit must be in [0, 100], got -1"),
    ("agreement>=99.5", "agreement limit must be in [0, 1], got 99.5"),
    (":cosine>=0.9", "the output name before ':' is empty"),
])
def test_parse_bad_gates_name_the_gate_in_one_line(text: str, why: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_gate(text)
    msg = str(info.value)
    assert msg.startswith(f"gate {text!r}") and why in msg and "\n" not in msg, msg


def test_every_metric_is_documented_in_the_cli_help() -> None:
    text = " ".join(run("eval", "--help").stdout.split())
    assert all(name in text for name in GATE_METRICS), text


# --------------------------------------------------------------------------- metrics against numpy


def _reference(outputs: dict[str, np.ndarray], labels: np.ndarray | None) -> Reference:
    n = len(next(iter(outputs.values())))
    return Reference(list(outputs), list(outputs.values()), {"x": np.zeros((n, 1), np.float32)}, labels)


def _value(ev, text: str, output: str) -> float:  # noqa: ANN001
    [v] = [v for v in judge_gates([parse_gate(text)], ev) if v.output == output]
    assert v.status in ("pass", "fail")
    return v.value


def test_each_metric_against_numpy() -> None:
    rng = np.random.default_rng(0)
    n = 50
    logits = rng.standard_normal((n, 6))
    cand_logits = logits + 0.6 * rng.standard_normal((n, 6))
    state = rng.standard_normal((n, 3, 5))
    cand_state = state + 0.1 * rng.standard_normal((n, 3, 5))
    labels = np.where(rng.random(n) < 0.7, logits.argmax(1), rng.integers(0, 6, n))  # a reference mostly right
    ref = _reference({"logits": logits, "state": state}, labels)
    ev = compare(ref, [cand_logits, cand_state])

    agree = np.mean(logits.argmax(1) == cand_logits.argmax(1))
    top1_ref, top1_cand = np.mean(logits.argmax(1) == labels), np.mean(cand_logits.argmax(1) == labels)
    assert 0 < agree < 1 and top1_ref != top1_cand
    assert _value(ev, "logits:agreement>=0", "logits") == pytest.approx(agree)
    assert _value(ev, "logits:top1>=0", "logits") == pytest.approx(top1_cand)
    assert _value(ev, "logits:top1-drop<=100", "logits") == pytest.approx(100 * (top1_ref - top1_cand))
    for name, r, c in (("logits", logits, cand_logits), ("state", state, cand_state)):
        rows = [a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) for a, b in zip(r.reshape(n, -1), c.reshape(n, -1))]
        assert _value(ev, f"{name}:cosine>=-1", name) == pytest.approx(np.mean(rows))
        assert _value(ev, f"{name}:min-cosine>=-1", name) == pytest.approx(np.min(rows))
        assert _value(ev, f"{name}:max-abs<=100", name) == pytest.approx(np.max(np.abs(r - c)))
        snr = 10 * np.log10(np.sum(r ** 2) / np.sum((r - c) ** 2))
        assert _value(ev, f"{name}:snr>=-100", name) == pytest.approx(snr)

    unlabelled = compare(_reference({"logits": logits, "state": state}, None), [cand_logits, cand_state])
    assert _value(unlabelled, "top1-drop<=100", "logits") == pytest.approx(100 * (1 - agree))  # as --max-drop


def test_pass_and_fail_follow_the_limit() -> None:
    rng = np.random.default_rng(1)
    ref = _reference({"y": rng.standard_normal((20, 8))}, None)
    ev = compare(ref, [ref.outputs[0] + 0.01])
    snr = _value(ev, "snr>=0", "y")
    got = judge_gates([parse_gate(f"y:snr>={snr - 0.1}"), parse_gate(f"y:snr>={snr + 0.1}"),
                       parse_gate("y:max-abs<=0.01"), parse_gate("y:max-abs<=0.009")], ev)
    assert [v.status for v in got] == ["pass", "fail", "pass", "fail"]
    assert got[1].describe() == f"output 'y': SNR {snr:.2f} dB is below y:snr>={snr + 0.1:.10g}"


# --------------------------------------------------------------------------- gates that cannot judge


def test_inapplicable_gates_fail_by_name_unless_optional() -> None:
    rng = np.random.default_rng(2)
    n = 16
    ref = _reference({"logits": rng.standard_normal((n, 4)), "state": rng.standard_normal((n, 2, 3))}, None)
    ev = compare(ref, [o + 0.01 for o in ref.outputs])
    [v] = judge_gates([parse_gate("state:agreement>=0.9")], ev)
    assert (v.status, v.value, v.output) == ("fail", None, "state")
    assert v.describe() == ("state:agreement>=0.9 cannot be judged: top-1 agreement needs (samples, classes) logits, "
                            "but output 'state' has shape (16, 2, 3) for 16 samples")
    [v] = judge_gates([parse_gate("logits:top1>=0.5")], ev)
    assert v.status == "fail" and v.reason == "top-1 against labels needs labels in the data, which have none"
    labelled = compare(_reference(dict(zip(ref.names, ref.outputs)), rng.integers(0, 4, n)),
                       [o + 0.01 for o in ref.outputs])
    [v] = judge_gates([parse_gate("state:top1>=0.5")], labelled)
    assert v.status == "fail" and "top-1 against labels needs (samples, classes) logits" in v.reason
    two_heads = _reference({"a": rng.standard_normal((n, 4)), "b": rng.standard_normal((n, 3))}, rng.integers(0, 4, n))
    [v] = judge_gates([parse_gate("b:top1>=0.5")], compare(two_heads, list(two_heads.outputs)))
    assert v.status == "fail" and v.reason == "top-1 against labels judges the first output only (labels are its " \
                                              "classes), not 'b'"
    # a glob meant for the outputs it can judge: '?' skips the others, --skip-inapplicable all
    got = judge_gates([parse_gate("*:agreement>=0.5?")], ev)
    assert [(v.output, v.status) for v in got] == [("logits", "pass"), ("state", "skip")]
    assert got[1].describe().startswith("*:agreement>=0.5? is not judged: top-1 agreement needs")
    assert [v.status for v in judge_gates([parse_gate("*:agreement>=0.5")], ev, skip_inapplicable=True)] == \
        ["pass", "skip"]
    with pytest.raises(ConfigError, match=r"gate 'hidden:cosine>=0.9' names no output of the model; its outputs "
                                          r"are 'logits', 'state'"):
        judge_gates([parse_gate("hidden:cosine>=0.9")], ev)


def test_user_metric_per_output() -> None:
    model, data = two_output_model(), _inputs(24)
    seen: list[tuple[int, ...]] = []

    def rel_l2(ref: np.ndarray, cand: np.ndarray) -> float:
        seen.append(ref.shape)
        return float(np.linalg.norm(ref - cand) / np.linalg.norm(ref))

    gate = Gate(output="state", metric=rel_l2, op="<=", limit=0.01)
    assert str(gate) == "state:test_user_metric_per_output.<locals>.rel_l2<=0.01"
    ref = prepare_reference(model, data)
    ev = compare(ref, [ref.outputs[0], ref.outputs[1] * 1.02], gates=[gate])
    assert seen == [(24, 4, 32)]  # called on the output the gate names, with every sample
    assert ev.outputs[1].custom == {gate.metric_name: pytest.approx(0.02)} and ev.outputs[0].custom == {}
    [v] = judge_gates([gate], ev)
    assert v.status == "fail" and v.value == pytest.approx(0.02)
    assert Budget(gates=(gate,), min_agreement=None).met(evaluate(model, model, data, gates=[gate]))
    assert not Budget(gates=(gate,), min_agreement=None).met(ev)
    with pytest.raises(ConfigError, match=r"metric 'test_user_metric_per_output.<locals>.<lambda>' returned str "
                                          r"'x' for output 'logits', not a number"):
        compare(ref, ref.outputs, gates=[Gate(output="logits", metric=lambda r, c: "x", op=">=", limit=0)])
    judged = judge_gates([gate], compare(ref, ref.outputs))  # the gate not given to compare: not measured
    assert judged[0].status == "fail" and "was not measured on output 'state'" in judged[0].reason


# --------------------------------------------------------------------------- the budget


def test_budget_rules_are_gates_and_per_output_gates_are_checked_before_searching() -> None:
    model, data = two_output_model(), _inputs(16)
    budget = Budget(max_drop=1.0, min_agreement=None, gates=(parse_gate("state:snr>=20"),))
    assert [str(g) for g in budget.rules()] == ["top1-drop<=1", "cosine>=0.999?", "state:snr>=20"]
    assert budget.to_json()["gates"] == ["state:snr>=20"] and budget.cosine_floor == 0.999
    assert check_budget(model, data, budget=budget) == []
    with pytest.raises(ConfigError, match=r"budget gate 'state:agreement>=0.9' cannot be judged: top-1 agreement "
                                          r"needs \(samples, classes\) logits, but output 'state' has shape \(16, 4, 32\)"):
        check_budget(model, data, budget=Budget(gates=(parse_gate("state:agreement>=0.9"),)))
    notes = check_budget(model, data, budget=Budget(gates=(parse_gate("*:agreement>=0.9?"),)))
    assert notes == ["budget gate '*:agreement>=0.9?' is not judged on output 'state': top-1 agreement needs "
                     "(samples, classes) logits, but output 'state' has shape (16, 4, 32) for 16 samples"]
    with pytest.raises(ConfigError, match="names no output"):
        check_budget(model, data, budget=Budget(gates=(parse_gate("hidden:cosine>=0.9"),)))
    with pytest.raises(ConfigError, match="budget gates must be Gate objects"):
        Budget(gates=("state:cosine>=0.9",))  # type: ignore[arg-type]


def test_auto_budget_honours_a_per_output_gate() -> None:
    """The state's own cosine floor, far above the logits', binds the search: the state keeps it."""
    model, data = two_output_model(), _inputs(160)
    base = SharingConfig(min_elements=256)
    loose = Budget(min_cosine=0.99, min_agreement=None)
    strict = Budget(min_cosine=0.99, min_agreement=None, gates=(parse_gate("state:cosine>=0.99995"),))
    a = compress_auto(model, base=base, data=data, budget=loose)
    b = compress_auto(model, base=base, data=data, budget=strict)
    assert a.budget_met and b.budget_met
    state_a, state_b = a.verified.outputs[1].cosine_mean, b.verified.outputs[1].cosine_mean
    assert state_a < 0.99995 <= state_b  # the loose budget did not keep it; the gate did
    assert len(b.result.data) > len(a.result.data)
    assert b.result.record["auto"]["budget"]["gates"] == ["state:cosine>=0.99995"]


# --------------------------------------------------------------------------- eval through the CLI


@pytest.fixture
def worn_hidden(hidden: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path, Path]:
    """The hidden-state model, a copy with its weights perturbed, and the data."""
    model, data = hidden
    m = onnx.load(str(model))
    w = numpy_helper.to_array(m.graph.initializer[0])
    noisy = w + 0.1 * np.random.default_rng(5).standard_normal(w.shape).astype(np.float32)
    m.graph.initializer[0].CopyFrom(numpy_helper.from_array(noisy, "w"))
    worn = tmp_path / "worn.onnx"
    onnx.save(m, str(worn))
    return model, worn, data


def test_eval_max_drop_on_a_hidden_state_fails_whatever_the_cosine(worn_hidden: tuple[Path, Path, Path]) -> None:
    model, worn, data = worn_hidden
    doc = json.loads(run("eval", model, worn, "--data", data, "--json").stdout)
    cosine = doc["outputs"][0]["cosine_mean"]
    assert 0.8 < cosine < 0.999 and doc["gates"] == [] and doc["passed"]
    result = run("eval", model, worn, "--data", data, "--max-drop", "1")
    assert result.exit_code == 3, result.output
    assert result.stderr == ("onnxdc: --max-drop 1 cannot be judged: top-1 drop needs (samples, classes) logits, but "
                             "output 'state' has shape (64, 4, 32) for 64 samples\n")
    assert "FAIL  --max-drop 1 cannot be judged" in result.stdout
    skipped = run("eval", model, worn, "--data", data, "--max-drop", "1", "--skip-inapplicable")
    assert skipped.exit_code == 0, skipped.output
    assert skipped.stderr.startswith("onnxdc: warning: --max-drop 1 is not judged: top-1 drop needs")
    by_gate = run("eval", model, worn, "--data", data, "--gate", "state:cosine>=0.999")
    assert by_gate.exit_code == 3
    assert by_gate.stderr == (f"onnxdc: output 'state': mean per-sample cosine {cosine:.6f} is below "
                              f"state:cosine>=0.999\n")
    ok = run("eval", model, worn, "--data", data, "--gate", f"state:cosine>={cosine - 1e-4:.6f}", "--gate",
             "*:snr>=5", "--json")
    assert ok.exit_code == 0, ok.output
    gates = json.loads(ok.stdout)["gates"]
    assert [(g["gate"], g["output"], g["status"]) for g in gates] == [
        (f"state:cosine>={cosine - 1e-4:.6f}", "state", "pass"), ("*:snr>=5", "state", "pass")]
    assert gates[0]["value"] == pytest.approx(cosine)


def test_eval_exit_codes_on_a_sample_model(tmp_path: Path) -> None:
    passed = run("eval", LENET, LENET, "--data", TEST_DATA, "--gate", "logits:top1-drop<=0", "--gate",
                 "logits:top1>=0.97", "--gate", "*:max-abs<=0", "--min-agreement", "1", "-j", "1")
    assert (passed.exit_code, passed.stderr) == (0, ""), passed.output
    lines = passed.stdout.splitlines()
    assert lines[lines.index("gates:") + 1:] == [
        "  pass  output 'logits': top-1 agreement 100.00% meets --min-agreement 1",
        "  pass  output 'logits': top-1 drop 0.00 points meets logits:top1-drop<=0",
        "  pass  output 'logits': top-1 against labels 97.25% meets logits:top1>=0.97",
        "  pass  output 'logits': max abs error 0 meets *:max-abs<=0"]
    pruned = tmp_path / "pruned.onnxdc"
    assert run("compress", LENET, "-o", pruned, "--sparsity", "0.95", "-q").exit_code == 0
    failed = run("eval", LENET, pruned, "--data", TEST_DATA, "--gate", "logits:snr>=30", "--gate", "logits:cosine>=0.5")
    assert failed.exit_code == 3 and len(failed.stderr.splitlines()) == 1
    assert failed.stderr.startswith("onnxdc: output 'logits': SNR ") and "is below logits:snr>=30" in failed.stderr
    assert_error(run("eval", LENET, pruned, "--data", TEST_DATA, "--gate", "logits:snr<=30"), 2,
                 "gate 'logits:snr<=30': snr is better higher")
    assert_error(run("eval", LENET, pruned, "--data", TEST_DATA, "--gate", "probs:snr>=30"), 2,
                 "gate 'probs:snr>=30' names no output of the model; its outputs are 'logits'")
    assert_error(run("eval", LENET, pruned, "--data", tmp_path / "missing.npz", "--gate", "snr>=30"), 1)


def test_compress_takes_gates_and_refuses_them_outside_the_automatic_mode(hidden: tuple[Path, Path],
                                                                         tmp_path: Path) -> None:
    model, data = hidden
    out = tmp_path / "o.onnxdc"
    assert_error(run("compress", model, "--calib", data, "-o", out, "-q", "--gate", "state:agreement>=0.9"), 2,
                 "budget gate 'state:agreement>=0.9' cannot be judged", "'state' has shape (16, 4, 32)")
    assert_error(run("compress", model, "--calib", data, "-o", out, "-q", "--gate", "state:cosine>=2"), 2,
                 "gate 'state:cosine>=2': cosine limit must be in [-1, 1]")
    result = run("compress", model, "--sparsity", "0.5", "-o", out, "--gate", "state:cosine>=0.9")
    assert result.exit_code == 2 and "--gate set the automatic mode's budget" in result.stderr
    done = run("compress", model, "--calib", data, "-o", out, "--json", "--min-agreement", "0.99",
               "--skip-inapplicable", "--gate", "state:snr>=25")
    assert done.exit_code == 0, done.output
    assert "budget rule min_agreement is not judged on output 'state'" in done.stderr
    doc = json.loads(done.stdout)
    assert doc["budget_met"] and doc["calibration_eval"]["outputs"][0]["snr_db"] >= 25
    assert not math.isnan(doc["calibration_eval"]["outputs"][0]["cosine_mean"])
