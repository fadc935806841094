"""Checks shared by the round-trip tests: exact model equality, the checker, onnxruntime outputs.

A lossless round trip must give back the same ``ModelProto``. Two models are compared in two parts
(:func:`assert_same_model`): everything but tensor data, as deterministic serializations of both
sides with every tensor's data cleared; then each tensor's data, decoded to numpy on both sides and
compared byte for byte, so that NaN payloads and -0.0 count and a tensor moved from a typed field
(``float_data``, ...) to ``raw_data`` still compares equal to itself.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from onnxdc import CompressConfig, compress, decompress, load_model
from onnxdc.onnx_io.tensors import iter_tensors

SEED = 20240607
#: The fields that hold a tensor's elements (cleared here rather than with the library's own helper,
#: so that a library bug clearing too much cannot hide itself).
_DATA_FIELDS = ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data")


@dataclass(frozen=True)
class RoundTrip:
    """A model, its container bytes and the model decompressed from them. Treat as read-only."""

    model: onnx.ModelProto
    data: bytes
    restored: onnx.ModelProto


def roundtrip(model: onnx.ModelProto, *, config: CompressConfig | None = None) -> RoundTrip:
    """Compress ``model`` and decompress the container, checking that the input is left untouched."""
    before = model.SerializeToString(deterministic=True)
    data = compress(model, config=config or CompressConfig()).data
    assert model.SerializeToString(deterministic=True) == before, "compress must not modify its input"
    return RoundTrip(model, data, decompress(data))


@functools.cache
def roundtrip_file(path: Path) -> RoundTrip:
    """Round trip of the model at ``path`` with the default (lossless) config, once per session."""
    return roundtrip(load_model(path))


# --------------------------------------------------------------------------- equality


def without_data(model: onnx.ModelProto) -> bytes:
    """The deterministic serialization of ``model`` with the data of every tensor cleared."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for ref in iter_tensors(copy):
        for field in _DATA_FIELDS:
            ref.proto.ClearField(field)
    return copy.SerializeToString(deterministic=True)


def tensor_payload(t: TensorProto) -> tuple:
    """The tensor's data as decoded values: (dtype, shape, bytes), or the strings of a string tensor."""
    if t.data_type == TensorProto.STRING:
        return ("string", tuple(t.string_data))
    if t.data_type == TensorProto.UNDEFINED:
        return ("undefined", t.SerializeToString(deterministic=True))
    arr = numpy_helper.to_array(t)
    return (str(arr.dtype), arr.shape, arr.tobytes())


def assert_same_model(expected: onnx.ModelProto, actual: onnx.ModelProto) -> None:
    """Assert that ``actual`` is ``expected`` up to the storage form of tensor data (bit-exact data)."""
    assert without_data(actual) == without_data(expected), "the models differ outside tensor data"
    want, got = list(iter_tensors(expected)), list(iter_tensors(actual))
    assert [r.path for r in got] == [r.path for r in want]
    for w, g in zip(want, got, strict=True):
        assert tensor_payload(g.proto) == tensor_payload(w.proto), f"data of tensor {w.proto.name!r} at {w.path}"
        if w.proto.HasField("raw_data"):
            # Packed sub-byte types carry padding bits that decoding ignores: raw bytes must match too.
            assert g.proto.raw_data == w.proto.raw_data, f"raw_data of tensor {w.proto.name!r} at {w.path}"


def checker_error(model: onnx.ModelProto) -> str | None:
    """The full ONNX checker's complaint about ``model``, or None if it passes."""
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        return str(exc)
    return None


# --------------------------------------------------------------------------- onnxruntime


def _session(model_bytes: bytes):  # noqa: ANN202 - onnxruntime.InferenceSession
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 4
    return ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])


