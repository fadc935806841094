"""A structure-aware mutator for ``.onnxdc`` containers: it edits the header's JSON, not its bytes.

Random bytes almost never get past the header CRC, and a random header edit almost never past
the JSON parser, so neither reaches the decoders. This mutator unpacks a valid container, changes
a few header values where they matter — stream counts and lengths, tensor shapes, sizes and slots,
encoding params, coder configs and chain stages (ids, parameters, extra or nested stages, chain
intermediate lengths in the stream bytes) — or a few stream bytes, then repacks it with every
checksum fixed up, so the mutant reaches the structural checks and the decoders behind them.

Run a fixed number of mutants from a fixed seed (reproducible, not bounded by seconds)::

    python fuzz/mutate.py --count 2000 --seed 1 [models/lenet300.onnx]
    python fuzz/mutate.py --major 3 --count 5000 --seed 1 models/crnn.onnx

The default mode mutates the 1.0 container any container stands for (:func:`unpack`), so it never
meets 3.0's own paths. ``--major 3`` mutates a 3.0 container as it is (:func:`mutate3`): its
compact header (stream entries' lengths, counts, coders and items, ``s``, ``f``, implied
``shared`` params added back with wrong values or types, shapes that imply ``numel`` and ``k``
wrongly, huge counts) or its skeleton's marks (hostile distances, marks on unnamed nodes, in
subgraphs, behind long names), the skeleton recoded and ``c`` and ``s`` fixed up, so mutants reach
the restore of the names and the decoders.

Every mutant must decode or raise :class:`~onnxdc.errors.ContainerError` (nothing else), and
decoding one may allocate at most a bounded multiple of its declared output (checked with
tracemalloc, which sees numpy's buffers); the script exits 1 on the first mutant that breaks
either rule, printing its number. ``tests/test_limits.py`` runs a few hundred as a smoke test.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import struct
import sys
import tracemalloc
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import zstandard

from onnxdc.coders import get_coder
from onnxdc.coders.base import read_varint, write_varint
from onnxdc.errors import ContainerError, OnnxdcError
from onnxdc.format.compact import SHARED_DEFAULTS, compact_coder, expand_coder
from onnxdc.format.container import MAGIC, read_container
from onnxdc.format.header import header_coder

_PREFIX = struct.Struct("<8sHHQI")  # magic, major, minor, header length, header CRC
_BOUNDARY = [0, 1, 2, 3, 7, 8, 255, 256, 4095, 4096, 65535, 1 << 20, 1 << 31, 1 << 34, 1 << 40, 1 << 62]


def unpack(data: bytes) -> tuple[dict[str, Any], list[bytes]]:
    """The header of a valid container as a 1.0 JSON object, and its streams' bytes.

    A 3.0 container becomes the 1.0 container it stands for, so mutants meet every check a 1.0
    header meets: each stream gets its CRC-32 (3.0 has one for the payload), and a skeleton with
    marked names is restored and re-coded as a plain zstd frame.
    """
    c = read_container(data)
    obj = json.loads(c.header.to_json_bytes())
    chunks = [c.stream_bytes(i) for i in range(len(c.header.streams))]
    obj.pop("payload_crc32", None)
    if obj.pop("skeleton_names", False):
        import onnx

        from onnxdc.onnx_io.names import restore_names

        i = obj["skeleton"]
        model = onnx.ModelProto()
        model.ParseFromString(c.decode_stream(i).tobytes())
        restore_names(model)
        raw = model.SerializeToString(deterministic=True)
        chunks[i] = zstandard.ZstdCompressor(level=3, write_content_size=True).compress(raw)
        obj["streams"][i].update(count=len(raw), coder={"id": "zstd", "level": 3})
    for s, chunk in zip(obj["streams"], chunks):
        s.update(length=len(chunk), crc32=zlib.crc32(chunk))
    return obj, chunks


def pack(obj: Any, chunks: list[bytes], *, fix: bool = True) -> bytes:
    """Lay out a container from a header object and stream bytes, every checksum valid.

    With ``fix``, each stream's length and CRC are recomputed from ``chunks`` (so a mutant can lie
    about anything else); without, the header's lengths are kept as they are. The skeleton's CRC is
    recomputed when the skeleton stream is still a zstd frame.
    """
    if fix and isinstance(obj, dict) and isinstance(obj.get("streams"), list):
        for s, chunk in zip(obj["streams"], chunks):
            if isinstance(s, dict):
                s.update(length=len(chunk), crc32=zlib.crc32(chunk))
        try:
            frame = chunks[obj["skeleton"]]
            skel = obj["streams"][obj["skeleton"]]
            if 0 <= zstandard.frame_content_size(frame) <= 1 << 26:  # a mutant may declare gigabytes
                obj["skeleton_crc32"] = zlib.crc32(get_coder(skel["coder"]).decode(frame, count=skel["count"]))
        except (KeyError, IndexError, TypeError, zstandard.ZstdError, OnnxdcError):
            pass
    text = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    stored = zstandard.ZstdCompressor(level=3, write_content_size=True).compress(text)
    return _PREFIX.pack(MAGIC, 1, 0, len(stored), zlib.crc32(stored)) + stored + b"".join(chunks)


# --------------------------------------------------------------------------- mutations


def _pick(rng: np.random.Generator, items: list[Any]) -> Any:
    return items[int(rng.integers(len(items)))]


def _lie(rng: np.random.Generator, value: Any) -> Any:
    """A plausible wrong number: near ``value``, a multiple of it, or a boundary value."""
    if isinstance(value, int) and not isinstance(value, bool) and rng.random() < 0.6:
        return _pick(rng, [value + 1, value - 1, value * 2, value // 2, value * 256, value + 4096, -value])
    return _pick(rng, _BOUNDARY + [-1, None, "1", 1.5, True, [], {}])


def _coder(rng: np.random.Generator) -> dict[str, Any]:
    """A random, mostly valid coder config."""
    kind = _pick(rng, ["raw", "zstd", "zstd-literals", "huffman", "chain"])
    if kind == "raw":
        return {"id": "raw", "bits": int(rng.integers(1, 9))}
    if kind == "zstd":
        return {"id": "zstd", "level": int(rng.integers(1, 23))}
    if kind == "huffman":
        return {"id": "huffman", "max_bits": int(rng.integers(1, 17)), "block_size": _pick(rng, [0, 1, 7, 4096])}
    if kind == "zstd-literals":
        return {"id": "zstd-literals"}
    return {"id": "chain", "coders": [_coder(rng) if rng.random() < 0.3 else {"id": "huffman"}
                                      for _ in range(int(rng.integers(2, 7)))]}


def _mutate_coder(rng: np.random.Generator, coder: Any) -> Any:
    """Change a coder config: a parameter, the id, extra or nested chain stages."""
    if not isinstance(coder, dict):
        return _coder(rng)
    coder = copy.deepcopy(coder)
    r = rng.random()
    if r < 0.25:
        return _coder(rng)
    if r < 0.5 and coder.get("id") == "chain" and isinstance(coder.get("coders"), list):
        stages = coder["coders"]
        op = int(rng.integers(3))
        if op == 0:
            stages.append(copy.deepcopy(_pick(rng, stages)) if stages else _coder(rng))
        elif op == 1 and stages:
            stages.pop(int(rng.integers(len(stages))))
        else:
            stages.insert(int(rng.integers(len(stages) + 1)), _coder(rng))
        return coder
    if r < 0.7:  # wrap it in a chain (the stream's bytes then lack the chain's varints)
        return {"id": "chain", "coders": [coder, _coder(rng)]}
    params = [k for k in coder if k != "id"]
    if params:
        k = _pick(rng, params)
        coder[k] = _lie(rng, coder[k])
    else:
        coder["extra"] = 1
    return coder


def _mutate_chain_lengths(rng: np.random.Generator, obj: dict[str, Any], chunks: list[bytes]) -> None:
    """Rewrite a chain stream's recorded intermediate lengths (the varints that prefix it)."""
    chains = [i for i, s in enumerate(obj["streams"]) if s["coder"].get("id") == "chain"]
    if not chains:
        return
    i = _pick(rng, chains)
    buf, pos, lengths = chunks[i], 0, []
    try:
        for _ in obj["streams"][i]["coder"]["coders"][:-1]:
            value, pos = read_varint(buf, pos)
            lengths.append(value)
    except Exception:  # noqa: BLE001 - an already mutated stream: leave it
        return
    j = int(rng.integers(len(lengths)))
    lengths[j] = max(0, int(_pick(rng, [lengths[j] + 1, lengths[j] - 1, 2 * lengths[j], lengths[j] * 64,
                                        2 * obj["streams"][i]["count"] + 5000, 1 << 30])))
    chunks[i] = b"".join(write_varint(v) for v in lengths) + buf[pos:]


