"""Format 4.0's header: binary, and without what the skeleton already says.

Why binary: what a header holds is mostly small integers and four-byte CRCs. Compact JSON spells
each in several characters and a zstd frame cannot shrink them below their entropy, so the CRNN
sample's 3.0 header, primed with a dictionary, was still 542 of its 12,013 bytes. Here an integer
is an unsigned LEB128 varint (one byte below 128), a CRC four bytes, a string its varint length and
UTF-8 bytes, and the layout is fixed by the encoding (``docs/format.md`` has the grammar).

Why without the tensors' facts: a stored tensor's name, dtype, shape and path are in the skeleton,
whose ``TensorProto`` keeps them when its data is taken out, and which every reader decodes. A 4.0
tensor is named by its slot alone; :func:`resolve` takes the rest from the skeleton's
:data:`SkeletonTensors`, and derives what follows from it (``numel``, stream counts, the report's
stage sizes) as 3.0 derived ``numel`` and ``k``.

:func:`encode` works on the 1.0 header object (the object model of every version) and refuses, with
one :class:`~onnxdc.errors.ContainerError`, an object it has no 4.0 form for; :func:`decode` reads
only what it can bound (every count is checked against the bytes left before anything is built),
and :func:`resolve` gives back a 1.0 object, which the 1.0 checks then validate like any other.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from onnxdc.dtypes import CODEBOOK_DTYPES, expected_nbytes
from onnxdc.errors import ContainerError
from onnxdc.format import planes, shared

#: Coders by their index in a stream's tag (part of the format: new coders are appended).
CODERS = ("raw", "huffman", "rans", "rans-ctx", "zstd", "zstd-literals", "zstd-dict", "chain")
#: Each coder's parameters, in the order of a params mask's bits, with their types and defaults
#: (None: required; a parameter at its default is left out).
CODER_PARAMS: dict[str, tuple[tuple[str, type, Any], ...]] = {
    "raw": (("bits", int, 8),),
    "huffman": (("max_bits", int, 15), ("block_size", int, 0)),
    "rans": (),
    "rans-ctx": (("row", int, None),),
    "zstd": (("level", int, 19),),
    "zstd-literals": (),
    "zstd-dict": (("dictionary", str, "onnx-3"), ("level", int, 19)),  # 4.0's skeleton dictionary
}
#: Encodings by their index in a tensor's tag.
ENCODINGS = ("planes", "shared")
#: A shared tensor's consuming op and kind, ``1 + op * len(KINDS) + kind`` in one varint (0: both
#: spelled out as strings).
OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "LSTM", "GRU", "RNN", "Gather")
KINDS = ("conv", "fc", "rnn", "embedding", "bias")
SCHEMES = ("dense", "mask", "relative")
CODEBOOK_DTYPE_NAMES = tuple(CODEBOOK_DTYPES)  # ("float32", "float16")

_FLAG_NAMES, _FLAG_METADATA, _FLAG_ONNXDC = 1, 2, 4
#: A producer that starts so is stored without it (flag 4).
_ONNXDC = "onnxdc "
# A shared tensor's packed byte: bits - 1 (3 bits), scheme (2), zero code (1), codebook dtype (1),
# then whether the fixed-width position bytes follow, and whether the stage sizes are spelled out.
_ZERO, _HALF, _FIXED, _STAGES = 1 << 5, 1 << 6, 1 << 7, 1 << 8
_MAX_UV = 1 << 63
_CHAIN_DEPTH = 4
#: Dims a tensor may have (the 1.0 header's limit), checked before their product is taken.
MAX_DIMS = 64

#: A skeleton's stored-tensor facts by slot: ``(path, name, dtype, shape)``.
SkeletonTensors = Mapping[int, tuple[str, str, int, tuple[int, ...]]]


def _fail(what: str) -> ContainerError:
    return ContainerError(f"header: {what}", code="schema")


class _Writer:
    def __init__(self) -> None:
        self.buf = bytearray()

    def uv(self, v: int) -> None:
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < _MAX_UV:
            raise _fail(f"{v!r} is not an integer in [0, 2**63)")
        while v >= 0x80:
            self.buf.append(v & 0x7F | 0x80)
            v >>= 7
        self.buf.append(v)

    def u32(self, v: int) -> None:
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= 0xFFFFFFFF:
            raise _fail(f"{v!r} is not a CRC-32")
        self.buf += v.to_bytes(4, "little")

    def blob(self, b: bytes) -> None:
        self.uv(len(b))
        self.buf += b

    def text(self, s: str) -> None:
        if not isinstance(s, str):
            raise _fail(f"{s!r} is not a string")
        self.blob(s.encode("utf-8"))


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = memoryview(data), 0

    def left(self) -> int:
        return len(self.data) - self.pos

    def uv(self, what: str) -> int:
        v = shift = 0
        while True:
            if self.pos >= len(self.data):
                raise _fail(f"ends inside {what}")
            b = self.data[self.pos]
            self.pos += 1
            v |= (b & 0x7F) << shift
            if not b & 0x80:
                break
            shift += 7
            if shift > 63:
                raise _fail(f"{what} is a varint of more than 10 bytes")
        if v >= _MAX_UV or (b == 0 and shift):
            raise _fail(f"{what} is not a canonical varint below 2**63")
        return v

    def u32(self, what: str) -> int:
        if self.left() < 4:
            raise _fail(f"ends inside {what}")
        self.pos += 4
        return int.from_bytes(self.data[self.pos - 4:self.pos], "little")

    def blob(self, what: str) -> bytes:
        n = self.uv(f"{what}'s length")
        if n > self.left():
            raise _fail(f"{what} ({n} bytes) runs past the header's end")
        self.pos += n
        return bytes(self.data[self.pos - n:self.pos])

    def text(self, what: str) -> str:
        try:
            return self.blob(what).decode("utf-8")
        except UnicodeDecodeError:
            raise ContainerError(f"header: {what} is not valid UTF-8", code="header-utf8") from None


# --------------------------------------------------------------------------- coders


def _write_coder(w: _Writer, config: Any, count: int | None, depth: int = 0) -> None:
    """A coder config and, when ``count`` is not None, the count that follows it."""
    cid = config.get("id") if isinstance(config, dict) else None
    if cid not in CODERS or depth > _CHAIN_DEPTH:
        raise _fail(f"coder {config!r} has no 4.0 form")
    has_count = 0 if count is None else 1
    if cid == "chain":
        stages = config.get("coders")
        if set(config) != {"id", "coders"} or not isinstance(stages, list):
            raise _fail(f"coder {config!r} has no 4.0 form")
        w.uv(CODERS.index(cid) << 2 | has_count)
        w.uv(len(stages))
        for stage in stages:
            _write_coder(w, stage, None, depth + 1)
    else:
        params = CODER_PARAMS[cid]
        known = {name for name, _, _ in params}
        if set(config) - known - {"id"}:
            raise _fail(f"coder {config!r} has parameters the 4.0 form lacks")
        mask, values = 0, []
        for bit, (name, kind, default) in enumerate(params):
            if name not in config:
                if default is None:
                    raise _fail(f"coder {config!r} lacks {name!r}")
                continue
            v = config[name]
            if type(v) is not kind:
                raise _fail(f"coder {config!r} parameter {name!r} is not a {kind.__name__}")
            if v != default:
                mask |= 1 << bit
                values.append(v)
        w.uv(CODERS.index(cid) << 2 | (2 if mask else 0) | has_count)
        if mask:
            w.uv(mask)
            for v in values:
                w.text(v) if isinstance(v, str) else w.uv(v)
    if count is not None:
        w.uv(count)


def _read_coder(r: _Reader, what: str, depth: int = 0) -> tuple[dict[str, Any], bool]:
    """A coder config (defaults filled in) and whether a count follows."""
    tag = r.uv(f"{what}'s coder")
    index, has_params, has_count = tag >> 2, bool(tag & 2), bool(tag & 1)
    if index >= len(CODERS):
        raise _fail(f"{what} names coder {index}, which does not exist")
    cid = CODERS[index]
    if cid == "chain":
        if has_params or depth >= _CHAIN_DEPTH:
            raise _fail(f"{what} has a malformed chain")
        n = r.uv(f"{what}'s chain length")
        if n > r.left():
            raise _fail(f"{what}'s chain of {n} stages runs past the header's end")
        stages = []
        for i in range(n):
            stage, stage_count = _read_coder(r, f"{what} stage {i}", depth + 1)
            if stage_count:
                raise _fail(f"{what} stage {i} carries a count")
            stages.append(stage)
        return {"id": "chain", "coders": stages}, has_count
    config: dict[str, Any] = {"id": cid}
    params = CODER_PARAMS[cid]
    mask = r.uv(f"{what}'s params") if has_params else 0
    if has_params and (mask == 0 or mask >> len(params)):
        raise _fail(f"{what}'s params mask {mask} is not one of {cid!r}'s")
    for bit, (name, kind, default) in enumerate(params):
        if mask >> bit & 1:
            config[name] = r.text(f"{what}'s {name}") if kind is str else r.uv(f"{what}'s {name}")
        elif default is not None:
            config[name] = default
        else:
            raise _fail(f"{what}'s coder {cid!r} lacks {name!r}")
    return config, has_count


# --------------------------------------------------------------------------- the header


def _roles(encoding: str, params: dict[str, Any]) -> list[str]:
    """A tensor's stream roles in payload order, as its encoding names them."""
    if encoding == "shared":
        return ["codebook", "indices"] + ([] if params["positions"] == "dense" else ["positions"])
    itemsize, raw = params["itemsize"], params["raw_planes"]
    return [f"plane{j}" for j in range(itemsize) if j not in raw] + (["raw"] if raw else [])


