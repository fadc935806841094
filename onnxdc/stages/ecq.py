"""Entropy-constrained uniform quantization with GPTQ error feedback: the automatic mode's quantizer.

Deep Compression prunes to a fixed sparsity and clusters the survivors into ``2**bits`` values,
which fixes the rate before the coder has had its say. Here the rate moves continuously: every
weight becomes an integer *level* times one step ``Δ`` per tensor, zero being a level like the
others, and each weight takes the level minimizing

    (w - Δ·c)² / u_rr²  +  λ · len(c)

where ``(w - Δ·c)² / u_rr²`` is what rounding it adds to the layer's output error (GPTQ: ``u`` is
the upper Cholesky factor of ``H⁻¹``, row ``r`` the weight's input) and ``len(c)`` the level's code
length in bits under the tensor's own level histogram. Pruning is then the zero level growing
wherever a weight's contribution is not worth its bits, the dead zone widening for the inputs the
layer barely uses; the error of each row is spread onto the rows not yet visited, as GPTQ does.

Two sweeps are run: the first with code lengths from plain rounding, the second with the lengths
the first produced, which is close to the fixed point (entropy-constrained scalar quantization's
usual alternation).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onnxdc.stages.compensate import sweep_rows
from onnxdc.threads import single_blas_thread

#: Largest |level|: levels and the zero fit the container's uint8 indices (2·127 shared values).
MAX_LEVEL = 127
#: Values rounded at once by :func:`ec_round`.
ROUND_CHUNK = 1 << 20
#: ECSQ's slope: a uniform quantizer of step Δ trades ``(ln 2 / 6)·Δ²`` of squared error per bit.
SLOPE = np.log(2.0) / 6.0


@dataclass(frozen=True, eq=False)
class Levels:
    """One tensor's groups quantized to ``step · levels``.

    Attributes:
        levels: per group, the integer levels (in × out, int8).
        step: the quantizer step Δ.
        distortion: Σ over groups of ``tr(ΔWᵀ H ΔW)`` against each group's target weights.
    """

    levels: list[np.ndarray]
    step: float
    distortion: float

    def histogram(self) -> np.ndarray:
        """Counts of every level ``-MAX_LEVEL..MAX_LEVEL`` (index ``level + MAX_LEVEL``)."""
        return sum((np.bincount(lv.reshape(-1).astype(np.int64) + MAX_LEVEL, minlength=2 * MAX_LEVEL + 1)
                    for lv in self.levels), np.zeros(2 * MAX_LEVEL + 1, np.int64))


def code_lengths(counts: np.ndarray) -> np.ndarray:
    """Bits per level from a histogram; unseen levels cost what one more occurrence would."""
    n = float(counts.sum())
    p = (counts + 0.5) / (n + 0.5 * counts.size)
    return -np.log2(p)


def initial_lengths(ws: list[np.ndarray], step: float) -> np.ndarray:
    """Code lengths of plain rounding to ``step``: where the alternation starts."""
    counts = sum((np.bincount(np.clip(np.rint(w / step), -MAX_LEVEL, MAX_LEVEL).astype(np.int64).reshape(-1)
                              + MAX_LEVEL, minlength=2 * MAX_LEVEL + 1) for w in ws),
                 np.zeros(2 * MAX_LEVEL + 1, np.int64))
    return code_lengths(counts)


def _round(row: np.ndarray, step: float, scale: float, lam: float | np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The level of each value of ``row`` minimizing ``(v - step·c)²/scale + lam·len(c)``.

    The candidates are the two levels around ``v/step`` and zero: a level beyond them costs more
    error and, with lengths growing away from zero, never fewer bits. Costs are compared in
    units of ``step²/scale`` (on ties zero wins, then the lower level).
    """
    x = row * (1.0 / step)
    lo = np.floor(x)
    np.clip(lo, -MAX_LEVEL, MAX_LEVEL, out=lo)
    hi = np.minimum(lo + 1, MAX_LEVEL)
    mu = lam * scale / (step * step)
    cost_lo = (x - lo) ** 2 + mu * lengths[lo.astype(np.int64) + MAX_LEVEL]
    cost_hi = (x - hi) ** 2 + mu * lengths[hi.astype(np.int64) + MAX_LEVEL]
    best = np.where(cost_hi < cost_lo, hi, lo)
    cost = np.minimum(cost_lo, cost_hi)
    return np.where(x * x + mu * lengths[MAX_LEVEL] <= cost, 0.0, best)


