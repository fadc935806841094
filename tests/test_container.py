"""The strict container reader: one malformed-input test per error, truncations, fuzzing, goldens.

Malformed containers are built from byte literals or from a tiny valid container whose header is
edited and re-packed with fresh CRCs (:func:`pack`), so each test reaches exactly the check it
names instead of stopping at a checksum.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import struct
import sys
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import onnxdc
import onnxdc.pipeline.settings
from onnxdc.coders import get_coder
from onnxdc.errors import ContainerError, OnnxdcError
from onnxdc.format.container import MAGIC, MAJOR_VERSION, MAX_HEADER_BYTES, read_container
from onnxdc.onnx_io.tensors import has_data, iter_tensors

FIXTURES = Path(__file__).parent / "fixtures"
MODELS = Path(__file__).parent.parent / "models"
_spec = importlib.util.spec_from_file_location("onnxdc_fuzz_mutate", MODELS.parent / "fuzz" / "mutate.py")
mutate = sys.modules.setdefault("onnxdc_fuzz_mutate", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(mutate)  # type: ignore[union-attr]
SHARING = onnxdc.CompressConfig(
    sharing=onnxdc.pipeline.settings.SharingConfig(sparsity=0.5, bits=4, min_elements=16))

# --------------------------------------------------------------------------- helpers


def tiny_model() -> onnx.ModelProto:
    """x -> Gemm(w, b) -> Gemm(w2): two stored float tensors, and a bias small enough for the skeleton."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 16)).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    w2 = rng.standard_normal((4, 8)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1),
         helper.make_node("Gemm", ["y", "w2"], ["z"], transB=1)],
        "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b"), numpy_helper.from_array(w2, "w2")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


TINY = tiny_model()
LOSSLESS = onnxdc.compress(TINY).data
SHARED = onnxdc.compress(TINY, config=SHARING).data


def prefix(stored_header: bytes, *, magic: bytes = MAGIC, major: int = 1, minor: int = 0,
           hlen: int | None = None, crc: int | None = None) -> bytes:
    """The 24-byte fixed prefix for ``stored_header``, any field overridable; major 1 by default: the
    helpers below pack 1.0 JSON headers, which every reader reads, so each test reaches the check
    it names (2.0's compact header expands to the same object and meets the same checks)."""
    return struct.pack("<8sHHQI", magic, major, minor, len(stored_header) if hlen is None else hlen,
                       zlib.crc32(stored_header) if crc is None else crc)


def zframe(raw: bytes) -> bytes:
    """One zstd frame with its content size, as the writer stores the header."""
    return zstandard.ZstdCompressor(level=3, write_content_size=True).compress(raw)


def with_header_text(text: bytes) -> bytes:
    """A container whose header decompresses to ``text`` (valid prefix, frame and CRC), no payload."""
    stored = zframe(text)
    return prefix(stored) + stored


def unpack(data: bytes) -> tuple[dict[str, Any], list[bytes]]:
    """The header of a valid container as a 1.0 JSON object, and its streams' bytes (a 3.0
    container as the 1.0 one it stands for: ``fuzz/mutate.py``'s ``unpack``)."""
    return mutate.unpack(data)


def pack(obj: Any, chunks: list[bytes], *, fix: bool = True) -> bytes:
    """Lay out a container from a header object and stream bytes, recomputing every CRC.

    With ``fix`` the streams' lengths and CRCs are recomputed from ``chunks`` (so a test can lie
    about anything else); without it they are kept as the test left them.
    """
    if fix:
        for s, chunk in zip(obj["streams"], chunks):
            s.update(length=len(chunk), crc32=zlib.crc32(chunk))
        try:  # the decoded skeleton's CRC too, when the (possibly edited) skeleton still decodes
            skel = obj["streams"][obj["skeleton"]]
            obj["skeleton_crc32"] = zlib.crc32(get_coder(skel["coder"]).decode(chunks[obj["skeleton"]],
                                                                               count=skel["count"]))
        except (KeyError, IndexError, TypeError, OnnxdcError):
            pass
    stored = zframe(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode())
    return prefix(stored) + stored + b"".join(chunks)


Edit = Callable[[dict[str, Any], list[bytes]], object]


def edited(data: bytes, edit: Edit, *, fix: bool = True) -> bytes:
    """``data`` with its header (and streams) changed by ``edit(obj, chunks)``, CRCs recomputed."""
    obj, chunks = unpack(data)
    edit(obj, chunks)
    return pack(obj, chunks, fix=fix)


def with_skeleton(data: bytes, change: Callable[[onnx.ModelProto], object]) -> bytes:
    """``data`` with its skeleton model changed by ``change`` and re-coded."""
    obj, chunks = unpack(data)
    i = obj["skeleton"]
    model = onnx.ModelProto()
    model.ParseFromString(get_coder(obj["streams"][i]["coder"]).decode(chunks[i], count=obj["streams"][i]["count"])
                          .tobytes())
    change(model)
    raw = model.SerializeToString()
    chunks[i] = zframe(raw)
    obj["streams"][i].update(count=len(raw), coder={"id": "zstd", "level": 3})
    return pack(obj, chunks)


def refused(data: bytes, match: str, *, decode: bool = False, code: str | None = None) -> str:
    """Assert that reading (or, with ``decode``, decompressing) ``data`` raises one one-line ContainerError
    (with check ``code``, when given)."""
    if decode:
        read_container(data)  # the header passes every check: the error only shows when decoding
    with pytest.raises(ContainerError, match=match) as info:
        onnxdc.decompress(data) if decode else read_container(data)
    message = str(info.value)
    if code is not None:
        assert info.value.code == code, (info.value.code, message)
    assert message and "\n" not in message, message
    assert message == message.strip()
    return message


def stored_arrays(model: onnx.ModelProto) -> dict[int, bytes]:
    """Every tensor with data, by slot, serialized (name, dtype, dims and bytes: for exact comparison)."""
    return {r.slot: r.proto.SerializeToString(deterministic=True) for r in iter_tensors(model) if has_data(r.proto)}


def tensor(obj: dict[str, Any], name: str) -> dict[str, Any]:
    return next(t for t in obj["tensors"] if t["name"] == name)


def stream(obj: dict[str, Any], name: str, role: str) -> dict[str, Any]:
    """The header entry of tensor ``name``'s stream ``role``."""
    return obj["streams"][tensor(obj, name)["streams"][role]]


def test_helpers_round_trip() -> None:
    """Re-packing an unedited header gives a valid container that decodes to the same model."""
    for data in (LOSSLESS, SHARED):
        again = edited(data, lambda obj, chunks: None)
        assert stored_arrays(onnxdc.decompress(again)) == stored_arrays(onnxdc.decompress(data))


# --------------------------------------------------------------------------- the fixed prefix


@pytest.mark.parametrize("data", [b"", b"\x89", MAGIC, LOSSLESS[:23]], ids=["empty", "1", "magic", "23"])
def test_too_short(data: bytes) -> None:
    msg = refused(data, r"too short", code="too-short")
    assert f"({len(data)} bytes)" in msg


@pytest.mark.parametrize("magic", [b"PK\x03\x04\x14\x00\x00\x00", b"\x08\x07\x12\x0bpytorch", b"\x89ONNXDC\r"])
def test_bad_magic(magic: bytes) -> None:
    refused(magic[:8] + LOSSLESS[8:], r"^not an onnxdc container \(bad magic", code="bad-magic")


