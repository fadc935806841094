"""Deployable outputs (``decompress --as qdq|palettized``): the model passes onnx's full check,
runs in onnxruntime and computes what the float decompression computes; tensors it cannot
express stay float and say why."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxdc.api import (
    AUTO_MIN_ELEMENTS,
    Budget,
    CompressConfig,
    SharingConfig,
    compress,
    compress_auto,
    decompress,
    deploy,
    evaluate,
    load_data,
    load_model,
)
from onnxdc.stages.grid import fit_grid
from tests.cli_helpers import assert_error, run

MODELS = Path(__file__).resolve().parent.parent / "models"
STEP = 0.0123456789


def _grid_weights(rng: np.random.Generator, shape: tuple[int, ...], top: int = 4) -> np.ndarray:
    """Weights already on the grid ``STEP · level``: weight sharing keeps them exactly."""
    return (STEP * rng.integers(-top, top + 1, size=shape)).astype(np.float32)


def _kmeans_weights(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Weights taking 12 irregular values: a palette, not a grid."""
    values = np.sort(rng.normal(size=12)).astype(np.float32)
    return values[rng.integers(0, 12, size=shape)]


def tricky_model(seed: int = 0, *, opset: int = 17) -> onnx.ModelProto:
    """Weights in every home the rewrite must handle or refuse: an initializer shared by two
    MatMuls, Constant nodes inside If branches (one a grid, one a palette), an initializer that is
    also a graph input, a weight too small to gain and a bias (not weight-shared)."""
    rng = np.random.default_rng(seed)
    shared = numpy_helper.from_array(_grid_weights(rng, (64, 64)), "shared.weight")
    overridable = numpy_helper.from_array(_grid_weights(rng, (64, 64)), "overridable.weight")
    bias = numpy_helper.from_array(_grid_weights(rng, (64,)), "bias")
    small = numpy_helper.from_array(_grid_weights(rng, (4, 4)), "small.weight")

    def branch(name: str, w: np.ndarray) -> onnx.GraphProto:
        const = helper.make_node("Constant", [], [f"{name}.w"], value=numpy_helper.from_array(w, f"{name}.weight"))
        mm = helper.make_node("MatMul", ["h2", f"{name}.w"], [f"{name}.out"])
        return helper.make_graph([const, mm], name, [], [helper.make_tensor_value_info(f"{name}.out", TensorProto.FLOAT, None)])

    nodes = [
        helper.make_node("MatMul", ["x", "shared.weight"], ["h1"]),
        helper.make_node("MatMul", ["h1", "shared.weight"], ["h1b"]),
        helper.make_node("MatMul", ["h1b", "overridable.weight"], ["h2a"]),
        helper.make_node("Add", ["h2a", "bias"], ["h2"]),
        helper.make_node("If", ["cond"], ["y"], then_branch=branch("then", _grid_weights(rng, (64, 64))),
                         else_branch=branch("else", _kmeans_weights(rng, (64, 64)))),
        helper.make_node("MatMul", ["z", "small.weight"], ["y2"]),
    ]
    graph = helper.make_graph(
        nodes, "tricky",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64]),
         helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
         helper.make_tensor_value_info("overridable.weight", TensorProto.FLOAT, [64, 64]),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 64]),
         helper.make_tensor_value_info("y2", TensorProto.FLOAT, ["n", 4])],
        [shared, overridable, bias, small])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8 if opset < 21 else 10
    onnx.checker.check_model(model, full_check=True)
    return model


