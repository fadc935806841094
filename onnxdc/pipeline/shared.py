"""The ``shared`` encoding: a pruned, weight-shared tensor (Deep Compression stages 1-3).

Streams:

* ``codebook``: the shared values, little-endian ``codebook_dtype``; when ``zero_code`` is true
  the first entry is an explicit 0.0 (dense layout only);
* ``indices``: one byte symbol per stored weight, an index into the codebook; ``nnz`` symbols in
  the sparse layouts, ``numel`` in the dense one;
* ``positions`` (``relative`` and ``mask`` layouts only): see :mod:`onnxdc.stages.positions`.

Params: ``op``, ``kind``, ``numel``, ``nnz``, ``bits``, ``k`` (codebook entries), ``zero_code``,
``codebook_dtype``, ``positions`` (scheme), ``position_bits`` (relative layout's gap width, else 0),
``pruned_bytes`` and ``shared_bytes`` (the report's stage sizes: values + fixed-width positions
after pruning; fixed-width indices + positions + codebook after sharing).

The tensor decodes to ``numel`` values of its own dtype: ``codebook[index]`` at the stored
positions, exact zeros elsewhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from onnxdc.format.registry import expect_params, expect_streams, register_encoding
from onnxdc.errors import ContainerError
from onnxdc.onnx_io.tensors import le_bytes
from onnxdc.stages.quantize import CODEBOOK_DTYPES, Clustering, ShareConfig, kmeans_1d
from onnxdc.stages.positions import (
    decode_mask,
    decode_relative,
    mask_symbols,
    relative_symbol_count,
    relative_symbols,
)
from onnxdc.pipeline.streams import CodedStream, encode_best

if TYPE_CHECKING:
    from onnxdc.format.container import Container, StreamInfo, TensorInfo

ENCODING = "shared"
_PARAMS: dict[str, Any] = {
    "op": str, "kind": str, "numel": int, "nnz": int, "bits": int, "k": int, "zero_code": bool,
    "codebook_dtype": str, "positions": str, "position_bits": int, "pruned_bytes": int,
    "shared_bytes": int,
}


@dataclass(frozen=True)
class SharedTensor:
    """A tensor after the three stages, ready for the container."""

    params: dict[str, Any]
    streams: dict[str, CodedStream]
    values: np.ndarray  # the quantized tensor, in the original dtype and shape


def np_dtype(data_type: int) -> np.dtype:
    """The numpy dtype of an ONNX float type (bfloat16 through ml_dtypes, as onnx does)."""
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(data_type))


def encode_shared(w: np.ndarray, keep: np.ndarray, *, share: ShareConfig, index_coders: list[dict],
                  positions: str = "auto", op: str = "", kind: str = "",
                  clustering: Clustering | None = None) -> SharedTensor:
    """Weight-share the kept entries of ``w`` and code indices, positions and codebook.

    Args:
        w: the tensor in its original float dtype and shape.
        keep: boolean mask of surviving weights (from :mod:`onnxdc.stages.prune`); zeros in ``w`` are
            never kept.
        share: k-means settings.
        index_coders: candidate coder configs for the index stream; the smallest wins.
        positions: ``auto`` (smallest of the schemes) or one of ``relative``, ``mask``, ``dense``.
        clustering: shared values and indices already chosen for the kept weights (in flat
            order), e.g. by calibration-aware compression; k-means is then skipped.
    """
    flat = w.reshape(-1)
    keep = keep.reshape(-1) & (flat != 0) if clustering is None else keep.reshape(-1)
    pos = np.flatnonzero(keep)
    nnz, numel = int(pos.size), int(flat.size)
    clus = clustering if clustering is not None else kmeans_1d(flat[pos].astype(np.float32), config=share)
    cb_dtype = CODEBOOK_DTYPES[share.codebook_dtype]
    out_dtype = flat.dtype
    itemsize = out_dtype.itemsize

    # Sparse layouts: indices over the nnz survivors, positions coded separately.
    candidates_idx = _coders_for(index_coders, share.bits)
    layouts: list[_Layout] = []
    fixed_pos_bytes, fixed_bits = _best_fixed_relative(pos)
    cb_sparse = clus.codebook.astype(cb_dtype)
    if positions in ("auto", "relative", "mask"):
        sparse_idx = encode_best(clus.indices, candidates_idx)
        if positions in ("auto", "relative"):
            size, pbits, stream = _best_relative(pos, fixed_bits)
            layouts.append(_Layout("relative", pbits, stream, sparse_idx, cb_sparse, clus.indices, False))
        if positions in ("auto", "mask"):
            m = encode_best(mask_symbols(keep), [{"id": "raw", "bits": 8}, {"id": "zstd-literals"},
                                                 {"id": "zstd", "level": 19}, {"id": "huffman"}])
            layouts.append(_Layout("mask", 0, m, sparse_idx, cb_sparse, clus.indices, False))
    if positions == "dense" and clustering is not None and nnz < numel and clus.codebook.size >= (1 << share.bits):
        positions = "mask"  # a given full codebook leaves no code for zero
    if positions in ("auto", "dense") and not (clustering is not None and nnz < numel
                                               and clus.codebook.size >= (1 << share.bits)):
        zero_code = nnz < numel
        dclus = clus
        if zero_code and clus.codebook.size + 1 > (1 << share.bits):
            # One code goes to zero: re-cluster the survivors into one value fewer.
            dclus = kmeans_1d(flat[pos].astype(np.float32), config=share, k=(1 << share.bits) - 1)
        dense_idx = np.zeros(numel, dtype=np.uint8)
        dense_idx[pos] = dclus.indices + (1 if zero_code else 0)
        cb = dclus.codebook.astype(cb_dtype)
        cb_dense = np.concatenate([np.zeros(1, cb_dtype), cb]) if zero_code else cb
        d = encode_best(dense_idx, candidates_idx)
        layouts.append(_Layout("dense", 0, None, d, cb_dense, dense_idx, zero_code))
    best = min(layouts, key=lambda lay: lay.size)

    codebook = best.codebook
    values = np.zeros(numel, dtype=out_dtype)
    if best.scheme == "dense":
        values[:] = codebook.astype(out_dtype)[best.index_symbols]
    else:
        values[pos] = codebook.astype(out_dtype)[best.index_symbols]
    streams = {"codebook": CodedStream(le_bytes(codebook),
                                       codebook.nbytes, {"id": "raw", "bits": 8}),
               "indices": best.indices}
    if best.positions is not None:
        streams["positions"] = best.positions
    stored_w = numel if best.scheme == "dense" else nnz
    pruned = numel * itemsize if nnz == numel else nnz * itemsize + fixed_pos_bytes
    shared = ((0 if best.scheme == "dense" else fixed_pos_bytes) + (stored_w * share.bits + 7) // 8
              + codebook.nbytes)
    params = {"op": op, "kind": kind, "numel": numel, "nnz": nnz, "bits": share.bits, "k": int(codebook.size),
              "zero_code": bool(best.zero_code), "codebook_dtype": share.codebook_dtype,
              "positions": best.scheme, "position_bits": best.position_bits, "pruned_bytes": int(pruned),
              "shared_bytes": int(shared)}
    return SharedTensor(params, streams, values.reshape(w.shape))


@dataclass(frozen=True)
class _Layout:
    """One candidate layout of a shared tensor; the smallest is stored."""

    scheme: str
    position_bits: int
    positions: CodedStream | None
    indices: CodedStream
    codebook: np.ndarray
    index_symbols: np.ndarray
    zero_code: bool

    @property
    def size(self) -> int:
        return (len(self.positions.data) if self.positions else 0) + len(self.indices.data) + self.codebook.nbytes


def _coders_for(index_coders: list[dict], bits: int) -> list[dict]:
    return [({**c, "bits": bits} if c.get("id") == "raw" and "bits" not in c else c) for c in index_coders]


def _best_fixed_relative(pos: np.ndarray) -> tuple[int, int]:
    """Smallest fixed-width relative-index size (bytes) over gap widths 2..8, and that width."""
    best = min(((relative_symbol_count(pos, bits=b) * b + 7) // 8, b) for b in range(2, 9))
    return best[0], best[1]


def _best_relative(pos: np.ndarray, fixed_bits: int) -> tuple[int, int, CodedStream]:
    """The relative layout's best coding: paper-style fixed width, or entropy-coded 8-bit gaps."""
    fixed_syms = relative_symbols(pos, bits=fixed_bits)
    fixed = encode_best(fixed_syms, [{"id": "raw", "bits": fixed_bits}])
    options = [(len(fixed.data), fixed_bits, fixed)]
    syms8 = relative_symbols(pos, bits=8)
    ent = encode_best(syms8, [{"id": "zstd-literals"}, {"id": "huffman"}, {"id": "zstd", "level": 19},
                              {"id": "chain", "coders": [{"id": "huffman"}, {"id": "zstd", "level": 19}]}])
    options.append((len(ent.data), 8, ent))
    return min(options, key=lambda o: o[0])