def _mutate_stream_bytes(rng: np.random.Generator, obj: dict[str, Any], chunks: list[bytes]) -> None:
    """Flip a few bytes of a small stream, or cut it short."""
    small = [i for i, c in enumerate(chunks) if 0 < len(c) <= 20000]
    if not small:
        return
    i = _pick(rng, small)
    chunk = bytearray(chunks[i])
    if rng.random() < 0.2:
        chunk = chunk[: int(rng.integers(len(chunk)))]
    else:
        for j in rng.integers(0, len(chunk), size=int(rng.integers(1, 4))):
            chunk[int(j)] ^= int(rng.integers(1, 256))
    chunks[i] = bytes(chunk)


def _mutate_field(rng: np.random.Generator, obj: dict[str, Any], chunks: list[bytes]) -> None:
    """Change one header value that decoding depends on."""
    del chunks
    tensors, streams = obj["tensors"], obj["streams"]
    target = _pick(rng, ["stream", "stream", "tensor", "tensor", "param", "shape", "coder", "coder", "header"])
    if target == "stream" and streams:
        s = _pick(rng, streams)
        field = _pick(rng, ["count", "count", "length"])
        s[field] = _lie(rng, s[field])
    elif target == "tensor" and tensors:
        t = _pick(rng, tensors)
        field = _pick(rng, ["nbytes", "slot", "dtype", "crc32", "name", "encoding", "streams"])
        if field == "streams" and t["streams"]:
            role = _pick(rng, sorted(t["streams"]))
            t["streams"][role] = _lie(rng, t["streams"][role])
        else:
            t[field] = _lie(rng, t[field]) if field != "encoding" else _pick(rng, ["planes", "shared", "nope"])
    elif target == "param" and tensors:
        t = _pick(rng, tensors)
        if t["params"]:
            k = _pick(rng, sorted(t["params"]))
            t["params"][k] = _lie(rng, t["params"][k])
    elif target == "shape" and tensors:
        t = _pick(rng, tensors)
        dims = list(t["shape"])
        if dims and rng.random() < 0.7:
            k = int(rng.integers(len(dims)))
            dims[k] = _lie(rng, dims[k])
        else:
            dims = [int(d) for d in rng.integers(0, 1 << 16, size=int(rng.integers(0, 5)))]
        t["shape"] = dims
    elif target == "coder" and streams:
        s = _pick(rng, streams)
        s["coder"] = _mutate_coder(rng, s["coder"])
    else:
        obj["skeleton"] = _lie(rng, obj["skeleton"])


