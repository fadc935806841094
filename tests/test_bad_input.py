"""Hostile and broken inputs: calibration/eval data, external data, weights and tensor headers.

Every bad input ends in one ``onnxdc: error:`` line with the documented exit code (1 for bad data,
2 for bad usage) and leaves no output file; every input that can be used is (a plain ``.npy`` for
a one-input model, float64 data, weights beyond float16) with a notice. Inputs are built here:
tiny graphs with onnx.helper, npz files with hand-built zip members.
"""

from __future__ import annotations

import io
import os
import struct
import tracemalloc
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from cli_helpers import assert_error as assert_one_line_error
from cli_helpers import run
from onnx import TensorProto, helper, numpy_helper

from onnxdc.errors import DataError
from onnxdc.evaluate import load_data

FEATURES, CLASSES = 64, 32
LOSSY = ["--sparsity", "0.5", "--bits", "4"]






def linear_model(w: np.ndarray | None = None, *, inputs: int = 1) -> onnx.ModelProto:
    """x[N, 64] (+ y[N, 64]) @ W[64, 32] -> logits[N, 32]."""
    if w is None:
        w = np.random.default_rng(0).standard_normal((FEATURES, CLASSES)).astype(np.float32)
    names = ["x", "y"][:inputs]
    nodes = [helper.make_node("Add", ["x", "y"], ["s"])] if inputs == 2 else []
    nodes.append(helper.make_node("MatMul", ["s" if inputs == 2 else "x", "W"], ["logits"]))
    graph = helper.make_graph(
        nodes, "linear",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", FEATURES]) for n in names],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", CLASSES])],
        [numpy_helper.from_array(w, "W")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def save(model: onnx.ModelProto, path: Path) -> Path:
    path.write_bytes(model.SerializeToString())
    return path


def samples(n: int = 40, dtype: Any = np.float32) -> np.ndarray:
    return np.random.default_rng(1).standard_normal((n, FEATURES)).astype(dtype)


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def npy_header(shape: tuple[int, ...], descr: str = "<f4") -> bytes:
    """A valid .npy 1.0 header declaring ``shape`` (the data is up to the caller)."""
    text = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape!r}, }}"
    text += " " * (-(len(text) + 11) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode("latin1")


def zip_members(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


@pytest.fixture()
def model_path(tmp_path: Path) -> Path:
    return save(linear_model(), tmp_path / "m.onnx")


# --------------------------------------------------------------------------- bad calibration data


def _write_pickle_npz(path: Path) -> None:
    np.savez(path, x=np.array([{"a": 1}] * 4, dtype=object))


BAD_DATA: dict[str, tuple[Any, tuple[str, ...]]] = {
    "0-d array": (lambda p: np.savez(p, x=np.float32(1.0)), ("0-d scalar", "'x'")),
    "zero samples": (lambda p: np.savez(p, x=np.zeros((0, FEATURES), np.float32)), ("zero samples",)),
    "string dtype": (lambda p: np.savez(p, x=np.array(["a", "b"])), ("dtype '<U1'", "integers or floats")),
    "object dtype": (_write_pickle_npz, ("Python objects", "never unpickles")),
    "wrong rank": (lambda p: np.savez(p, x=samples().reshape(40, 8, 8)), ("rank 2", "(40, 8, 8)")),
    "wrong feature count": (lambda p: np.savez(p, x=samples()[:, :63]), ("size 64 on axis 1", "(40, 63)")),
    "0-d labels": (lambda p: np.savez(p, x=samples(), labels=np.int64(3)), ("'labels'", "0-d scalar")),
    "float labels": (lambda p: np.savez(p, x=samples(), labels=np.zeros(40)), ("'labels'", "integer")),
    "uneven sample counts": (lambda p: np.savez(p, x=samples(), labels=np.zeros(39, np.int64)),
                             ("different sample counts", "'x' 40", "'labels' 39")),
    "non-npy member": (lambda p: zip_members(p, {"x.npy": npy_bytes(samples()), "notes.txt": b"hi"}),
                       ("'notes.txt'", "not a .npy")),
    "malformed header": (lambda p: zip_members(p, {"x.npy": b"\x93NUMPY\x01\x00\x10\x00{'descr': <f4}  \n"}),
                         ("malformed .npy header", "'x'")),
    "garbage member": (lambda p: zip_members(p, {"x.npy": b"PK not numpy at all"}), ("malformed .npy header",)),
    "header text cut mid-dict": (lambda p: zip_members(p, {"x.npy": b"\x93NUMPY\x01\x00\x20\x00"
                                                                 b"{'descr': '<f4', 'fortran_order'"}),
                                 ("malformed .npy header", "'x'")),
    "10**12 declared rows": (lambda p: zip_members(p, {"x.npy": npy_header((10**12, FEATURES)) + bytes(256)}),
                             ("declares shape (1000000000000, 64)", "holds 256 bytes")),
    "negative dim": (lambda p: zip_members(p, {"x.npy": npy_header((-3, FEATURES))}), ("negative dimension",)),
    "big-endian objects descr": (lambda p: zip_members(p, {"x.npy": npy_header((4,), "|O") + bytes(32)}),
                                 ("Python objects",)),
    "nan in inputs": (lambda p: np.savez(p, x=np.where(np.arange(40)[:, None] == 7, np.nan, samples())),
                      ("input 'x'", "NaN or infinite", "sample 7")),
    "inf after float64 cast": (lambda p: np.savez(p, x=np.full((4, FEATURES), 1e300)), ("input 'x'", "NaN or infinite", "once cast to the model's float32")),
    "float data for missing input": (lambda p: np.savez(p, z=samples()), ("lacks model input", "'x'")),
    "not a zip": (lambda p: p.write_bytes(b"hello, not a zip"), ("not an .npz",)),
    "empty zip": (lambda p: zip_members(p, {}), ("holds no arrays",)),
    "too many members": (lambda p: zip_members(p, {f"a{i}.npy": b"" for i in range(1025)}),
                         ("holds 1025 members", "at most 1024")),
    "truncated member": (lambda p: zip_members(p, {"x.npy": npy_bytes(samples())[:-10]}),
                         ("declares shape (40, 64)", "holds 10,230 bytes")),
    "unsupported npy version": (lambda p: zip_members(p, {"x.npy": b"\x93NUMPY\x03\x00" + bytes(60)}),
                                ("format 3.0",)),
}


@pytest.mark.parametrize("case", sorted(BAD_DATA))
def test_bad_calibration_data_is_one_line_exit_1(case: str, model_path: Path, tmp_path: Path) -> None:
    write, fragments = BAD_DATA[case]
    data = tmp_path / "c.npz"
    write(data)
    out = tmp_path / "out.onnxdc"
    result = run("compress", model_path, "--calib", data, *LOSSY, "-o", out)
    assert_one_line_error(result, 1, *fragments)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.npz", "m.onnx"]  # no temporary file either


def test_bad_data_in_automatic_mode_and_eval_too(model_path: Path, tmp_path: Path) -> None:
    data = tmp_path / "c.npz"
    np.savez(data, x=samples()[:, :10])
    out = tmp_path / "out.onnxdc"
    assert_one_line_error(run("compress", model_path, "--calib", data, "-o", out, "-q"), 1, "size 64 on axis 1")
    assert not out.exists() and not Path(str(out) + ".recipe.toml").exists()
    assert_one_line_error(run("eval", model_path, model_path, "--data", data), 1, "size 64 on axis 1")
    assert_one_line_error(run("sensitivity", model_path, "--calib", data), 1, "size 64 on axis 1")


def test_missing_and_directory_data(model_path: Path, tmp_path: Path) -> None:
    assert_one_line_error(run("compress", model_path, "--calib", tmp_path / "nope.npz", *LOSSY,
                              "-o", tmp_path / "o.onnxdc"), 1, "no such data file")
    (tmp_path / "dir.npz").mkdir()
    with pytest.raises(DataError, match="is a directory"):  # the CLI's click.Path refuses it first (exit 2)
        load_data(tmp_path / "dir.npz")


def test_labels_outside_the_class_range(model_path: Path, tmp_path: Path) -> None:
    data = tmp_path / "d.npz"
    np.savez(data, x=samples(), labels=np.arange(40, dtype=np.int64) * 3)  # up to 117, 32 classes
    assert_one_line_error(run("eval", model_path, model_path, "--data", data), 1,
                          "classes 0..31", "'logits'", "found 0..117")
    np.savez(data, x=samples(), labels=-np.ones(40, np.int64))
    assert_one_line_error(run("eval", model_path, model_path, "--data", data), 1, ">= 0, found -1")


# --------------------------------------------------------------------------- data that can be used


def test_float64_data_is_cast_with_a_notice(model_path: Path, tmp_path: Path) -> None:
    data64, data32 = tmp_path / "c64.npz", tmp_path / "c32.npz"
    np.savez(data64, x=samples(dtype=np.float64))
    np.savez(data32, x=samples(dtype=np.float64).astype(np.float32))
    out64, out32 = tmp_path / "a.onnxdc", tmp_path / "b.onnxdc"
    r64 = run("compress", model_path, "--calib", data64, *LOSSY, "-o", out64)
    assert r64.exit_code == 0, r64.output
    assert "onnxdc: warning: input 'x': the data's float64 values were cast to float32" in r64.stderr
    r32 = run("compress", model_path, "--calib", data32, *LOSSY, "-o", out32)
    assert r32.exit_code == 0 and "warning" not in r32.stderr
    assert out64.read_bytes() == out32.read_bytes()  # the cast is what the model would have seen
    quiet = run("compress", model_path, "--calib", data64, *LOSSY, "-o", out64, "--force", "-q")
    assert quiet.exit_code == 0 and quiet.stderr == ""


def test_plain_npy_only_for_a_one_input_model(model_path: Path, tmp_path: Path) -> None:
    npy = tmp_path / "x.npy"
    np.save(npy, samples())
    npz = tmp_path / "x.npz"
    np.savez(npz, x=samples())
    a, b = tmp_path / "a.onnxdc", tmp_path / "b.onnxdc"
    assert run("compress", model_path, "--calib", npy, *LOSSY, "-o", a).exit_code == 0
    assert run("compress", model_path, "--calib", npz, *LOSSY, "-o", b).exit_code == 0
    assert a.read_bytes() == b.read_bytes()
    two = save(linear_model(inputs=2), tmp_path / "two.onnx")
    out = tmp_path / "two.onnxdc"
    assert_one_line_error(run("compress", two, "--calib", npy, *LOSSY, "-o", out), 1,
                          "single .npy array", "keyed by the model's input names")
    assert not out.exists()


def test_integer_inputs_narrowed_only_when_they_fit(tmp_path: Path) -> None:
    graph = helper.make_graph([helper.make_node("Cast", ["i"], ["o"], to=TensorProto.FLOAT)], "g",
                              [helper.make_tensor_value_info("i", TensorProto.INT32, ["N", 2])],
                              [helper.make_tensor_value_info("o", TensorProto.FLOAT, ["N", 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "d.npz"
    np.savez(path, i=np.array([[1, 2], [3, 4]], np.int64))
    notes: list[str] = []
    got = load_data(path, model=model, notice=notes.append)
    assert got["i"].dtype == np.int32 and got["i"].tolist() == [[1, 2], [3, 4]] and len(notes) == 1
    np.savez(path, i=np.array([[1, 2**40]], np.int64))
    with pytest.raises(DataError, match=r"do not fit it"):
        load_data(path, model=model)
    np.savez(path, i=np.array([[1.5, 2.0]]))
    with pytest.raises(DataError, match=r"is int32 in the model, the data's array is float64"):
        load_data(path, model=model)


# --------------------------------------------------------------------------- bounded reading


def _bomb(path: Path, rows: int) -> Path:
    """An npz whose one member deflates from ~100 KB to ``rows`` x 64 float32 zeros."""
    zero_mb = bytes(1 << 20)
    nbytes = rows * FEATURES * 4
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        with zf.open("x.npy", "w", force_zip64=True) as fh:
            fh.write(npy_header((rows, FEATURES)))
            for _ in range(nbytes >> 20):
                fh.write(zero_mb)
            fh.write(bytes(nbytes & ((1 << 20) - 1)))
    return path


def test_npz_bomb_reads_only_the_samples_used(model_path: Path, tmp_path: Path) -> None:
    rows = 400_000  # 100 MiB of float32 once deflated, from a file a thousand times smaller
    bomb = _bomb(tmp_path / "bomb.npz", rows)
    assert bomb.stat().st_size < 1 << 20
    model = onnx.load(model_path)
    tracemalloc.start()
    try:
        data = load_data(bomb, model=model, max_samples=512)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert data["x"].shape == (512, FEATURES)
    assert peak < 8 << 20, peak  # np.load would hold 100 MiB (and 3 GiB for the tester's file)
    # The same file through the CLI: calibration works on its first 512 samples.
    out = tmp_path / "o.onnxdc"
    result = run("compress", model_path, "--calib", bomb, *LOSSY, "-o", out, "-q")
    assert result.exit_code == 0, result.output
    assert out.exists()


def test_total_read_is_capped(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, x=samples(1000), labels=np.zeros(1000, np.int64))
    assert load_data(path, max_samples=10)["x"].shape == (10, FEATURES)
    with pytest.raises(DataError, match=r"over what one data file may make onnxdc read"):
        load_data(path, max_bytes=100_000)  # 256 000 bytes of x
    assert load_data(path, max_samples=50, max_bytes=100_000)["labels"].shape == (50,)


def test_valid_npz_reads_as_np_load_does(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    arrays = {"a": samples(7), "b": np.arange(7, dtype=">i4"), "c": np.asfortranarray(samples(7)[:, :6]),
              "d": np.ones((7, 2, 3), bool)}
    np.savez_compressed(path, **arrays)
    got = load_data(path)
    with np.load(path) as ref:
        for k in arrays:
            np.testing.assert_array_equal(got[k], ref[k])
            assert got[k].dtype.isnative
    assert load_data(path, max_samples=3)["c"].tolist() == arrays["c"][:3].tolist()


# --------------------------------------------------------------------------- external data


def external_model(dir_: Path, location: str) -> Path:
    model = linear_model()
    w = model.graph.initializer[0]
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(FEATURES * CLASSES * 4))):
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    return save(model, dir_ / "ext.onnx")


def _symlink_loop(d: Path) -> str:
    os.symlink(d / "loop_b", d / "loop_a")
    os.symlink(d / "loop_a", d / "loop_b")
    return "loop_a"


EXTERNAL_CASES: dict[str, tuple[Any, tuple[str, ...]]] = {
    "nul byte": (lambda d: "w\x00.bin", ("NUL byte", "'W'")),
    "over-long name": (lambda d: "w" * 5000 + ".bin", ("'W'", "5004 characters", "too long")),
    "over-long path part": (lambda d: "/".join(["a" * 200] * 30), ("'W'",)),
    "symlink loop": (_symlink_loop, ("'loop_a'", "'W'")),
    "a directory": (lambda d: (d / "sub").mkdir() or "sub", ("not a regular file",)),
    "missing": (lambda d: "nope.bin", ("not found",)),
}


@pytest.mark.parametrize("case", sorted(EXTERNAL_CASES))
@pytest.mark.parametrize("mode", ["lossless", "lossy", "calibrated", "eval"])
def test_bad_external_data_is_one_line(case: str, mode: str, tmp_path: Path) -> None:
    """Tensor by tensor (lossless, lossy: load_model_lazy) and whole (calibrated, eval: load_model)."""
    make, fragments = EXTERNAL_CASES[case]
    path = external_model(tmp_path, make(tmp_path))
    calib = tmp_path / "c.npz"
    np.savez(calib, x=samples())
    out = tmp_path / "o.onnxdc"
    args = {"lossless": ["compress", path, "--lossless", "-o", out], "lossy": ["compress", path, *LOSSY, "-o", out],
            "calibrated": ["compress", path, *LOSSY, "--calib", calib, "-o", out],
            "eval": ["eval", path, path, "--data", calib]}[mode]
    assert_one_line_error(run(*args), 1, *fragments)
    assert not out.exists()


def test_unreadable_external_data_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "w.bin").write_bytes(bytes(FEATURES * CLASSES * 4))
    path = external_model(tmp_path, "w.bin")
    real_open = open

    def deny(file: Any, *args: Any, **kw: Any) -> Any:  # root reads everything: deny by hand
        if str(file).endswith("w.bin"):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kw)

    calib = tmp_path / "c.npz"
    np.savez(calib, x=samples())
    monkeypatch.setattr("builtins.open", deny)
    for mode in (["--lossless"], LOSSY, [*LOSSY, "--calib", calib]):
        out = tmp_path / "o.onnxdc"
        assert_one_line_error(run("compress", path, *mode, "-o", out), 1, "cannot read external data file 'w.bin'",
                              "Permission denied")
        assert not out.exists()


# --------------------------------------------------------------------------- weights


def test_float16_codebook_keeps_float32_for_weights_beyond_its_range(tmp_path: Path) -> None:
    w = np.random.default_rng(0).standard_normal((FEATURES, CLASSES)).astype(np.float32)
    w[3, 4], w[5, 6] = 1.0e5, -2.5e5
    path = save(linear_model(w), tmp_path / "big.onnx")
    out = tmp_path / "big.onnxdc"
    result = run("compress", path, *LOSSY, "--codebook-dtype", "float16", "-o", out)
    assert result.exit_code == 0, result.output
    assert ("onnxdc: warning: tensor 'W' has weights up to 250000, beyond float16's range (65504): "
            "its codebook is stored as float32") in result.stderr
    from onnxdc.format.container import read_container
    from onnxdc.pipeline.decode import decompress

    container = read_container(out.read_bytes())
    assert container.header.tensors[0].params["codebook_dtype"] == "float32"
    back = numpy_helper.to_array(decompress(container).graph.initializer[0])
    assert np.isfinite(back).all() and back.max() > 6e4 and back.min() < -6e4
    # With --calib too (the least-squares refit must not overflow either).
    calib = tmp_path / "c.npz"
    np.savez(calib, x=samples())
    out2 = tmp_path / "big2.onnxdc"
    result = run("compress", path, *LOSSY, "--codebook-dtype", "float16", "--calib", calib, "-o", out2)
    assert result.exit_code == 0, result.output
    back = numpy_helper.to_array(decompress(read_container(out2.read_bytes())).graph.initializer[0])
    assert np.isfinite(back).all()


def test_float16_codebook_unchanged_for_weights_in_range(tmp_path: Path) -> None:
    path = save(linear_model(), tmp_path / "m.onnx")
    out = tmp_path / "m.onnxdc"
    result = run("compress", path, *LOSSY, "--codebook-dtype", "float16", "-o", out)
    assert result.exit_code == 0 and "warning" not in result.stderr
    from onnxdc.format.container import read_container

    assert read_container(out.read_bytes()).header.tensors[0].params["codebook_dtype"] == "float16"


def _nan_model(tmp_path: Path, value: float) -> tuple[Path, np.ndarray]:
    w = np.random.default_rng(0).standard_normal((FEATURES, CLASSES)).astype(np.float32)
    bits = w.view(np.uint32)
    bits[2, 3] = 0x7FC0_1234 if np.isnan(value) else np.float32(value).view(np.uint32)  # a NaN payload
    return save(linear_model(w), tmp_path / "nan.onnx"), w


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_weights_lossless_exact_lossy_refused(value: float, tmp_path: Path) -> None:
    path, w = _nan_model(tmp_path, value)
    out = tmp_path / "l.onnxdc"
    assert run("compress", path, "--lossless", "-o", out, "-q").exit_code == 0
    from onnxdc.format.container import read_container
    from onnxdc.pipeline.decode import decompress

    back = numpy_helper.to_array(decompress(read_container(out.read_bytes())).graph.initializer[0])
    assert back.tobytes() == w.tobytes()  # bit-exact, NaN payload included
    calib = tmp_path / "c.npz"
    np.savez(calib, x=samples())
    for extra in ([], ["--calib", calib], ["--global"], ["--codebook-dtype", "float16"]):
        lossy = tmp_path / "lossy.onnxdc"
        result = run("compress", path, *LOSSY, *extra, "-o", lossy)
        assert_one_line_error(result, 1, "weight tensor 'W'", "1 NaN or infinite value", "flat index 67",
                              "--lossless")
        assert not lossy.exists()
    auto = tmp_path / "auto.onnxdc"
    assert_one_line_error(run("compress", path, "--calib", calib, "-o", auto, "-q"), 1, "weight tensor 'W'")
    assert not auto.exists()


def _raw_tensor_model(tmp_path: Path, data_type: int, dims: tuple[int, ...]) -> Path:
    model = linear_model()
    t = model.graph.initializer.add()
    t.name = "odd"
    t.data_type = data_type
    t.dims.extend(dims)
    t.raw_data = bytes(range(256)) * 16
    return save(model, tmp_path / "odd.onnx")


@pytest.mark.parametrize(("data_type", "dims", "fragment"), [
    (65, (4096,), "data_type 65, which is no ONNX tensor type"),
    (999, (4096,), "data_type 999"),
    (-5, (4096,), "data_type -5"),
    (TensorProto.UINT8, (-64, -32), "negative dims (-64, -32)"),
])
@pytest.mark.parametrize("mode", [["--lossless"], LOSSY])
def test_tensors_a_reader_refuses_are_refused_at_compress(data_type: int, dims: tuple[int, ...], fragment: str,
                                                          mode: list[str], tmp_path: Path) -> None:
    path = _raw_tensor_model(tmp_path, data_type, dims)
    out = tmp_path / "o.onnxdc"
    assert_one_line_error(run("compress", path, *mode, "-o", out), 1, "tensor 'odd'", fragment)
    assert not out.exists()


def test_split_refuses_data_without_inputs() -> None:
    from onnxdc.auto.search import split

    with pytest.raises(DataError, match="no input arrays"):
        split({"labels": np.zeros(4, np.int64)})
    fit, check = split({"labels": np.arange(8), "x": np.zeros((8, 2))}, max_samples=4)
    assert len(fit["x"]) == len(fit["labels"]) == 3 and check["labels"].tolist() == [3]