def test_onnx_file_is_not_a_container() -> None:
    refused(TINY.SerializeToString(), r"bad magic")


@pytest.mark.parametrize("major", [0, 5, 65535])
def test_unsupported_major_version(major: int) -> None:
    data = LOSSLESS[:8] + struct.pack("<HH", major, 3) + LOSSLESS[12:]
    msg = refused(data, r"unsupported container version", code="version")
    assert f"{major}.3" in msg and f"{MAJOR_VERSION}.x" in msg and "1.x" in msg and "2.x" in msg


def test_newer_minor_version_is_readable() -> None:
    data = LOSSLESS[:10] + struct.pack("<H", 7) + LOSSLESS[12:]
    assert read_container(data).version == (MAJOR_VERSION, 7)
    assert stored_arrays(onnxdc.decompress(data)) == stored_arrays(onnxdc.decompress(LOSSLESS))


@pytest.mark.parametrize("hlen", [MAX_HEADER_BYTES + 1, 2**64 - 1])
def test_header_length_over_cap(hlen: int) -> None:
    msg = refused(prefix(b"", hlen=hlen), r"header length .* exceeds the cap", code="header-size")
    assert str(hlen) in msg


def test_header_length_past_file_end() -> None:
    stored = zframe(b"{}")
    msg = refused(prefix(stored, hlen=len(stored) + 1) + stored, r"header length .* exceeds file size",
                  code="header-size")
    assert str(len(stored) + 1) in msg


def test_header_crc_mismatch() -> None:
    data = bytearray(LOSSLESS)
    data[30] ^= 0x01
    refused(bytes(data), r"header checksum mismatch")
    stored = zframe(b"{}")
    refused(prefix(stored, crc=zlib.crc32(stored) ^ 1) + stored, r"header checksum mismatch")


@pytest.mark.parametrize("stored", [
    b"",
    b'{"producer": "x"}',
    zstandard.ZstdCompressor(write_content_size=False).compress(b"{}"),
], ids=["empty", "plain-json", "no-content-size"])
def test_header_not_a_sized_zstd_frame(stored: bytes) -> None:
    refused(prefix(stored) + stored, r"header is not a zstd frame with a declared size")


def test_header_declares_size_over_cap() -> None:
    # A 13-byte frame claiming a 256 MiB + 1 header: refused from the frame header, before decoding.
    stored = struct.pack("<I", 0xFD2FB528) + bytes([0xC0, 0x00]) + struct.pack("<Q", MAX_HEADER_BYTES + 1)
    msg = refused(prefix(stored) + stored, r"decoded header size .* exceeds the cap")
    assert str(MAX_HEADER_BYTES + 1) in msg


def test_header_frame_corrupt() -> None:
    good = zframe(b'{"a": "' + b"x" * 200 + b'"}')
    stored = good[:-3] + bytes(b ^ 0xFF for b in good[-3:])
    refused(prefix(stored) + stored, r"header does not decompress")
    refused(prefix(good + b"\0") + good + b"\0", r"header does not decompress")  # bytes after the frame


# --------------------------------------------------------------------------- header text


def test_header_not_utf8() -> None:
    refused(with_header_text(b'{"producer": "\xff\xfe"}'), r"header is not valid UTF-8")


@pytest.mark.parametrize("where", ["producer", "metadata", "name"])
def test_header_lone_surrogate_escape(where: str) -> None:
    """JSON escapes may name a lone surrogate, which no UTF-8 can hold: refused like bad UTF-8."""
    obj, chunks = unpack(LOSSLESS)
    text = json.dumps(obj, sort_keys=True)
    text = {"producer": text.replace('"producer": "', '"producer": "\\ud800', 1),
            "metadata": text.replace('"metadata": {}', '"metadata": {"\\udfff": 1}', 1),
            "name": text.replace('"name": "w"', '"name": "w\\udc80"', 1)}[where]
    stored = zframe(text.encode())
    refused(prefix(stored) + stored + b"".join(chunks),
            r"^header is not valid UTF-8 \(a string escape holds a lone surrogate\)$")


def test_header_surrogate_pair_escape_is_fine() -> None:
    obj, chunks = unpack(LOSSLESS)
    text = json.dumps(obj, sort_keys=True).replace('"producer": "', '"producer": "\\ud83d\\ude00', 1)
    stored = zframe(text.encode())
    assert read_container(prefix(stored) + stored + b"".join(chunks)).header.producer.startswith("\U0001F600")


@pytest.mark.parametrize("text", [b"{", b" ", b"{'a': 1}", b'{"a": 1} x', b"\xef\xbb\xbf{}", b"[" * 100000])
def test_header_not_json(text: bytes) -> None:
    refused(with_header_text(text), r"header is not valid JSON", code="header-json")


@pytest.mark.parametrize("text", [
    b'{"producer": "a", "producer": "b"}',
    b'{"metadata": {"seed": 1, "seed": 2}}',
])
def test_header_duplicate_keys(text: bytes) -> None:
    refused(with_header_text(text), r"header is not valid JSON \(duplicate key '(producer|seed)'\)")


def test_duplicate_keys_inside_a_valid_header() -> None:
    obj, chunks = unpack(LOSSLESS)
    text = json.dumps(obj, sort_keys=True).replace('"producer":', '"producer": "x", "producer":', 1)
    stored = zframe(text.encode())
    refused(prefix(stored) + stored + b"".join(chunks), r"duplicate key 'producer'")


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e400"])
def test_header_non_finite_number(number: bytes) -> None:
    obj, chunks = unpack(LOSSLESS)
    text = json.dumps(obj, sort_keys=True).replace('"metadata": {', '"metadata": {"x": NUMBER, ', 1)
    stored = zframe(text.encode().replace(b"NUMBER", number))
    refused(prefix(stored) + stored + b"".join(chunks), r"header is not valid JSON \(non-finite number")


@pytest.mark.parametrize("text", [b"[]", b"1", b'"header"', b"null", b"true"])
def test_header_not_an_object(text: bytes) -> None:
    refused(with_header_text(text), r"^header must be a JSON object, found (list|int|str|NoneType|bool)$")


# --------------------------------------------------------------------------- header schema


def _drop(where: str, key: str) -> Edit:
    def edit(obj: dict[str, Any], chunks: list[bytes]) -> None:
        del _at(obj, where)[key]
    return edit


def _put(where: str, key: str, value: Any) -> Edit:
    def edit(obj: dict[str, Any], chunks: list[bytes]) -> None:
        _at(obj, where)[key] = value
    return edit


def _at(obj: dict[str, Any], where: str) -> Any:
    """``header``, ``stream N``, ``tensor NAME``, ``params NAME`` or ``metadata``."""
    kind, _, arg = where.partition(" ")
    if kind == "header":
        return obj
    if kind == "metadata":
        return obj["metadata"]
    if kind == "stream":
        return obj["streams"][int(arg)]
    if kind == "params":
        return tensor(obj, arg)["params"]
    return tensor(obj, arg)