def _implied_count(encoding: str, role: str, params: dict[str, Any], numel: int, nbytes: int,
                   length: int) -> int | None:
    """The count a stream of ``role`` has unless it says otherwise (None: it must say): what the
    encoding's params fix (its ``stream_counts``, which its validator checks), and for a shared
    codebook, stored raw, its length."""
    if encoding == "shared":
        return length if role == "codebook" else shared.stream_counts(params, numel).get(role)
    return planes.stream_counts(params, nbytes).get(role)


def stage_sizes(params: dict[str, Any], numel: int, itemsize: int, codebook_bytes: int,
                fixed_positions: int) -> tuple[int, int]:
    """The report's sizes after pruning and after sharing: values plus fixed-width positions;
    fixed-width indices, positions and codebook (the encoder's figures, and what a 4.0 reader
    derives them from)."""
    nnz, bits, dense = params["nnz"], params["bits"], params["positions"] == "dense"
    pruned = numel * itemsize if nnz == numel else nnz * itemsize + fixed_positions
    sharing = (0 if dense else fixed_positions) + ((numel if dense else nnz) * bits + 7) // 8 + codebook_bytes
    return pruned, sharing


def _fixed_positions(p: dict[str, Any], numel: int, itemsize: int, codebook_bytes: int) -> int | None:
    """The fixed-width position bytes that give ``p``'s stage sizes back, or None if none does."""
    nnz, bits, dense = p["nnz"], p["bits"], p["positions"] == "dense"
    if dense:  # the sharing size has no positions; pruning's are what is left of its size
        f = p["pruned_bytes"] - nnz * itemsize if nnz != numel else 0
    else:
        f = p["shared_bytes"] - (nnz * bits + 7) // 8 - codebook_bytes
    if f < 0 or stage_sizes(p, numel, itemsize, codebook_bytes, f) != (p["pruned_bytes"], p["shared_bytes"]):
        return None
    return f