# --------------------------------------------------------------------------- decoding


def _validate(info: TensorInfo, streams: tuple[StreamInfo, ...]) -> None:
    expect_params(info, _PARAMS)
    p = info.params
    numel = math.prod(info.shape)
    scheme = p["positions"]
    if scheme not in ("relative", "mask", "dense"):
        raise ContainerError(f"tensor {info.name!r} has unknown positions scheme {scheme!r}")
    expect_streams(info, ["codebook", "indices"] + ([] if scheme == "dense" else ["positions"]))
    if p["numel"] != numel or not 0 <= p["nnz"] <= numel:
        raise ContainerError(f"tensor {info.name!r} numel/nnz ({p['numel']}, {p['nnz']}) do not fit shape {info.shape}")
    if p["codebook_dtype"] not in CODEBOOK_DTYPES or not 1 <= p["bits"] <= 8:
        raise ContainerError(f"tensor {info.name!r} has invalid bits or codebook dtype")
    if not 0 <= p["k"] <= 256 or (p["zero_code"] and scheme != "dense"):
        raise ContainerError(f"tensor {info.name!r} has an invalid codebook size or zero code")
    if p["pruned_bytes"] < 0 or p["shared_bytes"] < 0:  # shown by the report: never negative
        raise ContainerError(
            f"tensor {info.name!r} stage sizes ({p['pruned_bytes']}, {p['shared_bytes']}) must be >= 0"
        )
    try:
        itemsize = np_dtype(info.dtype).itemsize
    except (KeyError, TypeError, ValueError):
        raise ContainerError(f"tensor {info.name!r} dtype {info.dtype} cannot be weight-shared") from None
    if info.dtype not in (1, 10, 11, 16) or info.nbytes != numel * itemsize:
        raise ContainerError(f"tensor {info.name!r} nbytes ({info.nbytes}) does not match shape and dtype")
    cb_items = np.dtype(CODEBOOK_DTYPES[p["codebook_dtype"]]).itemsize
    if streams[info.streams["codebook"]].count != p["k"] * cb_items:
        raise ContainerError(f"tensor {info.name!r} codebook stream size does not match k={p['k']}")
    want_idx = numel if scheme == "dense" else p["nnz"]
    if streams[info.streams["indices"]].count != want_idx:
        raise ContainerError(f"tensor {info.name!r} index stream holds {streams[info.streams['indices']].count} "
                             f"symbols, expected {want_idx}")
    if scheme == "mask" and streams[info.streams["positions"]].count != (numel + 7) // 8:
        raise ContainerError(f"tensor {info.name!r} mask stream has the wrong size")
    if scheme == "relative":
        b = p["position_bits"]
        if not 1 <= b <= 8:
            raise ContainerError(f"tensor {info.name!r} position_bits must be in 1..8, found {b}")
        limit = p["nnz"] + numel // ((1 << b) - 1) + 1
        if streams[info.streams["positions"]].count > limit:
            raise ContainerError(f"tensor {info.name!r} position stream is longer than the tensor allows")


