"""Mutations of format-4.0 containers: bytes, varints, the prefix, and hostile skeletons.

A 4.0 header is binary (:mod:`onnxdc.format.binary`) and takes each tensor's name, dtype and shape
from the skeleton, which the reader decodes when it opens the container: the skeleton is input
the open parses, so a hostile one must fail as cleanly as a hostile header. Each mutation kind
(:data:`KINDS`) makes one mutant from a valid container, fixing up the checksums a random edit
would trip on (the prefix's CRC-32 of the header, the header's CRC-32 of the payload, the
skeleton's CRC-32) so that the mutant reaches the checks behind them:

- ``bitflip``, ``byteset``: flip bits or set bytes (0, 0xff, 0x7f, 0x80, random) in the header or
  the payload (the skeleton's stream included);
- ``truncate``: cut the file, or cut the header and say so in the prefix;
- ``varint``: rewrite one of the header's varints (found by decoding it): a coder tag to another
  coder, a boundary value, a neighbour, a non-canonical or an over-long form;
- ``hlen``: the prefix's header length lies (a neighbour, huge, non-canonical), its CRC-32 over
  what it now says, or not;
- ``dims``, ``utf8``, ``many``, ``deep``, ``facts``: the skeleton replaced by a hostile model —
  huge, negative or too many dims; names, doc strings and the producer not UTF-8; millions of
  initializers in a few hundred coded bytes; subgraphs nested deep; a stored tensor's dtype, name
  or slot changed;
- ``meta``: the metadata replaced by JSON just under or over its 1 MiB (or 16 MiB) filled to the
  header's JSON caps (nesting, objects, values), or JSON a header refuses (NaN, duplicate keys,
  lone surrogates).

``fuzz/sweep4.py`` runs thousands; ``tests/test_format4_hostile.py`` a hundred or so.
"""

from __future__ import annotations

import copy
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import zstandard

import onnxdc.pipeline  # noqa: F401 - registers the skeleton reader a 4.0 container needs
from onnxdc.format import binary
from onnxdc.format.container import _prefix_varint, prefix4, read_container
from onnxdc.onnx_io.names import restore_names
from onnxdc.onnx_io.tensors import iter_tensors

_BOUNDARY = [0, 1, 2, 7, 63, 64, 127, 128, 255, 256, 4095, 65535, 1 << 20, 1 << 31, 1 << 32, 1 << 34, 1 << 40,
             1 << 56, (1 << 62) - 1, (1 << 63) - 1]


@dataclass(frozen=True)
class Unpacked:
    """A valid 4.0 container taken apart: what the mutations edit."""

    data: bytes
    start: int  # where the stored header starts
    header: bytes  # the stored header
    obj: dict[str, Any]  # the 1.0 header object it stands for
    metadata: bytes | None  # the stored metadata frame
    chunks: tuple[bytes, ...]  # the streams' bytes, the skeleton's last
    model: bytes  # the skeleton's bytes, names restored (a plain skeleton, its CRC-32 the header's)
    marked: bytes | None  # the skeleton as stored when its names are marked (flags bit 0)

    @property
    def payload(self) -> bytes:
        return self.data[self.start + len(self.header):]


def unpack(data: bytes) -> Unpacked:
    """Take a valid 4.0 container apart (see :class:`Unpacked`)."""
    c = read_container(data)
    if c.version[0] != 4:
        raise ValueError(f"not a 4.x container (version {c.version})")
    n, used = _prefix_varint(data[12:24])
    start = 12 + used + 4
    header = data[start:start + n]
    chunks = tuple(c.stream_bytes(i) for i in range(len(c.header.streams)))
    skeleton = marked = c.decode_stream(c.header.skeleton).tobytes()
    if c.header.skeleton_names:
        model = onnx.ModelProto()
        model.ParseFromString(skeleton)
        restore_names(model, nodes=True)
        skeleton = model.SerializeToString(deterministic=True)
    return Unpacked(data, start, header, c.header.to_json(), binary.decode(header).metadata, chunks, skeleton,
                    marked if c.header.skeleton_names else None)