def encode(obj: dict[str, Any], metadata: bytes | None) -> bytes:
    """The 4.0 header of a valid 1.0 header object whose streams are in tensor order (each tensor's
    in its encoding's role order, the skeleton's last); ``metadata`` is the stored metadata frame
    (None: no metadata).

    Raises:
        ContainerError: the object has no 4.0 form (streams out of order, a coder or param the
            form lacks, slots not increasing, a tensor path other than its slot's).
    """
    w = _Writer()
    producer = obj["producer"]
    ours = isinstance(producer, str) and producer.startswith(_ONNXDC)
    w.text(producer[len(_ONNXDC):] if ours else producer)
    w.uv((_FLAG_NAMES if obj.get("skeleton_names") else 0) | (_FLAG_METADATA if metadata is not None else 0)
         | (_FLAG_ONNXDC if ours else 0))
    if obj.get("payload_crc32") is None:
        raise _fail("a header without the payload's CRC-32 has no 4.0 form")
    w.u32(obj["skeleton_crc32"])
    w.u32(obj["payload_crc32"])
    streams = obj["streams"]
    if obj["skeleton"] != len(streams) - 1:
        raise _fail("the skeleton's stream is not the last stream")
    sk = streams[-1]
    w.uv(sk["length"])
    _write_coder(w, sk["coder"], sk["count"])
    if metadata is not None:
        w.blob(metadata)
    w.uv(len(obj["tensors"]))
    next_stream, last_slot = 0, -1
    for t in obj["tensors"]:
        if t["slot"] <= last_slot:
            raise _fail("tensor slots are not increasing")
        w.uv(t["slot"] - last_slot - 1)
        last_slot = t["slot"]
        encoding, p = t["encoding"], t["params"]
        if encoding not in ENCODINGS:
            raise _fail(f"encoding {encoding!r} has no 4.0 form")
        numel = math.prod(t["shape"])
        want = expected_nbytes(t["dtype"], numel)
        w.uv(ENCODINGS.index(encoding) << 1 | (want != t["nbytes"]))
        w.u32(t["crc32"])
        if want != t["nbytes"]:
            w.uv(t["nbytes"])
        roles = _roles(encoding, p)
        if list(t["streams"]) != roles or list(t["streams"].values()) != list(range(next_stream,
                                                                                      next_stream + len(roles))):
            raise _fail(f"tensor {t['name']!r} streams are not in its encoding's order")
        if encoding == "shared":
            _write_shared(w, t, numel, streams)
        else:
            w.uv(p["itemsize"])
            w.uv(p["rotate"])
            w.uv(sum(1 << j for j in p["raw_planes"]))
        for role in roles:
            s = streams[next_stream]
            implied = _implied_count(encoding, role, p, numel, t["nbytes"], s["length"])
            w.uv(s["length"])
            _write_coder(w, s["coder"], None if s["count"] == implied else s["count"])
            next_stream += 1
    if next_stream != len(streams) - 1:
        raise _fail("streams belong to no tensor")
    return bytes(w.buf)


