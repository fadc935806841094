"""Calibration-aware compression: linear forms, compensation, codebook refit, end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxdc import CompressConfig, compress, decompress, load_model
from onnxdc.calibration.linear import input_matrices, linear_form, weight_matrices, weight_tensor
from onnxdc.evaluate import evaluate, load_data
from onnxdc.pipeline.settings import SharingConfig
from onnxdc.stages.compensate import _inverse_cholesky, compensate, obs_sweep, output_error, problem, refit_codebook
from onnxdc.stages.quantize import ShareConfig, kmeans_1d

MODELS = Path(__file__).resolve().parent.parent / "models"


def _run(node, inputs: dict[str, np.ndarray], inits: list, out_name: str = "y") -> np.ndarray:  # noqa: ANN001
    g = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, list(v.shape)) for k, v in inputs.items()],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, None)], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, inputs)[0]


CONV_CASES = [
    dict(n=2, c=3, h=9, w=8, cout=4, k=(3, 3), group=1, strides=[1, 1], pads=[0, 0, 0, 0], dilations=[1, 1]),
    dict(n=1, c=4, h=10, w=7, cout=6, k=(3, 2), group=2, strides=[2, 1], pads=[1, 0, 2, 1], dilations=[1, 2]),
    dict(n=3, c=6, h=8, w=8, cout=6, k=(3, 3), group=6, strides=[1, 2], pads=[1, 1, 1, 1], dilations=[2, 1]),
    dict(n=2, c=2, h=7, w=9, cout=3, k=(5, 3), group=1, strides=[3, 2], pads=[2, 1, 0, 1], dilations=[1, 1]),
    dict(n=1, c=4, h=7, w=7, cout=4, k=(3, 3), group=2, strides=[2, 2], auto_pad="SAME_UPPER", dilations=[1, 1]),
    dict(n=1, c=2, h=6, w=7, cout=2, k=(2, 2), group=1, strides=[2, 2], auto_pad="SAME_LOWER", dilations=[1, 1]),
]


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: f"g{c['group']}-s{c['strides']}-{c.get('auto_pad', 'pads')}")
def test_im2col_matches_onnxruntime_conv(case: dict) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((case["n"], case["c"], case["h"], case["w"])).astype(np.float32)
    w = rng.standard_normal((case["cout"], case["c"] // case["group"], *case["k"])).astype(np.float32)
    attrs = {"group": case["group"], "strides": case["strides"], "dilations": case["dilations"],
             "kernel_shape": list(case["k"])}
    if "auto_pad" in case:
        attrs["auto_pad"] = case["auto_pad"]
    else:
        attrs["pads"] = case["pads"]
    node = helper.make_node("Conv", ["x", "w"], ["y"], **attrs)
    want = _run(node, {"x": x}, [numpy_helper.from_array(w, "w")])
    form = linear_form(node, 1, w.shape)
    xs, ws = input_matrices(form, x), weight_matrices(form, w)
    n, cout, oh, ow = want.shape
    got = np.concatenate([(xg @ wg).reshape(n, oh, ow, -1) for xg, wg in zip(xs, ws)], axis=3).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(weight_tensor(form, ws, w.shape), w)


@pytest.mark.parametrize("trans_a", [0, 1])
@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("weight_pos", [0, 1])
def test_gemm_linear_form_either_operand(trans_a: int, trans_b: int, weight_pos: int) -> None:
    rng = np.random.default_rng(1)
    m, k, n = 5, 7, 3
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
    node = helper.make_node("Gemm", ["a", "b"], ["y"], transA=trans_a, transB=trans_b, alpha=0.5)
    weight, act = (b, a) if weight_pos == 1 else (a, b)
    wname, aname = ("b", "a") if weight_pos == 1 else ("a", "b")
    want = _run(node, {aname: act}, [numpy_helper.from_array(weight, wname)])
    form = linear_form(node, weight_pos, weight.shape)
    y = input_matrices(form, act)[0] @ weight_matrices(form, weight)[0]
    np.testing.assert_allclose(y if weight_pos == 1 else y.T, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(weight_tensor(form, weight_matrices(form, weight), weight.shape), weight)


def test_compensation_recovers_exact_sparse_solution_on_redundant_inputs() -> None:
    # Inputs repeat (x = [z, z]); W0 spreads each weight over both copies. Dropping the first copy
    # loses nothing if its weight moves to the second: W = [0; B + C] is an exact sparse solution.
    rng = np.random.default_rng(2)
    z = rng.standard_normal((400, 12))
    x = np.concatenate([z, z], axis=1)
    b, c = rng.standard_normal((12, 5)), rng.standard_normal((12, 5))
    w0 = np.concatenate([b, c])
    prob = problem(x, x, w0)
    mask = np.concatenate([np.zeros((12, 5), bool), np.ones((12, 5), bool)])
    w_hat, _ = obs_sweep(w0, _inverse_cholesky(prob.h), mask=mask)
    np.testing.assert_allclose(w_hat[:12], 0)
    # Exact up to the 1% ridge damping the Hessian gets for numerical safety.
    np.testing.assert_allclose(w_hat[12:], b + c, atol=0.05)
    assert np.linalg.norm(x @ w_hat - x @ w0) < 0.02 * np.linalg.norm(x @ w0)
    # Without compensation the same mask loses half of every output.
    assert np.abs(x @ np.where(mask, w0, 0) - x @ w0).max() > 1


def test_compensation_finds_the_support_of_a_sparse_layer() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((600, 40))
    w0 = rng.standard_normal((40, 6)) * (rng.random((40, 6)) < 0.3)
    w0[w0 != 0] += np.sign(w0[w0 != 0])  # kept weights clearly away from zero
    sparsity = float((w0 == 0).mean())
    prob = problem(x, x, w0)
    w_hat, keep = obs_sweep(prob.w_star, _inverse_cholesky(prob.h), sparsity=sparsity)
    assert abs(keep.mean() - (1 - sparsity)) < 0.03
    np.testing.assert_allclose(w_hat, w0, atol=0.05)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("bits", [2, 3, 5])
def test_refit_never_increases_the_output_error(seed: int, bits: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((300, 24)) @ rng.standard_normal((24, 24))  # correlated inputs
    w0 = rng.laplace(0, 1, (24, 10))
    prob = problem(x, x, w0)
    keep = rng.random(w0.shape) < 0.6
    clus = kmeans_1d(w0[keep].astype(np.float32), config=ShareConfig(bits=bits))
    idx = np.zeros(w0.shape, np.uint8)
    idx[keep] = clus.indices
    cb = clus.codebook.astype(np.float64)
    before = output_error(np.where(keep, cb[idx], 0), prob)
    refit = refit_codebook([prob], [idx], [keep], cb.size)
    after = output_error(np.where(keep, refit[idx], 0), prob)
    assert after <= before * (1 + 1e-9) + 1e-9
    comp = compensate([prob], sparsity=0.5, share=ShareConfig(bits=bits))
    assert comp.error_refit <= comp.error_kmeans * (1 + 1e-9) + 1e-9
    assert comp.codebook.size <= 2 ** bits and not np.any(comp.codebook == 0)


@pytest.mark.parametrize("name", ["lenet300", "lenet5", "crnn"])
def test_calibrated_beats_magnitude_on_the_test_split(name: str) -> None:
    model = load_model(MODELS / f"{name}.onnx")
    calib, test = load_data(MODELS / f"{name}.calib.npz"), load_data(MODELS / f"{name}.test.npz")
    sharing = SharingConfig(sparsity=0.9, bits=5)
    plain = compress(model, config=CompressConfig(sharing=sharing))
    cal = compress(model, config=CompressConfig(sharing=sharing, calibration=calib, calib_samples=256))
    acc_plain = evaluate(model, decompress(plain.data), test).candidate_top1
    acc_cal = evaluate(model, decompress(cal.data), test).candidate_top1
    assert acc_cal > acc_plain
    out = {t.name: numpy_helper.to_array(t) for t in decompress(cal.data).graph.initializer}
    for tname, q in cal.quantized.items():
        np.testing.assert_array_equal(out[tname], q)
        assert abs((q == 0).mean() - 0.9) < 0.02
    methods = cal.record["calibration"]["tensors"]
    assert all(m["error_refit"] <= m["error_kmeans"] + 1e-9 for m in methods.values())
    assert all(m["method"] == "compensated" for m in methods.values())  # GRU W and R (linear_before_reset=1) too


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_recurrent_previous_states_rebuild_the_gru_output(direction: str) -> None:
    """The rows R multiplies are the hidden states before each step: with them (and W, B, x) the
    GRU equations reproduce onnxruntime's Y exactly, in every direction."""
    rng = np.random.default_rng(0)
    d_count = 2 if direction == "bidirectional" else 1
    t, b, i, h = 5, 3, 4, 6
    w = rng.standard_normal((d_count, 3 * h, i)).astype(np.float32) * 0.5
    r = rng.standard_normal((d_count, 3 * h, h)).astype(np.float32) * 0.5
    bias = rng.standard_normal((d_count, 6 * h)).astype(np.float32) * 0.1
    h0 = rng.standard_normal((d_count, b, h)).astype(np.float32)
    x = rng.standard_normal((t, b, i)).astype(np.float32)
    node = helper.make_node("GRU", ["x", "W", "R", "B", "", "h0"], ["Y", "Yh"], hidden_size=h,
                            linear_before_reset=1, direction=direction)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [t, b, i]),
                                        helper.make_tensor_value_info("h0", TensorProto.FLOAT, [d_count, b, h])],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
                          initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(r, "R"),
                                       numpy_helper.from_array(bias, "B")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    y = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x, "h0": h0})[0]
    form = linear_form(node, 2, r.shape)
    assert form is not None and form.sources == ("Y", "h0")
    prevs, mats = input_matrices(form, y, h0), weight_matrices(form, r)

    def sig(v: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(-v))

    for d in range(d_count):
        hp = prevs[d].reshape(t, b, h)
        xw = np.einsum("tbi,gi->tbg", x, w[d]) + bias[d, :3 * h]
        hr = hp @ mats[d] + bias[d, 3 * h:]
        z, rr = sig(xw[..., :h] + hr[..., :h]), sig(xw[..., h:2 * h] + hr[..., h:2 * h])
        cand = np.tanh(xw[..., 2 * h:] + rr * hr[..., 2 * h:])
        np.testing.assert_allclose((1 - z) * cand + z * hp, y[:, d], atol=1e-5)
    # a GRU whose candidate gate multiplies r * h has no linear form for R
    plain = helper.make_node("GRU", ["x", "W", "R"], ["Y"], hidden_size=h)
    assert linear_form(plain, 2, r.shape) is None