SCHEMA_CASES = {
    # missing keys
    "header-lacks-skeleton": (_drop("header", "skeleton"), r"^header lacks key\(s\) skeleton$"),
    "header-lacks-two": (lambda o, c: [o.pop("producer"), o.pop("tensors")],
                         r"^header lacks key\(s\) producer, tensors$"),
    "tensor-lacks-shape": (_drop("tensor w", "shape"), r"^tensor 0 lacks key\(s\) shape$"),
    # unknown keys (metadata is free-form: see test_metadata_is_free_form)
    "header-unknown": (_put("header", "comment", "hi"), r"^header has unknown key\(s\) comment$"),
    "stream-unknown": (_put("stream 0", "level", 3), r"^stream 0 has unknown key\(s\) level$"),
    "tensor-unknown": (_put("tensor w2", "scale", 1.0), r"^tensor 1 has unknown key\(s\) scale$"),
    # wrong types
    "producer-int": (_put("header", "producer", 1), r"header.producer must be a string"),
    "metadata-list": (_put("header", "metadata", []), r"header.metadata must be an object"),
    "streams-object": (_put("header", "streams", {}), r"header.streams and header.tensors must be arrays"),
    "tensors-null": (_put("header", "tensors", None), r"header.streams and header.tensors must be arrays"),
    "tensor-not-object": (lambda o, c: o["tensors"].__setitem__(0, "w"),
                          r"^tensor 0 must be a JSON object, found str$"),
    "skeleton-str": (_put("header", "skeleton", "4"), r"header.skeleton must be an integer .* found '4'"),
    "skeleton-bool": (_put("header", "skeleton", True), r"header.skeleton must be an integer .* found True"),
    "count-float": (_put("stream 0", "count", 128.0), r"stream 0 count must be an integer .* found 128.0"),
    "coder-not-object": (_put("stream 0", "coder", "raw"), r"^stream 0 has a bad coder config: .*'raw'"),
    "name-int": (_put("tensor w", "name", 3), r"^tensor 0 name and path must be strings$"),
    "path-null": (_put("tensor w", "path", None), r"^tensor 0 name and path must be strings$"),
    "shape-str": (_put("tensor w", "shape", "8x16"), r"tensor 'w' shape must be an array of at most 64 dims"),
    "dim-float": (_put("tensor w", "shape", [8.0, 16]), r"tensor 'w' dim must be an integer .* found 8.0"),
    "dim-bool": (_put("tensor w", "shape", [True, 128]), r"tensor 'w' dim must be an integer .* found True"),
    "params-list": (_put("tensor w", "params", []), r"tensor 'w' params and streams must be objects"),
    "streams-list": (_put("tensor w", "streams", [0, 1, 2, 3]), r"tensor 'w' params and streams must be objects"),
    "encoding-null": (_put("tensor w", "encoding", None), r"tensor 'w' encoding must be a string"),
    "stream-ref-str": (lambda o, c: tensor(o, "w")["streams"].update(raw="1"),
                       r"tensor 'w' stream 'raw' must be an integer .* found '1'"),
    "slot-float": (_put("tensor w", "slot", 0.0), r"tensor 'w' slot must be an integer"),
    "nbytes-str": (_put("tensor w", "nbytes", "512"), r"tensor 'w' nbytes must be an integer"),
    "crc-null": (_put("tensor w", "crc32", None), r"tensor 'w' crc32 must be an integer"),
    # negative and huge integers
    "skeleton-negative": (_put("header", "skeleton", -1),
                          r"header.skeleton must be an integer in \[0, \d+\], found -1"),
    "count-negative": (_put("stream 3", "count", -1), r"stream 3 count must be an integer .* found -1"),
    "count-huge": (_put("stream 3", "count", 2**40),
                   r"stream 3 count must be an integer in \[0, 17179869184\], found 1099511627776"),
    "slot-negative": (_put("tensor w", "slot", -1), r"tensor 'w' slot must be an integer .* found -1"),
    "slot-huge": (_put("tensor w", "slot", 2**64), r"tensor 'w' slot must be an integer .* found 18446744073709551616"),
    "dtype-huge": (_put("tensor w", "dtype", 65), r"tensor 'w' dtype must be an integer in \[0, 64\], found 65"),
    "nbytes-huge": (_put("tensor w", "nbytes", 2**35), r"tensor 'w' nbytes must be an integer in \[0, 17179869184\]"),
    "tensor-crc-negative": (_put("tensor w", "crc32", -5), r"tensor 'w' crc32 must be an integer .* found -5"),
    "stream-ref-negative": (lambda o, c: tensor(o, "w")["streams"].update(raw=-1),
                            r"tensor 'w' stream 'raw' must be an integer .* found -1"),
    "dim-negative": (_put("tensor w", "shape", [-8, -16]), r"tensor 'w' dim must be an integer .* found -8"),
}


@pytest.mark.parametrize("edit, match", SCHEMA_CASES.values(), ids=SCHEMA_CASES.keys())
def test_header_schema(edit: Edit, match: str) -> None:
    refused(edited(LOSSLESS, edit), match)


@pytest.mark.parametrize("edit, match", [
    (_drop("stream 1", "crc32"), r"^stream 1 lacks key\(s\) crc32$"),
    (lambda o, c: o["streams"].__setitem__(2, [0, 1]), r"^stream 2 must be a JSON object, found list$"),
    (_put("stream 0", "crc32", 2**32), r"stream 0 crc32 must be an integer in \[0, 4294967295\], found 4294967296"),
    (_put("stream 0", "offset", 0), r"^stream 0 has unknown key\(s\) offset$"),
    (_put("stream 1", "length", 2**63), r"stream 1 length must be an integer .* found 9223372036854775808"),
    (_put("stream 1", "length", 1.5), r"stream 1 length must be an integer .* found 1.5"),
], ids=["lacks-crc32", "not-object", "crc-huge", "offset-not-stored", "length-huge", "length-float"])
def test_stream_position_types(edit: Edit, match: str) -> None:
    refused(edited(LOSSLESS, edit, fix=False), match)


def test_metadata_is_free_form() -> None:
    def edit(obj: dict[str, Any], chunks: list[bytes]) -> None:
        obj["metadata"] = {"anything": [1, 2.5, None, {"nested": True}], "": "", "ünïcode": "✓"}
    data = edited(LOSSLESS, edit)
    assert read_container(data).header.metadata["ünïcode"] == "✓"
    assert stored_arrays(onnxdc.decompress(data)) == stored_arrays(onnxdc.decompress(LOSSLESS))


# --------------------------------------------------------------------------- streams and payload


def test_streams_are_back_to_back() -> None:
    """Offsets are implied by the lengths: a shorter stream shifts every later one, caught by CRCs."""
    def shorter(obj: dict[str, Any], chunks: list[bytes]) -> None:
        obj["streams"][1]["length"] -= 1
        obj["streams"][2]["length"] += 1
    refused(edited(LOSSLESS, shorter, fix=False), r"^stream 1 checksum mismatch \(file corrupted\)$")
    c = read_container(LOSSLESS)
    ends = [s.offset + s.length for s in c.header.streams]
    assert [s.offset for s in c.header.streams] == [0, *ends[:-1]]


def test_stream_past_payload_end() -> None:
    def longer(obj: dict[str, Any], chunks: list[bytes]) -> None:
        obj["streams"][-1]["length"] += 1
    obj, chunks = unpack(LOSSLESS)
    size = sum(map(len, chunks))
    msg = refused(edited(LOSSLESS, longer, fix=False), r"stream \d+ end \(\d+\) exceeds payload size \(\d+\)",
                  code="offsets")
    assert f"end ({size + 1})" in msg and f"payload size ({size})" in msg

    def huge(obj: dict[str, Any], chunks: list[bytes]) -> None:
        obj["streams"][0]["length"] = 2**62
    refused(edited(LOSSLESS, huge, fix=False), r"stream 0 end \(4611686018427387904\) exceeds payload size")