def _write_shared(w: _Writer, t: dict[str, Any], numel: int, streams: list[dict[str, Any]]) -> None:
    p = t["params"]
    if p["positions"] not in SCHEMES or p["codebook_dtype"] not in CODEBOOK_DTYPE_NAMES or not 1 <= p["bits"] <= 8:
        raise _fail(f"tensor {t['name']!r} params have no 4.0 form")
    if p["numel"] != numel:
        raise _fail(f"tensor {t['name']!r} numel does not match its shape")
    codebook = streams[t["streams"]["codebook"]]
    cb_item = 2 if p["codebook_dtype"] == "float16" else 4
    if codebook["count"] != codebook["length"] or p["k"] * cb_item != codebook["count"]:
        raise _fail(f"tensor {t['name']!r} codebook stream has no 4.0 form")
    itemsize = t["nbytes"] // numel if numel else 0
    fixed = _fixed_positions(p, numel, itemsize, codebook["count"]) if numel else None
    op_kind = (1 + OPS.index(p["op"]) * len(KINDS) + KINDS.index(p["kind"])
               if p["op"] in OPS and p["kind"] in KINDS else 0)
    packed = ((p["bits"] - 1) | SCHEMES.index(p["positions"]) << 3 | (_ZERO if p["zero_code"] else 0)
              | (_HALF if p["codebook_dtype"] == "float16" else 0) | (_FIXED if fixed else 0)
              | (_STAGES if fixed is None else 0))
    w.uv(packed)
    w.uv(op_kind)
    if not op_kind:
        w.text(p["op"])
        w.text(p["kind"])
    w.uv(p["nnz"])
    if p["positions"] == "relative":
        w.uv(p["position_bits"])
    elif p["position_bits"] != 0:
        raise _fail(f"tensor {t['name']!r} has position bits without relative positions")
    if fixed:
        w.uv(fixed)
    if fixed is None:
        w.uv(p["pruned_bytes"])
        w.uv(p["shared_bytes"])


