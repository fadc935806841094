"""Format 4.0: the binary header (:mod:`onnxdc.format.binary`), tensor facts from the skeleton, node
names marked (:mod:`onnxdc.onnx_io.names` with ``nodes=True``), and what a 3.0 reader did not need."""

from __future__ import annotations

import copy
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxdc
from onnxdc.coders import get_coder
from onnxdc.errors import ContainerError
from onnxdc.format import binary
from onnxdc.format import container as container_mod
from onnxdc.format.container import ContainerWriter, prefix4, read_container
from onnxdc.onnx_io.names import MARK, predict_names, restore_names, restored_growth
from onnxdc.onnx_io.tensors import skeleton_tensors
from onnxdc.pipeline.encode import CompressConfig, encode_model
from onnxdc.pipeline.settings import SharingConfig

MODELS = Path(__file__).resolve().parent.parent / "models"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SHARING = CompressConfig(sharing=SharingConfig(sparsity=0.9, bits=5))


def _containers() -> dict[str, bytes]:
    out = {p.stem: p.read_bytes() for p in sorted(FIXTURES.glob("v4_0_*.onnxdc"))}
    for name in ("lenet300", "crnn", "yolo"):
        model = onnx.load(str(MODELS / f"{name}.onnx"))
        out[f"{name}-shared"] = onnxdc.compress(model, config=SHARING).data
        out[f"{name}-lossless"] = onnxdc.compress(model).data
    return out


CONTAINERS = _containers()


def _header_bytes(data: bytes) -> tuple[bytes, int]:
    """A 4.0 container's stored header and where it starts."""
    n, used = container_mod._prefix_varint(data[12:24])
    start = 12 + used + 4
    return data[start:start + n], start


def _repack(data: bytes, header: bytes) -> bytes:
    """``data`` with its header replaced (the prefix's length and CRC-32 follow)."""
    old, start = _header_bytes(data)
    return prefix4(4, 0, header) + header + data[start + len(old):]


# --------------------------------------------------------------------------- the binary header


@pytest.mark.parametrize("name", sorted(CONTAINERS))
def test_binary_header_round_trips_to_the_same_object(name: str) -> None:
    """decode(encode(h)) resolves, with the skeleton's facts, to the 1.0 object it came from."""
    data = CONTAINERS[name]
    c = read_container(data)
    assert c.version == (4, 0)
    obj = c.header.to_json()
    stored, _ = _header_bytes(data)
    assert binary.encode(obj, binary.decode(stored).metadata) == stored
    skeleton = c.decode_stream(c.header.skeleton).tobytes()
    parsed = binary.decode(stored)
    back = binary.resolve(parsed, skeleton_tensors(skeleton, frozenset(t[0] for t in parsed.tensors)),
                          c.header.metadata)
    assert back == obj


def test_every_coder_config_round_trips() -> None:
    configs = [{"id": "raw", "bits": b} for b in (1, 4, 8)] + [
        {"id": "huffman", "max_bits": 12, "block_size": 4096}, {"id": "huffman", "max_bits": 15, "block_size": 0},
        {"id": "rans"}, {"id": "rans-ctx", "row": 224}, {"id": "zstd", "level": 3}, {"id": "zstd-literals"},
        {"id": "zstd-dict", "dictionary": "onnx-1", "level": 19}, {"id": "zstd-dict", "dictionary": "onnx-3", "level": 5},
        {"id": "chain", "coders": [{"id": "huffman", "max_bits": 15, "block_size": 0}, {"id": "zstd", "level": 19}]},
    ]
    for config in configs:
        config = get_coder(config).get_config()
        for count in (None, 0, 300):
            w = binary._Writer()
            binary._write_coder(w, config, count)
            r = binary._Reader(bytes(w.buf))
            got, has_count = binary._read_coder(r, "x")
            assert got == config and has_count == (count is not None)
            assert (r.uv("count") == count) if count is not None else r.left() == 0


def test_the_format_names_every_registered_coder() -> None:
    """A coder without a 4.0 tag could not be written: every registered one has one."""
    from onnxdc.coders.registry import registered_coders

    assert set(registered_coders()) <= set(binary.CODERS)
    assert set(binary.CODER_PARAMS) == set(binary.CODERS) - {"chain"}


@pytest.mark.parametrize("data, message", [
    (b"\x80", "ends inside"),
    (b"\x80\x00", "not a canonical varint"),
    (b"\xff" * 11, "more than 10 bytes"),
    (b"\xff" * 9 + b"\x01", "not a canonical varint below 2\\*\\*63"),
])
def test_malformed_varints_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(ContainerError, match=message):
        binary._Reader(data).uv("a length")


def _edited(data: bytes, edit: Any) -> bytes:
    """``data`` with its header decoded, edited as a :class:`binary.Parsed`, re-encoded."""
    c = read_container(data)
    obj = c.header.to_json()
    meta = binary.decode(_header_bytes(data)[0]).metadata
    edit(obj)
    return _repack(data, binary.encode(obj, meta))


