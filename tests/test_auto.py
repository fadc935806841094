"""Automatic settings, synthetic inputs, and robustness on graphs built in the tests."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from model_builders import few_samples_model
from onnx import TensorProto, helper, numpy_helper

from onnxdc import ConfigError, decompress
from onnxdc.api import compress_auto
from onnxdc.auto.search import (
    Budget,
    Point,
    _predict,
    _spread,
    choose,
    recipe_toml,
    sensitivity,
    split,
    trade_offs,
)
from onnxdc.calibration.synthetic import parse_dims, synthetic_inputs
from onnxdc.evaluate import EvalResult, OutputMetrics, evaluate
from onnxdc.pipeline.plan import plan_sharing
from onnxdc.pipeline.settings import SharingConfig, load_recipe

RNG = np.random.default_rng(0)


def _init(name: str, *shape: int, dtype=np.float32) -> onnx.TensorProto:  # noqa: ANN001
    return numpy_helper.from_array((RNG.standard_normal(shape) * 0.2).astype(dtype), name)


def robust_model() -> onnx.ModelProto:
    """Dynamic shapes, float + token-id + bool inputs, two outputs, a weight shared by two nodes,
    weights reached through Transpose / Cast / Identity, and an embedding table."""
    nodes = [
        helper.make_node("Cast", ["ids"], ["ids_i32"], to=TensorProto.INT32),
        helper.make_node("Gather", ["emb", "ids_i32"], ["e"]),               # [B, T, 32]
        helper.make_node("ReduceMean", ["e"], ["e_mean"], axes=[1], keepdims=0),  # [B, 32]
        helper.make_node("Concat", ["x", "e_mean"], ["h0"], axis=1),          # [B, 64]
        helper.make_node("MatMul", ["h0", "shared_w"], ["h1"]),               # [B, 64]
        helper.make_node("Relu", ["h1"], ["h1r"]),
        helper.make_node("MatMul", ["h1r", "shared_w"], ["h2"]),              # same weight again
        helper.make_node("Transpose", ["wt"], ["wt_t"], perm=[1, 0]),
        helper.make_node("Gemm", ["h2", "wt_t"], ["h3"]),                     # [B, 48]
        helper.make_node("Cast", ["w16"], ["w16_f"], to=TensorProto.FLOAT),
        helper.make_node("Identity", ["w16_f"], ["w16_id"]),
        helper.make_node("MatMul", ["h3", "w16_id"], ["logits"]),             # [B, 10]
        helper.make_node("Cast", ["flag"], ["flag_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["logits", "flag_f"], ["gated"]),
    ]
    inits = [_init("emb", 500, 32), _init("shared_w", 64, 64), _init("wt", 48, 64), _init("w16", 48, 10, dtype=np.float16)]
    g = helper.make_graph(nodes, "robust", [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 32]),
        helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"]),
        helper.make_tensor_value_info("flag", TensorProto.BOOL, ["batch", 1]),
    ], [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10]),
        helper.make_tensor_value_info("gated", TensorProto.FLOAT, ["batch", 10])], initializer=inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_synthetic_inputs_respect_specs() -> None:
    model = robust_model()
    data = synthetic_inputs(model, samples=20, dims=parse_dims(["seq=7"]), seed=1)
    assert data["x"].shape == (20, 32) and data["x"].dtype == np.float32
    assert data["ids"].shape == (20, 7) and data["ids"].dtype == np.int64
    assert data["ids"].min() >= 0 and data["ids"].max() < 500  # within the embedding table
    assert data["flag"].dtype == np.bool_
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert sess.run(None, data)[0].shape == (20, 10)
    with pytest.raises(ConfigError):
        parse_dims(["seq"])
    with pytest.raises(ConfigError):
        parse_dims(["seq=0"])


def test_budget_checks() -> None:
    def ev(top1: float | None, agree: float, cos: float) -> EvalResult:
        return EvalResult(100, 0.9 if top1 is not None else None, top1, None, None, agree,
                          [OutputMetrics("y", cos, 30.0, 0.1)])

    assert Budget().met(ev(None, 0.996, 0.9995))
    assert not Budget().met(ev(None, 0.99, 0.9995))
    assert not Budget().met(ev(None, 0.999, 0.998))
    assert Budget(max_drop=0.5, min_agreement=None, min_cosine=None).met(ev(0.896, 0.9, 0.5))
    assert not Budget(max_drop=0.5, min_agreement=None, min_cosine=None).met(ev(0.894, 0.9, 0.5))
    with pytest.raises(ConfigError):
        Budget(max_drop=-1)


def test_robust_graph_compresses_within_budget_and_runs(tmp_path: Path) -> None:
    model = robust_model()
    data = synthetic_inputs(model, samples=128, dims={"seq": 5}, seed=0)
    auto = compress_auto(model, base=SharingConfig(min_elements=256), data=data, budget=Budget(), max_samples=128)
    assert auto.budget_met and auto.verified is not None and Budget().met(auto.verified)
    shared = {t.name for t in auto.result.container.header.tensors if t.encoding == "shared"}
    assert {"emb", "shared_w", "wt", "w16"} <= {r.match for r in auto.choice.rules}
    assert {"emb", "wt"} <= shared
    out = decompress(auto.result.data)
    onnx.checker.check_model(out, full_check=True)
    fresh = synthetic_inputs(model, samples=64, dims={"seq": 9}, seed=5)  # other dims, unseen inputs
    ev = evaluate(model, out, fresh)
    assert ev.outputs[0].cosine > 0.99
    by_name = {t.name: t for t in out.graph.initializer}
    assert by_name["w16"].data_type == TensorProto.FLOAT16
    meta = auto.result.record["calibration"]["tensors"]
    assert "no layer statistics" in meta["shared_w"]["method"]  # shared by two nodes: no single layer
    # the recipe records every tensor's pick and reads back as rules
    recipe = tmp_path / "r.toml"
    recipe.write_text(recipe_toml(auto.choice.rules, header="test"))
    assert load_recipe(recipe) == auto.choice.rules


def test_int8_model_is_stored_losslessly(tmp_path: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src, dst = tmp_path / "f.onnx", tmp_path / "q.onnx"
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 64])],
                          initializer=[_init("w", 64, 64)])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), src)
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
    model = onnx.load(dst)
    data = synthetic_inputs(model, samples=32, seed=0)
    auto = compress_auto(model, base=SharingConfig(), data=data, budget=Budget())
    assert not auto.choice.rules
    assert all(t.encoding == "planes" for t in auto.result.container.header.tensors)
    out = {t.name: numpy_helper.to_array(t) for t in decompress(auto.result.data).graph.initializer}
    for t in model.graph.initializer:
        np.testing.assert_array_equal(out[t.name], numpy_helper.to_array(t))


def _pt(s: float, b: int, size: int, cos: float, err: float = 0.0, measured: bool = True) -> Point:
    return Point("t", s, b, size, cos, None, None, err, measured)


def test_trade_offs_walk_every_distinct_choice_from_careful_to_small() -> None:
    points = {0: [_pt(0.0, 8, 1000, 1.0), _pt(0.5, 5, 400, 0.999), _pt(0.9, 3, 100, 0.99),
                  _pt(0.7, 4, 700, 0.995)],  # above the hull: never the best for any λ
              1: [_pt(0.0, 8, 500, 1.0), _pt(0.9, 3, 50, 0.9999)]}
    path = trade_offs(points)
    assert len(path) == 4
    assert path.picks(0) == {0: (0.0, 8), 1: (0.0, 8)}  # quality only
    assert path.picks(3) == {0: (0.9, 3), 1: (0.9, 3)}  # bytes only
    picks = [path.picks(i) for i in range(len(path))]
    assert len({tuple(sorted(p.items())) for p in picks}) == len(picks)
    assert all((0.7, 4) not in p.values() for p in picks)
    lams = [path.lam(i) for i in range(len(path))]
    assert lams == sorted(lams, reverse=True)
    for i, lam in enumerate(lams):  # each choice is the per-tensor optimum at its λ
        for slot, pts in points.items():
            best = min(pts, key=lambda p: p.est_bytes + lam * (1 - p.cosine))
            assert picks[i][slot] == (best.sparsity, best.bits)
    losses = path.predicted_losses()
    assert losses[0] == 0 and losses == sorted(losses)
    assert losses[-1] == pytest.approx(0.01 + 0.0001)
    sizes = [sum(next(q.est_bytes for q in points[s] if (q.sparsity, q.bits) == v) for s, v in p.items())
             for p in picks]
    assert sizes == sorted(sizes, reverse=True)


def test_unmeasured_points_are_predicted_from_layer_error() -> None:
    pts = [_pt(0.5, 8, 10, 1 - 2e-4, err=1e-3), _pt(0.7, 8, 8, 1.0, err=5e-3, measured=False),
           _pt(0.9, 8, 5, 1 - 2e-3, err=1e-2), _pt(0.0, 8, 20, 1.0, err=0.0, measured=False)]
    out = _predict(pts)
    assert out[0] == pts[0] and out[2] == pts[2]  # measured points keep their values
    assert out[1].cosine == pytest.approx(1 - 1e-3) and not out[1].measured  # scale 0.2 from both
    assert out[3].cosine == 1.0
    exact = [replace(p, cosine=1.0) if p.measured else p for p in pts]
    assert [p.cosine for p in _predict(exact)] == [1.0] * 4  # measured exact everywhere: scale 0
    assert _spread(pts, 2) == [0, 1]  # at 1/3 and 2/3 of the log range of the nonzero errors
    assert _spread([_pt(0, 8, 1, 1.0)], 3) == []


def test_automatic_mode_measures_few_points_and_checks_the_choice() -> None:
    model = robust_model()
    data = synthetic_inputs(model, samples=64, dims={"seq": 5}, seed=0)
    plans = plan_sharing(model, SharingConfig(min_elements=256))
    fit, check = split(data, max_samples=64)
    points = sensitivity(model, plans, fit, check, measure=2)
    for pts in points.values():
        assert sum(p.measured for p in pts) <= 2
        assert all(p.agreement is None for p in pts if not p.measured)
    full = sensitivity(model, plans, fit, check)
    assert all(p.measured for pts in full.values() for p in pts)
    choice = choose(model, plans, fit, check, points, budget=Budget(), steps=4)
    assert choice.tried <= 4 and Budget().met(choice.evaluation)


def test_collect_runs_only_the_nodes_it_needs() -> None:
    from onnxdc.calibration.calibrate import _collect, _needed

    model = robust_model()
    nodes = list(model.graph.node)
    needed = _needed(nodes, ["h1r"])
    assert [n.output[0] for n in needed] == ["ids_i32", "e", "e_mean", "h0", "h1", "h1r"]
    data = synthetic_inputs(model, samples=8, dims={"seq": 3}, seed=2)
    got = _collect(model, ["h1r", "x"], data)
    assert set(got) == {"h1r", "x"} and got["h1r"].shape == (8, 64)


def test_automatic_mode_falls_back_to_plain_sharing_when_fitting_overfits() -> None:
    """12 fitting samples for a 64-input layer: the least-squares refit zeroes every direction the
    samples do not span, so new inputs come out wrong; plain magnitude + k-means still meets the
    budget and is used instead of storing everything losslessly."""
    model, data, rng = few_samples_model()
    auto = compress_auto(model, base=SharingConfig(min_elements=256), data=data, budget=Budget())
    meta = auto.result.record  # the run's record (a 4.0 header keeps only a user's metadata)
    assert auto.budget_met and meta["auto"]["engine"] == "rd" and not auto.result.container.header.metadata
    assert {t.encoding for t in auto.result.container.header.tensors} == {"shared"}
    fresh = {"x": rng.standard_normal((64, 64)).astype(np.float32)}
    assert evaluate(model, decompress(auto.result.data), fresh).outputs[0].cosine > 0.999
