"""Calibration data as users have them (issue 15): the models that broke one-npz, batch-on-axis-0
data, built here with onnx.helper, each compressed with ``--calib`` and checked with ``eval``;
and the other sources (a plain .npy, a folder, an iterable, an onnxruntime-style reader)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from cli_helpers import assert_error, run
from onnx import TensorProto, helper, numpy_helper

from onnxdc.api import DataError, Layout, Samples, load_data
from onnxdc.calibration.samples import select
from onnxdc.evaluate import evaluate, run_model, session

OPSET = 17
LOSSY = ("--sparsity", "0.5", "--bits", "6")
N = 48


def _model(nodes: list, inputs: list, outputs: list, inits: list | None = None) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=inits or [])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)
    onnx.checker.check_model(model)
    return model


def _w(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return (rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32)


def streaming_model(batch: str | None = "N") -> onnx.ModelProto:
    """A voice-model shape: ``x`` [N, 16], ``state`` [2, N, 8] (batch on axis 1), ``sr`` int64 scalar;
    outputs ``y`` [N, 32] and ``state_out`` [2, N, 8]. ``batch=None`` leaves the batch dimension
    unnamed, so the graph does not say where ``state`` has its samples."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(_w(rng, 16, 64), "w1"), numpy_helper.from_array(_w(rng, 80, 32), "w2"),
             numpy_helper.from_array(_w(rng, 16, 16), "w3"),
             numpy_helper.from_array(np.array([0, -1], np.int64), "flat"),
             numpy_helper.from_array(np.array([0, 2, 8], np.int64), "split"),
             numpy_helper.from_array(np.array(16000.0, np.float32), "ref_sr")]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h0"]), helper.make_node("Tanh", ["h0"], ["h"]),
        helper.make_node("Transpose", ["state"], ["st"], perm=[1, 0, 2]),
        helper.make_node("Reshape", ["st", "flat"], ["sflat"]),
        helper.make_node("Concat", ["h", "sflat"], ["hs"], axis=1),
        helper.make_node("MatMul", ["hs", "w2"], ["y0"]),
        helper.make_node("Cast", ["sr"], ["srf"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["srf", "ref_sr"], ["scale"]),
        helper.make_node("Mul", ["y0", "scale"], ["y"]),
        helper.make_node("MatMul", ["x", "w3"], ["n0"]),
        helper.make_node("Reshape", ["n0", "split"], ["n1"]),
        helper.make_node("Transpose", ["n1"], ["n2"], perm=[1, 0, 2]),
        helper.make_node("Add", ["n2", "state"], ["state_out"]),
    ]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 16]),
                          helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, batch, 8]),
                          helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 32]),
                   helper.make_tensor_value_info("state_out", TensorProto.FLOAT, [2, batch, 8])], inits)


def batch1_model() -> onnx.ModelProto:
    """An OCR-export shape: ``x`` [1, 64] only (a Reshape to the literal [1, 32] inside)."""
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(_w(rng, 64, 48), "w"), numpy_helper.from_array(_w(rng, 48, 32), "w2"),
             numpy_helper.from_array(np.array([1, 48], np.int64), "shape")]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["a"]), helper.make_node("Reshape", ["a", "shape"], ["b"]),
             helper.make_node("Relu", ["b"], ["c"]), helper.make_node("MatMul", ["c", "w2"], ["logits"])]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                  [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 32])], inits)


def if_constants_model() -> onnx.ModelProto:
    """Every weight a Constant node inside the branches of an If (as some exporters write them)."""
    rng = np.random.default_rng(2)

    def branch(tag: str) -> onnx.GraphProto:
        w = numpy_helper.from_array(_w(rng, 64, 32), f"w_{tag}")
        return helper.make_graph([helper.make_node("Constant", [], [f"w_{tag}"], value=w),
                                  helper.make_node("MatMul", ["x", f"w_{tag}"], [f"y_{tag}"])], tag, [],
                                 [helper.make_tensor_value_info(f"y_{tag}", TensorProto.FLOAT, ["N", 32])])

    nodes = [helper.make_node("Constant", [], ["cond"], value=numpy_helper.from_array(np.array(True), "cond")),
             helper.make_node("If", ["cond"], ["logits"], then_branch=branch("then"), else_branch=branch("else"))]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
                  [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 32])])