def test_high_resolution_conv_statistics_use_a_few_evenly_spaced_samples() -> None:
    """A 64-channel 3x3 conv unrolls each 64x64 sample into 4096 rows; problem() keeps about 30k
    rows of 576 inputs, so 8 of the 16 samples are enough, and only those are run and unrolled."""
    from onnxdc.calibration.calibrate import _feed, _layer_feed, layer_of
    from onnxdc.pipeline.plan import plan_sharing
    from onnxdc.stages.compensate import max_rows

    rng = np.random.default_rng(3)
    w = numpy_helper.from_array((rng.standard_normal((16, 64, 3, 3)) * 0.1).astype(np.float32), "w")
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Conv", ["r", "w"], ["y"], pads=[1] * 4)],
                          "hires", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64, 64, 64])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    data = {"x": rng.standard_normal((16, 64, 64, 64)).astype(np.float32)}
    plan = next(iter(plan_sharing(model, SharingConfig(sparsity=0.5, bits=4)).values()))
    _, form = layer_of(model, plan)
    sub = _layer_feed(model, form, numpy_helper.to_array(w), _feed(model, data, None))
    need = -(-max_rows(576) // 4096)
    assert need == 8
    np.testing.assert_array_equal(sub["x"], data["x"][np.linspace(0, 15, need).round().astype(int)])
    res = compress(model, config=CompressConfig(sharing=SharingConfig(sparsity=0.5, bits=4), calibration=data))
    meta = res.record["calibration"]["tensors"]["w"]
    assert meta["method"] == "compensated" and meta["error_refit"] <= meta["error_kmeans"]