@dataclass(frozen=True)
class Parsed:
    """A decoded 4.0 header, before the skeleton's facts are known: tensors as
    ``(slot, crc32, encoding, nbytes or None, params, [(role, length, count or None, coder)])``
    with the shared params that depend on the shape still to derive (:func:`resolve`)."""

    producer: str
    names: bool
    skeleton_crc32: int
    payload_crc32: int
    skeleton: dict[str, Any]  # length, count, coder
    metadata: bytes | None
    tensors: tuple[tuple[int, int, str, int | None, dict[str, Any], list[tuple[str, int, int | None, Any]]], ...]

    @property
    def skeleton_offset(self) -> int:
        """Where the skeleton's stream starts in the payload (after every tensor's)."""
        return sum(s[1] for t in self.tensors for s in t[5])


def decode(data: bytes) -> Parsed:
    """Read a 4.0 header's bytes (see :func:`encode`).

    Raises:
        ContainerError: the bytes are not a 4.0 header (truncated, trailing bytes, an unknown
            flag, coder or encoding, a non-canonical varint, a count beyond what the bytes hold).
    """
    r = _Reader(data)
    producer = r.text("the producer")
    flags = r.uv("the flags")
    if flags & ~(_FLAG_NAMES | _FLAG_METADATA | _FLAG_ONNXDC):
        raise _fail(f"unknown flags {flags:#x}")
    if flags & _FLAG_ONNXDC:
        producer = _ONNXDC + producer
    skeleton_crc, payload_crc = r.u32("the skeleton's CRC-32"), r.u32("the payload's CRC-32")
    length = r.uv("the skeleton's length")
    coder, has_count = _read_coder(r, "the skeleton's stream")
    count = r.uv("the skeleton's count") if has_count else length
    metadata = r.blob("the metadata") if flags & _FLAG_METADATA else None
    n = r.uv("the tensor count")
    if n > r.left() // 6:  # a tensor takes at least 6 bytes
        raise _fail(f"{n} tensors do not fit in the {r.left()} bytes left")
    tensors = []
    slot = -1
    for i in range(n):
        what = f"tensor {i}"
        slot += 1 + r.uv(f"{what}'s slot")
        tag = r.uv(f"{what}'s encoding")
        if tag >> 1 >= len(ENCODINGS):
            raise _fail(f"{what} has unknown encoding {tag >> 1}")
        encoding = ENCODINGS[tag >> 1]
        crc = r.u32(f"{what}'s CRC-32")
        nbytes = r.uv(f"{what}'s nbytes") if tag & 1 else None
        params = _read_shared(r, what) if encoding == "shared" else _read_planes(r, what)
        entries = []
        for role in _roles(encoding, params):
            s_length = r.uv(f"{what} {role}'s length")
            s_coder, s_has = _read_coder(r, f"{what} {role}")
            entries.append((role, s_length, r.uv(f"{what} {role}'s count") if s_has else None, s_coder))
        tensors.append((slot, crc, encoding, nbytes, params, entries))
    if r.left():
        raise _fail(f"{r.left()} bytes follow its last tensor")
    return Parsed(producer, bool(flags & _FLAG_NAMES), skeleton_crc, payload_crc,
                  {"length": length, "count": count, "coder": coder}, metadata, tuple(tensors))