@single_blas_thread
def ec_sweep(w: np.ndarray, u: np.ndarray, *, step: float, lam: float | np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """One GPTQ sweep over the rows of ``w`` (in × out, float64) with entropy-constrained rounding.

    Returns the levels (in × out, int8). ``u`` is the upper Cholesky factor of ``H⁻¹``. ``lam``
    is one λ, or one per output column (columns whose error matters less pay more for bits).
    """
    w = w.astype(np.float64, copy=True)
    levels = np.zeros(w.shape, dtype=np.int8)

    def rounded(i: int, row: np.ndarray, d: float) -> np.ndarray:
        c = _round(row, step, d * d, lam, lengths)
        levels[i] = c
        return step * c

    sweep_rows(w, u, 0, w.shape[0], rounded)
    return levels


#: Weights (float64) the stacked copies of :func:`ec_sweep_many` hold at most: 32 MB.
STACK_ELEMENTS = 1 << 22


@single_blas_thread
def ec_sweep_many(w: np.ndarray, u: np.ndarray, *,
                  points: list[tuple[float, float | np.ndarray, np.ndarray]]) -> list[np.ndarray]:
    """:func:`ec_sweep` at several ``(step, lam, lengths)`` at once: the same levels, one sweep.

    A sweep's cost on small layers is its per-row Python and numpy overhead, not arithmetic; the
    copies of ``w`` for each point, side by side (in × out·P), share one pass over the rows. Every
    column's arithmetic is the one its own sweep does. Points go in groups of at most
    :data:`STACK_ELEMENTS` weights.
    """
    n_out = w.shape[1]
    per = max(1, STACK_ELEMENTS // max(w.size, 1))
    out: list[np.ndarray] = []
    for g in range(0, len(points), per):
        out += _sweep_group(w, u, points[g:g + per], n_out)
    return out


def _sweep_group(w: np.ndarray, u: np.ndarray, points: list[tuple[float, float | np.ndarray, np.ndarray]],
                 n_out: int) -> list[np.ndarray]:
    p = len(points)
    ws = np.tile(w.astype(np.float64), (1, p))
    steps = np.repeat(np.array([s for s, _, _ in points], dtype=np.float64), n_out)
    inv = np.repeat(np.array([1.0 / s for s, _, _ in points], dtype=np.float64), n_out)
    lams = np.concatenate([np.broadcast_to(np.asarray(lam, dtype=np.float64), (n_out,)) for _, lam, _ in points])
    table = np.concatenate([np.asarray(lengths, dtype=np.float64) for _, _, lengths in points])
    base = np.repeat(np.arange(p, dtype=np.int64) * (2 * MAX_LEVEL + 1), n_out) + MAX_LEVEL
    zero_len = table[base]
    levels = np.zeros(ws.shape, dtype=np.int8)

    def rounded(i: int, row: np.ndarray, d: float) -> np.ndarray:
        x = row * inv
        lo = np.floor(x)
        np.clip(lo, -MAX_LEVEL, MAX_LEVEL, out=lo)
        hi = np.minimum(lo + 1, MAX_LEVEL)
        mu = lams * (d * d) / (steps * steps)
        cost_lo = (x - lo) ** 2 + mu * table[lo.astype(np.int64) + base]
        cost_hi = (x - hi) ** 2 + mu * table[hi.astype(np.int64) + base]
        best = np.where(cost_hi < cost_lo, hi, lo)
        c = np.where(x * x + mu * zero_len <= np.minimum(cost_lo, cost_hi), 0.0, best)
        levels[i] = c
        return steps * c

    sweep_rows(ws, u, 0, ws.shape[0], rounded)
    return [levels[:, k * n_out:(k + 1) * n_out].copy() for k in range(p)]


def ec_round(w: np.ndarray, *, step: float, lam: float, lengths: np.ndarray) -> np.ndarray:
    """Entropy-constrained rounding without error feedback (identity ``H``), any shape; in chunks,
    so that an embedding table's temporaries stay a few megabytes."""
    flat = w.reshape(-1)
    out = np.empty(flat.size, dtype=np.int8)
    for s in range(0, flat.size, ROUND_CHUNK):
        out[s:s + ROUND_CHUNK] = _round(flat[s:s + ROUND_CHUNK].astype(np.float64), step, 1.0, lam, lengths)
    return out.reshape(w.shape)


def lam_for(step: float, u_diag: np.ndarray | None, kappa: float) -> float:
    """The rounding's λ for a step: ECSQ's slope ``κ·(ln 2/6)·Δ²``, in the layer error's units.

    With error feedback the error of a row counts ``1/u_rr²``; the median over rows puts λ on the
    scale of a typical row, so rows whose inputs matter less get a wider dead zone.
    """
    scale = 1.0 if u_diag is None or u_diag.size == 0 else float(np.median(u_diag ** 2))
    return kappa * SLOPE * step * step / max(scale, 1e-300)


def level_values(table: np.ndarray, levels: np.ndarray, dtype: np.dtype | type = np.float64) -> np.ndarray:
    """``table[levels + MAX_LEVEL]`` as ``dtype``, in chunks: an embedding table's levels would
    otherwise take an int64 index and a float64 copy each (16 bytes a weight) on the way."""
    lut = np.asarray(table).astype(dtype)
    flat = levels.reshape(-1)
    out = np.empty(flat.size, dtype=lut.dtype)
    for s in range(0, flat.size, ROUND_CHUNK):
        out[s:s + ROUND_CHUNK] = lut[flat[s:s + ROUND_CHUNK].astype(np.intp) + MAX_LEVEL]
    return out.reshape(levels.shape)


def table_error(table: np.ndarray, levels: np.ndarray, w: np.ndarray) -> float:
    """``Σ (table[levels] - w)²`` in float64 (the layer error without statistics), in chunks."""
    flat, wf = levels.reshape(-1), w.reshape(-1)
    total = 0.0
    for s in range(0, flat.size, ROUND_CHUNK):
        d = table[flat[s:s + ROUND_CHUNK].astype(np.intp) + MAX_LEVEL] - wf[s:s + ROUND_CHUNK].astype(np.float64)
        total += float(np.sum(d * d))
    return total


def uniform_table(step: float) -> np.ndarray:
    """Every level's value, ``step · level`` (index ``level + MAX_LEVEL``)."""
    return step * np.arange(-MAX_LEVEL, MAX_LEVEL + 1, dtype=np.float64)


def centroids(w: np.ndarray, levels: np.ndarray, step: float) -> np.ndarray:
    """Level values moved to the mean of the weights each level holds (Lloyd's update).

    The levels, hence the rate, stay; the squared error can only fall. Zero stays exactly zero,
    and the rounding never gives a level of the other sign, so the values stay signed, sorted
    and distinct; should rounding make two equal, the uniform values are kept.
    """
    idx = levels.reshape(-1).astype(np.int64) + MAX_LEVEL
    sums = np.bincount(idx, weights=np.asarray(w, np.float64).reshape(-1), minlength=2 * MAX_LEVEL + 1)
    counts = np.bincount(idx, minlength=2 * MAX_LEVEL + 1)
    table = uniform_table(step)
    used = counts > 0
    used[MAX_LEVEL] = False
    table[used] = sums[used] / counts[used]
    vals = table[used].astype(np.float32)
    if np.any(np.diff(vals) <= 0) or np.any(vals == 0):
        return uniform_table(step)
    return table


@single_blas_thread
def layer_error(w_hat: np.ndarray, w_star: np.ndarray, h: np.ndarray | None,
                columns: np.ndarray | None = None) -> float:
    """``tr((Ŵ-W*)ᵀ H (Ŵ-W*))`` (``H`` = identity when None): the closed-form layer error.

    ``columns`` (one weight per output column) weighs each output's error: the layer error as
    the outputs downstream feel it, when some outputs matter more (a recurrent op's gates).
    """
    d = w_hat.astype(np.float64) - w_star
    e = d * d if h is None else d * (h @ d)
    if columns is not None:
        e = e * columns
    return float(np.sum(e))
