"""Format 3.0: the payload's CRC-32 in place of the streams', implied params, skeleton names.

Each malformed 3.0 header is built from a valid container's compact JSON and refused with one
ContainerError; the derived-name transform is checked on its own and through a container.
"""

from __future__ import annotations

import json
import re
import struct
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxdc
from onnxdc.errors import ContainerError
from onnxdc.format.compact import SHARED_DEFAULTS
from onnxdc.format.container import MAGIC, ContainerWriter, read_container
from onnxdc.format.header import header_coder
from onnxdc.onnx_io.names import MARK, predict_names, restore_names
from onnxdc.pipeline.encode import encode_model
from onnxdc.pipeline.settings import SharingConfig

SHARING = onnxdc.CompressConfig(sharing=SharingConfig(sparsity=0.5, bits=4, min_elements=16))


def torch_named_mlp() -> onnx.ModelProto:
    """Gemm -> Relu -> Gemm named as torch.onnx names them (derived output names)."""
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((32, 16)).astype(np.float32)
    w2 = rng.standard_normal((4, 32)).astype(np.float32)
    nodes = [helper.make_node("Gemm", ["x", "fc1.weight"], ["/fc1/Gemm_output_0"], name="/fc1/Gemm", transB=1),
             helper.make_node("Relu", ["/fc1/Gemm_output_0"], ["/Relu_output_0"], name="/Relu"),
             helper.make_node("Gemm", ["/Relu_output_0", "fc2.weight"], ["y"], name="/fc2/Gemm", transB=1)]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
                              [numpy_helper.from_array(w1, "fc1.weight"), numpy_helper.from_array(w2, "fc2.weight")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def compress3(model: onnx.ModelProto, config: onnxdc.CompressConfig = SHARING) -> bytes:
    """``model``'s container as a 3.0 writer lays it out (onnxdc writes 4.0)."""
    skeleton = onnx.ModelProto()
    skeleton.CopyFrom(model)
    writer = ContainerWriter(major=3)
    header, _, _ = encode_model(skeleton, writer=writer, config=config, original=model)
    return writer.to_bytes(header)


MODEL = torch_named_mlp()
DATA = compress3(MODEL)


# --------------------------------------------------------------------------- derived names


def test_predicted_names_restore_to_the_same_bytes() -> None:
    marked = predict_names(MODEL)
    assert marked is not None
    outs = [o for n in marked.graph.node for o in n.output]
    assert outs == [MARK, MARK, "y"]  # the graph output keeps its name
    assert list(marked.graph.node[1].input) == [f"{MARK}1"] and marked.graph.node[2].input[0] == f"{MARK}1"
    back = onnx.ModelProto()
    back.ParseFromString(marked.SerializeToString())
    restore_names(back)
    assert back.SerializeToString(deterministic=True) == MODEL.SerializeToString(deterministic=True)


def test_second_outputs_and_later_producers_are_referenced() -> None:
    nodes = [helper.make_node("Split", ["x"], ["/s/Split_output_0", "/s/Split_output_1"], name="/s/Split", axis=1),
             helper.make_node("Add", ["/s/Split_output_1", "/s/Split_output_0"], ["y"], name="/Add")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    marked = predict_names(model)
    assert list(marked.graph.node[1].input) == [f"{MARK}1.1", f"{MARK}1"]
    restore_names(marked)
    assert marked.SerializeToString() == model.SerializeToString()


def test_models_the_transform_leaves_alone() -> None:
    plain = helper.make_model(helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"], name="r")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])]))
    assert predict_names(plain) is None  # nothing derived
    marked_name = onnx.ModelProto()
    marked_name.CopyFrom(MODEL)
    marked_name.graph.node[1].name = "a\x00b"
    assert predict_names(marked_name) is None
    dup = onnx.ModelProto()
    dup.CopyFrom(MODEL)
    dup.graph.node[2].output[0] = "/fc1/Gemm_output_0"  # two outputs alike: not SSA, not touched
    assert predict_names(dup) is None


@pytest.mark.parametrize("mark", [MARK, f"{MARK}x", f"{MARK}9", f"{MARK}1.7", f"{MARK}-5", f"{MARK}1.a"])
def test_marks_that_name_no_output_are_refused(mark: str) -> None:
    marked = predict_names(MODEL)
    marked.graph.node[2].input[0] = mark
    with pytest.raises(ValueError, match="node 2 input"):
        restore_names(marked)


def test_a_container_keeps_the_names_out_and_decodes_them_back() -> None:
    c = read_container(DATA)
    assert c.header.skeleton_names
    assert b"_output_0" not in c.decode_stream(c.header.skeleton).tobytes()
    out = onnxdc.decompress(DATA)
    assert [list(n.output) for n in out.graph.node] == [list(n.output) for n in MODEL.graph.node]
    onnx.checker.check_model(out, full_check=True)


# --------------------------------------------------------------------------- malformed 3.0 headers


def unpack3(data: bytes) -> tuple[Any, list[bytes]]:
    c = read_container(data)
    return json.loads(c.header.to_compact_json_bytes()), [c.stream_bytes(i) for i in range(len(c.header.streams))]


def pack3(obj: Any, chunks: list[bytes], *, payload_crc: bool = True) -> bytes:
    """A 3.0 container of the compact header ``obj`` and ``chunks`` (the payload CRC recomputed)."""
    if payload_crc and isinstance(obj.get("s"), int):
        obj["s"] = zlib.crc32(b"".join(chunks))
    text = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    stored = header_coder(3).encode(np.frombuffer(text, dtype=np.uint8))
    return struct.pack("<8sHHQI", MAGIC, 3, 0, len(stored), zlib.crc32(stored)) + stored + b"".join(chunks)


def refused(data: bytes, match: str, *, code: str | None = None) -> None:
    with pytest.raises(ContainerError) as info:
        onnxdc.decompress(data)
    assert re.search(match, str(info.value)) and "\n" not in str(info.value), str(info.value)
    if code is not None:
        assert info.value.code == code


def test_pack3_round_trips() -> None:
    obj, chunks = unpack3(DATA)
    assert pack3(obj, chunks) == DATA


def _edit(edit: Callable[[Any], object]) -> bytes:
    obj, chunks = unpack3(DATA)
    edit(obj)
    return pack3(obj, chunks)


def _shared(obj: Any) -> list[Any]:
    return next(t for t in obj["t"] if t[6] == "shared")


CASES: dict[str, tuple[Callable[[Any], object], str]] = {
    "no-payload-crc": (lambda o: o.pop("s"), r"^header lacks key\(s\) s$"),
    "stream-with-crc": (lambda o: _shared(o)[8][0].insert(2, 123), r"stream 0 count must be an integer"),  # read as [role, length, coder, count]
    "names-flag-2": (lambda o: o.__setitem__("f", 2), r"^header\.f must be 1 when present, found 2$"),
    "names-flag-true": (lambda o: o.__setitem__("f", True), r"^header\.f must be 1 when present"),
    "payload-crc-string": (lambda o: o.__setitem__("s", "1"), r"header\.payload_crc32 must be an integer"),
    "k-wrong": (lambda o: _shared(o)[7].__setitem__("k", 200), r"codebook"),
    "numel-wrong": (lambda o: _shared(o)[7].__setitem__("numel", 3), r"numel/nnz"),
    "bad-codebook-dtype": (lambda o: _shared(o)[7].__setitem__("codebook_dtype", "int8"), r"params must be \[.*'k'"),  # k is not implied
}


@pytest.mark.parametrize("edit, match", CASES.values(), ids=CASES.keys())
def test_malformed_3_0_headers_are_refused(edit: Callable[[Any], object], match: str) -> None:
    refused(_edit(edit), match)


def test_payload_crc_mismatch() -> None:
    obj, chunks = unpack3(DATA)
    obj["s"] ^= 1
    refused(pack3(obj, chunks, payload_crc=False), r"^payload checksum mismatch \(file corrupted\)$",
            code="payload-crc")


def test_names_that_do_not_restore_are_a_container_error() -> None:
    obj, chunks = unpack3(DATA)
    c = read_container(DATA)
    skel = onnx.ModelProto()
    skel.ParseFromString(c.decode_stream(c.header.skeleton).tobytes())
    skel.graph.node[1].input[0] = f"{MARK}7"
    raw = skel.SerializeToString(deterministic=True)
    chunks[-1] = onnxdc.coders.get_coder({"id": "zstd"}).encode(np.frombuffer(raw, dtype=np.uint8))
    obj["k"] = [len(chunks[-1]), "zstd", len(raw)]
    refused(pack3(obj, chunks), r"^the skeleton's names do not restore: node 1 input", code="skeleton-crc")


def test_the_compact_form_leaves_out_what_it_implies() -> None:
    obj, _ = unpack3(DATA)
    for t in obj["t"]:
        if t[6] == "shared":
            assert not {"numel", "k"} & t[7].keys()
            assert all(t[7].get(k) != v or type(t[7].get(k)) is not type(v) for k, v in SHARED_DEFAULTS.items())
        assert all(len(s) in (3, 4) for s in t[8])  # no stream CRCs
    full = read_container(DATA).header
    assert all(s.crc32 is None for s in full.streams) and full.payload_crc32 is not None
    assert all("k" in t.params and "numel" in t.params for t in full.tensors if t.encoding == "shared")


def test_older_majors_do_not_take_3_0_keys() -> None:
    writer = ContainerWriter(major=2)
    with pytest.raises(ContainerError, match="cannot mark skeleton names"):
        writer.header(producer="p", metadata={}, skeleton=0, skeleton_crc32=0, tensors=[], skeleton_names=True)
    v1 = read_container(DATA).header.to_json()
    assert "payload_crc32" in v1  # a 1.0 reader's object would refuse it: the key is 3.0's
    text = json.dumps({**v1, "streams": [{**s, "crc32": 0} for s in v1["streams"]]}).encode()
    stored = onnxdc.coders.get_coder({"id": "zstd"}).encode(np.frombuffer(text, dtype=np.uint8))
    data = struct.pack("<8sHHQI", MAGIC, 1, 0, len(stored), zlib.crc32(stored)) + stored
    with pytest.raises(ContainerError, match=r"^header has unknown key\(s\) payload_crc32, skeleton_names$"):
        read_container(data + b"".join(unpack3(DATA)[1]))


# --------------------------------------------------------------------------- hostile marks (fuzz/mutate.py --major 3)


def _with_skeleton(edit: Callable[[onnx.ModelProto], object], *, restored_crc: bool = True) -> bytes:
    """DATA with its marked skeleton edited and recoded, ``c`` the edited skeleton's restored CRC-32
    (as a hostile writer would set it) and the payload CRC fixed."""
    obj, chunks = unpack3(DATA)
    c = read_container(DATA)
    skel = onnx.ModelProto()
    skel.ParseFromString(c.decode_stream(c.header.skeleton).tobytes())
    edit(skel)
    raw = skel.SerializeToString(deterministic=True)
    chunks[-1] = onnxdc.coders.get_coder({"id": "zstd"}).encode(np.frombuffer(raw, dtype=np.uint8))
    obj["k"] = [len(chunks[-1]), "zstd", len(raw)]
    if restored_crc:
        skel.ParseFromString(raw)
        restore_names(skel)
        obj["c"] = zlib.crc32(skel.SerializeToString(deterministic=True))
    return pack3(obj, chunks)


@pytest.mark.parametrize("mark", [f"{MARK}999999999999", f"{MARK}-1.5", MARK + "9" * 10000, f"{MARK}1." + "9" * 10000,
                                  MARK + "-" * 5000 + "1", f"{MARK}--1", f"{MARK}\u0661", f"{MARK}1.\u00b2",
                                  f"{MARK}+1", f"{MARK} 1", f"{MARK}1.", f"{MARK}.1"])
def test_hostile_marks_are_one_short_error(mark: str) -> None:
    """Found by the 3.0 fuzzer: a 5,000-character mark came back whole in the error message; huge
    or non-ASCII numbers are not read as distances (int() of 10,000 digits, of Arabic digits)."""
    def edit(skel: onnx.ModelProto) -> None:
        skel.graph.node[2].input[0] = mark

    with pytest.raises(ContainerError) as info:
        onnxdc.decompress(_with_skeleton(edit, restored_crc=False))
    msg = str(info.value)
    assert msg.startswith("the skeleton's names do not restore: node 2 input") and len(msg) < 120, msg


def _amplified(name_bytes: int, refs: int) -> Callable[[onnx.ModelProto], object]:
    """A long name on the first node behind ``refs`` marks naming its output: a few bytes each, a
    whole name each once restored."""
    def edit(skel: onnx.ModelProto) -> None:
        skel.graph.node[0].name = "n" * name_bytes
        skel.graph.node[2].input.extend([f"{MARK}2"] * refs)
    return edit


def test_restored_names_count_as_output() -> None:
    """Found by the 3.0 fuzzer: a skeleton of a few kilobytes whose marks restore to gigabytes of
    names (a MemoryError, or protobuf's EncodeError past 2 GiB) is refused before any is written."""
    data = _with_skeleton(_amplified(1 << 16, 1 << 13), restored_crc=False)  # 512 MiB of names
    assert len(data) < 10_000
    with pytest.raises(ContainerError, match=r"^the skeleton's names restore to more than \d+ bytes") as info:
        onnxdc.decompress(data)
    assert info.value.code == "limits"
    small = _with_skeleton(_amplified(1 << 10, 64))  # 64 KiB of names: under the limits, it decodes
    assert onnxdc.decompress(small).graph.node[2].input[-1] == "n" * 1024 + "_output_0"
    out = read_container(small)
    from onnxdc.format.container import output_size
    with pytest.raises(ContainerError, match="names restore to more than"):
        onnxdc.decompress(small, max_output_bytes=output_size(out.header) + 1000)


def test_restored_growth_stops_once_over() -> None:
    """The count is linear and stops as soon as it is over, so a hostile skeleton costs what its
    bytes and the bound do, not what its names would."""
    from onnxdc.onnx_io.names import restored_growth

    skel = predict_names(MODEL)
    _amplified(1 << 20, 1 << 12)(skel)  # 4 GiB of names
    assert (1 << 22) < restored_growth(skel, stop_above=1 << 22) <= (1 << 22) + (1 << 21)
    assert restored_growth(predict_names(MODEL), stop_above=1 << 30) == sum(
        len(n) for node in MODEL.graph.node for n in [*node.input, *node.output]) - sum(
        len(n) for node in predict_names(MODEL).graph.node for n in [*node.input, *node.output])