def _scale_tensor(rng: np.random.Generator, obj: dict[str, Any], chunks: list[bytes]) -> None:
    """Make a tensor and all its streams declare consistently more (a header lying coherently)."""
    del chunks
    if not obj["tensors"]:
        return
    t = _pick(rng, obj["tensors"])
    k = int(_pick(rng, [2, 16, 1 << 10, 1 << 20]))
    if t["shape"]:
        t["shape"][0] *= k
    t["nbytes"] *= k
    for key in ("numel", "nnz"):
        if isinstance(t["params"].get(key), int):
            t["params"][key] *= k
    for idx in t["streams"].values():
        obj["streams"][idx]["count"] *= k


_MUTATIONS: list[tuple[float, Callable[[np.random.Generator, dict[str, Any], list[bytes]], None]]] = [
    (0.45, _mutate_field), (0.2, _mutate_stream_bytes), (0.2, _mutate_chain_lengths), (0.15, _scale_tensor),
]


def mutate(obj: dict[str, Any], chunks: list[bytes], rng: np.random.Generator) -> bytes:
    """One mutant of the unpacked container ``obj``/``chunks`` (left unchanged), checksums fixed up."""
    obj, chunks = copy.deepcopy(obj), list(chunks)
    weights = np.array([w for w, _ in _MUTATIONS])
    for _ in range(int(rng.integers(1, 4))):
        _, fn = _MUTATIONS[int(rng.choice(len(_MUTATIONS), p=weights / weights.sum()))]
        try:
            fn(rng, obj, chunks)
        except (TypeError, KeyError, IndexError, AttributeError, ValueError, OverflowError):
            pass  # an earlier mutation broke what this one edits: the mutant is odd enough
    return pack(obj, chunks, fix=rng.random() < 0.85)


# --------------------------------------------------------------------------- 3.0 mode

#: Marks a hostile skeleton may hold where a derived name's mark goes (see onnxdc.onnx_io.names).
HOSTILE_MARKS = ["\x00", "\x000", "\x00-0", "\x001", "\x00-1", "\x00999999999999", "\x00-999999999999",
                 "\x00-1.5", "\x001.5", "\x001.99999999999999999999", "\x001.", "\x00.1", "\x00.", "\x00--1",
                 "\x00+1", "\x00 1", "\x001 ", "\x001_0", "\x00\u00b2", "\x00\u0661", "\x001.\u0661", "\x00\x00",
                 "\x00" + "9" * 19, "\x00" + "9" * 10000, "\x001." + "9" * 10000, "\x00" + "-" * 5000 + "1",
                 "\x001.-1", "\x00x", "\x00\u00e9"]


