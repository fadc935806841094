"""``compare-coders``: one set of pruning and sharing settings, every coder and two-coder chain.

The streams are built once (cluster indices per tensor, relative-position symbols per tensor) and
then coded with each coder, so the table isolates the coder's effect — the way a study of coder
choices on a real network tabulates it — next to the order-0 entropy that a symbol coder such as
Huffman can at best approach. Three rows code each tensor's levels in one stream, zero included
(the ``dense`` layout, positions implied): their order-0 entropy, their entropy given the column
contexts of ``rans-ctx`` (models excluded), and what ``rans-ctx`` writes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from onnxdc.coders import coder_from_spec, get_coder
from onnxdc.coders.rans_ctx import contexts
from onnxdc.pipeline.settings import SharingConfig
from onnxdc.pipeline.shared import row_length
from onnxdc.pipeline.streams import order0_entropy_bits
from onnxdc.stages.positions import relative_symbols
from onnxdc.stages.quantize import share_kept

#: Coders and chains compared; ``raw`` is fixed width (the tensor's bits for indices, the best
#: gap width for positions), as the paper stores them before Huffman coding.
SPECS = ("raw", "huffman", "zstd", "zstd-literals", "huffman+zstd", "zstd+huffman", "huffman+huffman", "zstd+zstd",
         "raw+zstd", "raw+huffman")


@dataclass(frozen=True)
class CoderRow:
    """Sizes of all index and position streams under one coder."""

    coder: str
    index_bytes: int
    position_bytes: int
    codebook_bytes: int
    weights: int  # surviving weights (the denominators of bits per weight)
    original_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.index_bytes + self.position_bytes + self.codebook_bytes

    @property
    def ratio(self) -> float:
        return self.original_bytes / self.total_bytes if self.total_bytes else float("inf")

    def to_json(self) -> dict:
        return {"coder": self.coder, "index_bytes": self.index_bytes, "position_bytes": self.position_bytes,
                "codebook_bytes": self.codebook_bytes, "total_bytes": self.total_bytes,
                "index_bits_per_weight": 8 * self.index_bytes / max(self.weights, 1),
                "position_bits_per_weight": 8 * self.position_bytes / max(self.weights, 1),
                "ratio": round(self.ratio, 4)}


@dataclass(frozen=True)
class TensorStreams:
    """One shared tensor's symbol streams, built once and then coded by every coder compared."""

    indices: np.ndarray
    bits: int
    positions: np.ndarray  # sorted flat positions of the surviving weights
    positions8: np.ndarray
    positions_fixed: list[np.ndarray]  # relative symbols at gap widths 2..8
    levels: np.ndarray  # the dense layout's symbols: 0 where pruned, else 1 + the index
    row: int  # the levels' row length (rans-ctx)
    codebook_bytes: int
    original_bytes: int


def shared_streams(model: onnx.ModelProto, *, sharing: SharingConfig) -> list[TensorStreams]:
    """Prune and share the tensors ``compress`` would share at ``sharing``, once, into their streams."""
    from onnxdc.onnx_io.tensors import tensor_array, tensor_raw_bytes
    from onnxdc.pipeline.plan import plan_sharing

    streams: list[TensorStreams] = []
    for plan in plan_sharing(model, sharing).values():
        proto = plan.candidate.ref.proto
        w = tensor_array(proto, tensor_raw_bytes(proto))
        pos, clus = share_kept(w, plan.mask(w), config=plan.settings.share)
        levels = np.zeros(w.size, dtype=np.uint8)
        levels[pos] = clus.indices + 1
        streams.append(TensorStreams(clus.indices, plan.settings.share.bits, pos, relative_symbols(pos, bits=8),
                                     [relative_symbols(pos, bits=b) for b in range(2, 9)], levels,
                                     row_length(w.shape, plan.candidate.op), clus.codebook.nbytes, w.nbytes))
    return streams


def compare_coders(model: onnx.ModelProto, *, sharing: SharingConfig,
                   specs: tuple[str, ...] = SPECS) -> list[CoderRow]:
    """Prune and share the selected tensors once, then size their streams under every coder.

    The first row is the order-0 entropy bound (``entropy``), not a real coder.
    """
    streams = shared_streams(model, sharing=sharing)
    codebook_bytes = sum(s.codebook_bytes for s in streams)
    original = sum(s.original_bytes for s in streams)
    weights = sum(s.indices.size for s in streams)
    rows = [CoderRow("entropy (order 0)",
                     int(sum(order0_entropy_bits(s.indices) for s in streams) / 8),
                     int(sum(order0_entropy_bits(s.positions8) for s in streams) / 8),
                     codebook_bytes, weights, original)]
    for spec in specs:
        idx = pos_b = 0
        for s in streams:
            idx += len(coder_for(spec, s.bits).encode(s.indices))
            if spec.split("+")[0] == "raw":
                # Paper-style fixed-width gaps: the best width per tensor, then the rest of the chain.
                pos_b += min(len(coder_for(spec, b).encode(syms)) for b, syms in zip(range(2, 9), s.positions_fixed))
            else:
                pos_b += len(coder_for(spec, 8).encode(s.positions8))
        rows.append(CoderRow(spec, idx, pos_b, codebook_bytes, weights, original))
    rows.append(CoderRow("dense entropy", int(sum(order0_entropy_bits(s.levels) for s in streams) / 8),
                         0, codebook_bytes, weights, original))
    rows.append(CoderRow("dense ctx entropy", int(sum(context_entropy_bits(s) for s in streams) / 8),
                         0, codebook_bytes, weights, original))
    rows.append(CoderRow("dense rans-ctx", sum(len(get_coder({"id": "rans-ctx", "row": s.row}).encode(s.levels))
                                                 for s in streams), 0, codebook_bytes, weights, original))
    return rows


def context_entropy_bits(s: TensorStreams) -> float:
    """The levels' entropy given their rans-ctx contexts: the sum of each context's order-0 entropy."""
    ctx = contexts(s.levels, s.row)
    return sum(order0_entropy_bits(s.levels[ctx == c]) for c in np.unique(ctx))


def coder_for(spec: str, bits: int):  # noqa: ANN201 - a Coder
    """The coder for ``spec``, with a leading ``raw`` given the stream's bit width."""
    parts = spec.split("+")
    if parts[0] == "raw":
        parts[0] = f"raw:{bits}"
    coder = coder_from_spec("+".join(parts))
    return get_coder(coder.get_config())


def format_comparison(rows: list[CoderRow]) -> str:
    """The comparison as a plain-text table."""
    lines = [f"{'coder':<20}{'indices':>12}{'idx b/w':>9}{'positions':>12}{'pos b/w':>9}"
             f"{'codebook':>10}{'total':>12}{'ratio':>9}"]
    for r in rows:
        w = max(r.weights, 1)
        lines.append(f"{r.coder:<20}{r.index_bytes:>12,}{8 * r.index_bytes / w:>9.3f}{r.position_bytes:>12,}"
                     f"{8 * r.position_bytes / w:>9.3f}{r.codebook_bytes:>10,}{r.total_bytes:>12,}{r.ratio:>8.2f}x")
    if rows:
        lines.append(f"\n{rows[0].weights:,} surviving weights of {rows[0].original_bytes:,} original bytes; "
                     "ratio = original bytes / total")
    return "\n".join(lines)