def random_feeds(model: onnx.ModelProto, rng: np.random.Generator) -> dict[str, np.ndarray] | None:
    """Random inputs for the graph's runtime inputs from their declared types and shapes.

    Symbolic or unknown dims become 1 and integers are drawn from {0, 1, 2} so that indices and trip
    counts stay valid. Returns None when an input is not a plain tensor of a type numpy can hold.
    """
    initializers = {t.name for t in model.graph.initializer}
    feeds: dict[str, np.ndarray] = {}
    for inp in model.graph.input:
        if inp.name in initializers:
            continue
        if inp.type.WhichOneof("value") != "tensor_type":
            return None
        tt = inp.type.tensor_type
        shape = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in tt.shape.dim)
        if tt.elem_type == TensorProto.STRING:
            feeds[inp.name] = np.array(rng.choice(["a", "b", "c"], size=shape), dtype=object)
            continue
        try:
            dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)
        except KeyError:
            return None
        if dtype == np.bool_:
            feeds[inp.name] = rng.integers(0, 2, size=shape).astype(np.bool_)
        elif np.issubdtype(dtype, np.integer):
            feeds[inp.name] = rng.integers(0, 3, size=shape).astype(dtype)
        elif np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.complexfloating):
            feeds[inp.name] = rng.standard_normal(size=shape).astype(dtype)
        else:
            return None
    return feeds


def _bits(x: object) -> object:
    """An output in a form where equality means bit-identical (lists and dicts recursively)."""
    if isinstance(x, np.ndarray):
        if x.dtype == object:
            return ("object", x.shape, x.tolist())
        return (str(x.dtype), x.shape, np.ascontiguousarray(x).tobytes())
    if isinstance(x, list):
        return [_bits(v) for v in x]
    if isinstance(x, dict):
        return {k: _bits(v) for k, v in x.items()}
    return x


def bundled_feeds(model: onnx.ModelProto, path: Path) -> dict[str, np.ndarray] | None:
    """The inputs onnx's backend test data keeps next to a model (``test_data_set_0/input_*.pb``).

    Returns None unless there is one readable tensor file per runtime input.
    """
    files = sorted((path.parent / "test_data_set_0").glob("input_*.pb"), key=lambda p: int(p.stem.split("_")[1]))
    initializers = {t.name for t in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in initializers]
    if not files or len(files) != len(names):
        return None
    feeds = {}
    for name, file in zip(names, files, strict=True):
        t = TensorProto()
        try:
            t.ParseFromString(file.read_bytes())
            feeds[name] = numpy_helper.to_array(t)
        except Exception:  # a sequence or map, or not a tensor at all
            return None
    return feeds


def assert_runs_identically(original: onnx.ModelProto, restored: onnx.ModelProto, *,
                            fallback_feeds: dict[str, np.ndarray] | None = None,
                            must_run: bool = False) -> None:
    """Assert that onnxruntime gives bit-identical outputs for both models on the same inputs.

    The inputs are random (seeded), or ``fallback_feeds`` when ``original`` does not run on random
    inputs. Skips when onnxruntime cannot load or run ``original`` (the restored model is then held
    to nothing more), unless ``must_run``.
    """
    try:
        ref_sess = _session(original.SerializeToString())
    except Exception as exc:  # onnxruntime raises its own untyped exceptions
        if must_run:
            raise
        pytest.skip(f"onnxruntime cannot load the input model: {str(exc).splitlines()[0][:200]}")
    candidates = [f for f in (random_feeds(original, np.random.default_rng(SEED)), fallback_feeds) if f is not None]
    reason = "no inputs could be built for it"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for feeds in candidates:
            try:
                want = ref_sess.run(None, feeds)
                break
            except Exception as exc:
                if must_run:
                    raise
                reason = str(exc).splitlines()[0][:200]
        else:
            pytest.skip(f"onnxruntime cannot run the input model: {reason}")
        got = _session(restored.SerializeToString()).run(None, feeds)
    assert [_bits(g) for g in got] == [_bits(w) for w in want]
