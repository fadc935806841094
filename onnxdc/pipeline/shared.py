"""The ``shared`` encoding's encoder: a pruned, weight-shared tensor (Deep Compression stages 1-3)
coded into codebook, index and position streams. The streams and params are described, validated
and decoded by :mod:`onnxdc.format.shared`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from onnxdc.dtypes import CODEBOOK_DTYPES
from onnxdc.format.binary import stage_sizes
from onnxdc.format.shared import ENCODING
from onnxdc.onnx_io.tensors import le_bytes
from onnxdc.pipeline.streams import CodedStream, candidate_coders, encode_best
from onnxdc.stages.positions import mask_symbols, relative_symbol_count, relative_symbols
from onnxdc.stages.quantize import Clustering, ShareConfig, kmeans_1d, share_kept

__all__ = ["ENCODING", "SharedTensor", "encode_shared"]


@dataclass(frozen=True)
class SharedTensor:
    """A tensor after the three stages, ready for the container."""

    params: dict[str, Any]
    streams: dict[str, CodedStream]
    values: np.ndarray  # the quantized tensor, in the original dtype and shape


def encode_shared(w: np.ndarray, keep: np.ndarray, *, share: ShareConfig, index_coders: list[dict],
                  positions: str = "auto", op: str = "", kind: str = "",
                  clustering: Clustering | None = None, contexts: bool = True) -> SharedTensor:
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
        contexts: whether an automatic choice of the dense layout's coder also tries the
            context-modelled rANS (``rans-ctx``); off, the choice is the one before it existed
            (``benchmarks/context_coding.py`` compares the two).
    """
    flat = w.reshape(-1)
    if clustering is None:
        pos, clus = share_kept(w, keep, config=share)
        keep = keep.reshape(-1) & (flat != 0)
    else:
        keep = keep.reshape(-1)
        pos, clus = np.flatnonzero(keep), clustering
    nnz, numel = int(pos.size), int(flat.size)
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
            m = encode_best(mask_symbols(keep), candidate_coders(raw_bits=8, chain=False, zstd_before_huffman=True))
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
        d = encode_best(dense_idx, candidates_idx + _context_coders(w.shape, op, automatic=contexts and len(candidates_idx) > 1))
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
    pruned, shared = stage_sizes({"nnz": nnz, "bits": share.bits, "positions": best.scheme}, numel, itemsize,
                                 codebook.nbytes, fixed_pos_bytes)
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


#: Ops whose weights are [directions, gates x hidden, inputs]: a row is one gate unit's inputs.
_RECURRENT = ("GRU", "LSTM", "RNN")


def row_length(shape: tuple[int, ...], op: str) -> int:
    """Symbols per row of a tensor's dense levels, the rows :mod:`onnxdc.coders.rans_ctx` conditions
    on: one output channel (``prod(shape[1:])``), or one gate unit's inputs in a recurrent W or R."""
    if op in _RECURRENT and len(shape) == 3:
        return int(shape[-1])
    return int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else 1


def _context_coders(shape: tuple[int, ...], op: str, *, automatic: bool) -> list[dict]:
    """The context-modelled rANS candidate for a dense index stream: only in an automatic choice
    (a coder named alone stays alone) and only for tensors of at least two rows."""
    row = row_length(shape, op)
    if not automatic or len(shape) < 2 or row >= int(np.prod(shape, dtype=np.int64)):
        return []
    return [{"id": "rans-ctx", "row": row}]


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
    ent = encode_best(syms8, candidate_coders(raw=False))
    options.append((len(ent.data), 8, ent))
    return min(options, key=lambda o: o[0])