@pytest.mark.parametrize("extra", [b"\0", b"PK\x05\x06" + bytes(18), LOSSLESS])
def test_trailing_data(extra: bytes) -> None:
    msg = refused(LOSSLESS + extra, r"streams cover \d+ bytes but the payload holds \d+ \(trailing data\)",
                  code="offsets")
    assert str(len(LOSSLESS) - read_container(LOSSLESS).header_size + len(extra)) in msg


def test_trailing_data_by_shorter_stream() -> None:
    def shorter(obj: dict[str, Any], chunks: list[bytes]) -> None:
        obj["streams"][-1]["length"] -= 1
    refused(edited(LOSSLESS, shorter, fix=False), r"\(trailing data\)")


def test_stream_crc_mismatch() -> None:
    """1.x and 2.x streams carry a CRC-32 each; 3.x's payload carries one."""
    c = read_container(LOSSLESS)
    data = bytearray(LOSSLESS)
    data[c.header_size + c.header.streams[1].offset + 5] ^= 0x40
    refused(bytes(data), r"^payload checksum mismatch \(file corrupted\)$", code="payload-crc")
    v1 = edited(LOSSLESS, lambda o, c: None)
    c = read_container(v1)
    data = bytearray(v1)
    data[c.header_size + c.header.streams[1].offset + 5] ^= 0x40
    refused(bytes(data), r"^stream 1 checksum mismatch \(file corrupted\)$", code="stream-crc")

    def lie(obj: dict[str, Any], chunks: list[bytes]) -> None:
        obj["streams"][-1]["crc32"] ^= 1
    refused(edited(LOSSLESS, lie, fix=False), rf"^stream {len(c.header.streams) - 1} checksum mismatch")


def test_skeleton_index_out_of_range() -> None:
    n = len(read_container(LOSSLESS).header.streams)
    msg = refused(edited(LOSSLESS, _put("header", "skeleton", n)),
                  r"skeleton stream \d+ does not exist \(\d+ streams\)")
    assert f"stream {n} does not exist ({n} streams)" in msg


@pytest.mark.parametrize("coder, match", [
    ({"id": "lzma"}, r"unknown coder 'lzma'"),
    ({"id": 7}, r"string 'id'"),
    ({"bits": 8}, r"string 'id'"),
    ({"id": "raw", "bits": 9}, r"raw bits must be an integer in 1..8, got 9"),
    ({"id": "raw", "bits": "8"}, r"raw bits must be an integer"),
    ({"id": "raw", "bits": 8, "endian": "little"}, r"invalid config for coder 'raw'"),
    ({"id": "zstd", "level": 0}, r"zstd level must be an integer in 1..22, got 0"),
    ({"id": "huffman", "max_bits": 17}, r"huffman max_bits"),
    ({"id": "chain", "coders": []}, r"chain"),
    ({"id": "chain", "coders": [{"id": "raw"}, {"id": "nope"}]}, r"unknown coder 'nope'"),
], ids=lambda v: json.dumps(v) if isinstance(v, dict) else None)
def test_bad_coder_config(coder: dict[str, Any], match: str) -> None:
    msg = refused(edited(LOSSLESS, _put("stream 1", "coder", coder)), r"^stream 1 has a bad coder config: ")
    assert re.search(match, msg), msg


@pytest.mark.parametrize("depth", [50, 900, 5000, 100000])
def test_deeply_nested_coder_config(depth: int) -> None:
    obj, chunks = unpack(LOSSLESS)
    obj["streams"][1]["coder"] = "CODER"
    text = json.dumps(obj, sort_keys=True).replace('"CODER"', '{"id": "chain", "coders": [' * depth
                                                   + '{"id": "raw"}' + "]}" * depth)
    stored = zframe(text.encode())
    # The JSON parser or the depth limit gives up, always as a ContainerError.
    refused(prefix(stored) + stored + b"".join(chunks),
            r"(header nests JSON \d+ levels deep, more than the limit \(32\)|header is not valid JSON)")


# --------------------------------------------------------------------------- tensors and streams


def test_tensor_refers_to_missing_stream() -> None:
    edit = lambda o, c: tensor(o, "w")["streams"].update(raw=99)  # noqa: E731
    refused(edited(LOSSLESS, edit), r"^tensor 'w' stream 'raw' refers to missing stream 99$")


def test_two_tensors_share_a_stream() -> None:
    def share(obj: dict[str, Any], chunks: list[bytes]) -> None:
        tensor(obj, "w2")["streams"]["raw"] = tensor(obj, "w")["streams"]["raw"]
    refused(edited(LOSSLESS, share), r"^tensor 'w2' stream 'raw' reuses stream 1$")


def test_tensor_uses_the_skeleton_stream() -> None:
    edit = lambda o, c: tensor(o, "w")["streams"].update(raw=o["skeleton"])  # noqa: E731
    refused(edited(LOSSLESS, edit), r"tensor 'w' stream 'raw' reuses stream \d+")


def test_stream_belongs_to_no_tensor() -> None:
    def orphan(obj: dict[str, Any], chunks: list[bytes]) -> None:
        chunks.append(b"\x00" * 5)
        obj["streams"].append({"length": 0, "crc32": 0, "count": 5, "coder": {"id": "raw", "bits": 8}})
    refused(edited(LOSSLESS, orphan), r"^1 stream\(s\) belong to no tensor$")


@pytest.mark.parametrize("data", [LOSSLESS, SHARED], ids=["lossless", "shared"])
def test_tensor_entry_dropped_leaves_its_streams_orphaned(data: bytes) -> None:
    n = len(read_container(data).header.tensors[0].streams)
    refused(edited(data, lambda o, c: o["tensors"].pop(0)), rf"^{n} stream\(s\) belong to no tensor$")


def test_duplicate_slot() -> None:
    edit = lambda o, c: tensor(o, "w2").update(slot=tensor(o, "w")["slot"])  # noqa: E731
    refused(edited(LOSSLESS, edit), r"^tensor 1 \('w2'\) reuses slot 0$")


def test_shape_with_too_many_dims() -> None:
    refused(edited(LOSSLESS, _put("tensor w", "shape", [1] * 65)),
            r"tensor 'w' shape must be an array of at most 64 dims")


@pytest.mark.parametrize("shape", [[2**40], [2**17] * 3, [2**34, 2], [2**34 + 1, 0]])
def test_element_count_over_limit_is_refused_before_allocation(shape: list[int]) -> None:
    """A zip bomb: a few bytes of stream declaring a huge tensor, refused from the header alone."""
    def bomb(obj: dict[str, Any], chunks: list[bytes]) -> None:
        tensor(obj, "w").update(shape=shape, nbytes=4 * math.prod(shape))
    data = edited(LOSSLESS, bomb)
    tracemalloc.start()
    try:
        with pytest.raises(ContainerError, match=r"tensor 'w' (declares \d+ elements, over the limit|dim must be)") as info:
            onnxdc.decompress(data)
        assert info.value.code in ("limits", "schema")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, f"allocated {peak} bytes"


