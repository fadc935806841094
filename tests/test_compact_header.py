"""The 2.0 header: compact JSON in a zstd frame coded with a built-in dictionary, read into the 1.0
object model and checked as 1.0 headers are (``tests/test_container.py`` tests those checks).

Malformed compact headers are built from a valid container's compact object, edited and re-packed
with fresh lengths and CRCs (:func:`pack2`), so each test reaches the check it names.
"""

from __future__ import annotations

import copy
import json
import struct
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_container import SHARING, TINY, prefix, refused, stored_arrays

import onnxdc
from onnxdc.coders import dictionaries
from onnxdc.coders.zstd import ZstdCoder
from onnxdc.errors import ConfigError, ContainerError
from onnxdc.format.compact import compact_coder, expand_coder
from onnxdc.format.container import ContainerWriter, read_container
from onnxdc.format.header import Header, header_coder
from onnxdc.pipeline.encode import encode_model


def written(model: onnx.ModelProto, config: onnxdc.CompressConfig, *, major: int) -> bytes:
    """``model`` compressed with ``config`` into a container of format ``major``."""
    skeleton = onnx.ModelProto()
    skeleton.CopyFrom(model)
    writer = ContainerWriter(major=major)
    header, _, _ = encode_model(skeleton, writer=writer, config=config, original=model)
    return writer.to_bytes(header)


LOSSLESS = written(TINY, onnxdc.CompressConfig(), major=2)
SHARED = written(TINY, SHARING, major=2)


def unpack2(data: bytes) -> tuple[Any, list[bytes]]:
    """The compact header object of a valid container, and its streams' bytes."""
    c = read_container(data)
    return (json.loads(c.header.to_compact_json_bytes(major=2)),
            [c.stream_bytes(i) for i in range(len(c.header.streams))])


def pack2(obj: Any, chunks: list[bytes], *, fix: bool = True) -> bytes:
    """A 2.0 container of the compact header ``obj`` and ``chunks``; with ``fix``, every stream's
    length and CRC recomputed (tensor streams in order, then the skeleton's)."""
    if fix:
        entries = [e for t in obj["t"] for e in t[8]] + [[None, *obj["k"]]]
        for entry, chunk in zip(entries, chunks):
            entry[1:3] = [len(chunk), zlib.crc32(chunk)]
        obj["k"] = entries[-1][1:]
    text = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    stored = header_coder(2).encode(np.frombuffer(text, dtype=np.uint8))
    return prefix(stored, major=2) + stored + b"".join(chunks)


Edit = Callable[[Any, list[bytes]], object]


def edited2(data: bytes, edit: Edit, *, fix: bool = True) -> bytes:
    obj, chunks = unpack2(data)
    edit(obj, chunks)
    return pack2(obj, chunks, fix=fix)


def tensor2(obj: Any, name: str) -> list[Any]:
    return next(t for t in obj["t"] if t[1] == name)


# --------------------------------------------------------------------------- what is written


def test_writer_writes_2_0_with_the_same_content_as_1_0() -> None:
    for config in (onnxdc.CompressConfig(), SHARING):
        v1, v2 = written(TINY, config, major=1), written(TINY, config, major=2)
        c1, c2 = read_container(v1), read_container(v2)
        assert (c1.version, c2.version) == ((1, 0), (2, 0))
        assert c1.header == c2.header  # every field, offsets included
        assert c2.header_size < c1.header_size
        assert stored_arrays(onnxdc.decompress(v1)) == stored_arrays(onnxdc.decompress(v2))
    assert read_container(LOSSLESS).version == (2, 0)


def test_sample_model_headers_are_smaller_in_2_0() -> None:
    """The CRNN sample at --sparsity 0.9 --bits 5: the 2.0 header is under half the 1.0 one."""
    from pathlib import Path

    model = onnxdc.load_model(Path(__file__).resolve().parent.parent / "models" / "crnn.onnx")
    config = onnxdc.CompressConfig(sharing=onnxdc.pipeline.settings.SharingConfig(sparsity=0.9, bits=5))
    v1, v2 = (read_container(written(model, config, major=m)) for m in (1, 2))
    assert v1.header == v2.header
    assert v2.header_size < v1.header_size / 2
    skel = v2.header.streams[v2.header.skeleton]
    alone = ZstdCoder(level=19).encode(v2.decode_stream(v2.header.skeleton))
    assert skel.coder["id"] == "zstd-dict" and skel.length < 0.9 * len(alone)


def test_helpers_round_trip() -> None:
    for data in (LOSSLESS, SHARED):
        again = edited2(data, lambda obj, chunks: None)
        assert again == data
        assert read_container(again).header == read_container(data).header