def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, path)
    return path


def _rng() -> np.random.Generator:
    return np.random.default_rng(7)


def _compress_and_eval(model: Path, calib: Path, tmp_path: Path, *options: str) -> str:
    out = tmp_path / "out.onnxdc"
    done = run("compress", model, "--calib", calib, *LOSSY, *options, "-o", out)
    assert done.exit_code == 0, done.output
    judged = run("eval", model, out, "--data", calib, *options, "--min-cosine", "0.9")
    assert judged.exit_code == 0, judged.output
    assert "cosine" in judged.stdout
    return done.stderr


# --------------------------------------------------------------------------- the three models


def test_streaming_model_state_on_axis_1_and_a_shared_scalar(tmp_path: Path) -> None:
    model = _save(streaming_model(batch=None), tmp_path / "m.onnx")
    rng = _rng()
    calib = tmp_path / "c.npz"
    np.savez(calib, x=rng.standard_normal((N, 16)), state=rng.standard_normal((2, N, 8)).astype(np.float32),
             sr=np.int32(16000))
    stderr = _compress_and_eval(model, calib, tmp_path, "--sample-axis", "state=1")
    assert "input 'x': the data's float64 values were cast to float32" in stderr
    assert "input 'sr': the data's int32 values were cast to int64" in stderr
    # Unnamed batch dimensions, no axis given: the data's state (2, 48, 8) is read as 2 samples
    # against x's 48, one line.
    assert_error(run("compress", model, "--calib", calib, *LOSSY, "-o", tmp_path / "o.onnxdc"), 1,
                 "different sample counts")
    # A graph that names its batch dimension says where state has it: no option needed, same bytes.
    named = _save(streaming_model(), tmp_path / "named.onnx")
    assert run("compress", named, "--calib", calib, *LOSSY, "-q", "-o", tmp_path / "n.onnxdc").exit_code == 0
    assert run("compress", named, "--calib", calib, *LOSSY, "-q", "--sample-axis", "state=1",
               "-o", tmp_path / "n1.onnxdc").exit_code == 0
    assert (tmp_path / "n.onnxdc").read_bytes() == (tmp_path / "n1.onnxdc").read_bytes()
    assert_error(run("compress", model, "--calib", calib, *LOSSY, "--sample-axis", "state=3",
                     "-o", tmp_path / "o.onnxdc"), 1, "'state'", "sample axis 3 is out of range")
    assert_error(run("compress", model, "--calib", calib, *LOSSY, "--sample-axis", "nope=1",
                     "-o", tmp_path / "o.onnxdc"), 1, "'nope'", "not a model input")
    assert run("compress", model, "--calib", calib, "--sample-axis", "state", "-o", tmp_path / "o").exit_code == 2


def test_streaming_model_feeds_what_a_per_sample_loop_feeds(tmp_path: Path) -> None:
    """The batched, axis-moved run equals running the model one sample at a time by hand."""
    model = streaming_model()
    rng = _rng()
    x, state = rng.standard_normal((6, 16)).astype(np.float32), rng.standard_normal((2, 6, 8)).astype(np.float32)
    data = load_data({"x": x, "state": state, "sr": np.int64(8000)}, model=model, layout=Layout({"state": 1}))
    assert isinstance(data, Samples) and data["state"].shape == (6, 2, 8) and data["sr"].shape == (6,)
    sess = session(model)
    y, state_out = run_model(sess, data, batch_size=3)  # equal batches: joined on the axis the graph names
    assert state_out.shape == (2, 6, 8)
    for i in range(6):
        yi, si = sess.run(None, {"x": x[i:i + 1], "state": state[:, i:i + 1], "sr": np.array(8000, np.int64)})
        np.testing.assert_array_equal(y[i:i + 1], yi)
        np.testing.assert_array_equal(state_out[:, i:i + 1], si)
    assert select(data, slice(1, 3)).layout == data.layout  # a selection of rows keeps the layout
    again = load_data(data, model=model, max_samples=3)  # samples already read are not read again
    np.testing.assert_array_equal(again["state"], data["state"][:3])
    assert again.layout == data.layout