def unpack3(data: bytes) -> tuple[dict[str, Any], list[bytes], bytes]:
    """A valid 3.0 container as its compact header object (:mod:`onnxdc.format.compact`), its
    streams' bytes (tensor order, the skeleton's last) and its skeleton's decoded bytes, names
    still marked: what :func:`pack3` lays out again."""
    c = read_container(data)
    if c.version[0] != 3:
        raise ContainerError(f"not a 3.x container (version {c.version[0]}.{c.version[1]})")
    hlen = _PREFIX.unpack(data[:_PREFIX.size])[3]
    stored = data[_PREFIX.size:_PREFIX.size + hlen]
    text = header_coder(3).decode(stored, count=zstandard.frame_content_size(stored)).tobytes()
    chunks = [c.stream_bytes(i) for i in range(len(c.header.streams))]
    return json.loads(text), chunks, c.decode_stream(c.header.skeleton).tobytes()


def _restored_crc(skeleton: bytes) -> int | None:
    """The CRC-32 a reader finds after restoring the skeleton's marks, None when they do not restore."""
    import onnx

    from onnxdc.onnx_io.names import restore_names, restored_growth

    model = onnx.ModelProto()
    try:
        model.ParseFromString(skeleton)
        if restored_growth(model, stop_above=1 << 22) > 1 << 22:
            return None  # the reader refuses it under the fuzzer's limits; do not build it here
        restore_names(model)
        return zlib.crc32(model.SerializeToString(deterministic=True))
    except Exception:  # noqa: BLE001 - a mutant the reader will refuse
        return None


def pack3(obj: Any, chunks: list[bytes], skeleton: bytes | None = None, *, fix_lengths: bool = True,
          fix_payload: bool = True, fix_skeleton: bool = True) -> bytes:
    """Lay out a 3.0 container from a compact header object and stream bytes.

    ``skeleton`` (decoded bytes, marks as they are) replaces the skeleton stream, coded with
    zstd and ``onnx-2`` at level 3; with ``fix_skeleton`` the header's ``c`` becomes the CRC-32 of
    its restored form (when it restores), so the mutant gets past restoring to the tensors. With
    ``fix_lengths`` the stream entries' lengths are the chunks', where entries are still arrays;
    with ``fix_payload`` ``s`` is the payload's CRC-32. The header's own CRC is always valid.
    """
    from onnxdc.coders.dictionaries import dictionary

    chunks = list(chunks)
    if skeleton is not None and isinstance(obj, dict):
        chunks[-1] = zstandard.ZstdCompressor(level=3, dict_data=dictionary("onnx-2"), write_content_size=True,
                                              write_dict_id=False).compress(skeleton)
        obj["k"] = [len(chunks[-1]), {"dictionary": "onnx-2", "id": "zstd-dict", "level": 3}, len(skeleton)]
        if fix_skeleton:
            crc = _restored_crc(skeleton)
            obj["c"] = zlib.crc32(skeleton) if crc is None else crc
    if fix_lengths and isinstance(obj, dict):
        tensors = obj.get("t") if isinstance(obj.get("t"), list) else []
        entries = [e for t in tensors if isinstance(t, list) and len(t) >= 9 and isinstance(t[8], list)
                   for e in t[8]] + [[None, *obj["k"]] if isinstance(obj.get("k"), list) else None]
        for k, (entry, chunk) in enumerate(zip(entries, chunks)):
            if isinstance(entry, list) and len(entry) >= 2:
                entry[1] = len(chunk)
                if k == len(chunks) - 1 and entry is entries[-1]:
                    obj["k"][0] = len(chunk)
    payload = b"".join(chunks)
    if fix_payload and isinstance(obj, dict) and "s" in obj:
        obj["s"] = zlib.crc32(payload)
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    stored = zstandard.ZstdCompressor(level=3, dict_data=dictionary("header-3"), write_content_size=True,
                                      write_dict_id=False).compress(text)
    return _PREFIX.pack(MAGIC, 3, 0, len(stored), zlib.crc32(stored)) + stored + payload


def _entries3(obj: dict[str, Any]) -> list[list[Any]]:
    out = [e for t in obj["t"] if isinstance(t, list) and len(t) >= 9 and isinstance(t[8], list)
           for e in t[8] if isinstance(e, list)]
    return out + ([obj["k"]] if isinstance(obj.get("k"), list) else [])


def _tensors3(obj: dict[str, Any], encoding: str | None = None) -> list[list[Any]]:
    return [t for t in obj["t"] if isinstance(t, list) and len(t) >= 9 and (encoding is None or t[6] == encoding)]