def _run(model: onnx.ModelProto, feed: dict[str, np.ndarray], *, accuracy_level: str = "1") -> list[np.ndarray]:
    """Outputs in onnxruntime. Its extended optimizations fuse a DequantizeLinear weight into an
    8-bit MatMulNBits whose default accuracy level (4) computes with int8 activations; level 1 keeps
    float32 arithmetic, so that the comparison sees the weights alone."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", accuracy_level)
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, feed)


def _assert_same_outputs(form_model: onnx.ModelProto, float_model: onnx.ModelProto,
                         feeds: list[dict[str, np.ndarray]]) -> None:
    onnx.checker.check_model(form_model, full_check=True)
    for feed in feeds:
        for got, want in zip(_run(form_model, feed), _run(float_model, feed)):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(np.max(np.abs(want))))


@pytest.fixture(scope="module")
def tricky_container() -> bytes:
    model = tricky_model()
    return compress(model, config=CompressConfig(sharing=SharingConfig(bits=5, min_elements=16))).data


def _forms(container: bytes, form: str) -> dict[str, tuple[str, str]]:
    report = deploy(container, form=form).report
    assert report.form == form
    return {t.name: (t.form, t.note) for t in report.tensors}


def test_qdq_rewrites_grids_everywhere_and_leaves_the_rest_float(tricky_container: bytes) -> None:
    forms = _forms(tricky_container, "qdq")
    assert forms["shared.weight"][0] == "int8+DequantizeLinear"  # shared by two MatMuls; opset 17: no int4
    assert forms["then.weight"][0] == "int8+DequantizeLinear"  # a Constant node inside an If branch
    assert forms["else.weight"] == ("float", forms["else.weight"][1])
    assert "not on a uniform grid" in forms["else.weight"][1]
    assert forms["overridable.weight"][0] == "float" and "graph input" in forms["overridable.weight"][1]
    assert forms["small.weight"][0] == "float" and "too small" in forms["small.weight"][1]
    assert forms["bias"] == ("float", "stored losslessly")


def test_palettized_rewrites_every_small_codebook(tricky_container: bytes) -> None:
    forms = _forms(tricky_container, "palettized")
    for name in ("shared.weight", "then.weight", "else.weight"):
        assert forms[name] == ("uint8+Gather", "exact"), name
    assert forms["overridable.weight"][0] == "float"


@pytest.mark.parametrize("form", ["qdq", "palettized"])
def test_forms_compute_the_float_decompression(tricky_container: bytes, form: str) -> None:
    float_model = decompress(tricky_container)
    model = decompress(tricky_container, form=form)
    if_node = next(n for n in model.graph.node if n.op_type == "If")
    ops = {n.op_type for n in model.graph.node} | {n.op_type for n in if_node.attribute[0].g.node}
    assert ("DequantizeLinear" if form == "qdq" else "Gather") in ops
    rng = np.random.default_rng(1)
    x = rng.normal(size=(8, 64)).astype(np.float32)
    w = numpy_helper.to_array(next(t for t in float_model.graph.initializer if t.name == "overridable.weight"))
    z = rng.normal(size=(8, 4)).astype(np.float32)
    feeds = [{"x": x, "cond": np.array(c), "overridable.weight": w, "z": z} for c in (True, False)]
    _assert_same_outputs(model, float_model, feeds)
    saved = sum(t.float_bytes - t.stored_bytes for t in deploy(tricky_container, form=form).report.rewritten)
    assert saved > 20000
    assert len(model.SerializeToString()) < len(float_model.SerializeToString()) - saved + 1000  # the savings are real


def test_opset_21_packs_small_grids_as_int4() -> None:
    model = tricky_model(opset=21)
    container = compress(model, config=CompressConfig(sharing=SharingConfig(bits=5, min_elements=16))).data
    deployed = deploy(container, form="qdq")
    forms = {t.name: t.form for t in deployed.report.tensors}
    assert forms["shared.weight"] == forms["then.weight"] == "int4+DequantizeLinear"  # levels -4..4
    packed = next(t for t in deployed.model.graph.initializer if t.name == "shared.weight_quantized")
    assert packed.data_type == TensorProto.INT4 and len(packed.raw_data) == 64 * 64 // 2
    rng = np.random.default_rng(2)
    float_model = decompress(container)
    w = numpy_helper.to_array(next(t for t in float_model.graph.initializer if t.name == "overridable.weight"))
    feeds = [{"x": rng.normal(size=(3, 64)).astype(np.float32), "cond": np.array(c), "overridable.weight": w,
              "z": rng.normal(size=(3, 4)).astype(np.float32)} for c in (True, False)]
    _assert_same_outputs(deployed.model, float_model, feeds)


def test_onnxruntime_default_fuses_a_dequantized_matmul_weight(tricky_container: bytes) -> None:
    """What users get at onnxruntime's defaults: the If branch's DequantizeLinear -> MatMul becomes an
    8-bit MatMulNBits computing with int8 activations, close to the float model but not equal
    (README, "Deployable output")."""
    rng = np.random.default_rng(1)
    feed = {"x": rng.normal(size=(8, 64)).astype(np.float32), "cond": np.array(True),
            "z": rng.normal(size=(8, 4)).astype(np.float32)}
    float_model = decompress(tricky_container)
    feed["overridable.weight"] = numpy_helper.to_array(
        next(t for t in float_model.graph.initializer if t.name == "overridable.weight"))
    want = _run(float_model, feed)[0]
    fused = _run(decompress(tricky_container, form="qdq"), feed, accuracy_level="4")[0]
    cosine = float(np.sum(fused * want) / np.linalg.norm(fused) / np.linalg.norm(want))
    assert 0.999 < cosine < 1.0


def test_float_form_is_the_plain_decompression(tricky_container: bytes) -> None:
    plain = decompress(tricky_container).SerializeToString(deterministic=True)
    assert decompress(tricky_container, form="float").SerializeToString(deterministic=True) == plain
    assert all(t.form == "float" for t in deploy(tricky_container, form="float").report.tensors)


def test_unknown_form_is_a_config_error(tricky_container: bytes) -> None:
    from onnxdc.api import ConfigError

    with pytest.raises(ConfigError, match="unknown output form 'int3'"):
        deploy(tricky_container, form="int3")


def test_fit_grid() -> None:
    levels = np.array([-30, -7, -1, 0, 2, 5, 40])
    values = (STEP * levels).astype(np.float32)  # float32 of a float64 product: may miss by an ulp
    grid = fit_grid(values)
    assert grid is not None and grid.max_ulps <= 1
    np.testing.assert_array_equal(grid.levels, levels)
    exact = np.float32(0.25) * levels.astype(np.float32)
    assert fit_grid(exact).max_ulps == 0 and fit_grid(exact).scale == np.float32(0.25)
    assert fit_grid(np.sort(np.random.default_rng(0).normal(size=32)).astype(np.float32)) is None
    assert fit_grid(np.float32(0.01) * np.arange(-200, 200, 50, dtype=np.float32)) is not None  # coarse step fits
    assert fit_grid(np.float32(0.01) * np.array([1, 300], dtype=np.float32)) is None  # beyond int8
    assert fit_grid(np.zeros(1, np.float32)).levels.tolist() == [0]
    assert fit_grid(np.array([np.nan, 1.0], np.float32)) is None


@pytest.fixture(scope="module")
def crnn_auto() -> tuple[onnx.ModelProto, bytes, dict[str, np.ndarray]]:
    model = load_model(MODELS / "crnn.onnx")
    data = load_data(MODELS / "crnn.calib.npz", model=model, max_samples=96)
    auto = compress_auto(model, base=SharingConfig(min_elements=AUTO_MIN_ELEMENTS), data=data, budget=Budget(),
                         max_samples=96)
    return model, auto.result.data, load_data(MODELS / "crnn.test.npz", model=model, max_samples=64)


@pytest.mark.parametrize("form", ["qdq", "palettized"])
def test_sample_model_forms_run_and_match(crnn_auto: tuple[onnx.ModelProto, bytes, dict[str, np.ndarray]],
                                          form: str) -> None:
    original, container, test = crnn_auto
    deployed = deploy(container, form=form)
    assert deployed.report.rewritten, deployed.report
    float_model = decompress(container)
    feed = {k: v for k, v in test.items() if k != "labels"}
    _assert_same_outputs(deployed.model, float_model, [feed])
    # onnxdc eval against the original: the same figures as the float decompression's
    want, got = evaluate(original, float_model, test), evaluate(original, deployed.model, test)
    assert got.agreement_top1 == want.agreement_top1 and got.candidate_top1 == want.candidate_top1
    for g, w in zip(got.outputs, want.outputs):
        assert abs(g.cosine_mean - w.cosine_mean) < 1e-6 and abs(g.cosine_min - w.cosine_min) < 1e-6


def test_kmeans_sample_model_palettizes_and_stays_float_in_qdq() -> None:
    model = load_model(MODELS / "lenet5.onnx")
    container = compress(model, config=CompressConfig(sharing=SharingConfig(sparsity=0.9, bits=5))).data
    qdq = deploy(container, form="qdq").report
    assert not qdq.rewritten and all("uniform grid" in t.note for t in qdq.kept_float)
    pal = deploy(container, form="palettized")
    assert {t.name for t in pal.report.rewritten} == {"conv2.weight", "fc1.weight", "fc2.weight"}
    test = load_data(MODELS / "lenet5.test.npz", model=model, max_samples=32)
    _assert_same_outputs(pal.model, decompress(container), [{"input": test["input"]}])


def test_cli_as_qdq_writes_a_checked_model(tmp_path: Path, tricky_container: bytes) -> None:
    src = tmp_path / "m.onnxdc"
    src.write_bytes(tricky_container)
    out = tmp_path / "m.qdq.onnx"
    result = run("decompress", src, "--as", "qdq", "-o", out)
    assert result.exit_code == 0, result.output
    assert "onnx.checker" not in result.stderr
    assert "shared.weight: int8+DequantizeLinear" in result.stdout
    assert "overridable.weight: kept float" in result.stdout
    onnx.checker.check_model(str(out), full_check=True)


def test_cli_bad_form_is_a_usage_error(tmp_path: Path, tricky_container: bytes) -> None:
    src = tmp_path / "m.onnxdc"
    src.write_bytes(tricky_container)
    assert_error(run("decompress", src, "--as", "int4", "-o", tmp_path / "o.onnx"), 2, "'int4'", "float, qdq, palettized")
    assert not (tmp_path / "o.onnx").exists()


def test_cli_as_palettized_with_external_data(tmp_path: Path, tricky_container: bytes) -> None:
    src = tmp_path / "m.onnxdc"
    src.write_bytes(tricky_container)
    out = tmp_path / "m.pal.onnx"
    result = run("decompress", src, "--as", "palettized", "--external-data", "-q", "-o", out)
    assert result.exit_code == 0 and result.output == "", result.output
    data_files = [p for p in tmp_path.iterdir() if p.name.startswith("m.pal.onnx.") and p.suffix == ".data"]
    assert len(data_files) == 1
    onnx.checker.check_model(str(out), full_check=True)
    model = onnx.load(str(out))
    assert {n.op_type for n in model.graph.node} >= {"Gather", "Cast"}