def test_streaming_model_without_data(tmp_path: Path) -> None:
    """Synthetic inputs follow the same layout: state on axis 1, one sr."""
    model = _save(streaming_model(), tmp_path / "m.onnx")
    out = tmp_path / "a.onnxdc"
    done = run("compress", model, "--min-cosine", "0.99", "--min-elements", "0", "-o", out)
    assert done.exit_code == 0, done.output
    assert "no --calib data" in done.stderr
    judged = run("eval", model, out, "--random", "16", "--min-cosine", "0.98")
    assert judged.exit_code == 0, judged.output


def test_shared_values_that_differ_are_refused() -> None:
    model = streaming_model()
    rng = _rng()
    items = [{"x": rng.standard_normal((1, 16)).astype(np.float32), "state": np.zeros((2, 1, 8), np.float32),
              "sr": np.int64(sr)} for sr in (8000, 16000)]
    with pytest.raises(DataError, match="'sr' is shared by every sample.*values differ"):
        load_data(items, model=model, layout=Layout({"state": 1}))


def test_batch1_model_from_a_folder_of_single_samples(tmp_path: Path) -> None:
    model = _save(batch1_model(), tmp_path / "m.onnx")
    folder = tmp_path / "samples"
    folder.mkdir()
    rng = _rng()
    for i in range(20):  # one sample per file, without and with the batch axis
        np.save(folder / f"s{i:03d}.npy", rng.standard_normal((64,) if i % 2 else (1, 64)).astype(np.float32))
    (folder / "README.txt").write_text("not data")  # other files are not read
    _compress_and_eval(model, folder, tmp_path)
    data = load_data(folder, model=batch1_model(), max_samples=7)
    assert data["x"].shape == (7, 64)
    np.testing.assert_array_equal(data["x"][1], np.load(folder / "s001.npy"))


def test_batch1_model_in_automatic_mode(tmp_path: Path) -> None:
    model = _save(batch1_model(), tmp_path / "m.onnx")
    calib = tmp_path / "c.npy"
    np.save(calib, _rng().standard_normal((40, 64)).astype(np.float32))
    out = tmp_path / "a.onnxdc"
    done = run("compress", model, "--calib", calib, "--min-cosine", "0.99", "--min-elements", "0", "-q", "-o", out)
    assert done.exit_code == 0, done.output
    assert run("eval", model, out, "--data", calib, "--min-cosine", "0.99").exit_code == 0


def test_weights_in_constant_nodes_inside_if_branches(tmp_path: Path) -> None:
    model = _save(if_constants_model(), tmp_path / "m.onnx")
    calib = tmp_path / "c.npy"  # a plain .npy: the model has one input
    np.save(calib, _rng().standard_normal((N, 64)).astype(np.float32))
    _compress_and_eval(model, calib, tmp_path)


# --------------------------------------------------------------------------- sources from Python


class Reader:
    """onnxruntime's CalibrationDataReader protocol: ``get_next()`` gives dicts, then None."""

    def __init__(self, batches: list[dict[str, np.ndarray]]) -> None:
        self.batches = iter(batches)
        self.calls = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        self.calls += 1
        return next(self.batches, None)


def test_reader_and_iterable_give_the_npz_data(tmp_path: Path) -> None:
    model = if_constants_model()
    x = _rng().standard_normal((N, 64)).astype(np.float32)
    npz = tmp_path / "c.npz"
    np.savez(npz, x=x)
    want = load_data(npz, model=model)
    reader = Reader([{"x": x[i:i + 4]} for i in range(0, N, 4)])
    got = load_data(reader, model=model, max_samples=10)
    np.testing.assert_array_equal(got["x"], x[:10])
    assert reader.calls == 3  # lazy: 12 samples read for the 10 wanted, the rest never asked for
    got = load_data(({"x": row} for row in x), model=model)  # one sample per item, no batch axis
    np.testing.assert_array_equal(got["x"], want["x"])