def _m3_stream(rng: np.random.Generator, obj: dict[str, Any], chunks: list[bytes]) -> None:
    """A stream entry's length, count, coder, role or item count (the skeleton's ``k`` included)."""
    del chunks
    entries = _entries3(obj)
    e = _pick(rng, entries)
    base = 0 if e is obj.get("k") else 1  # k has no role
    op = _pick(rng, ["length", "count", "count", "count", "coder", "coder", "role", "drop", "extra", "huge"])
    if op == "length":
        e[base] = _lie(rng, e[base])
    elif op == "count":
        if len(e) > base + 2:
            e[base + 2] = _lie(rng, e[base + 2])
        else:
            e.append(_lie(rng, e[base]))
    elif op == "huge":
        n = int(_pick(rng, [1 << 30, 1 << 34, (1 << 34) + 1, 1 << 40, 1 << 62, 1 << 63, 1 << 64, 10 ** 30]))
        e[base + 2:] = [n]
    elif op == "coder":
        e[base + 1] = _pick(rng, [compact_coder(_mutate_coder(rng, expand_coder(e[base + 1]))),
                                  _mutate_coder(rng, expand_coder(e[base + 1])), _lie(rng, 0),
                                  "nope", ["huffman"] * int(rng.integers(0, 7)), [["zstd", ["raw"]]], {"id": 5},
                                  {"dictionary": "header-3", "id": "zstd-dict"}, {"dictionary": "x", "id": "zstd-dict"},
                                  {"id": "rans-ctx"}, {"id": "rans-ctx", "row": _lie(rng, 3)}, "rans", "zstd-literals"])
    elif op == "role" and base:
        roles = [x[0] for x in _entries3(obj) if x is not obj.get("k")]
        e[0] = _pick(rng, roles + ["plane9", "raw", "", None, 1, "codebook", "positions", "indices"])
    elif op == "drop":
        e.pop(int(rng.integers(len(e))))
    else:
        e.extend([_lie(rng, 1)] * int(rng.integers(1, 3)))


def _m3_top(rng: np.random.Generator, obj: dict[str, Any], chunks: list[bytes]) -> None:
    """The top level: ``s``, ``f``, ``c``, a required key gone, an unknown one, a value's type."""
    del chunks
    op = _pick(rng, ["s", "s", "f", "f", "f", "c", "drop", "extra", "type"])
    if op == "s":
        if rng.random() < 0.3:
            obj.pop("s", None)
        else:
            obj["s"] = _lie(rng, obj.get("s", 0))
    elif op == "f":
        if "f" in obj and rng.random() < 0.4:
            del obj["f"]
        else:
            obj["f"] = _pick(rng, [1, 1, 0, True, False, 2, -1, "1", 1.0, None, [1], {}])
    elif op == "c":
        obj["c"] = _lie(rng, obj["c"])
    elif op == "drop":
        obj.pop(_pick(rng, sorted(obj)), None)
    elif op == "extra":
        obj[_pick(rng, ["x", "v", "streams", "S", ""])] = 1
    else:
        key = _pick(rng, sorted(obj))
        obj[key] = _pick(rng, [None, 1, "t", [], {}, [[]], [None]])


def _m3_tensor(rng: np.random.Generator, obj: dict[str, Any], chunks: list[bytes]) -> None:
    """A tensor array's items: count, slot, path, dtype, shape, CRC, encoding, a tenth nbytes."""
    del chunks
    t = _pick(rng, _tensors3(obj))
    op = _pick(rng, ["items", "nbytes", "slot", "path", "dtype", "shape", "shape", "crc", "encoding", "name"])
    if op == "items":
        if len(t) > 9 and rng.random() < 0.5:
            t.pop()
        else:
            t[:] = t[:int(rng.integers(0, 9))] if rng.random() < 0.5 else [*t, *[_lie(rng, 1)] * int(rng.integers(1, 3))]
    elif op == "nbytes":
        t[9:] = [_lie(rng, t[9] if len(t) > 9 else 4 * math.prod(x for x in t[4] if isinstance(x, int)))]
    elif op == "slot":
        t[0] = _lie(rng, t[0])
    elif op == "path":
        t[2] = _pick(rng, [0, 1, "", "graph.initializer[0]", None, [], -1])
    elif op == "dtype":
        t[3] = _pick(rng, [0, 1, 2, 7, 10, 11, 16, 17, 64, 65, -1, True, 1.0, "1"])
    elif op == "shape":
        t[4] = _hostile_shape(rng, t[4])
    elif op == "crc":
        t[5] = _lie(rng, t[5])
    elif op == "encoding":
        t[6] = _pick(rng, ["planes", "shared", "nope", None, 1])
    else:
        t[1] = _pick(rng, [None, 1, "", "\x00", "a\nb", "x" * 10000, t[1] + "_"])