def test_tiny_stream_declaring_a_huge_tensor_fails_before_allocation() -> None:
    """Within the element limit, a 384-byte raw stream claiming 6 GiB is refused from its length."""
    def bomb(obj: dict[str, Any], chunks: list[bytes]) -> None:
        tensor(obj, "w").update(shape=[2**31], nbytes=2**33)
        stream(obj, "w", "plane3")["count"] = 2**31
        stream(obj, "w", "raw")["count"] = 3 * 2**31
    def huge(model: onnx.ModelProto) -> None:
        model.graph.initializer[0].dims[:] = [2**31]
    data = edited(with_skeleton(LOSSLESS, huge), bomb)
    read_container(data)
    _fails_without_allocating(data, r"^stream \d: raw stream of \d+ symbols at 8 bits must be \d+ bytes", 4 << 20)


def _fails_without_allocating(data: bytes, match: str, limit: int) -> None:
    """Decompressing ``data`` raises ContainerError matching ``match`` with a peak below ``limit`` bytes.

    The output ceilings are lifted, so the decoders' own guards are what is tested (the ceilings
    alone refuse these containers: ``tests/test_limits.py``).
    """
    with pytest.raises(ContainerError, match="over the limit"):
        onnxdc.decompress(data)
    tracemalloc.start()
    try:
        with pytest.raises(ContainerError, match=match):
            onnxdc.decompress(data, max_output_bytes=1 << 62, max_ratio=math.inf)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < limit, f"allocated {peak} bytes"


def _zstd_frame_claiming(size: int) -> bytes:
    """An 18-byte zstd frame whose header declares ``size`` bytes of content (it holds 100)."""
    header = struct.pack("<I", 0xFD2FB528) + bytes([0xC0, 0x00]) + struct.pack("<Q", size)
    return header + (1 | 1 << 1 | 100 << 3).to_bytes(3, "little") + b"\0"


def test_tiny_zstd_frame_declaring_a_huge_size_fails_before_allocation() -> None:
    """An 18-byte skeleton stream claiming 1 GiB must fail without allocating 1 GiB first."""
    def bomb(obj: dict[str, Any], chunks: list[bytes]) -> None:
        chunks[obj["skeleton"]] = _zstd_frame_claiming(2**30)
        obj["streams"][obj["skeleton"]]["count"] = 2**30
    _fails_without_allocating(edited(LOSSLESS, bomb), r"^stream \d+: corrupt zstd stream", 64 << 20)


def test_max_tensor_bytes_is_enforced() -> None:
    with pytest.raises(ContainerError, match=r"^stream \d+ count must be an integer in \[0, 100\], found \d+$"):
        read_container(LOSSLESS, max_tensor_bytes=100)
    assert read_container(LOSSLESS, max_tensor_bytes=512).header.tensors


def test_unknown_encoding() -> None:
    msg = refused(edited(LOSSLESS, _put("tensor w", "encoding", "zip")),
                  r"^tensor 'w' has unknown encoding 'zip'; known: ")
    assert "planes" in msg and "shared" in msg


# --------------------------------------------------------------------------- planes


def _planes(**params: Any) -> Edit:
    return lambda o, c: tensor(o, "w")["params"].update(params)


def _count(name: str, role: str, count: int) -> Edit:
    return lambda o, c: stream(o, name, role).update(count=count)


PLANES_CASES = {
    "params-missing": (lambda o, c: tensor(o, "w")["params"].pop("rotate"),
                       r"tensor 'w' \(planes\) params must be \[.*'rotate'\], found \['itemsize', 'raw_planes'\]"),
    "params-unknown": (_planes(zstd=3), r"tensor 'w' \(planes\) params must be .* found \[.*'zstd'\]"),
    "itemsize-str": (_planes(itemsize="4"), r"tensor 'w' param 'itemsize' has the wrong type \(str\)"),
    "rotate-bool": (_planes(rotate=True), r"tensor 'w' param 'rotate' has the wrong type"),
    "raw-planes-int": (_planes(raw_planes=3), r"tensor 'w' param 'raw_planes' has the wrong type \(int\)"),
    "itemsize-3": (_planes(itemsize=3), r"tensor 'w' has invalid planes params"),
    "itemsize-0": (_planes(itemsize=0), r"tensor 'w' has invalid planes params"),
    "rotate-32": (_planes(rotate=32), r"tensor 'w' has invalid planes params"),
    "rotate-negative": (_planes(rotate=-1), r"tensor 'w' has invalid planes params"),
    "rotate-itemsize-1": (_planes(itemsize=1, raw_planes=[]), r"tensor 'w' has invalid planes params"),
    "raw-planes-unsorted": (_planes(raw_planes=[2, 1, 0]), r"tensor 'w' has invalid raw_planes \[2, 1, 0\]"),
    "raw-planes-repeated": (_planes(raw_planes=[0, 0, 1, 2]), r"tensor 'w' has invalid raw_planes"),
    "raw-planes-past-itemsize": (_planes(raw_planes=[0, 1, 4]), r"tensor 'w' has invalid raw_planes \[0, 1, 4\]"),
    "raw-planes-negative": (_planes(raw_planes=[-1, 0, 1]), r"tensor 'w' has invalid raw_planes"),
    "raw-planes-bool": (_planes(raw_planes=[False, 1, 2]), r"tensor 'w' has invalid raw_planes"),
    "raw-planes-float": (_planes(raw_planes=[0.0, 1, 2]), r"tensor 'w' has invalid raw_planes"),
    "streams-missing": (lambda o, c: tensor(o, "w")["streams"].pop("plane3"),
                        r"tensor 'w' \(planes\) streams must be \['plane3', 'raw'\], found \['raw'\]"),
    "streams-renamed": (lambda o, c: tensor(o, "w")["streams"].update(plane4=tensor(o, "w")["streams"].pop("plane3")),
                        r"streams must be \['plane3', 'raw'\], found \['plane4', 'raw'\]"),
    "raw-planes-vs-streams": (_planes(raw_planes=[0, 1]),
                              r"streams must be \['plane2', 'plane3', 'raw'\], found \['plane3', 'raw'\]"),
    "plane-count": (_count("w", "plane3", 127), r"tensor 'w' plane3 holds 127 symbols, expected 128"),
    "raw-count": (_count("w", "raw", 385), r"tensor 'w' raw holds 385 symbols, expected 384"),
    "raw-count-one-plane": (_count("w2", "raw", 32), r"tensor 'w2' raw holds 32 symbols, expected 128"),
    "nbytes-vs-shape": (lambda o, c: tensor(o, "w").update(nbytes=256),
                        r"tensor 'w' nbytes \(256\) does not match its shape and dtype \(512\)"),
    "shape-vs-nbytes": (lambda o, c: tensor(o, "w").update(shape=[8, 8]),
                        r"tensor 'w' nbytes \(512\) does not match its shape and dtype \(256\)"),
    "dtype-vs-nbytes": (lambda o, c: tensor(o, "w").update(dtype=TensorProto.DOUBLE),
                        r"does not match its shape and dtype \(1024\)"),
    "nbytes-not-multiple": (lambda o, c: tensor(o, "w").update(dtype=TensorProto.UINT8, shape=[510], nbytes=510),
                            r"tensor 'w' nbytes \(510\) is not a multiple of 4"),
}


def test_lossless_fixture_is_as_expected() -> None:
    """The cases below assume the tiny lossless container codes w's top plane and keeps three raw."""
    h = read_container(LOSSLESS).header
    assert [(t.name, t.params["raw_planes"], sorted(t.streams)) for t in h.tensors] == [
        ("w", [0, 1, 2], ["plane3", "raw"]), ("w2", [0, 1, 2, 3], ["raw"])]
    assert [t.streams["raw"] for t in h.tensors] == [1, 2]