def test_path_and_nbytes_are_implied_when_usual() -> None:
    obj, _ = unpack2(SHARED)
    assert all(t[2] == 0 for t in obj["t"]) and all(len(t) == 9 for t in obj["t"])
    header = read_container(SHARED).header
    assert [t.path for t in header.tensors] == [f"graph.initializer[{t.slot}]" for t in header.tensors]


def test_an_unusual_path_and_nbytes_are_written_out() -> None:
    obj, chunks = unpack2(LOSSLESS)
    t = tensor2(obj, "w")
    t[2] = "graph.node[3].attribute[0]"
    header = read_container(pack2(obj, chunks)).header
    assert next(x for x in header.tensors if x.name == "w").path == "graph.node[3].attribute[0]"
    t.append(12345)  # an explicit nbytes takes the place of the implied one (and then fails its check)
    refused(pack2(obj, chunks), r"tensor 'w' nbytes \(12345\) does not match its shape and dtype")


@pytest.mark.parametrize("config", [
    {"id": "huffman", "max_bits": 15, "block_size": 0},
    {"id": "huffman", "max_bits": 12, "block_size": 0},
    {"id": "raw", "bits": 5},
    {"id": "zstd-literals"},
    {"id": "chain", "coders": [{"id": "huffman", "max_bits": 15, "block_size": 0}, {"id": "zstd", "level": 19}]},
    {"id": "chain", "coders": [{"id": "chain", "coders": [{"id": "raw", "bits": 8}, {"id": "zstd", "level": 3}]},
                               {"id": "zstd", "level": 19}]},
])
def test_coder_configs_round_trip_compactly(config: dict[str, Any]) -> None:
    short = compact_coder(config)
    assert expand_coder(json.loads(json.dumps(short))) == config
    assert len(json.dumps(short)) <= len(json.dumps(config))


def test_streams_out_of_tensor_order_have_no_compact_form() -> None:
    h = read_container(SHARED).header
    moved = Header(h.producer, h.metadata, 0, h.streams, h.tensors, h.skeleton_crc32)
    with pytest.raises(ContainerError, match="^the skeleton's stream is not the last stream$"):
        moved.to_bytes(major=3)
    assert moved.to_bytes(major=1)  # 1.0 lists stream indices: any order is written


def test_expansion_stays_within_a_constant_of_the_caps() -> None:
    """The reader caps the compact text's objects and values; what it expands to holds at most a
    few times as many (so memory stays bounded as for 1.0)."""
    for data in (LOSSLESS, SHARED):
        header = read_container(data).header
        full, short = header.to_json_bytes().decode(), header.to_compact_json_bytes(major=2).decode()
        for chars in ("{[", "{[,"):
            assert sum(full.count(c) for c in chars) <= 4 * sum(short.count(c) for c in chars)


# --------------------------------------------------------------------------- malformed compact headers


def _set(path: tuple[Any, ...], value: Any) -> Edit:
    def edit(obj: Any, chunks: list[bytes]) -> None:
        target = obj
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return edit


def _role(obj: Any, chunks: list[bytes]) -> None:
    entries = tensor2(obj, "w")[8]
    entries[1][0] = entries[0][0]


COMPACT_CASES: dict[str, tuple[Edit, str]] = {
    "missing-key": (lambda o, c: o.pop("p"), r"^header lacks key\(s\) p$"),
    "unknown-key": (_set(("x",), 1), r"^header has unknown key\(s\) x$"),
    "tensors-object": (_set(("t",), {}), r"^header\.t \(tensors\) must be an array$"),
    "tensor-short": (lambda o, c: o["t"].__setitem__(0, o["t"][0][:8]),
                     r"^tensor 0 must be an array of 9 or 10 items$"),
    "tensor-object": (_set(("t", 0), {"slot": 0}), r"^tensor 0 must be an array of 9 or 10 items$"),
    "tensor-streams-object": (_set(("t", 0, 8), {}), r"^tensor 0 streams must be an array$"),
    "stream-short": (lambda o, c: o["t"][0][8].__setitem__(0, o["t"][0][8][0][:3]),
                     r"^tensor 0 stream 0 must be an array of 4 or 5 items$"),
    "role-reused": (_role, r"role must be a new string, found 'plane3'"),
    "role-number": (_set(("t", 0, 8, 0, 0), 3), r"^tensor 0 stream 0 role must be a new string, found 3$"),
    "skeleton-number": (_set(("k",), 5), r"^the skeleton's stream must be an array of 3 or 4 items$"),
    "no-implied-nbytes": (_set(("t", 0, 3), 8), r"needs nbytes: its dtype and shape do not give it"),
    # After expansion, the 1.0 checks:
    "coder-unknown": (_set(("t", 0, 8, 0, 3), "lzma"), r"^stream 0 has a bad coder config: unknown coder 'lzma'"),
    "chain-too-long": (_set(("t", 0, 8, 0, 3), ["huffman"] * 5), r"stream 0 has a bad coder config: chain has 5 stages"),
    "count-negative": (_set(("t", 0, 8, 0, 4), -1), r"^stream 0 count must be an integer in \[0, \d+\], found -1$"),
    "slot-string": (_set(("t", 0, 0), "0"), r"tensor 'w' slot must be an integer"),
    "name-number": (_set(("t", 0, 1), 7), r"^tensor 0 name and path must be strings$"),
    "producer-number": (_set(("p",), 7), r"^header\.producer must be a string$"),
    "metadata-list": (_set(("m",), []), r"^header\.metadata must be an object$"),
    "skeleton-crc-bool": (_set(("c",), True), r"header\.skeleton_crc32 must be an integer"),
}