def test_stage_sizes_that_no_formula_gives_are_spelled_out() -> None:
    """A header whose stage sizes the fixed-position bytes cannot reproduce keeps them explicitly."""
    data = CONTAINERS["crnn-shared"]

    def edit(obj: dict[str, Any]) -> None:
        for t in obj["tensors"]:
            if t["encoding"] == "shared":
                t["params"]["pruned_bytes"], t["params"]["shared_bytes"] = 7, 3

    out = read_container(_edited(data, edit))
    assert {(t.params["pruned_bytes"], t.params["shared_bytes"]) for t in out.header.tensors
            if t.encoding == "shared"} == {(7, 3)}


def test_an_op_outside_the_table_is_spelled_out() -> None:
    def edit(obj: dict[str, Any]) -> None:
        for t in obj["tensors"]:
            if t["encoding"] == "shared":
                t["params"]["op"], t["params"]["kind"] = "MyConv", "conv"

    out = read_container(_edited(CONTAINERS["crnn-shared"], edit))
    assert {t.params["op"] for t in out.header.tensors if t.encoding == "shared"} == {"MyConv"}


@pytest.mark.parametrize("field, value, message", [
    ("flags", 0x40, "unknown flags"),
    ("encoding", 9, "unknown encoding"),
    ("coder", 63 << 2, "names coder 63"),
    ("tensors", 10**6, "do not fit"),
    ("trailing", b"\x00", "bytes follow its last tensor"),
])
def test_malformed_headers_are_refused(field: str, value: Any, message: str) -> None:
    data = CONTAINERS["lenet300-shared"]
    stored, _ = _header_bytes(data)
    r = binary._Reader(stored)
    r.text("producer")
    flags_at = r.pos
    r.uv("flags")
    r.u32("c")
    r.u32("s")
    r.uv("length")
    coder_at = r.pos
    if binary._read_coder(r, "skeleton")[1]:
        r.uv("count")
    if stored[flags_at] & 2:  # pragma: no cover - onnxdc writes no metadata here
        r.blob("m")
    count_at = r.pos
    if field == "flags":
        bad = stored[:flags_at] + bytes([stored[flags_at] | value]) + stored[flags_at + 1:]
    elif field == "coder":
        bad = stored[:coder_at] + bytes([0x80 | (value & 0x7F), value >> 7]) + stored[coder_at + 1:]
    elif field == "tensors":
        w = binary._Writer()
        w.uv(value)
        bad = stored[:count_at] + bytes(w.buf) + stored[count_at + 1:]
    elif field == "encoding":
        r.uv("n")
        r.uv("slot")
        at = r.pos
        bad = stored[:at] + bytes([value << 1]) + stored[at + 1:]
    else:
        bad = stored + value
    with pytest.raises(ContainerError, match=message):
        read_container(_repack(data, bad))


def test_a_slot_the_skeleton_lacks_is_refused() -> None:
    def edit(obj: dict[str, Any]) -> None:
        obj["tensors"][-1]["slot"] = 999

    with pytest.raises(ContainerError, match="slot 999 is not in the skeleton"):
        read_container(_edited(CONTAINERS["lenet300-shared"], edit))


def test_a_skeleton_declaring_more_than_the_open_may_decode_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """The open decodes the skeleton: its declared size is bounded first, by its stored size
    (``tests/test_format4_hostile.py`` has the hostile cases)."""
    monkeypatch.setattr(container_mod, "SKELETON_FREE_BYTES", 0)
    monkeypatch.setattr(container_mod, "SKELETON_RATIO", 1)
    with pytest.raises(ContainerError, match="the skeleton declares \\d+ bytes, over the limit"):
        read_container(CONTAINERS["lenet300-shared"])


def test_without_a_skeleton_reader_the_format_says_how_to_open_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(container_mod, "_SKELETON_READERS", {})
    with pytest.raises(ContainerError, match="no skeleton reader is registered"):
        read_container(CONTAINERS["lenet300-shared"])
    assert read_container(CONTAINERS["lenet300-shared"], skeleton_tensors=skeleton_tensors).version == (4, 0)


def test_a_skeleton_that_is_no_model_is_a_container_error() -> None:
    """The skeleton's stream replaced by zstd of bytes that are no ModelProto."""
    import zstandard

    junk = zstandard.ZstdCompressor(level=3).compress(b"\x08\x07" * 40)

    def edit(obj: dict[str, Any]) -> None:
        obj["streams"][-1].update(length=len(junk), count=80, coder={"id": "zstd", "level": 3})

    data = CONTAINERS["lenet300-shared"]
    c = read_container(data)
    sk = c.header.streams[c.header.skeleton]
    payload = data[c.header_size:c.header_size + sk.offset] + junk

    def fix(obj: dict[str, Any]) -> None:
        edit(obj)
        obj["payload_crc32"] = zlib.crc32(payload)

    obj = c.header.to_json()
    fix(obj)
    header = binary.encode(obj, None)
    with pytest.raises(ContainerError, match="skeleton"):
        read_container(prefix4(4, 0, header) + header + payload)


