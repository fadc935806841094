"""Per-tensor rate–distortion curves: the candidates the allocation chooses from.

Every compressible tensor gets a curve of points, each an entropy-constrained uniform
quantization (:mod:`onnxdc.stages.ecq`) at one step, from steps so coarse that nearly every weight
is zero down to 64 levels a side, half an octave apart, plus the exact tensor (stored losslessly)
as the most careful point. A point's distortion is the closed-form layer error ``tr(ΔWᵀ H ΔW)``
against the input statistics of :mod:`onnxdc.calibration.stats` (plain squared error for weights
without a linear form), and its rate the bytes the container's layouts would take, estimated from
the levels' histogram: Huffman over all levels (the ``dense`` layout, zero coded jointly) or
entropy-coded position gaps plus Huffman over the non-zero levels, whichever is smaller.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import zstandard

from onnxdc.calibration.linear import weight_matrices, weight_tensor
from onnxdc.calibration.stats import LayerStats
from onnxdc.coders.huffman import huffman_code_lengths, payload_bits
from onnxdc.coders.rans_ctx import RansCtxCoder
from onnxdc.stages.compensate import LayerProblem
from onnxdc.stages.ecq import (
    MAX_LEVEL,
    ROUND_CHUNK,
    STACK_ELEMENTS,
    centroids,
    code_lengths,
    ec_round,
    ec_sweep_many,
    initial_lengths,
    lam_for,
    layer_error,
    table_error,
    uniform_table,
)
from onnxdc.stages.positions import relative_histogram
from onnxdc.threads import single_blas_thread

#: The finest step gives the largest weight this many levels (7 bits a side): finer points are
#: never chosen, since their bytes grow as fast as their error falls, and each costs a sweep.
FINEST_LEVELS = 64
#: Curve points per octave of the step.
STEPS_PER_OCTAVE = 2
#: Octaves below the largest weight the coarsest step starts at.
FIRST_OCTAVE = 0.5
#: Deep Compression's k-means at these index widths are curve points too (κ = 0 marks them).
KMEANS_BITS = (2, 3, 4, 5, 6)
#: Dead-zone widths (κ) tried besides 1 at the WIDE_STEPS coarsest steps.
WIDE_KAPPAS = (16.0, 4.0)
KAPPAS = (1.0,)
WIDE_STEPS = 4
#: Values the code lengths of a tensor without statistics are estimated from, at most.
LENGTH_SAMPLE = 1 << 20
#: Bytes a stream's header entry and coder table cost on top of its payload (rate estimate only).
STREAM_OVERHEAD = 12


@dataclass(frozen=True, eq=False)
class CurvePoint:
    """One candidate for a tensor.

    Attributes:
        step: the quantizer step, 0 for the exact (lossless) point.
        est_bytes: estimated container bytes of the tensor.
        distortion: closed-form layer error of the point.
        packed: the integer levels (int8, the tensor's shape), zstd-packed: mostly zeros, a curve's
            dozens of points then cost a fraction of the tensor each; None for the exact point.
    """

    step: float
    est_bytes: int
    distortion: float
    packed: bytes | None
    shape: tuple[int, ...] = ()
    kappa: float = 1.0
    #: Every level's value (index ``level + MAX_LEVEL``); None: ``step · level``.
    values: np.ndarray | None = None

    @classmethod
    def of(cls, step: float, est_bytes: int, distortion: float, levels: np.ndarray | None, kappa: float = 1.0,
           values: np.ndarray | None = None) -> CurvePoint:
        if levels is None:
            return cls(step, est_bytes, distortion, None, (), kappa, values)
        packed = zstandard.ZstdCompressor(level=1).compress(np.ascontiguousarray(levels, np.int8).tobytes())
        return cls(step, est_bytes, distortion, packed, tuple(levels.shape), kappa, values)

    @property
    def levels(self) -> np.ndarray | None:
        if self.packed is None:
            return None
        raw = zstandard.ZstdDecompressor().decompress(self.packed, max_output_size=int(np.prod(self.shape)))
        return np.frombuffer(raw, dtype=np.int8).reshape(self.shape)

    def table(self) -> np.ndarray:
        return uniform_table(self.step) if self.values is None else self.values

    @property
    def exact(self) -> bool:
        return self.packed is None


@dataclass(frozen=True, eq=False)
class Curve:
    """A tensor's points, from the smallest to the exact one, and its output energy."""

    slot: int
    name: str
    energy: float
    points: list[CurvePoint]
    has_stats: bool = True
    #: Weights of the output columns' errors (:mod:`onnxdc.auto.blocks`); None: all alike.
    columns: np.ndarray | None = None


def level_bytes(levels: np.ndarray, *, codebook_itemsize: int = 4, row: int | None = None) -> int:
    """Estimated container bytes of a tensor quantized to ``levels`` (any shape, int8).

    With ``row`` (the tensor's row length, :func:`onnxdc.pipeline.shared.row_length`), the dense
    layout's context-modelled rANS is estimated too, where the automatic coder choice tries it.
    """
    flat = levels.reshape(-1)
    counts = np.zeros(2 * MAX_LEVEL + 1, dtype=np.int64)
    for s in range(0, flat.size, ROUND_CHUNK):  # an int64 copy of an embedding's levels is 92 MB
        counts += np.bincount(flat[s:s + ROUND_CHUNK].astype(np.intp) + MAX_LEVEL, minlength=2 * MAX_LEVEL + 1)
    nz = flat.size - int(counts[MAX_LEVEL])
    k = int(np.count_nonzero(counts)) - (1 if counts[MAX_LEVEL] else 0)
    codebook = k * codebook_itemsize
    if nz == 0:
        return STREAM_OVERHEAD + codebook

    def huff(c: np.ndarray) -> int:
        c = c[c > 0]
        if c.size <= 1:
            return 0
        return (payload_bits(c, huffman_code_lengths(c, 16)) + 7) // 8 + c.size

    dense = huff(counts)
    if row is not None and 1 < row < flat.size <= RansCtxCoder.auto_max_symbols:
        rank = np.cumsum(counts > 0) - 1  # dense symbols: zero is 0, the used levels 1..k in order
        symbols = (rank[flat.astype(np.int64) + MAX_LEVEL] + (0 if counts[MAX_LEVEL] else 1)).astype(np.uint8)
        symbols[flat == 0] = 0
        dense = min(dense, RansCtxCoder(row).estimate_size(symbols))
    nz_counts = counts.copy()
    nz_counts[MAX_LEVEL] = 0
    rel = relative_histogram(flat != 0, bits=8)
    gaps = math.ceil(_entropy_bits(rel) / 8) + 256 // 8
    sparse = gaps + huff(nz_counts) + STREAM_OVERHEAD
    return STREAM_OVERHEAD + codebook + min(dense, sparse)


def _entropy_bits(counts: np.ndarray) -> float:
    """:func:`order0_entropy_bits` of a stream known by its histogram alone."""
    n = int(counts.sum())
    if n == 0:
        return 0.0
    c = counts.astype(np.float64)
    return float(-(c[c > 0] * np.log2(c[c > 0] / n)).sum())


def exact_bytes(w: np.ndarray) -> int:
    """Bytes of a tensor stored losslessly (an upper bound: the byte planes usually code smaller)."""
    return int(w.nbytes) + STREAM_OVERHEAD


def steps_for(w: np.ndarray) -> list[tuple[float, float]]:
    """The curve's (step, κ) pairs, coarsest first: steps half an octave apart down to
    :data:`FINEST_LEVELS` levels a side at ECSQ's slope (κ = 1), and wider dead zones (larger κ)
    at the coarsest steps, where most weights become zero and the rate is mostly where the
    non-zero ones sit."""
    amax = float(np.max(np.abs(w))) if w.size else 0.0
    if amax == 0 or not math.isfinite(amax):
        return []
    out, k = [], 0
    while True:
        step = amax / 2 ** (FIRST_OCTAVE + k / STEPS_PER_OCTAVE)
        if amax / step > FINEST_LEVELS:
            return out
        out.extend((step, kappa) for kappa in (WIDE_KAPPAS if k < WIDE_STEPS else ()) + KAPPAS)
        k += 1


@single_blas_thread
def refit_target(h: np.ndarray, g: np.ndarray, w0: np.ndarray) -> np.ndarray:
    """``W* = argmin ||X W - X_ref W0||``, ridge-damped: the weights that map the inputs a layer
    sees once the layers before it are compressed to the outputs the original layer gave."""
    from onnxdc.stages.compensate import _damped

    try:
        return np.linalg.solve(_damped(h), g @ w0)
    except np.linalg.LinAlgError:
        return w0


def layer_energy(prob: LayerProblem, columns: np.ndarray | None) -> float:
    """The layer's output energy ``tr(W*ᵀ H W*)``, its columns weighed as its errors are."""
    if columns is None:
        return prob.energy
    return layer_error(np.zeros_like(prob.w_star), prob.w_star, prob.h, columns)


@single_blas_thread
def tensor_curve(slot: int, name: str, w: np.ndarray, stats: LayerStats | None, *, row: int | None = None,
                 columns: np.ndarray | None = None) -> Curve:
    """The rate–distortion curve of one tensor (``w`` in its own shape and dtype).

    ``columns`` (with statistics only) weighs each output column's error and divides its λ: the
    distortions are then the weighted layer errors (see :mod:`onnxdc.auto.blocks`)."""
    w32 = w.astype(np.float32)
    if stats is None:
        # No float64 copy of the tensor is kept (an embedding table's is 92 MB, and each whole
        # temporary as much again): the rounding and the errors go chunk by chunk.
        w0 = w32.astype(np.float64)
        energy = float(np.sum(w0 * w0))
        del w0
        pts = []
        # Code lengths come from a strided sample of at most LENGTH_SAMPLE values (an embedding
        # table has millions: the histogram's shape is all that is needed).
        sample = w32.reshape(-1)[::max(1, -(-w32.size // LENGTH_SAMPLE))].astype(np.float64)
        for step, kappa in steps_for(w32):
            lam = lam_for(step, None, kappa)
            lengths = code_lengths(np.bincount(ec_round(sample, step=step, lam=lam, lengths=initial_lengths([sample], step))
                                               .reshape(-1).astype(np.int64) + MAX_LEVEL,
                                               minlength=2 * MAX_LEVEL + 1))
            lv = ec_round(w32, step=step, lam=lam, lengths=lengths)
            table = centroids(w32, lv, step)  # without feedback, the weights' means lower the error
            pts.append(CurvePoint.of(step, level_bytes(lv, row=row), table_error(table, lv, w32), lv, kappa, table))
            del lv
    else:
        form = stats.form
        w0s = [m.astype(np.float64) for m in weight_matrices(form, w32)]
        if stats.g is None:
            probs = [LayerProblem(h, w0) for h, w0 in zip(stats.h, w0s)]
        else:  # statistics of a partly compressed model: quantize the refit W* = H⁻¹ G W0
            probs = [LayerProblem(h, refit_target(h, g, w0)) for h, g, w0 in zip(stats.h, stats.g, w0s)]
            w0s = [p.w_star for p in probs]
        energy = sum(layer_energy(p, columns) for p in probs)
        u_diag = np.concatenate([np.diag(p.u) for p in probs])
        pts = []
        specs = []
        for step, kappa in steps_for(w32):
            # Code lengths of rounding without feedback, then one GPTQ sweep with them.
            first = [ec_round(w0, step=step, lam=lam_for(step, None, kappa), lengths=initial_lengths(w0s, step))
                     for w0 in w0s]
            lengths = code_lengths(sum(np.bincount(f.reshape(-1).astype(np.int64) + MAX_LEVEL,
                                                   minlength=2 * MAX_LEVEL + 1) for f in first))
            lam = lam_for(step, u_diag, kappa)
            specs.append((step, kappa, lam if columns is None else lam / columns, lengths))
        # The points' sweeps a group at a time, side by side (the same levels as one sweep per
        # point): a group's levels are packed before the next is swept.
        per = max(1, STACK_ELEMENTS // max(w32.size, 1))
        for g in range(0, len(specs), per):
            group = specs[g:g + per]
            swept = [ec_sweep_many(p.w_star, p.u, points=[(st, lam, ln) for st, _, lam, ln in group]) for p in probs]
            for i, (step, kappa, _, _) in enumerate(group):
                lv_g = [levels[i] for levels in swept]
                dist = sum(layer_error(step * lv.astype(np.float64), p.w_star, p.h, columns) for lv, p in zip(lv_g, probs))
                lv = weight_tensor(form, [x.astype(np.int8) for x in lv_g], w32.shape).astype(np.int8)
                pts.append(CurvePoint.of(step, level_bytes(lv, row=row), dist, lv, kappa))
            del swept
        pts.extend(kmeans_points(w32, probs, form, row=row, columns=columns))
    if stats is None:
        pts.extend(kmeans_points(w32, None, row=row))
    pts.append(CurvePoint.of(0.0, exact_bytes(w), 0.0, None))
    pts.sort(key=lambda p: (p.est_bytes, p.distortion))
    return Curve(slot, name, energy, pts, stats is not None, None if stats is None else columns)


def kmeans_table(codebook: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A sorted, non-zero codebook as a level table: negative values at levels -n..-1, positive
    ones at 1..p (index ``level + MAX_LEVEL``); returns (table, level of each codebook entry)."""
    cb = np.asarray(codebook, np.float64)
    neg = int(np.count_nonzero(cb < 0))
    lv = np.concatenate([np.arange(-neg, 0), np.arange(1, cb.size - neg + 1)]).astype(np.int64)
    table = uniform_table(0.0)
    table[lv + MAX_LEVEL] = cb
    return table, lv


@single_blas_thread
def kmeans_points(w: np.ndarray, probs: list[LayerProblem] | None, form=None,  # noqa: ANN001
                  *, row: int | None = None, columns: np.ndarray | None = None) -> list[CurvePoint]:
    """Deep Compression's own sharing as curve points: k-means codebooks of 2**bits values for
    :data:`KMEANS_BITS`, every weight kept, GPTQ-rounded to the codebook where the layer has
    statistics (``probs`` and its linear ``form``). The allocation then never does worse than
    the paper's weight sharing on the same tensor."""
    from onnxdc.stages.compensate import obs_sweep
    from onnxdc.stages.quantize import ShareConfig, kmeans_1d

    flat = w.reshape(-1)
    nz = flat[flat != 0]
    out = []
    for bits in KMEANS_BITS:
        if nz.size <= (1 << bits):
            continue
        cb = kmeans_1d(nz, config=ShareConfig(bits=bits)).codebook.astype(np.float64)
        table, cb_levels = kmeans_table(cb)
        mids = (cb[:-1] + cb[1:]) / 2.0
        if probs is None:  # chunk by chunk: no float64 or int64 copy of a large table
            lv = np.empty(flat.size, dtype=np.int8)
            for s in range(0, flat.size, ROUND_CHUNK):
                lv[s:s + ROUND_CHUNK] = cb_levels[np.searchsorted(mids, flat[s:s + ROUND_CHUNK].astype(np.float64))]
            lv = lv.reshape(w.shape)
            dist = table_error(table, lv, w)
        else:
            groups, dist = [], 0.0
            for p in probs:
                wq, _ = obs_sweep(p.w_star, p.u, mask=np.ones(p.w_star.shape, bool), codebook=cb)
                groups.append(cb_levels[np.searchsorted(mids, wq)].astype(np.int8))
                dist += layer_error(wq, p.w_star, p.h, columns)
            lv = weight_tensor(form, groups, w.shape).astype(np.int8)
        # κ = 0 marks a fixed codebook: a refresh rounds to it again rather than to a step.
        out.append(CurvePoint.of(0.0, level_bytes(lv, row=row), dist, lv, 0.0, table))
    return out