def _read_shared(r: _Reader, what: str) -> dict[str, Any]:
    packed = r.uv(f"{what}'s params")
    if packed >> 9 or (packed >> 3 & 3) >= len(SCHEMES):
        raise _fail(f"{what}'s packed params {packed:#x} are not valid")
    op_kind = r.uv(f"{what}'s op")
    if op_kind > len(OPS) * len(KINDS):
        raise _fail(f"{what}'s op {op_kind} does not exist")
    if op_kind:
        op, kind = OPS[(op_kind - 1) // len(KINDS)], KINDS[(op_kind - 1) % len(KINDS)]
    else:
        op, kind = r.text(f"{what}'s op"), r.text(f"{what}'s kind")
    scheme = SCHEMES[packed >> 3 & 3]
    p: dict[str, Any] = {"op": op, "kind": kind, "bits": (packed & 7) + 1, "positions": scheme,
                         "zero_code": bool(packed & _ZERO),
                         "codebook_dtype": CODEBOOK_DTYPE_NAMES[1 if packed & _HALF else 0]}
    p["nnz"] = r.uv(f"{what}'s nnz")
    p["position_bits"] = r.uv(f"{what}'s position bits") if scheme == "relative" else 0
    if packed & _FIXED and packed & _STAGES:
        raise _fail(f"{what} has both fixed position bytes and stage sizes")
    p["_fixed"] = r.uv(f"{what}'s fixed position bytes") if packed & _FIXED else 0
    if packed & _STAGES:
        p["pruned_bytes"] = r.uv(f"{what}'s pruned bytes")
        p["shared_bytes"] = r.uv(f"{what}'s shared bytes")
    return p


def _read_planes(r: _Reader, what: str) -> dict[str, Any]:
    itemsize = r.uv(f"{what}'s itemsize")
    rotate = r.uv(f"{what}'s rotation")
    mask = r.uv(f"{what}'s raw planes")
    if itemsize > 8 or mask >> itemsize:
        raise _fail(f"{what}'s planes params ({itemsize}, {mask:#x}) are not valid")
    return {"itemsize": itemsize, "rotate": rotate, "raw_planes": [j for j in range(itemsize) if mask >> j & 1]}


def _numel(name: str, shape: tuple[int, ...]) -> int:
    """The element count of a skeleton tensor's shape, refused before the product when it has too
    many dims (the product of 60,000 dims of 2**62 takes seconds) and after it when it overflows."""
    if len(shape) > MAX_DIMS:
        raise ContainerError(f"tensor {name!r} has {len(shape)} dims, more than {MAX_DIMS}", code="schema")
    if any(d < 0 for d in shape):
        raise ContainerError(f"tensor {name!r} has a negative dim in {shape}", code="schema")
    numel = math.prod(shape)
    if numel >= _MAX_UV:
        raise ContainerError(f"tensor {name!r} has 2**{numel.bit_length() - 1} elements or more, more than 2**63",
                             code="limits")
    return numel


def resolve(parsed: Parsed, tensors: SkeletonTensors, metadata: dict[str, Any]) -> dict[str, Any]:
    """The 1.0 header object of a decoded 4.0 header, each tensor's facts taken from the skeleton's
    tensor of its slot.

    Raises:
        ContainerError: a tensor's slot holds no tensor in the skeleton, or one whose shape no
            header may declare.
    """
    streams: list[dict[str, Any]] = []
    out_tensors = []
    for slot, crc, encoding, nbytes, params, entries in parsed.tensors:
        if slot not in tensors:
            raise ContainerError(f"tensor in slot {slot} is not in the skeleton", code="references")
        path, name, dtype, shape = tensors[slot]
        numel = _numel(name, shape)
        if nbytes is None:
            nbytes = expected_nbytes(dtype, numel)
            if nbytes is None:
                raise ContainerError(f"tensor {name!r} (dtype {dtype}) needs its nbytes stated", code="schema")
        p = dict(params)
        roles = {}
        for role, length, count, coder in entries:
            if count is None:
                count = _implied_count(encoding, role, p, numel, nbytes, length)
                if count is None:
                    raise ContainerError(f"tensor {name!r} stream {role!r} needs its count stated", code="schema")
            roles[role] = len(streams)
            streams.append({"length": length, "count": count, "coder": coder})
        if encoding == "shared":
            cb = streams[roles["codebook"]]["count"]
            cb_item = 2 if p["codebook_dtype"] == "float16" else 4
            p["numel"], p["k"] = numel, cb // cb_item
            fixed = p.pop("_fixed")
            if "pruned_bytes" not in p:
                itemsize = nbytes // numel if numel else 0
                p["pruned_bytes"], p["shared_bytes"] = stage_sizes(p, numel, itemsize, cb, fixed)
        out_tensors.append({"slot": slot, "path": path, "name": name, "dtype": dtype, "shape": list(shape),
                            "nbytes": nbytes, "crc32": crc, "encoding": encoding, "params": p, "streams": roles})
    streams.append(dict(parsed.skeleton))
    obj = {"producer": parsed.producer, "metadata": metadata, "skeleton": len(streams) - 1,
           "skeleton_crc32": parsed.skeleton_crc32, "payload_crc32": parsed.payload_crc32,
           "streams": streams, "tensors": out_tensors}
    if parsed.names:
        obj["skeleton_names"] = True
    return obj
