"""The coder study's table (``compare-coders --study``): each coder or chain of the study this
project starts from, and the coders added since, on one model at one set of settings.

The study coded a pruned, weight-shared YOLOv2 with Huffman, LZ, Huffman on LZ codes, Huffman on
Huffman codes, LZ on Huffman codes and LZ on LZ codes, and tabulated for each the codebook bytes,
the quantized code representation (every code at a fixed width), the coded representation and
their ratio. Here "LZ" is zstd at its registry default (level 19), and "X on Y codes" is the chain
``Y+X``: Y codes the symbols, X codes Y's output bytes.

Every row codes the same streams (:func:`onnxdc.compare.shared_streams`, one k-means per tensor),
so the rows differ only in the coder:

* ``sparse`` rows code each tensor's cluster indices over the surviving weights and its relative
  positions (8-bit gaps), both with the row's coder, as the study's pipeline does. Their fixed
  width is ``bits`` per index plus the positions at the tensor's best gap width (2..8 bits).
* ``dense`` rows code one stream of levels per tensor, zero included (0 where pruned, else 1 +
  the index; positions implied), at a fixed width of ``ceil(log2(k + 1))`` bits per weight.
* ``bound`` rows are order-0 entropies, not coders: of the sparse streams, a lower bound of every
  order-0 coder on them (Huffman, rANS, zstd-literals); of the dense levels; and of the dense levels
  given ``rans-ctx``'s contexts (its models excluded), the bound that coder approaches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from onnxdc.coders import get_coder
from onnxdc.compare import TensorStreams, coder_for, context_entropy_bits, shared_streams
from onnxdc.pipeline.settings import SharingConfig
from onnxdc.pipeline.streams import order0_entropy_bits

#: The study's six coders, then the ones added since: (label, layout, coder spec).
STUDY_CODERS: tuple[tuple[str, str, str], ...] = (
    ("fixed width", "sparse", "raw"),
    ("Huffman", "sparse", "huffman"),
    ("LZ", "sparse", "zstd"),
    ("Huffman on LZ codes", "sparse", "zstd+huffman"),
    ("Huffman on Huffman codes", "sparse", "huffman+huffman"),
    ("LZ on Huffman codes", "sparse", "huffman+zstd"),
    ("LZ on LZ codes", "sparse", "zstd+zstd"),
    ("rANS", "sparse", "rans"),
    ("zstd literals", "sparse", "zstd-literals"),
    ("rANS, dense levels", "dense", "rans"),
    ("rANS-ctx, dense levels", "dense", "rans-ctx"),
)
BOUNDS = ("order-0 entropy", "order-0 entropy, dense levels", "context entropy, dense levels")


@dataclass(frozen=True)
class StudyRow:
    """One coder's (or bound's) sizes over every shared tensor of the model."""

    label: str
    layout: str  # sparse | dense | bound
    coder: str  # a coder spec, or the bound's name
    codebook_bytes: int
    fixed_bytes: int  # the quantized code representation: every code at its fixed width
    coded_bytes: int  # the coded representation (for a bound: its bits / 8, rounded up)
    index_bytes: int
    position_bytes: int

    @property
    def code_ratio(self) -> float:
        """Fixed width over coded: what the coder alone gains."""
        return self.fixed_bytes / self.coded_bytes if self.coded_bytes else float("inf")


@dataclass(frozen=True)
class CoderStudy:
    """The study's table for one model and setting."""

    rows: tuple[StudyRow, ...]
    tensors: int
    numel: int  # weights of the shared tensors
    weights: int  # surviving weights
    original_bytes: int  # the shared tensors as stored in the model
    zstd_level: int

    def model_ratio(self, row: StudyRow) -> float:
        """The shared tensors' original bytes over codebook + coded bytes."""
        total = row.codebook_bytes + row.coded_bytes
        return self.original_bytes / total if total else float("inf")

    def to_json(self) -> dict:
        return {"tensors": self.tensors, "numel": self.numel, "weights": self.weights,
                "original_bytes": self.original_bytes, "zstd_level": self.zstd_level,
                "rows": [{"label": r.label, "layout": r.layout, "coder": r.coder, "codebook_bytes": r.codebook_bytes,
                          "fixed_bytes": r.fixed_bytes, "coded_bytes": r.coded_bytes, "index_bytes": r.index_bytes,
                          "position_bytes": r.position_bytes, "code_ratio": round(r.code_ratio, 4),
                          "model_ratio": round(self.model_ratio(r), 4)} for r in self.rows]}