def _decode(info: TensorInfo, container: Container) -> np.ndarray:
    p = info.params
    cb_dtype = np.dtype(CODEBOOK_DTYPES[p["codebook_dtype"]]).newbyteorder("<")
    codebook = np.frombuffer(container.decode_stream(info.streams["codebook"]).tobytes(), dtype=cb_dtype)
    idx = container.decode_stream(info.streams["indices"])
    if idx.size and int(idx.max()) >= codebook.size:
        raise ContainerError(f"tensor {info.name!r}: index {int(idx.max())} outside codebook of {codebook.size}")
    out_dtype = np_dtype(info.dtype)
    cb = codebook.astype(out_dtype)
    scheme = p["positions"]
    if scheme == "dense":
        values = cb[idx]
    else:
        syms = container.decode_stream(info.streams["positions"])
        if scheme == "relative":
            pos = decode_relative(syms, bits=p["position_bits"], numel=p["numel"], nnz=p["nnz"], name=info.name)
        else:
            pos = decode_mask(syms, numel=p["numel"], nnz=p["nnz"], name=info.name)
        values = np.zeros(p["numel"], dtype=out_dtype)
        values[pos] = cb[idx]
    return values.astype(values.dtype.newbyteorder("<"), copy=False).view(np.uint8)


register_encoding(ENCODING, _validate, _decode)
