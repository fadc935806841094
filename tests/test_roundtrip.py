"""Lossless round trips: every model comes back exactly, passes the checker and runs identically.

Covers the sample models, every model bundled with onnx's backend tests, hand-built models holding
each thing a model can carry (subgraphs, functions, sparse tensors, every data type in every storage
form, external data), int8 models from onnxruntime's quantizer, and determinism of the container.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import model_builders as mb
import numpy as np
import onnx
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from roundtrip_helpers import (
    RoundTrip,
    assert_runs_identically,
    assert_same_model,
    bundled_feeds,
    checker_error,
    roundtrip,
    roundtrip_file,
)

from onnxdc import CompressConfig, ModelError, compress, decompress, load_model, read_container
from onnxdc.onnx_io.tensors import iter_tensors, tensor_raw_bytes

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
BACKEND_DIR = Path(os.path.dirname(onnx.__file__)) / "backend" / "test" / "data"
SAMPLE_MODELS = sorted(MODELS_DIR.glob("*.onnx"))
BACKEND_MODELS = sorted(BACKEND_DIR.rglob("*.onnx"))
THRESHOLD = CompressConfig().min_tensor_bytes


def _model_id(path: Path) -> str:
    if path.parent == MODELS_DIR:
        return f"models/{path.stem}"
    rel = path.relative_to(BACKEND_DIR)
    return "onnx/" + (str(rel.parent) if rel.name == "model.onnx" else str(rel.with_suffix("")))


FILE_MODELS = [pytest.param(p, id=_model_id(p)) for p in SAMPLE_MODELS + BACKEND_MODELS]


def test_the_model_collections_are_found() -> None:
    assert [p.stem for p in SAMPLE_MODELS] == ["crnn", "lenet300", "lenet5", "yolo"]
    assert len(BACKEND_MODELS) >= 100, f"onnx backend test models not found under {BACKEND_DIR}"


# --------------------------------------------------------------------------- model files


@pytest.mark.parametrize("path", FILE_MODELS)
def test_file_round_trip_is_exact(path: Path) -> None:
    rt = roundtrip_file(path)
    assert_same_model(rt.model, rt.restored)


@pytest.mark.parametrize("path", FILE_MODELS)
def test_file_round_trip_keeps_checker_validity(path: Path) -> None:
    rt = roundtrip_file(path)
    if checker_error(rt.model) is not None:
        pytest.skip("the input model fails the checker")
    assert checker_error(rt.restored) is None


@pytest.mark.parametrize("path", FILE_MODELS)
def test_file_round_trip_runs_identically(path: Path) -> None:
    rt = roundtrip_file(path)
    assert_runs_identically(rt.model, rt.restored, fallback_feeds=bundled_feeds(rt.model, path),
                            must_run=path.parent == MODELS_DIR)


@pytest.mark.parametrize("path", [pytest.param(p, id=_model_id(p)) for p in SAMPLE_MODELS])
def test_sample_models_store_every_weight_in_streams(path: Path) -> None:
    rt = roundtrip_file(path)
    stored = {t.name for t in read_container(rt.data).header.tensors}
    big = {r.proto.name for r in iter_tensors(rt.model) if len(tensor_raw_bytes(r.proto)) >= THRESHOLD}
    assert stored == big and big


# --------------------------------------------------------------------------- hand-built models

BUILDERS = {
    "control_flow": mb.control_flow_model,
    "function": mb.function_model,
    "annotated": mb.annotated_model,
    "external_weights": mb.external_weights_model,
    "training_info": mb.training_info_model,
    "dtype_zoo": mb.dtype_zoo_model,
}
RUNNABLE = [name for name in BUILDERS if name != "dtype_zoo"]
CONFIGS = {"default": CompressConfig(), "all_in_streams": CompressConfig(min_tensor_bytes=0)}


@functools.cache
def built(name: str) -> onnx.ModelProto:
    """The hand-built model ``name``, built once per session. Treat as read-only."""
    return BUILDERS[name]()


@functools.cache
def built_roundtrip(name: str, config: str = "default") -> RoundTrip:
    """The round trip of the hand-built model ``name`` under ``CONFIGS[config]``, once per session."""
    return roundtrip(built(name), config=CONFIGS[config])


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("name", BUILDERS)
def test_built_round_trip_is_exact(name: str, config: str) -> None:
    rt = built_roundtrip(name, config)
    assert_same_model(rt.model, rt.restored)


@pytest.mark.parametrize("name", BUILDERS)
def test_built_models_pass_the_checker_before_and_after(name: str) -> None:
    rt = built_roundtrip(name)
    assert checker_error(rt.model) is None, "the builder makes an invalid model"
    assert checker_error(rt.restored) is None


@pytest.mark.parametrize("name", RUNNABLE)
def test_built_round_trip_runs_identically(name: str) -> None:
    rt = built_roundtrip(name)
    assert_runs_identically(rt.model, rt.restored, must_run=True)


def _stored_paths(data: bytes) -> list[str]:
    return [t.path for t in read_container(data).header.tensors]


def test_subgraph_initializers_and_constants_are_stored_in_place() -> None:
    rt = built_roundtrip("control_flow")
    paths = _stored_paths(rt.data)
    for node, attr in ((0, "then_branch"), (0, "else_branch"), (1, "body")):
        subgraph = f"graph.node[{node}].attribute[{attr}].g"
        assert f"{subgraph}.initializer[0]" in paths
        assert any(p.startswith(f"{subgraph}.node[") and p.endswith(".attribute[value]") for p in paths)
    body = rt.restored.graph.node[1].attribute[0].g
    steps = next(n for n in body.node if n.name == "body_int_const").attribute[0].t
    np.testing.assert_array_equal(numpy_helper.to_array(steps), np.arange(100, dtype=np.int64))


def test_function_constants_and_opset_domains_survive() -> None:
    rt = built_roundtrip("function")
    assert "functions[0].node[1].attribute[value]" in _stored_paths(rt.data)
    assert {o.domain: o.version for o in rt.restored.opset_import} == {
        "": mb.OPSET, "onnxdc.test": 1, "ai.onnx.ml": 3, "com.microsoft": 1}
    func = rt.restored.functions[0]
    assert (func.domain, func.name, func.doc_string) == ("onnxdc.test", "AffineRelu", "affine map then relu")
    assert [o.domain for o in func.opset_import] == [""]


def test_training_info_tensors_are_stored() -> None:
    paths = _stored_paths(built_roundtrip("training_info").data)
    assert "training_info[0].initialization.node[0].attribute[value]" in paths
    assert "training_info[0].algorithm.initializer[0]" in paths


def test_annotations_survive() -> None:
    model = built_roundtrip("annotated").restored
    assert {p.key: p.value for p in model.metadata_props} == {
        "author": "onnxdc tests", "license": "MIT", "note": "ünïcode ✓"}
    assert (model.doc_string, model.graph.doc_string, model.model_version, model.domain) == (
        "model doc", "graph doc", 7, "org.onnxdc.tests")
    assert model.graph.node[1].doc_string == "node doc"
    assert model.graph.initializer[0].doc_string == "a weight with a doc string"
    assert model.graph.input[0].doc_string == "input doc"
    assert [v.name for v in model.graph.value_info] == ["xw"]
    sparse = model.graph.sparse_initializer[0]
    original = built("annotated").graph.sparse_initializer[0]
    assert list(sparse.dims) == [8, 16]
    np.testing.assert_array_equal(numpy_helper.to_array(sparse.indices), numpy_helper.to_array(original.indices))
    assert numpy_helper.to_array(sparse.values).tobytes() == numpy_helper.to_array(original.values).tobytes()


def test_zoo_covers_every_data_type_and_form() -> None:
    names = {t.name for t in built("dtype_zoo").graph.initializer}
    assert {TensorProto.INT8, TensorProto.UINT8, TensorProto.INT32, TensorProto.INT64, TensorProto.BOOL,
            TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE, TensorProto.INT4, TensorProto.UINT4,
            TensorProto.FLOAT} <= set(mb.zoo_dtypes())
    for data_type in mb.zoo_dtypes():
        dname = TensorProto.DataType.Name(data_type)
        assert {f"{dname}_{form}_{n}" for form in ("raw", "typed") for n in (mb.SMALL, mb.LARGE)} <= names
    typed = {t.name: t for t in built("dtype_zoo").graph.initializer if "_typed_" in t.name}
    assert not any(t.HasField("raw_data") for t in typed.values())
    assert typed["FLOAT_typed_301"].float_data and typed["INT64_typed_301"].int64_data
    assert typed["DOUBLE_typed_301"].double_data and typed["UINT64_typed_301"].uint64_data
    assert typed["FLOAT16_typed_301"].int32_data


def test_zoo_threshold_splits_stored_and_inline_tensors() -> None:
    rt = built_roundtrip("dtype_zoo")
    stored = {t.name for t in read_container(rt.data).header.tensors}
    expected = {r.proto.name for r in iter_tensors(rt.model)
                if r.proto.data_type != TensorProto.STRING and len(tensor_raw_bytes(r.proto)) >= THRESHOLD}
    assert stored == expected
    assert {f"{TensorProto.DataType.Name(d)}_{form}_{mb.LARGE}" for d in mb.zoo_dtypes()
            for form in ("raw", "typed")} <= stored
    assert "blob0" in stored  # a TENSORS attribute of a custom-domain node
    # Tensors left in the skeleton come back byte for byte, in their original field.
    restored = {r.proto.name: r.proto for r in iter_tensors(rt.restored)}
    for ref in iter_tensors(rt.model):
        if ref.proto.name not in stored:
            assert restored[ref.proto.name].SerializeToString() == ref.proto.SerializeToString(), ref.proto.name


@pytest.mark.parametrize("form", ["raw", "typed"])
@pytest.mark.parametrize("data_type", sorted(mb.FLOAT_SPECIALS), ids=TensorProto.DataType.Name)
def test_nan_payloads_and_negative_zero_survive(data_type: int, form: str) -> None:
    name = f"{TensorProto.DataType.Name(data_type)}_{form}_{mb.LARGE}"
    restored = next(t for t in built_roundtrip("dtype_zoo").restored.graph.initializer if t.name == name)
    specials = mb.FLOAT_SPECIALS[data_type]
    head = numpy_helper.to_array(restored)[:specials.size]
    assert head.view(specials.dtype.newbyteorder("=")).tolist() == specials.tolist()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data_type=st.sampled_from([TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE,
                                  TensorProto.INT8, TensorProto.INT64, TensorProto.INT4]),
       payload=st.binary(max_size=600))
def test_any_bit_pattern_round_trips(data_type: int, payload: bytes) -> None:
    itemsize = {TensorProto.FLOAT: 4, TensorProto.DOUBLE: 8, TensorProto.INT64: 8, TensorProto.INT8: 1,
                TensorProto.INT4: 1}.get(data_type, 2)
    payload = payload[:len(payload) // itemsize * itemsize]
    numel = len(payload) // itemsize * (2 if data_type == TensorProto.INT4 else 1)
    w = helper.make_tensor("w", data_type, [numel], payload, raw=True)
    graph = helper.make_graph([], "g", [], [helper.make_tensor_value_info("w", data_type, [numel])], [w])
    rt = roundtrip(helper.make_model(graph))
    assert rt.restored.graph.initializer[0].raw_data == payload


# --------------------------------------------------------------------------- external data and bad files


def _save_external(model: onnx.ModelProto, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "model.onnx"
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    onnx.save_model(copy, path, save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    return path


def test_external_data_round_trip(tmp_path: Path) -> None:
    original = mb.external_weights_model()
    path = _save_external(original, tmp_path)
    on_disk = onnx.load(path, load_external_data=False)
    assert all(t.data_location == TensorProto.EXTERNAL for t in on_disk.graph.initializer)
    assert (tmp_path / "weights.bin").stat().st_size > 0
    model = load_model(path)
    assert_same_model(onnx.load(path), model)
    for want, got in zip(original.graph.initializer, model.graph.initializer, strict=True):
        assert got.raw_data == want.raw_data
    rt = roundtrip(model)
    assert_same_model(model, rt.restored)
    assert checker_error(rt.restored) is None
    assert_runs_identically(model, rt.restored, must_run=True)


def _point_external_data(path: Path, location: str) -> None:
    model = onnx.load(path, load_external_data=False)
    for t in model.graph.initializer:
        for entry in t.external_data:
            if entry.key == "location":
                entry.value = location
    path.write_bytes(model.SerializeToString())


@pytest.mark.parametrize("where", ["parent", "absolute", "nested_parent", "symlink"])
def test_external_data_outside_the_model_directory_is_refused(tmp_path: Path, where: str) -> None:
    path = _save_external(mb.external_weights_model(), tmp_path / "model")
    secret = tmp_path / "secret"
    secret.write_bytes((tmp_path / "model" / "weights.bin").read_bytes())
    if where == "symlink":
        (tmp_path / "model" / "link.bin").symlink_to(secret)
    location = {"parent": "../secret", "absolute": str(secret), "nested_parent": "sub/../../secret",
                "symlink": "link.bin"}[where]
    _point_external_data(path, location)
    with pytest.raises(ModelError, match="leaves the model directory"):
        load_model(path)


def test_external_data_missing_or_short_file_is_refused(tmp_path: Path) -> None:
    path = _save_external(mb.external_weights_model(), tmp_path)
    weights = tmp_path / "weights.bin"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ModelError, match="exceeds file size"):
        load_model(path)
    weights.unlink()
    with pytest.raises(ModelError, match="not found"):
        load_model(path)


@pytest.mark.parametrize("content", [
    pytest.param(b"", id="empty"),
    pytest.param(b"this is not an onnx model\n", id="text"),
    pytest.param(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", id="png"),
    pytest.param(b"\xff" * 64, id="garbage"),
    pytest.param(numpy_helper.from_array(np.arange(4, dtype=np.float32), "t").SerializeToString(), id="tensorproto"),
])
def test_a_file_that_is_not_a_model_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(content)
    with pytest.raises(ModelError, match="empty" if not content else "not an ONNX model"):
        load_model(path)


def _one_tensor_model(t: TensorProto) -> onnx.ModelProto:
    graph = helper.make_graph([], "g", [], [helper.make_tensor_value_info(t.name, t.data_type, t.dims)], [t])
    return helper.make_model(graph)


@pytest.mark.parametrize(("tensor", "message"), [
    pytest.param(TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[5], raw_data=bytes(100)),
                 "holds 100 bytes of data, its shape and dtype need 20", id="raw_too_long"),
    pytest.param(TensorProto(name="w", data_type=TensorProto.INT4, dims=[301], raw_data=bytes(150)),
                 "holds 150 bytes of data, its shape and dtype need 151", id="int4_too_short"),
    pytest.param(TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[50], float_data=[1.0] * 3),
                 "unreadable data", id="typed_too_short"),
    pytest.param(TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[2], float_data=[1.0] * 3),
                 "unreadable data", id="small_typed_too_long"),
])
def test_a_tensor_whose_data_does_not_fit_its_shape_is_refused(tensor: TensorProto, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        compress(_one_tensor_model(tensor))


def test_missing_file_and_directory_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no such file"):
        load_model(tmp_path / "absent.onnx")
    with pytest.raises(ModelError, match="directory"):
        load_model(tmp_path)


# --------------------------------------------------------------------------- int8 models

QUANTIZED = [pytest.param(p.stem, wt, id=f"{p.stem}-{wt}") for p in SAMPLE_MODELS for wt in ("QInt8", "QUInt8")]


@pytest.fixture(scope="module")
def int8_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("int8")


@functools.cache
def _quantized(directory: Path, name: str, weight_type: str) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = directory / f"{name}.{weight_type}.onnx"
    quantize_dynamic(MODELS_DIR / f"{name}.onnx", out, weight_type=QuantType[weight_type])
    return out


@pytest.mark.parametrize(("name", "weight_type"), QUANTIZED)
def test_int8_round_trip_is_exact_and_runs_identically(int8_dir: Path, name: str, weight_type: str) -> None:
    path = _quantized(int8_dir, name, weight_type)
    rt = roundtrip_file(path)
    int8 = TensorProto.INT8 if weight_type == "QInt8" else TensorProto.UINT8
    stored = {t.name for t in read_container(rt.data).header.tensors}
    assert any(r.proto.data_type == int8 and r.proto.name in stored for r in iter_tensors(rt.model))
    assert_same_model(rt.model, rt.restored)
    assert_runs_identically(rt.model, rt.restored, must_run=True)


def _zstd19_size(path: Path) -> int:
    return len(zstandard.ZstdCompressor(level=19).compress(path.read_bytes()))


@pytest.mark.parametrize("path", [pytest.param(p, id=_model_id(p)) for p in SAMPLE_MODELS])
def test_float_container_beats_zstd19_on_the_file(path: Path) -> None:
    assert len(roundtrip_file(path).data) < _zstd19_size(path)


@pytest.mark.parametrize(("name", "weight_type"), QUANTIZED)
def test_int8_container_beats_zstd19_on_the_file(int8_dir: Path, name: str, weight_type: str) -> None:
    path = _quantized(int8_dir, name, weight_type)
    assert len(roundtrip_file(path).data) < _zstd19_size(path)


# --------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("path", [pytest.param(p, id=_model_id(p)) for p in SAMPLE_MODELS])
def test_file_compression_is_deterministic(path: Path) -> None:
    rt = roundtrip_file(path)
    assert compress(load_model(path)).data == rt.data
    # The restored model compresses to the very same container.
    assert compress(rt.restored).data == rt.data


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("name", BUILDERS)
def test_built_compression_is_deterministic(name: str, config: str) -> None:
    rt = built_roundtrip(name, config)
    assert compress(BUILDERS[name](), config=CONFIGS[config]).data == rt.data
    assert compress(rt.restored, config=CONFIGS[config]).data == rt.data
    assert decompress(rt.data).SerializeToString(deterministic=True) == rt.restored.SerializeToString(
        deterministic=True)
