"""Per-gate weights of a recurrent weight's layer error (onnxdc.auto.blocks) and the per-column λ
they feed: measured, normalized and clamped as documented, inert when uniform, and on the CRNN
sample a smaller container at the same budget."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import helper

from onnxdc.auto.blocks import MAX_RATIO, gate_count, gate_weights
from onnxdc.auto.curves import tensor_curve
from onnxdc.calibration.linear import LinearForm
from onnxdc.stages.compensate import LayerProblem
from onnxdc.stages.ecq import code_lengths, ec_sweep, ec_sweep_many, lam_for, layer_error

MODELS = Path(__file__).resolve().parent.parent / "models"


def _form(op: str, kind: str) -> LinearForm:
    return LinearForm(helper.make_node(op, ["x", "w", "r"], ["y"]), "x", kind, 1, {})


def test_gates_are_counted_for_recurrent_weights_only() -> None:
    assert gate_count(_form("GRU", "rnn_w"), (1, 15, 3)) == 3
    assert gate_count(_form("GRU", "rnn_r"), (2, 15, 5)) == 3
    assert gate_count(_form("LSTM", "rnn_w"), (1, 16, 3)) == 4
    assert gate_count(_form("RNN", "rnn_w"), (1, 5, 3)) == 0  # one gate: nothing to weigh apart
    assert gate_count(_form("GRU", "rnn_w"), (1, 14, 3)) == 0  # rows not a multiple of the gates
    assert gate_count(_form("Gemm", "gemm_b"), (6, 7)) == 0
    assert gate_count(None, (1, 15, 3)) == 0


def _fake_deficit(costs: list[float], hidden: int, w0: np.ndarray):  # noqa: ANN202
    """A deficit that is ``costs[g]`` per unit squared change of gate g's rows."""
    def deficit(replaced: dict[int, np.ndarray]) -> float:
        d = (next(iter(replaced.values())) - w0).astype(np.float64)
        return sum(c * float(np.sum(d[:, g * hidden:(g + 1) * hidden] ** 2)) for g, c in enumerate(costs))
    return deficit


def test_gate_weights_follow_each_gates_share_of_the_deficit() -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((2, 12, 5)).astype(np.float32)
    got = gate_weights(3, w, 3, _fake_deficit([1.0, 2.0, 5.0], 4, w))
    assert got is not None and got.shape == (12,)
    np.testing.assert_allclose(got, np.repeat([1.0, 2.0, 5.0], 4) / (8.0 / 3.0), rtol=1e-5)  # float32 noise
    assert got.mean() == pytest.approx(1.0)
    again = gate_weights(3, w, 3, _fake_deficit([1.0, 2.0, 5.0], 4, w))
    np.testing.assert_array_equal(got, again)  # seeded noise: the same weights every run


def test_gate_weights_are_clamped_and_none_without_a_measurement() -> None:
    w = np.random.default_rng(1).standard_normal((1, 9, 4)).astype(np.float32)
    got = gate_weights(0, w, 3, _fake_deficit([0.0, 1.0, 1.0], 3, w))
    assert got is not None and got.min() * MAX_RATIO >= got.max() / MAX_RATIO * 0.999
    assert got[0] > 0  # a gate that does not move the outputs keeps a floor, never zero
    assert gate_weights(0, w, 3, lambda _: 0.0) is None
    assert gate_weights(0, np.zeros_like(w), 3, _fake_deficit([1.0, 1.0, 1.0], 3, w)) is None


def _problem(seed: int = 3) -> LayerProblem:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((300, 20))
    return LayerProblem(x.T @ x / 300, 0.2 * rng.standard_normal((20, 12)))


def test_a_lambda_per_column_is_the_scalar_lambda_when_uniform_and_zeroes_light_columns() -> None:
    prob = _problem()
    step = 0.05
    lam = lam_for(step, np.diag(prob.u), 1.0)
    lengths = code_lengths(np.random.default_rng(5).integers(1, 50, 255))
    plain = ec_sweep(prob.w_star, prob.u, step=step, lam=lam, lengths=lengths)
    np.testing.assert_array_equal(ec_sweep(prob.w_star, prob.u, step=step, lam=np.full(12, lam), lengths=lengths), plain)
    columns = np.repeat([0.05, 1.0, 1.95], 4)
    weighted = ec_sweep(prob.w_star, prob.u, step=step, lam=lam / columns, lengths=lengths)
    many = ec_sweep_many(prob.w_star, prob.u, points=[(step, lam / columns, lengths), (step, lam, lengths)])
    np.testing.assert_array_equal(many[0], weighted)
    np.testing.assert_array_equal(many[1], plain)
    zeros = [np.count_nonzero(lv[:, :4] == 0) for lv in (plain, weighted)]
    assert zeros[1] > zeros[0]  # the light columns pay 20x for their bits: more of them are zero