def test_the_prefix_is_shorter_and_its_varint_strict() -> None:
    data = CONTAINERS["crnn-shared"]
    c = read_container(data)
    stored, start = _header_bytes(data)
    assert start == 12 + (1 if len(stored) < 128 else 2) + 4 and c.header_size == start + len(stored)
    bad = data[:12] + b"\x80\x80\x80\x80\x01" + data[13:]
    with pytest.raises(ContainerError, match="canonical varint"):
        read_container(bad)


# --------------------------------------------------------------------------- the floor it was made for


def test_the_crnn_header_and_skeleton_fit_in_600_bytes() -> None:
    """Issue 12's floor, at fixed settings (the automatic container's is in benchmarks/format_sizes.md)."""
    c = read_container(CONTAINERS["crnn-shared"])
    assert c.header_size + c.header.streams[c.header.skeleton].length < 600


def test_4_0_is_smaller_than_3_0_on_every_sample_model() -> None:
    for name in ("lenet300", "lenet5", "crnn", "yolo"):
        model = onnx.load(str(MODELS / f"{name}.onnx"))
        sizes = {}
        for major in (3, 4):
            skeleton = onnx.ModelProto()
            skeleton.CopyFrom(model)
            writer = ContainerWriter(major=major)
            header, _, _ = encode_model(skeleton, writer=writer, config=SHARING, original=model)
            sizes[major] = len(writer.to_bytes(header))
        assert sizes[4] < sizes[3], (name, sizes)


# --------------------------------------------------------------------------- node names


def _torch_like() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    names = ["/conv1/Conv", "/Relu", "/conv2/Conv", "/Relu_1", "Relu_7", "/fc/Gemm", "/Relu_2", "custom"]
    ops = ["Conv", "Relu", "Conv", "Relu", "Relu", "Gemm", "Relu", "Relu"]
    nodes, prev = [], "x"
    inits = []
    for i, (name, op) in enumerate(zip(names, ops)):
        ins = [prev]
        if op in ("Conv", "Gemm"):
            w = f"w{i}"
            shape = (2, 2, 1, 1) if op == "Conv" else (4, 8)
            inits.append(numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), w))
            ins.append(w)
        out = f"{name}_output_0" if i < len(names) - 1 else "y"
        nodes.append(helper.make_node(op, ins, [out], name=name, **({"transB": 1} if op == "Gemm" else {})))
        prev = out
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 2, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_node_names_are_marked_where_they_follow_the_pattern() -> None:
    model = _torch_like()
    marked = predict_names(model, nodes=True)
    assert marked is not None
    stored = [n.name for n in marked.graph.node]
    # Relu_7 breaks the count and "custom" the pattern: both kept; /Relu_2 still counts as the third.
    assert stored == ["/conv1/" + MARK, "/" + MARK, "/conv2/" + MARK, "/" + MARK, "Relu_7", "/fc/" + MARK,
                      "/" + MARK, "custom"]
    back = onnx.ModelProto()
    back.ParseFromString(marked.SerializeToString(deterministic=True))
    restore_names(back, nodes=True)
    assert back.SerializeToString(deterministic=True) == model.SerializeToString(deterministic=True)
    assert predict_names(model) is not None and all(MARK not in n.name for n in predict_names(model).graph.node)


def test_restored_growth_counts_node_names() -> None:
    """Marked node names grow by their op type and suffix, and the outputs derived from them by as
    much again: the bound counts both before anything is restored."""
    model = _torch_like()
    marked = predict_names(model, nodes=True)
    grown = restored_growth(marked, stop_above=1 << 30, nodes=True)
    back = copy.deepcopy(marked)
    restore_names(back, nodes=True)
    names = lambda m: sum(len(n.name) + sum(len(x) for x in [*n.input, *n.output]) for n in m.graph.node)  # noqa: E731
    assert grown == names(back) - names(marked)


def test_a_4_0_container_of_torch_names_decodes_exactly() -> None:
    model = _torch_like()
    data = onnxdc.compress(model, config=CompressConfig(sharing=SharingConfig(sparsity=0.5, bits=4, min_elements=4))).data
    c = read_container(data)
    assert c.header.skeleton_names
    out = onnxdc.decompress(data)
    assert [n.name for n in out.graph.node] == [n.name for n in model.graph.node]
    assert [list(n.output) for n in out.graph.node] == [list(n.output) for n in model.graph.node]


def test_a_3_0_reader_does_not_restore_node_marks() -> None:
    """3.0's grammar has no node marks: a 3.0 skeleton's node name ending in NUL stays as it is."""
    model = _torch_like()
    marked = predict_names(model, nodes=True)
    restore_names(marked, nodes=False)
    assert marked.graph.node[0].name == "/conv1/" + MARK