@pytest.mark.parametrize("edit, match", COMPACT_CASES.values(), ids=COMPACT_CASES.keys())
def test_compact_header_checks(edit: Edit, match: str) -> None:
    refused(edited2(LOSSLESS, edit, fix=False), match)  # the streams are untouched: lengths and CRCs hold


def test_stream_lengths_must_cover_the_payload() -> None:
    def longer(obj: Any, chunks: list[bytes]) -> None:
        obj["k"][0] += 1
    refused(edited2(LOSSLESS, longer, fix=False), r"exceeds payload size", code="offsets")
    refused(edited2(LOSSLESS, lambda o, c: c.append(b"x")), r"trailing data", code="offsets")


@pytest.mark.parametrize("text", [b"[]", b"1", b"null", b"{", b'{"p": "a", "p": "b"}'])
def test_compact_header_text_that_is_no_header(text: bytes) -> None:
    stored = header_coder(2).encode(np.frombuffer(text, dtype=np.uint8))
    refused(prefix(stored, major=2) + stored, r"^header (must be a JSON object|is not valid JSON)")


def test_compact_header_declaring_a_huge_size_is_refused_before_decoding() -> None:
    stored = struct.pack("<I", 0xFD2FB528) + bytes([0xC0, 0x00]) + struct.pack("<Q", (256 << 20) + 1)
    refused(prefix(stored, major=2) + stored, r"decoded header size .* exceeds the cap", code="header-size")


def test_a_1_0_header_under_a_2_0_prefix_is_refused() -> None:
    """The version decides how the header reads: 1.0 JSON under a 2.0 prefix is no compact header."""
    v1 = written(TINY, onnxdc.CompressConfig(), major=1)
    data = v1[:8] + struct.pack("<H", 2) + v1[10:]
    refused(data, r"^header lacks key\(s\) c, k, p, t$", code="schema")


@settings(max_examples=60, deadline=None)
@given(stored=st.binary(max_size=200))
def test_random_header_bytes_only_raise_the_container_error(stored: bytes) -> None:
    with pytest.raises(ContainerError):
        read_container(prefix(stored, major=2) + stored)


_JSON = st.recursive(st.none() | st.booleans() | st.integers(-5, 2**40) | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=3), inner,
                                                                                  max_size=4), max_leaves=30)


@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_mutated_compact_headers_decode_or_raise_the_container_error(data: st.DataObject) -> None:
    """A valid compact header with one value replaced anywhere: it reads or raises ContainerError."""
    obj, chunks = unpack2(SHARED)
    obj = copy.deepcopy(obj)
    places: list[tuple[Any, Any]] = []

    def walk(v: Any) -> None:
        for k in (range(len(v)) if isinstance(v, list) else list(v) if isinstance(v, dict) else ()):
            places.append((v, k))
            walk(v[k])

    walk(obj)
    parent, key = data.draw(st.sampled_from(places))
    parent[key] = data.draw(_JSON)
    try:
        onnxdc.decompress(pack2(obj, chunks, fix=False))
    except ContainerError as exc:
        assert str(exc) and "\n" not in str(exc)


# --------------------------------------------------------------------------- the dictionaries


def test_dictionaries_load_and_match_their_digests(monkeypatch: pytest.MonkeyPatch) -> None:
    assert dictionaries.dictionary_names() == ["header-2", "header-3", "onnx-1", "onnx-2", "onnx-3"]
    for name in dictionaries.dictionary_names():
        assert len(dictionaries.dictionary(name).as_bytes()) > 1000
    monkeypatch.setitem(dictionaries.DIGESTS, "onnx-1", "0" * 64)
    dictionaries.dictionary.cache_clear()
    try:
        with pytest.raises(ConfigError, match="does not match its pinned digest"):
            dictionaries.dictionary("onnx-1")
    finally:
        monkeypatch.undo()
        dictionaries.dictionary.cache_clear()
    with pytest.raises(ConfigError, match="unknown zstd dictionary 'onnx-0'"):
        dictionaries.dictionary("onnx-0")