def pack(u: Unpacked, obj: dict[str, Any], chunks: list[bytes]) -> bytes:
    """A container of ``obj`` (a 1.0 header object) and ``chunks``, lengths and payload CRC-32 fixed."""
    for s, chunk in zip(obj["streams"], chunks):
        s["length"] = len(chunk)
    payload = b"".join(chunks)
    obj["payload_crc32"] = zlib.crc32(payload)
    header = binary.encode(obj, u.metadata)
    return prefix4(4, 0, header) + header + payload


def with_skeleton(u: Unpacked, raw: bytes, *, marked: bool = False) -> bytes:
    """``u`` with its skeleton replaced by ``raw``, coded with zstd at level 1: a plain skeleton
    (its CRC-32 then in the header), or with ``marked`` one whose names the reader restores (the
    header's flag and CRC-32 kept)."""
    obj = copy.deepcopy(u.obj)
    chunks = list(u.chunks)
    chunks[-1] = zstandard.ZstdCompressor(level=1, write_content_size=True).compress(raw)
    obj["streams"][-1].update(count=len(raw), coder={"id": "zstd", "level": 1})
    if not marked:
        obj["skeleton_crc32"] = zlib.crc32(raw)
        obj.pop("skeleton_names", None)
    return pack(u, obj, chunks)


def with_header(u: Unpacked, header: bytes, *, payload: bytes | None = None, fix_payload: bool = False) -> bytes:
    """``u`` with its stored header replaced (the prefix's length and CRC-32 follow), and its payload;
    ``fix_payload`` writes the payload's CRC-32 into the header where a 4.0 header keeps it."""
    payload = u.payload if payload is None else payload
    if fix_payload:
        at = _payload_crc_at(header)
        if at is not None:
            header = header[:at] + zlib.crc32(payload).to_bytes(4, "little") + header[at + 4:]
    return prefix4(4, 0, header) + header + payload


def _payload_crc_at(header: bytes) -> int | None:
    """Where the payload's CRC-32 sits in a stored header (after the producer, flags and skeleton's)."""
    r = binary._Reader(header)
    try:
        r.text("producer")
        r.uv("flags")
    except Exception:  # noqa: BLE001 - a mutated header: no CRC to fix
        return None
    return r.pos + 4 if r.left() >= 8 else None


def varint_spans(header: bytes) -> list[tuple[int, int, str]]:
    """The ``(start, end, what)`` of every varint :func:`binary.decode` reads in ``header``."""
    spans: list[tuple[int, int, str]] = []

    class Recording(binary._Reader):
        def uv(self, what: str) -> int:
            start = self.pos
            v = super().uv(what)
            spans.append((start, self.pos, what))
            return v

    original = binary._Reader
    binary._Reader = Recording  # type: ignore[misc]
    try:
        binary.decode(header)
    finally:
        binary._Reader = original  # type: ignore[misc]
    return spans