def test_compress_path_takes_a_reader(tmp_path: Path) -> None:
    from onnxdc.api import CompressConfig, SharingConfig, compress_path, decompress_file

    path = _save(streaming_model(), tmp_path / "m.onnx")
    rng = _rng()
    batches = [{"x": rng.standard_normal((4, 16)).astype(np.float32),
                "state": rng.standard_normal((2, 4, 8)).astype(np.float32), "sr": np.array(16000, np.int64)}
               for _ in range(8)]
    config = CompressConfig(sharing=SharingConfig(sparsity=0.5, bits=6))
    compress_path(path, tmp_path / "r.onnxdc", config=config, calib=Reader(batches), layout=Layout({"state": 1}))
    compress_path(path, tmp_path / "l.onnxdc", config=config, calib=batches, layout=Layout({"state": 1}))
    assert (tmp_path / "r.onnxdc").read_bytes() == (tmp_path / "l.onnxdc").read_bytes()
    decompress_file(tmp_path / "r.onnxdc", tmp_path / "r.onnx")
    data = load_data(batches, model=streaming_model(), layout=Layout({"state": 1}))
    result = evaluate(streaming_model(), onnx.load(tmp_path / "r.onnx"), data)
    assert min(o.cosine for o in result.outputs) > 0.9


# --------------------------------------------------------------------------- bad sources


def test_bad_folders_are_one_line_errors(tmp_path: Path) -> None:
    model = _save(batch1_model(), tmp_path / "m.onnx")
    out = tmp_path / "o.onnxdc"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_error(run("compress", model, "--calib", empty, *LOSSY, "-o", out), 1, "holds no .npy or .npz files")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    np.save(mixed / "a.npy", np.zeros((2, 64), np.float32))
    np.save(mixed / "b.npy", np.zeros((2, 63), np.float32))
    assert_error(run("compress", model, "--calib", mixed, *LOSSY, "-o", out), 1, "b.npy", "(63,) per sample",
                 "(64,)")
    hostile = tmp_path / "hostile"
    hostile.mkdir()
    np.save(hostile / "a.npy", np.zeros((2, 64), np.float32))
    (hostile / "b.npy").write_bytes(b"\x93NUMPY\x01\x00\x10\x00{'descr': <f4}  \n")
    assert_error(run("compress", model, "--calib", hostile, *LOSSY, "-o", out), 1, "malformed .npy header",
                 "b.npy")
    assert_error(run("eval", model, model, "--data", hostile), 1, "malformed .npy header")
    special = tmp_path / "special"
    special.mkdir()
    (special / "zero.npy").symlink_to("/dev/zero")
    assert_error(run("compress", model, "--calib", special, *LOSSY, "-o", out), 1, "zero.npy")
    assert not out.exists()


def test_impossible_cast_is_one_line(tmp_path: Path) -> None:
    model = _save(streaming_model(), tmp_path / "m.onnx")
    calib = tmp_path / "c.npz"
    np.savez(calib, x=np.zeros((4, 16), np.float32), state=np.zeros((2, 4, 8), np.float32), sr=np.float32(16000))
    assert_error(run("compress", model, "--calib", calib, *LOSSY, "--sample-axis", "state=1",
                     "-o", tmp_path / "o.onnxdc"), 1, "'sr'", "int64 in the model", "float32")


def test_only_the_samples_used_are_read(tmp_path: Path) -> None:
    model = batch1_model()
    calib = tmp_path / "c.npy"
    np.save(calib, np.zeros((1000, 64), np.float32))
    assert load_data(calib, model=model, max_samples=3, max_bytes=3 * 64 * 4)["x"].shape == (3, 64)
    with pytest.raises(DataError, match="over what one data file may make onnxdc read"):
        load_data(calib, model=model, max_samples=4, max_bytes=3 * 64 * 4)
    folder = tmp_path / "folder"
    folder.mkdir()
    for i in range(6):
        np.save(folder / f"{i}.npy", np.full((2, 64), i, np.float32))
    (folder / "6.npy").write_bytes(b"\x93NUMPY garbage after the samples used")
    data = load_data(folder, model=model, max_samples=12)  # 6.npy is never opened
    np.testing.assert_array_equal(data["x"][:, 0], np.repeat(np.arange(6), 2))
    with pytest.raises(DataError, match=r"6\.npy' is \.npy format"):
        load_data(folder, model=model, max_samples=13)
    with pytest.raises(DataError, match="over what one data file may make onnxdc read"):  # one cap per folder
        load_data(folder, model=model, max_samples=12, max_bytes=5 * 2 * 64 * 4)
    endless = ({"x": np.zeros((1, 64), np.float32)} for _ in iter(int, 1))
    with pytest.raises(DataError, match="over what one data file may make onnxdc read"):  # iterables too
        load_data(endless, model=model, max_bytes=1 << 16)