def _hostile_shape(rng: np.random.Generator, shape: Any) -> Any:
    """A shape that implies the wrong ``numel`` and ``nbytes``: a dim off, huge, negative, too many."""
    dims = list(shape) if isinstance(shape, list) else []
    op = _pick(rng, ["dim", "dim", "huge", "many", "empty", "type", "append"])
    if op == "dim" and dims:
        k = int(rng.integers(len(dims)))
        dims[k] = _lie(rng, dims[k])
    elif op == "huge":
        dims = [1 << 62] * int(rng.integers(1, 4)) + dims
    elif op == "many":
        dims = [2] * int(_pick(rng, [63, 64, 65, 1000]))
    elif op == "empty":
        dims = _pick(rng, [[], [0], [0, 1 << 62]])
    elif op == "type":
        return _pick(rng, [None, 5, "4", {}, [1.5], [True], [[1]]])
    else:
        dims.append(int(_pick(rng, [0, 1, 2, 1 << 20])))
    return dims


def _m3_params(rng: np.random.Generator, obj: dict[str, Any], chunks: list[bytes]) -> None:
    """A ``shared`` tensor's params: implied ones added with wrong values or types, defaults set,
    required ones gone; or the codebook's count so that ``k`` is implied wrongly or not at all."""
    del chunks
    t = _pick(rng, _tensors3(obj, "shared") or _tensors3(obj))
    if not isinstance(t[7], dict):
        t[7] = {}
    p = t[7]
    numel = math.prod(d for d in t[4] if isinstance(d, int)) if isinstance(t[4], list) else 1
    op = _pick(rng, ["numel", "k", "default", "default", "drop", "codebook", "type", "nnz"])
    if op == "numel":
        p["numel"] = _pick(rng, [numel, numel + 1, numel - 1, 0, -1, 1 << 62, 1 << 70, float(numel), str(numel),
                                 True, None, [numel]])
    elif op == "k":
        p["k"] = _pick(rng, [16, 15, 17, 0, 256, 257, -1, 16.0, "16", True, None, 1 << 40])
    elif op == "default":
        key = _pick(rng, sorted(SHARED_DEFAULTS))
        p[key] = _pick(rng, {"codebook_dtype": ["float32", "float16", "float64", "bfloat16", "int8", "", None, 1],
                             "position_bits": [0, 1, 8, 9, -1, 0.0, False, "0", None, 1 << 40],
                             "zero_code": [False, True, 0, 1, "false", None]}[key])
    elif op == "drop" and p:
        del p[_pick(rng, sorted(p))]
    elif op == "codebook":  # k is implied from this count: make it off, not a multiple, huge
        cb = [e for e in t[8] if isinstance(e, list) and e and e[0] == "codebook"] if isinstance(t[8], list) else []
        if cb:
            e = cb[0]
            e[3:] = [_pick(rng, [0, 1, 2, 3, 63, 65, 128, 1024, 1 << 34, 1 << 62, -4, 64.0])]
    elif op == "type":
        t[7] = _pick(rng, [None, [], "p", 1, {"numel": numel}])
    elif p:
        p["nnz"] = _lie(rng, p.get("nnz", numel))


def _m3_scale(rng: np.random.Generator, obj: dict[str, Any], chunks: list[bytes]) -> None:
    """A tensor and its streams declaring coherently more (numel implied from the scaled shape)."""
    del chunks
    t = _pick(rng, _tensors3(obj))
    k = int(_pick(rng, [2, 16, 1 << 10, 1 << 20, 1 << 30]))
    if t[4]:
        t[4][0] *= k
    if isinstance(t[7], dict) and isinstance(t[7].get("nnz"), int):
        t[7]["nnz"] *= k
    for e in t[8]:
        if e[0] != "codebook":
            e[3:] = [(e[3] if len(e) > 3 else e[1]) * k]


_M3_HEADER: list[tuple[float, Callable[[np.random.Generator, dict[str, Any], list[bytes]], None]]] = [
    (0.3, _m3_stream), (0.15, _m3_top), (0.15, _m3_tensor), (0.2, _m3_params), (0.1, _m3_scale),
    (0.1, _mutate_stream_bytes),
]