@pytest.mark.parametrize("edit, match", PLANES_CASES.values(), ids=PLANES_CASES.keys())
def test_planes_checks(edit: Edit, match: str) -> None:
    refused(edited(LOSSLESS, edit), match)


# --------------------------------------------------------------------------- shared


def _shared_param(**changes: Any) -> Edit:
    return lambda o, c: tensor(o, "w")["params"].update(changes)


def _shared_stream_count(role: str, delta: int) -> Edit:
    def edit(obj: dict[str, Any], chunks: list[bytes]) -> None:
        obj["streams"][tensor(obj, "w")["streams"][role]]["count"] += delta
    return edit


SHARED_CASES = {
    "param-missing": (lambda o, c: tensor(o, "w")["params"].pop("nnz"),
                      r"tensor 'w' \(shared\) params must be .* found"),
    "param-unknown": (_shared_param(scale=1), r"tensor 'w' \(shared\) params must be"),
    "bits-str": (_shared_param(bits="4"), r"tensor 'w' param 'bits' has the wrong type \(str\)"),
    "zero-code-int": (_shared_param(zero_code=0), r"tensor 'w' param 'zero_code' has the wrong type \(int\)"),
    "nnz-bool": (_shared_param(nnz=True), r"tensor 'w' param 'nnz' has the wrong type"),
    "op-null": (_shared_param(op=None), r"tensor 'w' param 'op' has the wrong type"),
    "positions-unknown": (_shared_param(positions="rle"), r"tensor 'w' has unknown positions scheme 'rle'"),
    "streams-missing": (lambda o, c: tensor(o, "w")["streams"].pop("positions"),
                        r"tensor 'w' \(shared\) streams must be \['codebook', 'indices', 'positions'\]"),
    "numel-mismatch": (_shared_param(numel=129), r"tensor 'w' numel/nnz \(129, 64\) do not fit shape \(8, 16\)"),
    "nnz-over-numel": (_shared_param(nnz=129), r"tensor 'w' numel/nnz \(128, 129\) do not fit shape"),
    "nnz-negative": (_shared_param(nnz=-1), r"tensor 'w' numel/nnz \(128, -1\) do not fit shape"),
    "bits-9": (_shared_param(bits=9), r"tensor 'w' has invalid bits or codebook dtype"),
    "bits-0": (_shared_param(bits=0), r"tensor 'w' has invalid bits or codebook dtype"),
    "codebook-dtype": (_shared_param(codebook_dtype="float64"), r"tensor 'w' has invalid bits or codebook dtype"),
    "pruned-bytes-negative": (_shared_param(pruned_bytes=-1), r"tensor 'w' stage sizes \(-1, \d+\) must be >= 0"),
    "shared-bytes-negative": (_shared_param(shared_bytes=-5), r"tensor 'w' stage sizes \(\d+, -5\) must be >= 0"),
    "k-over-256": (_shared_param(k=257), r"tensor 'w' has an invalid codebook size or zero code"),
    "zero-code-sparse": (_shared_param(zero_code=True), r"tensor 'w' has an invalid codebook size or zero code"),
    "dtype-int64": (lambda o, c: tensor(o, "w").update(dtype=TensorProto.INT64, nbytes=1024),
                    r"tensor 'w' (nbytes \(1024\) does not match shape and dtype|dtype 7 cannot be weight-shared)"),
    "dtype-unknown": (lambda o, c: tensor(o, "w").update(dtype=0), r"tensor 'w' dtype 0 cannot be weight-shared"),
    "nbytes-mismatch": (lambda o, c: tensor(o, "w").update(nbytes=256),
                        r"tensor 'w' nbytes \(256\) does not match shape and dtype"),
    "codebook-count": (_shared_stream_count("codebook", 4), r"tensor 'w' codebook stream size does not match k=\d+"),
    "k-mismatch": (_shared_param(k=3), r"tensor 'w' codebook stream size does not match k=3"),
    "index-count": (_shared_stream_count("indices", -1), r"tensor 'w' indices stream holds 63 symbols, expected 64"),
    "mask-count": (_shared_stream_count("positions", 1), r"tensor 'w' positions stream holds \d+ symbols, expected \d+"),
}


def _relative(bits: int, count: int) -> Edit:
    def edit(obj: dict[str, Any], chunks: list[bytes]) -> None:
        t = tensor(obj, "w")
        t["params"].update(positions="relative", position_bits=bits)
        obj["streams"][t["streams"]["positions"]]["count"] = count
    return edit