def uv(v: int) -> bytes:
    """An unsigned LEB128 varint (the 4.0 header's and protobuf's)."""
    out = bytearray()
    while v >= 0x80:
        out.append(v & 0x7F | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return uv(number << 3 | 2) + uv(len(payload)) + payload


# --------------------------------------------------------------------------- byte mutations


def _pick(rng: np.random.Generator, items: list[Any]) -> Any:
    return items[int(rng.integers(len(items)))]


def _edit_bytes(rng: np.random.Generator, u: Unpacked, edit: Callable[[bytearray], None]) -> bytes:
    """Edit the header (prefix fixed) or the payload (its CRC-32 fixed), one or the other."""
    if rng.random() < 0.5:
        header = bytearray(u.header)
        edit(header)
        return with_header(u, bytes(header))
    payload = bytearray(u.payload)
    if rng.random() < 0.5:  # the skeleton's stream: what the open decodes
        sk = len(u.chunks[-1])
        tail = bytearray(payload[-sk:])
        edit(tail)
        payload[-sk:] = tail
    else:
        edit(payload)
    return with_header(u, u.header, payload=bytes(payload), fix_payload=True)


def m_bitflip(rng: np.random.Generator, u: Unpacked) -> bytes:
    def edit(buf: bytearray) -> None:
        for _ in range(int(rng.integers(1, 5))):
            if buf:
                buf[int(rng.integers(len(buf)))] ^= 1 << int(rng.integers(8))

    return _edit_bytes(rng, u, edit)


def m_byteset(rng: np.random.Generator, u: Unpacked) -> bytes:
    def edit(buf: bytearray) -> None:
        for _ in range(int(rng.integers(1, 5))):
            if buf:
                buf[int(rng.integers(len(buf)))] = _pick(rng, [0, 0xFF, 0x7F, 0x80, int(rng.integers(256))])

    return _edit_bytes(rng, u, edit)


def m_truncate(rng: np.random.Generator, u: Unpacked) -> bytes:
    if rng.random() < 0.5:
        return u.data[:int(rng.integers(len(u.data)))]
    return with_header(u, u.header[:int(rng.integers(len(u.header)))])


def m_varint(rng: np.random.Generator, u: Unpacked) -> bytes:
    """One varint rewritten: a coder tag to another coder (with or without params and a count),
    any other to a boundary value or a neighbour, or to a non-canonical or over-long form."""
    start, end, what = _pick(rng, varint_spans(u.header))
    old = 0
    for i, b in enumerate(u.header[start:end]):
        old |= (b & 0x7F) << 7 * i
    r = rng.random()
    if r < 0.1:  # non-canonical: the same value with a trailing zero group
        new = bytes(b | 0x80 for b in uv(old)) + b"\x00"
    elif r < 0.15:  # eleven bytes
        new = b"\xff" * 10 + b"\x01"
    elif what.endswith("coder") and r < 0.6:
        new = uv(int(rng.integers(len(binary.CODERS) + 1)) << 2 | int(rng.integers(4)))
    else:
        value = _pick(rng, _BOUNDARY) if r < 0.7 else max(0, old + _pick(rng, [-1, 1, 2, old, 1000 * old + 7]))
        new = uv(value)
    header = u.header[:start] + new + u.header[end:]
    return with_header(u, header, fix_payload=rng.random() < 0.3)


def m_hlen(rng: np.random.Generator, u: Unpacked) -> bytes:
    n = len(u.header)
    lie = _pick(rng, [n - 1, n + 1, n + 4, n - 4, 0, 1, len(u.data), len(u.data) + 1, (1 << 28) - 1, 1 << 28,
                      (1 << 28) + 1, int(rng.integers(0, 2 * n + 8))])
    length = b"\x80\x80\x80\x80\x00" if rng.random() < 0.1 else uv(max(0, lie))
    rest = u.data[u.start:]
    stated = rest[:max(0, lie)]
    crc = zlib.crc32(stated) if rng.random() < 0.7 else zlib.crc32(u.header)
    return u.data[:12] + length + crc.to_bytes(4, "little") + rest


# --------------------------------------------------------------------------- hostile skeletons


def _model(u: Unpacked, *, marked: bool = False) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.ParseFromString(u.marked if marked else u.model)
    return m


def _stored(m: onnx.ModelProto, u: Unpacked, rng: np.random.Generator) -> onnx.TensorProto:
    """One of the skeleton's stored tensors (a slot the header names)."""
    slots = {t["slot"] for t in u.obj["tensors"]}
    refs = [r for r in iter_tensors(m) if r.slot in slots]
    return _pick(rng, refs).proto


def m_dims(rng: np.random.Generator, u: Unpacked) -> bytes:
    m = _model(u)
    t = _stored(m, u, rng)
    big = (1 << 63) - 1
    dims = _pick(rng, [
        [1] * 65, [2] * 100_000, [big] * 1000, [big, big], [1 << 62] * 64, [1 << 32, 1 << 32], [-1, 4], [-big] * 3,
        [0] * 70, [1 << 40], list(t.dims) + [2], list(t.dims)[::-1], [int(d) for d in rng.integers(0, 1 << 20, 4)],
        [3] * 64, [(1 << 16) + 1] * 8,
    ])
    del t.dims[:]
    t.dims.extend(dims)
    return with_skeleton(u, m.SerializeToString())


def m_utf8(rng: np.random.Generator, u: Unpacked) -> bytes:
    """A string the skeleton holds made invalid UTF-8 (same length, so protobuf's lengths hold)."""
    marked = u.marked is not None and rng.random() < 0.5  # names the reader restores
    m = _model(u, marked=marked)
    marker = "\u2603" * 3  # nine bytes no skeleton otherwise holds
    where = _pick(rng, ["tensor", "tensor", "node", "input", "producer", "doc", "graph", "dim_param", "opset"])
    if where == "tensor":
        _stored(m, u, rng).name = marker
    elif where == "node" and m.graph.node:
        node = _pick(rng, list(m.graph.node))
        if rng.random() < 0.7:
            node.name = marker
        elif node.input:
            node.input[0] = marker
        else:
            node.op_type = marker
    elif where == "input" and m.graph.input:
        _pick(rng, list(m.graph.input)).name = marker
    elif where == "producer":
        m.producer_name = marker
    elif where == "doc":
        _stored(m, u, rng).doc_string = marker
    elif where == "dim_param" and m.graph.input:
        dims = m.graph.input[0].type.tensor_type.shape.dim
        if dims:
            dims[0].dim_param = marker
    elif where == "opset" and m.opset_import:
        m.opset_import[0].domain = marker
    else:
        m.graph.name = marker
    raw = m.SerializeToString()
    bad = _pick(rng, [b"\xff" * 9, b"\xc0\xaf" * 4 + b"a", b"\xed\xa0\x80" * 3, b"\x80" * 9, b"ok\xe2\x82" + b"x" * 4])
    return with_skeleton(u, raw.replace(marker.encode("utf-8"), bad), marked=marked)


def m_many(rng: np.random.Generator, u: Unpacked) -> bytes:
    """Millions of initializers in a graph field appended to the model (protobuf merges it into
    the first), or as many tensors in one Constant node's TENSORS attribute."""
    n = _pick(rng, [10_000, 1_000_000, 3_000_000])
    one = _pick(rng, [b"", b"\x08\x01\x10\x01", b"\x42\x01w", b"\x08\x01" * 8])  # empty; [1] float; "w"; 8 dims
    if rng.random() < 0.7:
        extra = _field(5, one) * n  # GraphProto.initializer
    else:
        attr = b"\x0a\x05value" + _field(10, one) * n + b"\xa0\x01\x09"  # name, tensors, type TENSORS
        extra = _field(1, b"\x22\x08Constant" + _field(5, attr))  # GraphProto.node: op_type, attribute
    return with_skeleton(u, u.model + _field(7, extra))


def nested_ifs(depth: int) -> bytes:
    """A GraphProto whose one If node's then_branch holds the next, ``depth`` deep, in linear time
    (each level's lengths computed from the inside out, its bytes written from the outside in)."""
    name, op, attr_type = b"\x0a\x0bthen_branch", b"\x22\x02If", b"\xa0\x01\x05"  # name, op_type, type GRAPH
    heads, graph = [], 0
    for _ in range(depth):
        attr = len(name) + 1 + len(uv(graph)) + graph + len(attr_type)
        node = len(op) + 1 + len(uv(attr)) + attr
        heads.append(b"\x0a" + uv(node) + op + b"\x2a" + uv(attr) + name + b"\x32" + uv(graph))
        graph = 1 + len(uv(node)) + node
    return b"".join(reversed(heads)) + attr_type * depth


def m_deep(rng: np.random.Generator, u: Unpacked) -> bytes:
    """Subgraphs nested deep through If's then_branch, appended as one more node."""
    return with_skeleton(u, u.model + _field(7, nested_ifs(_pick(rng, [30, 90, 99, 100, 101, 200, 1000, 20_000]))))


def m_facts(rng: np.random.Generator, u: Unpacked) -> bytes:
    """One to three stored tensors' dtype, name or data changed, or the tensors moved to other slots."""
    m = _model(u)
    for _ in range(int(rng.integers(1, 4))):
        t = _stored(m, u, rng)
        what = _pick(rng, ["dtype", "dtype", "name", "data", "order", "sparse", "external"])
        if what == "dtype":
            t.data_type = _pick(rng, [0, 8, 16, 17, 23, 24, 40, 63, 64, 65, 1 << 20, -1])
        elif what == "name":
            t.name = _pick(rng, ["", "x" * 1_000_000, "a\x00b", "\u00e9" * 3, "\x00"])
        elif what == "data":
            t.float_data.extend([1.0] * 3)
        elif what == "order":
            inits = list(m.graph.initializer)
            rng.shuffle(inits)
            del m.graph.initializer[:]
            m.graph.initializer.extend(inits)
        elif what == "sparse":  # the stored tensor again as a sparse initializer's values
            m.graph.sparse_initializer.add().values.CopyFrom(t)
        else:
            t.data_location = onnx.TensorProto.EXTERNAL
            e = t.external_data.add()
            e.key, e.value = "location", "../../etc/passwd"
    return with_skeleton(u, m.SerializeToString())


# --------------------------------------------------------------------------- hostile metadata


def _meta_text(rng: np.random.Generator) -> bytes:
    """Metadata JSON just under or over the 4.0 limit (1 MiB; the old 16 MiB too) filled to the
    header's caps (1,000,000 objects and arrays, 4,000,000 values, depth 32), or JSON a header
    refuses."""
    size = _pick(rng, [(1 << 20) - 16, (1 << 20) + 16, 16 << 20])
    kind = _pick(rng, ["nested", "objects", "strings", "floats", "long", "keys", "surrogate", "constant", "array"])
    if kind == "nested":
        d = _pick(rng, [31, 32, 33, 1000, 100_000])
        return b'{"a":' + b"[" * d + b"]" * d + b"}"
    if kind == "objects":
        return b'{"a":[' + b",".join([b"{}"] * min(999_998, size // 3)) + b"]}"
    if kind == "strings":  # two-character strings, as many as the values cap and the size allow
        return b'{"a":[' + b",".join([b'"ab"'] * min(3_999_990, size // 5)) + b"]}"
    if kind == "floats":
        return b'{"a":[' + b",".join([b"1.5"] * min(3_999_990, size // 4)) + b"]}"
    if kind == "long":
        return b'{"a":"' + b"x" * size + b'"}'
    if kind == "keys":
        return b"{" + b",".join(b'"%d":0' % i for i in range(min(900_000, size // 10))) + b"}"
    if kind == "surrogate":
        return b'{"\\ud800":1}'
    if kind == "constant":
        return _pick(rng, [b'{"a":NaN}', b'{"a":1e999}', b'{"a":1,"a":2}', b"[]", b'"x"', b"{"])
    return b"[" + b"0," * 100 + b"0]"


def m_meta(rng: np.random.Generator, u: Unpacked) -> bytes:
    """The metadata replaced by hostile JSON, in a frame of the header's dictionary (its declared
    size true, or a lie)."""
    from onnxdc.coders.dictionaries import dictionary

    text = _meta_text(rng)
    frame = zstandard.ZstdCompressor(level=1, dict_data=dictionary("header-3"), write_content_size=True,
                                     write_dict_id=False).compress(text)
    if rng.random() < 0.15:  # a declared size that lies (the frame header's last byte(s))
        frame = bytearray(frame)
        frame[5] ^= 1 << int(rng.integers(8))
        frame = bytes(frame)
    obj = copy.deepcopy(u.obj)
    obj["payload_crc32"] = zlib.crc32(u.payload)
    header = binary.encode(obj, frame)
    return prefix4(4, 0, header) + header + u.payload


KINDS: dict[str, Callable[[np.random.Generator, Unpacked], bytes]] = {
    "bitflip": m_bitflip, "byteset": m_byteset, "truncate": m_truncate, "varint": m_varint, "hlen": m_hlen,
    "dims": m_dims, "utf8": m_utf8, "many": m_many, "deep": m_deep, "facts": m_facts, "meta": m_meta,
}


def mutant(kind: str, u: Unpacked, rng: np.random.Generator) -> bytes:
    """One mutant of ``kind`` (see :data:`KINDS`)."""
    return KINDS[kind](rng, u)