def _m3_skeleton(rng: np.random.Generator, model: Any) -> None:
    """Marks where a corrupted or hostile skeleton puts them (names as in :mod:`onnxdc.onnx_io.names`)."""
    from onnx import helper

    nodes = model.graph.node
    op = _pick(rng, ["input", "input", "input", "output", "anonymous", "subgraph", "amplify", "fanout",
                     "shuffle", "graph", "name"])
    if not nodes:
        return
    node = nodes[int(rng.integers(len(nodes)))]
    if op == "input":
        mark = _pick(rng, HOSTILE_MARKS + [f"\x00{int(rng.integers(-3, len(nodes) + 3))}.{int(rng.integers(0, 4))}"])
        if node.input and rng.random() < 0.8:
            node.input[int(rng.integers(len(node.input)))] = mark
        else:
            node.input.append(mark)
    elif op == "output":  # a mark where an output should stay, or a bad one
        i = int(rng.integers(len(node.output))) if node.output else 0
        mark = _pick(rng, ["\x00", "\x00", "\x001", "\x00\x00", ""])
        if node.output:
            node.output[i] = mark
        else:
            node.output.append(mark)
    elif op == "anonymous":  # nodes without names whose outputs are marks: "_output_0" each
        for n in nodes[:int(rng.integers(1, len(nodes) + 1))]:
            n.name = ""
            for i in range(len(n.output)):
                n.output[i] = "\x00"
    elif op == "subgraph":  # marks inside an If node's branches, which restoring leaves as they are
        body = helper.make_graph([helper.make_node("Identity", [_pick(rng, HOSTILE_MARKS[:8])], ["\x00"], name="b")],
                                 "body", [], [helper.make_tensor_value_info("\x00", 1, [1])])
        nodes.append(helper.make_node("If", [_pick(rng, ["\x001", "\x00", "cond"])], ["\x00"], name="if",
                                      then_branch=body, else_branch=body))
    elif op == "amplify":  # a long node name behind many marks: restoring multiplies it
        node.name = "n" * int(_pick(rng, [1 << 10, 1 << 14, 1 << 17]))
        node.output[:] = ["\x00"] * int(_pick(rng, [1, 16, 256, 4096]))
        j = len(nodes) - 1
        k = list(nodes).index(node)
        nodes[j].input.extend([f"\x00{j - k}"] * int(_pick(rng, [1, 256, 4096])))
    elif op == "fanout":  # many outputs marked on one node
        node.output.extend(["\x00"] * int(_pick(rng, [100, 10000])))
    elif op == "shuffle":  # distances now point at other nodes
        k = int(rng.integers(len(nodes)))
        moved = type(node)()
        moved.CopyFrom(nodes[k])
        del nodes[k]
        nodes.insert(int(rng.integers(len(nodes) + 1)), moved)
    elif op == "graph":  # marks where restoring does not look
        target = _pick(rng, [model.graph.output, model.graph.input, model.graph.value_info])
        if len(target):
            target[0].name = _pick(rng, HOSTILE_MARKS[:6])
    else:
        node.name = _pick(rng, ["\x00", "a\x00b", "", "x" * 1000])


def mutate3(obj: dict[str, Any], chunks: list[bytes], skeleton: bytes, rng: np.random.Generator) -> bytes:
    """One 3.0 mutant: the compact header and stream bytes mutated, or the skeleton's marks (then
    recoded, with ``c`` its restored CRC-32); ``s`` and the lengths fixed up most of the time."""
    import onnx

    obj, chunks = copy.deepcopy(obj), list(chunks)
    new_skeleton = None
    if rng.random() < 0.35:
        model = onnx.ModelProto()
        model.ParseFromString(skeleton)
        for _ in range(int(rng.integers(1, 3))):
            _m3_skeleton(rng, model)
        new_skeleton = model.SerializeToString()
    if new_skeleton is None or rng.random() < 0.3:
        weights = np.array([w for w, _ in _M3_HEADER])
        for _ in range(int(rng.integers(1, 4))):
            _, fn = _M3_HEADER[int(rng.choice(len(_M3_HEADER), p=weights / weights.sum()))]
            try:
                fn(rng, obj, chunks)
            except (TypeError, KeyError, IndexError, AttributeError, ValueError, OverflowError):
                pass  # an earlier mutation broke what this one edits
    return pack3(obj, chunks, new_skeleton, fix_lengths=rng.random() < 0.9, fix_payload=rng.random() < 0.95,
                 fix_skeleton=rng.random() < 0.95)


# --------------------------------------------------------------------------- running


@dataclass(frozen=True)
class Outcome:
    """How the mutants of one run fared."""

    decoded: int
    refused: int
    peak_bytes: int  # the largest tracemalloc peak of one mutant's decoding
    codes: tuple[tuple[str, int], ...] = ()  # refusals by ContainerError code: which checks mutants reach


class MutantFailure(AssertionError):
    """A mutant raised something other than ContainerError, or allocated too much."""