SHARED_CASES |= {
    "relative-bits-0": (_relative(0, 16), r"tensor 'w' position_bits must be in 1..8, found 0"),
    "relative-bits-9": (_relative(9, 16), r"tensor 'w' position_bits must be in 1..8, found 9"),
    "relative-too-long": (_relative(8, 64 + 128 // 255 + 2),
                          r"tensor 'w' position stream is longer than the tensor allows"),
}


def test_shared_fixture_is_as_expected() -> None:
    """The cases below assume the tiny shared container stores 'w' with a mask, 64 survivors, k > 3."""
    t = next(t for t in read_container(SHARED).header.tensors if t.name == "w")
    assert (t.encoding, t.params["positions"], t.params["nnz"]) == ("shared", "mask", 64)
    assert t.params["k"] > 3


@pytest.mark.parametrize("edit, match", SHARED_CASES.values(), ids=SHARED_CASES.keys())
def test_shared_checks(edit: Edit, match: str) -> None:
    refused(edited(SHARED, edit), match)


# --------------------------------------------------------------------------- errors found while decoding


def test_tensor_checksum_mismatch_after_decoding() -> None:
    for data in (LOSSLESS, SHARED):
        bad = edited(data, lambda o, c: tensor(o, "w").update(crc32=tensor(o, "w")["crc32"] ^ 1))
        refused(bad, r"^tensor 'w' checksum mismatch after decoding$", decode=True)


def test_wrong_rotation_is_caught_by_the_tensor_checksum() -> None:
    bad = edited(LOSSLESS, _planes(itemsize=4, rotate=5))
    refused(bad, r"^tensor 'w' checksum mismatch after decoding$", decode=True)


def test_stream_that_does_not_decode() -> None:
    def swap_coder(obj: dict[str, Any], chunks: list[bytes]) -> None:
        stream(obj, "w", "raw")["coder"] = {"id": "zstd", "level": 3}
    refused(edited(LOSSLESS, swap_coder), r"^stream 1: invalid zstd frame header", decode=True)


def test_index_outside_codebook() -> None:
    def shrink(obj: dict[str, Any], chunks: list[bytes]) -> None:
        t = tensor(obj, "w")
        t["params"]["k"] = 2
        i = t["streams"]["codebook"]
        chunks[i] = chunks[i][:8]
        obj["streams"][i]["count"] = 8
    refused(edited(SHARED, shrink), r"^tensor 'w': index \d+ outside codebook of 2$", decode=True)


def test_mask_disagrees_with_nnz() -> None:
    def drop_one(obj: dict[str, Any], chunks: list[bytes]) -> None:
        i = tensor(obj, "w")["streams"]["positions"]
        mask = bytearray(chunks[i])
        j = next(j for j, b in enumerate(mask) if b)
        mask[j] &= mask[j] - 1  # clear the lowest set bit
        chunks[i] = bytes(mask)
    refused(edited(SHARED, drop_one), r"^tensor 'w': mask gives 63 weights, header says 64$", decode=True)


def test_skeleton_is_not_a_model() -> None:
    def garbage(obj: dict[str, Any], chunks: list[bytes]) -> None:
        i = obj["skeleton"]
        chunks[i] = zframe(b"\xff" * 40)
        obj["streams"][i].update(count=40, coder={"id": "zstd", "level": 3})
    refused(edited(LOSSLESS, garbage), r"^the skeleton stream does not hold a model: ", decode=True)


def test_tensor_slot_missing_from_skeleton() -> None:
    refused(edited(LOSSLESS, _put("tensor w2", "slot", 3)), r"^tensor 'w2' refers to slot 3, which the model lacks$",
            decode=True)


@pytest.mark.parametrize("change", [
    {"name": "v"}, {"dtype": TensorProto.INT32}, {"shape": [16, 8]}, {"slot": 1, "name": "w2"},
], ids=["name", "dtype", "shape", "slot"])
def test_tensor_does_not_match_skeleton(change: dict[str, Any]) -> None:
    refused(edited(LOSSLESS, lambda o, c: tensor(o, "w").update(change)),
            r"^tensor '(v|w|w2)' \(slot \d\) does not match the skeleton's tensor '(w|b)'$", decode=True)


def test_skeleton_slot_already_holds_data() -> None:
    def refill(model: onnx.ModelProto) -> None:
        model.graph.initializer[0].raw_data = bytes(512)
    refused(with_skeleton(LOSSLESS, refill), r"^slot 0 \('w'\) already holds data in the skeleton$", decode=True)


def test_skeleton_rewrite_helper_keeps_a_valid_container() -> None:
    data = with_skeleton(LOSSLESS, lambda m: None)
    assert stored_arrays(onnxdc.decompress(data)) == stored_arrays(onnxdc.decompress(LOSSLESS))


# --------------------------------------------------------------------------- truncation, trailing bytes, determinism


@pytest.mark.parametrize("data", [LOSSLESS, SHARED], ids=["lossless", "shared"])
def test_every_truncation_is_refused(data: bytes) -> None:
    for n in range(len(data)):
        with pytest.raises(ContainerError) as info:
            onnxdc.decompress(data[:n])
        assert "\n" not in str(info.value)


@pytest.mark.parametrize("data", [LOSSLESS, SHARED], ids=["lossless", "shared"])
def test_every_appended_byte_is_refused(data: bytes) -> None:
    for extra in (b"\0", b"\xff" * 3, data[-1:], data[:24]):
        refused(data + extra, r"\(trailing data\)")


@pytest.mark.parametrize("config", [onnxdc.CompressConfig(), SHARING], ids=["lossless", "shared"])
def test_compression_is_deterministic(config: onnxdc.CompressConfig) -> None:
    first = onnxdc.compress(tiny_model(), config=config).data
    second = onnxdc.compress(tiny_model(), config=config).data
    assert first == second
    m1, m2 = onnxdc.decompress(first), onnxdc.decompress(second)
    assert m1.SerializeToString(deterministic=True) == m2.SerializeToString(deterministic=True)


def test_lossless_round_trip_is_exact() -> None:
    model = onnxdc.decompress(LOSSLESS)
    assert stored_arrays(model) == stored_arrays(TINY)
    assert model.SerializeToString(deterministic=True) == TINY.SerializeToString(deterministic=True)


# --------------------------------------------------------------------------- fuzzing


@pytest.fixture(scope="module")
def lenet_containers() -> dict[str, tuple[bytes, dict[int, bytes]]]:
    model = onnxdc.load_model(MODELS / "lenet300.onnx")
    out = {}
    sharing = onnxdc.pipeline.settings.SharingConfig(sparsity=0.9, bits=5)
    for name, config in [("lossless", onnxdc.CompressConfig()), ("shared", onnxdc.CompressConfig(sharing=sharing))]:
        data = onnxdc.compress(model, config=config).data
        out[name] = (data, stored_arrays(onnxdc.decompress(data)))
    data = (FIXTURES / "v2_0_context.onnxdc").read_bytes()  # fc1's levels in a rans-ctx stream
    out["context"] = (data, stored_arrays(onnxdc.decompress(data)))
    return out


def _outcome(data: bytes, expected: dict[int, bytes], *, slots: set[int] | None = None) -> str:
    """Decode ``data``: 'refused' on ContainerError, 'same' if the tensors are bit-identical; else fail.

    ``slots`` limits the comparison to those tensors (the ones stored in streams, whose decoded bytes
    carry a CRC); without it every tensor of the model is compared.
    """
    try:
        model = onnxdc.decompress(data)
    except ContainerError as exc:
        assert str(exc) and "\n" not in str(exc)
        return "refused"
    got = stored_arrays(model)
    if slots is not None:
        got, expected = ({k: v for k, v in d.items() if k in slots} for d in (got, expected))
    assert got == expected, "a corrupted container decoded to a different model"
    return "same"


def _corrupt(data: bytes, rng: np.random.Generator, header_size: int) -> bytes:
    """One random corruption: single byte, a burst, or a few scattered bytes; mostly in prefix and header."""
    out = bytearray(data)
    where = header_size if rng.random() < 0.7 else len(data)
    kind = rng.integers(3)
    if kind == 0:
        i = int(rng.integers(where))
        out[i] ^= int(rng.integers(1, 256))
    elif kind == 1:
        i = int(rng.integers(where))
        n = int(rng.integers(2, 17))
        out[i:i + n] = rng.integers(0, 256, size=len(out[i:i + n]), dtype=np.uint8).tobytes()
    else:
        for i in rng.integers(0, where, size=int(rng.integers(2, 6))):
            out[int(i)] = int(rng.integers(256))
    return bytes(out)


@pytest.mark.parametrize("which", ["lossless", "shared", "context"])
def test_fuzz_corruptions(lenet_containers: dict[str, tuple[bytes, dict[int, bytes]]], which: str) -> None:
    """Random byte corruptions may only be refused (ContainerError) or change nothing the model holds."""
    data, expected = lenet_containers[which]
    header_size = read_container(data).header_size
    rng = np.random.default_rng(20240607)
    seen: dict[str, int] = {"refused": 0, "same": 0}
    for _ in range(1000):  # a fixed count from a fixed seed: the same mutants on any machine
        seen[_outcome(_corrupt(data, rng, header_size), expected)] += 1
    assert seen["refused"] > 0


def _mutate_json(obj: Any, rng: np.random.Generator) -> None:
    """Change one scalar somewhere in a JSON tree: an off-by-one, a boundary value or a type swap."""
    path: list[tuple[Any, Any]] = []
    node = obj
    while isinstance(node, (dict, list)) and len(node):
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        key = keys[int(rng.integers(len(keys)))]
        path.append((node, key))
        node = node[key]
        if rng.random() < 0.25 and not isinstance(node, (dict, list)):
            break
    if not path:
        return
    parent, key = path[-1]
    value = parent[key]
    choices: list[Any] = [0, 1, -1, 2**31, 2**64, None, "x", [], {}, True, 0.5]
    if isinstance(value, int) and not isinstance(value, bool):
        choices += [value + 1, value - 1, value * 2, value // 2, value ^ 1]
    parent[key] = choices[int(rng.integers(len(choices)))]


def _crc_fixed_corruption(data: bytes, rng: np.random.Generator) -> bytes:
    """A corruption the checksums cannot see: header values or stream bytes changed, CRCs recomputed."""
    obj, chunks = unpack(data)
    if rng.random() < 0.5:
        _mutate_json(obj, rng)
        return pack(obj, chunks, fix=False)
    # Only small streams: decoding a corrupted big plane costs most of the time budget.
    small = [i for i, c in enumerate(chunks) if 0 < len(c) <= 20000]
    i = small[int(rng.integers(len(small)))]
    chunk = bytearray(chunks[i])
    for j in rng.integers(0, len(chunk), size=int(rng.integers(1, 4))):
        chunk[int(j)] ^= int(rng.integers(1, 256))
    chunks[i] = bytes(chunk)
    obj["streams"][i]["crc32"] = zlib.crc32(chunks[i])
    return pack(obj, chunks, fix=False)


@pytest.mark.parametrize("which", ["lossless", "shared", "context"])
def test_fuzz_corruptions_behind_valid_checksums(lenet_containers: dict[str, tuple[bytes, dict[int, bytes]]],
                                                 which: str) -> None:
    """With the CRCs repaired, the structural checks and the tensor checksums must still catch everything.

    Only the stored tensors are compared: the skeleton (graph and small tensors) has no checksum of
    its decoded bytes, so a corruption behind a repaired stream CRC can change it unnoticed.
    """
    data, expected = lenet_containers[which]
    slots = {t.slot for t in read_container(data).header.tensors}
    rng = np.random.default_rng(7)
    seen: dict[str, int] = {"refused": 0, "same": 0}
    for _ in range(60):  # a fixed count from a fixed seed (fuzz/mutate.py runs many more)
        seen[_outcome(_crc_fixed_corruption(data, rng), expected, slots=slots)] += 1
    assert seen["refused"] > 0


# --------------------------------------------------------------------------- lying headers (hypothesis)


_LIES = st.one_of(
    st.integers(-2, 2), st.integers(0, 600), st.sampled_from([2**31, 2**32, 2**34, 2**34 + 1, 2**62, 2**63, 2**64]),
)
_FIELDS = st.sampled_from([
    ("stream", "length"), ("stream", "count"), ("tensor", "nbytes"), ("tensor", "slot"),
    ("tensor", "dtype"), ("tensor", "shape"), ("tensor", "stream"), ("header", "skeleton"), ("param", "numel"),
    ("param", "nnz"), ("param", "k"), ("param", "itemsize"), ("param", "bits"), ("param", "position_bits"),
])


EXPECTED_LOSSLESS = stored_arrays(onnxdc.decompress(LOSSLESS))
EXPECTED_SHARED = stored_arrays(onnxdc.decompress(SHARED))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shared=st.booleans(), lies=st.lists(st.tuples(_FIELDS, st.integers(0, 20), _LIES,
                                                      st.lists(_LIES, max_size=4)), min_size=1, max_size=4),
       fix=st.booleans())
def test_lying_headers_only_raise_container_error(shared: bool, lies: list, fix: bool) -> None:
    """Structurally valid headers whose offsets, counts and shapes lie: refused, or decoded unchanged."""
    data = SHARED if shared else LOSSLESS
    expected = EXPECTED_SHARED if shared else EXPECTED_LOSSLESS
    obj, chunks = unpack(data)
    for (kind, field), pick, value, dims in lies:
        if kind == "header":
            obj["skeleton"] = value
        elif kind == "stream":
            obj["streams"][pick % len(obj["streams"])][field] = value
        else:
            t = obj["tensors"][pick % len(obj["tensors"])]
            if field == "shape":
                t["shape"] = dims
            elif field == "stream":
                t["streams"][sorted(t["streams"])[pick % len(t["streams"])]] = value
            elif kind == "param":
                t["params"][field] = value
            else:
                t[field] = value
    _outcome(pack(obj, chunks, fix=fix), expected)


# --------------------------------------------------------------------------- golden fixtures


GOLDEN = ["v1_0_lossless", "v1_0_shared", "v2_0_lossless", "v2_0_shared", "v2_0_context",
          "v3_0_lossless", "v3_0_shared", "v3_0_context", "v3_0_names",
          "v4_0_lossless", "v4_0_shared", "v4_0_context", "v4_0_names", "v4_0_meta"]


@pytest.mark.parametrize("name", GOLDEN)
def test_golden_fixture_decodes_exactly(name: str) -> None:
    """Released containers must decode to the same arrays forever."""
    data = (FIXTURES / f"{name}.onnxdc").read_bytes()
    assert read_container(data).version == (int(name[1]), int(name[3]))
    model = onnxdc.decompress(data)
    onnx.checker.check_model(model, full_check=True)
    got = {r.proto.name: numpy_helper.to_array(r.proto) for r in iter_tensors(model) if has_data(r.proto)}
    with np.load(FIXTURES / f"{name}.npz", allow_pickle=False) as npz:
        want = {k: npz[k] for k in npz.files}
    assert sorted(got) == sorted(want)
    for k, arr in want.items():
        assert got[k].dtype == arr.dtype and got[k].shape == arr.shape, k
        assert got[k].tobytes() == arr.tobytes(), k


def _coder_ids(config: dict[str, Any]) -> list[str]:
    """A coder's id and those of its stages, nested ones included."""
    return [config["id"]] + [cid for c in config.get("coders", []) for cid in _coder_ids(c)]


@pytest.mark.parametrize("version", ["v1_0", "v2_0", "v3_0", "v4_0"])
def test_golden_fixtures_cover_every_encoding_and_scheme(version: str) -> None:
    seen = set()
    extra = {"v1_0": (), "v2_0": ("context",), "v3_0": ("context", "names"),
             "v4_0": ("context", "names", "meta")}[version]
    names = []
    for name in [f"{version}_{n}" for n in ("lossless", "shared", *extra)]:
        h = read_container((FIXTURES / f"{name}.onnxdc").read_bytes()).header
        names.append(h.skeleton_names)
        for t in h.tensors:
            seen.add(t.encoding if t.encoding == "planes" else f"shared/{t.params['positions']}")
            seen.update(cid for i in t.streams.values() for cid in _coder_ids(h.streams[i].coder))
        seen.add(f"skeleton/{h.streams[h.skeleton].coder['id']}")
    assert {"planes", "shared/relative", "shared/mask", "shared/dense", "raw", "zstd", "huffman", "chain"} <= seen
    if version != "v1_0":
        assert {"skeleton/zstd-dict", "rans", "rans-ctx"} <= seen
    assert any(names) == (version in ("v3_0", "v4_0"))  # the names fixture has its derived names left out


def test_container_errors_carry_a_check_code() -> None:
    """A flipped payload byte fails the payload checksum: the error's code says so."""
    from onnxdc import CompressConfig, ContainerError, compress, load_model, read_container

    model = load_model(Path(__file__).resolve().parent.parent / "models" / "lenet300.onnx")
    data = bytearray(compress(model, config=CompressConfig()).data)
    data[-1] ^= 0xFF
    with pytest.raises(ContainerError) as info:
        read_container(bytes(data))
    assert info.value.code == "payload-crc"


def test_unknown_coder_error_carries_the_id() -> None:
    from onnxdc.coders import get_coder
    from onnxdc.errors import UnknownCoderError

    with pytest.raises(UnknownCoderError) as info:
        get_coder({"id": "nope"})
    assert info.value.coder_id == "nope"
