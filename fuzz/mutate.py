"""A structure-aware mutator for ``.onnxdc`` containers: it edits the header's JSON, not its bytes.

Random bytes almost never get past the header CRC, and a random header edit almost never past
the JSON parser, so neither reaches the decoders. This mutator unpacks a valid container, changes
a few header values where they matter — stream counts and lengths, tensor shapes, sizes and slots,
encoding params, coder configs and chain stages (ids, parameters, extra or nested stages, chain
intermediate lengths in the stream bytes) — or a few stream bytes, then repacks it with every
checksum fixed up, so the mutant reaches the structural checks and the decoders behind them.

Run a fixed number of mutants from a fixed seed (reproducible, not bounded by seconds)::

    python fuzz/mutate.py --count 2000 --seed 1 [models/lenet300.onnx]

Every mutant must decode or raise :class:`~onnxdc.errors.ContainerError` (nothing else), and
decoding one may allocate at most a bounded multiple of its declared output (checked with
tracemalloc, which sees numpy's buffers); the script exits 1 on the first mutant that breaks
either rule, printing its number. ``tests/test_limits.py`` runs a few hundred as a smoke test.
"""

from __future__ import annotations

import argparse
import copy
import json
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
from onnxdc.format.container import MAGIC, read_container

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


# --------------------------------------------------------------------------- running


@dataclass(frozen=True)
class Outcome:
    """How the mutants of one run fared."""

    decoded: int
    refused: int
    peak_bytes: int  # the largest tracemalloc peak of one mutant's decoding


class MutantFailure(AssertionError):
    """A mutant raised something other than ContainerError, or allocated too much."""


def run(data: bytes, *, count: int, seed: int, max_output_bytes: int | None = None,
        alloc_factor: int = 16, alloc_slack: int = 64 << 20) -> Outcome:
    """Decode ``count`` mutants of container ``data`` (seeded); raise MutantFailure on a bad one.

    Each mutant is decoded with ``max_output_bytes`` (default: 16 times the original's output) and
    must allocate at most ``alloc_factor`` times that plus ``alloc_slack``.
    """
    from onnxdc.format.container import output_size
    from onnxdc.pipeline.decode import decompress

    obj, chunks = unpack(data)
    if max_output_bytes is None:
        max_output_bytes = 16 * output_size(read_container(data).header)
    bound = alloc_factor * max_output_bytes + alloc_slack
    rng = np.random.default_rng(seed)
    decoded = refused = peak = 0
    started = tracemalloc.is_tracing()
    if not started:
        tracemalloc.start()
    try:
        for k in range(count):
            mutant = mutate(obj, chunks, rng)
            tracemalloc.reset_peak()
            try:
                decompress(mutant, max_output_bytes=max_output_bytes)
                decoded += 1
            except ContainerError as exc:
                if not str(exc) or "\n" in str(exc):
                    raise MutantFailure(f"mutant {k}: not a one-line error: {exc!r}") from None
                refused += 1
            except Exception as exc:  # noqa: BLE001 - exactly what the fuzzer looks for
                raise MutantFailure(f"mutant {k} (seed {seed}): {type(exc).__name__}: {exc}") from exc
            used = tracemalloc.get_traced_memory()[1]
            peak = max(peak, used)
            if used > bound:
                raise MutantFailure(f"mutant {k} (seed {seed}) allocated {used} bytes, bound {bound}")
    finally:
        if not started:
            tracemalloc.stop()
    return Outcome(decoded, refused, peak)


def sample_containers(model: Any = None) -> dict[str, bytes]:
    """Containers of ``model`` (default: a tiny two-layer model) in the three shapes worth mutating:
    lossless planes, shared with the automatic coders, shared with a Huffman+zstd chain."""
    from onnx import TensorProto, helper, numpy_helper

    import onnxdc
    from onnxdc.pipeline.settings import SharingConfig

    if model is None:
        rng = np.random.default_rng(0)
        inits = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
                 for name, shape in (("w", (32, 64)), ("b", (32,)), ("w2", (8, 32)))]
        graph = helper.make_graph(
            [helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1),
             helper.make_node("Gemm", ["y", "w2"], ["z"], transB=1)],
            "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
            [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 8])], inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    configs = {
        "lossless": onnxdc.CompressConfig(),
        "shared": onnxdc.CompressConfig(sharing=SharingConfig(sparsity=0.5, bits=4, min_elements=16)),
        "chain": onnxdc.CompressConfig(sharing=SharingConfig(sparsity=0.5, bits=4, min_elements=16,
                                                             coder="huffman+zstd")),
    }
    return {name: onnxdc.compress(model, config=config).data for name, config in configs.items()}


def main(argv: list[str] | None = None) -> int:
    import onnxdc

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", help="an .onnx model to compress and mutate (default: a tiny one)")
    parser.add_argument("--count", type=int, default=1000, help="mutants per container")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    containers = sample_containers(onnxdc.load_model(args.model) if args.model else None)
    for name, data in containers.items():
        try:
            out = run(data, count=args.count, seed=args.seed)
        except MutantFailure as exc:
            print(f"{name}: {exc}", file=sys.stderr)
            return 1
        print(f"{name}: {out.decoded} decoded, {out.refused} refused, peak {out.peak_bytes} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