def test_layer_error_weighs_each_column() -> None:
    prob = _problem(4)
    w_hat = prob.w_star + 0.01 * np.random.default_rng(6).standard_normal(prob.w_star.shape)
    columns = np.linspace(0.1, 2.0, 12)
    per_column = [layer_error(w_hat[:, [j]], prob.w_star[:, [j]], prob.h) for j in range(12)]
    assert layer_error(w_hat, prob.w_star, prob.h, columns) == pytest.approx(float(np.dot(per_column, columns)))
    assert layer_error(w_hat, prob.w_star, prob.h, np.ones(12)) == pytest.approx(layer_error(w_hat, prob.w_star, prob.h))


def test_uniform_column_weights_leave_a_curve_as_it_was() -> None:
    from onnxdc.calibration.stats import LayerStats

    prob = _problem(8)
    form = LinearForm(helper.make_node("Gemm", ["x", "w"], ["y"]), "x", "gemm_b", 1,
                      {"transA": 0, "transB": 0, "alpha": 1.0})
    st = LayerStats(form, [prob.h], 300)
    w = prob.w_star.astype(np.float32)
    a = tensor_curve(0, "w", w, st)
    b = tensor_curve(0, "w", w, st, columns=np.ones(12))
    assert [p.est_bytes for p in a.points] == [p.est_bytes for p in b.points]
    np.testing.assert_allclose([p.distortion for p in a.points], [p.distortion for p in b.points], rtol=1e-12)
    assert b.energy == pytest.approx(a.energy)


def test_the_crnn_grus_gates_are_weighed_and_its_container_shrinks_within_the_budget() -> None:
    """On the CRNN sample, the GRU's W and R get non-uniform gate weights; the automatic container
    at the default budget is smaller than with uniform weights, and both meet it on the checking
    samples."""
    import onnxdc.auto.engine as engine
    from onnxdc.api import AUTO_MIN_ELEMENTS, Budget, SharingConfig, compress_auto, load_data, load_model

    model = load_model(MODELS / "crnn.onnx")
    data = load_data(MODELS / "crnn.calib.npz")
    seen = {}

    def recording(slot, w, gates, deficit):  # noqa: ANN001, ANN202
        seen[slot] = gate_weights(slot, w, gates, deficit)
        return seen[slot]

    budget = Budget(max_drop=0.5, min_agreement=None)
    base = SharingConfig(min_elements=AUTO_MIN_ELEMENTS)
    mp = pytest.MonkeyPatch()
    try:
        mp.setattr(engine, "gate_weights", recording)
        weighed = compress_auto(model, base=base, data=data, budget=budget)
        mp.setattr(engine, "gate_weights", lambda *a: None)
        uniform = compress_auto(model, base=base, data=data, budget=budget)
    finally:
        mp.undo()
    assert len(seen) == 2 and all(c is not None and np.ptp(c) > 0.1 for c in seen.values())
    assert weighed.budget_met and uniform.budget_met
    assert len(weighed.result.data) < len(uniform.result.data)


def test_bidirectional_gru_and_lstm_weights_are_weighed_and_the_budget_holds() -> None:
    """Both directions of a bidirectional GRU share their gates' weights; an LSTM's four gates
    are weighed too; the automatic container meets its budget and decodes to a model that runs."""
    import onnxruntime as ort
    from onnx import TensorProto, numpy_helper

    import onnxdc.auto.engine as engine
    from onnxdc import decompress
    from onnxdc.api import Budget, SharingConfig, compress_auto

    rng = np.random.default_rng(11)

    def w(name: str, *shape: int) -> object:
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)

    nodes = [helper.make_node("Transpose", ["x"], ["seq"], perm=[1, 0, 2]),  # onnxruntime runs time-major only
             helper.make_node("GRU", ["seq", "gw", "gr"], ["gt"], hidden_size=8, direction="bidirectional",
                              linear_before_reset=1),
             helper.make_node("LSTM", ["seq", "lw", "lr"], ["lt"], hidden_size=6),
             helper.make_node("Transpose", ["gt"], ["gy"], perm=[2, 0, 1, 3]),
             helper.make_node("Transpose", ["lt"], ["ly"], perm=[2, 0, 1, 3])]
    graph = helper.make_graph(nodes, "rnns", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 10, 12])],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in ("gy", "ly")],
                              initializer=[w("gw", 2, 24, 12), w("gr", 2, 24, 8), w("lw", 1, 24, 12), w("lr", 1, 24, 6)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    data = {"x": rng.standard_normal((96, 10, 12)).astype(np.float32)}
    seen: dict[int, np.ndarray | None] = {}

    def recording(slot, w, gates, deficit):  # noqa: ANN001, ANN202
        seen[slot] = gate_weights(slot, w, gates, deficit)
        return seen[slot]

    mp = pytest.MonkeyPatch()
    try:
        mp.setattr(engine, "gate_weights", recording)
        auto = compress_auto(model, base=SharingConfig(min_elements=64), data=data, budget=Budget(min_agreement=None))
    finally:
        mp.undo()
    assert sorted(c.size for c in seen.values() if c is not None) == [24, 24, 24, 24]
    assert auto.budget_met
    out = ort.InferenceSession(decompress(auto.result.data).SerializeToString(),
                               providers=["CPUExecutionProvider"]).run(None, {"x": data["x"][:4]})
    assert out[0].shape == (4, 10, 2, 8) and out[1].shape == (4, 10, 1, 6)