def coder_study(model: onnx.ModelProto, *, sharing: SharingConfig) -> CoderStudy:
    """Share the tensors ``compress`` would share at ``sharing`` once, then size them under every
    coder of :data:`STUDY_CODERS` and the bounds of :data:`BOUNDS`."""
    streams = shared_streams(model, sharing=sharing)
    codebook = sum(s.codebook_bytes for s in streams)
    sparse_fixed_idx = sum((s.indices.size * s.bits + 7) // 8 for s in streams)
    sparse_fixed_pos = sum(_fixed_positions_bytes(s) for s in streams)
    dense_fixed = sum((s.levels.size * _level_bits(s) + 7) // 8 for s in streams)
    rows = []
    for label, layout, spec in STUDY_CODERS:
        if layout == "sparse":
            idx = sum(len(coder_for(spec, s.bits).encode(s.indices)) for s in streams)
            if spec == "raw":
                pos = sparse_fixed_pos
            else:
                pos = sum(len(coder_for(spec, 8).encode(s.positions8)) for s in streams)
            rows.append(StudyRow(label, layout, spec, codebook, sparse_fixed_idx + sparse_fixed_pos, idx + pos,
                                 idx, pos))
        else:
            idx = sum(len(_dense_coder(spec, s).encode(s.levels)) for s in streams)
            rows.append(StudyRow(label, layout, spec, codebook, dense_fixed, idx, idx, 0))
    h_idx = _bytes(sum(order0_entropy_bits(s.indices) for s in streams))
    h_pos = _bytes(sum(order0_entropy_bits(s.positions8) for s in streams))
    h_dense = _bytes(sum(order0_entropy_bits(s.levels) for s in streams))
    h_ctx = _bytes(sum(context_entropy_bits(s) for s in streams))
    rows += [StudyRow(BOUNDS[0], "bound", "entropy", codebook, sparse_fixed_idx + sparse_fixed_pos, h_idx + h_pos,
                      h_idx, h_pos),
             StudyRow(BOUNDS[1], "bound", "entropy", codebook, dense_fixed, h_dense, h_dense, 0),
             StudyRow(BOUNDS[2], "bound", "entropy", codebook, dense_fixed, h_ctx, h_ctx, 0)]
    return CoderStudy(tuple(rows), len(streams), sum(s.levels.size for s in streams),
                      sum(s.indices.size for s in streams), sum(s.original_bytes for s in streams),
                      int(get_coder({"id": "zstd"}).get_config()["level"]))


def _bytes(bits: float) -> int:
    return int(np.ceil(bits / 8))


def _level_bits(s: TensorStreams) -> int:
    """Fixed width of a dense level: enough bits for zero and every cluster."""
    return max(1, int(np.ceil(np.log2(int(s.levels.max(initial=0)) + 1))))


def _fixed_positions_bytes(s: TensorStreams) -> int:
    """The positions at the tensor's best fixed gap width, as the study stores them before coding."""
    return min((syms.size * b + 7) // 8 for b, syms in zip(range(2, 9), s.positions_fixed))


def _dense_coder(spec: str, s: TensorStreams):  # noqa: ANN202 - a Coder
    return get_coder({"id": "rans-ctx", "row": s.row}) if spec == "rans-ctx" else coder_for(spec, 8)


def format_study(study: CoderStudy) -> str:
    """The study's table as plain text, one row per coder and bound."""
    lines = [f"{'coder':<32}{'layout':>7}{'codebook':>10}{'fixed width':>13}{'coded':>11}{'bits/w':>8}"
             f"{'code ratio':>11}{'model ratio':>12}"]
    w = max(study.weights, 1)
    for r in study.rows:
        lines.append(f"{r.label:<32}{r.layout:>7}{r.codebook_bytes:>10,}{r.fixed_bytes:>13,}{r.coded_bytes:>11,}"
                     f"{8 * r.coded_bytes / w:>8.3f}{r.code_ratio:>10.2f}x{study.model_ratio(r):>11.2f}x")
    lines.append(f"\n{study.tensors} shared tensors, {study.weights:,} of {study.numel:,} weights kept, "
                 f"{study.original_bytes:,} original bytes; LZ = zstd level {study.zstd_level}; "
                 "bits/w over kept weights; code ratio = fixed width / coded; "
                 "model ratio = original / (codebook + coded)")
    return "\n".join(lines)