def run(data: bytes, *, count: int, seed: int, max_output_bytes: int | None = None,
        alloc_factor: int = 16, alloc_slack: int = 64 << 20, major: int = 1) -> Outcome:
    """Decode ``count`` mutants of container ``data`` (seeded); raise MutantFailure on a bad one.

    ``major`` 1 mutates the 1.0 container ``data`` stands for (:func:`unpack`); 3 mutates a 3.0
    container's own compact header and marked skeleton (:func:`mutate3`). Each mutant is decoded
    with ``max_output_bytes`` (default: 16 times the original's output) and must allocate at most
    ``alloc_factor`` times that plus ``alloc_slack``.
    """
    from onnxdc.format.container import output_size
    from onnxdc.pipeline.decode import decompress

    if major == 3:
        obj3, chunks, skeleton = unpack3(data)
        make = lambda r: mutate3(obj3, chunks, skeleton, r)  # noqa: E731
    else:
        obj, chunks = unpack(data)
        make = lambda r: mutate(obj, chunks, r)  # noqa: E731
    if max_output_bytes is None:
        max_output_bytes = 16 * output_size(read_container(data).header)
    bound = alloc_factor * max_output_bytes + alloc_slack
    rng = np.random.default_rng(seed)
    decoded = refused = peak = 0
    codes: dict[str, int] = {}
    started = tracemalloc.is_tracing()
    if not started:
        tracemalloc.start()
    try:
        for k in range(count):
            mutant = make(rng)
            tracemalloc.reset_peak()
            try:
                decompress(mutant, max_output_bytes=max_output_bytes)
                decoded += 1
            except ContainerError as exc:
                if not str(exc) or "\n" in str(exc):
                    raise MutantFailure(f"mutant {k}: not a one-line error: {exc!r}") from None
                refused += 1
                codes[str(exc.code)] = codes.get(str(exc.code), 0) + 1
            except Exception as exc:  # noqa: BLE001 - exactly what the fuzzer looks for
                raise MutantFailure(f"mutant {k} (seed {seed}): {type(exc).__name__}: {exc}") from exc
            used = tracemalloc.get_traced_memory()[1]
            peak = max(peak, used)
            if used > bound:
                raise MutantFailure(f"mutant {k} (seed {seed}) allocated {used} bytes, bound {bound}")
    finally:
        if not started:
            tracemalloc.stop()
    return Outcome(decoded, refused, peak, tuple(sorted(codes.items())))


def sample_containers(model: Any = None, *, derived_names: bool = False, major: int | None = None) -> dict[str, bytes]:
    """Containers of ``model`` (default: a tiny two-layer model, its nodes and values named as
    ``torch.onnx`` names them with ``derived_names``, so a 3.0 skeleton holds marks) in the three
    shapes worth mutating: lossless planes, shared with the automatic coders, shared with a
    Huffman+zstd chain."""
    from onnx import TensorProto, helper, numpy_helper

    import onnxdc
    from onnxdc.pipeline.settings import SharingConfig

    if model is None:
        n1, n2, n3 = ("/fc1/Gemm", "/Relu", "/fc2/Gemm") if derived_names else ("", "", "")
        y, r = (f"{n1}_output_0", f"{n2}_output_0") if derived_names else ("y", "r")
        rng = np.random.default_rng(0)
        inits = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
                 for name, shape in (("w", (32, 64)), ("b", (32,)), ("w2", (8, 32)))]
        graph = helper.make_graph(
            [helper.make_node("Gemm", ["x", "w", "b"], [y], transB=1, name=n1),
             helper.make_node("Relu", [y], [r], name=n2),
             helper.make_node("Gemm", [r, "w2"], ["z"], transB=1, name=n3)],
            "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
            [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 8])], inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    configs = {
        "lossless": onnxdc.CompressConfig(),
        "shared": onnxdc.CompressConfig(sharing=SharingConfig(sparsity=0.5, bits=4, min_elements=16)),
        "chain": onnxdc.CompressConfig(sharing=SharingConfig(sparsity=0.5, bits=4, min_elements=16,
                                                             coder="huffman+zstd")),
    }
    if major is None:
        return {name: onnxdc.compress(model, config=config).data for name, config in configs.items()}
    from onnxdc.format.container import ContainerWriter
    from onnxdc.pipeline.encode import encode_model

    out = {}
    for name, config in configs.items():  # as a writer of that major lays them out
        skeleton = type(model)()
        skeleton.CopyFrom(model)
        writer = ContainerWriter(major=major)
        header, _, _ = encode_model(skeleton, writer=writer, config=config, original=model)
        out[name] = writer.to_bytes(header)
    return out


def main(argv: list[str] | None = None) -> int:
    import onnxdc

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", help="an .onnx model to compress and mutate (default: a tiny one)")
    parser.add_argument("--count", type=int, default=1000, help="mutants per container")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--major", type=int, choices=(1, 3), default=1,
                        help="1: mutate the 1.0 container each one stands for; 3: the 3.0 header and skeleton")
    parser.add_argument("--only", action="append", help="mutate only these containers (lossless, shared, chain)")
    args = parser.parse_args(argv)
    containers = sample_containers(onnxdc.load_model(args.model) if args.model else None, derived_names=True)
    for name, data in containers.items():
        if args.only and name not in args.only:
            continue
        try:
            out = run(data, count=args.count, seed=args.seed, major=args.major)
        except MutantFailure as exc:
            print(f"{name}: {exc}", file=sys.stderr)
            return 1
        print(f"{name}: {out.decoded} decoded, {out.refused} refused, peak {out.peak_bytes} bytes; refused by code: "
              + ", ".join(f"{code} {n}" for code, n in out.codes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
