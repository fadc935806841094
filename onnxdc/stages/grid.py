"""Recognizing a set of shared values as a uniform grid: integer levels times one float32 step.

A deployable model can carry such a tensor as int8 levels and a ``DequantizeLinear`` scale, which
onnxruntime multiplies back in float32: ``float32(level) * scale``, one rounding. So a grid is only
accepted when that product gives back every shared value exactly, or within one float32 rounding
(the codebook was stored as ``float32(step64 · level)``, which the product may miss by an ulp).
The automatic mode's entropy-constrained quantizer (:mod:`onnxdc.stages.ecq`) writes such grids;
k-means codebooks (and Lloyd-moved ECQ levels) almost never are, and stay what they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Largest |level| accepted (int8, symmetric: what the container's levels use).
MAX_LEVEL = 127
#: Neighbouring float32 steps tried around the least-squares step.
STEP_ULPS = 4


@dataclass(frozen=True, eq=False)
class Grid:
    """Shared values as ``scale · levels``.

    Attributes:
        scale: the float32 step.
        levels: each value's integer level (int8, same order as the values given).
        max_ulps: largest distance, in float32 ulps, between ``float32(level) * scale`` and the
            value (0: exact).
    """

    scale: np.float32
    levels: np.ndarray
    max_ulps: int


def fit_grid(values: np.ndarray, *, max_level: int = MAX_LEVEL, max_ulps: int = 1) -> Grid | None:
    """The grid ``values`` lie on, or None when there is none within ``max_ulps`` float32 ulps.

    Args:
        values: distinct finite float32 values (zero may be among them: level 0).
        max_level: the largest |level| allowed.
        max_ulps: how far, in float32 ulps, a dequantized value may be from its value.

    The step is searched as ``min |value| / a`` for ``a = 1..max_level`` (the smallest magnitude
    is some level times the step), the coarsest step that fits winning; each candidate's levels
    are rounded, the step refit by least squares and its float32 neighbours tried.
    """
    v = np.asarray(values, dtype=np.float32).reshape(-1)
    if v.size == 0 or not np.all(np.isfinite(v)):
        return None
    v = np.where(v == 0, np.float32(0), v)  # -0.0 dequantizes to +0.0: the same weight
    nz = v[v != 0].astype(np.float64)
    if nz.size == 0:
        return Grid(np.float32(1.0), np.zeros(v.size, np.int8), 0)
    smallest = float(np.min(np.abs(nz)))
    largest = float(np.max(np.abs(nz)))
    for a in range(1, max_level + 1):
        step = smallest / a
        if largest / step > max_level + 0.5:
            return None  # finer steps only need more levels
        n = np.rint(nz / step)
        if np.max(np.abs(nz / step - n)) > 1e-3:
            continue
        step = float(np.dot(n, nz) / np.dot(n, n))
        grid = _best_scale(v, step, max_level, max_ulps)
        if grid is not None:
            return grid
    return None


def _best_scale(v: np.ndarray, step: float, max_level: int, max_ulps: int) -> Grid | None:
    """The float32 scale near ``step`` whose products miss ``v`` by the fewest ulps."""
    s0 = np.float32(step)
    candidates = [s0]
    lo = hi = s0
    for _ in range(STEP_ULPS):
        lo = np.nextafter(lo, np.float32(-np.inf))
        hi = np.nextafter(hi, np.float32(np.inf))
        candidates += [lo, hi]
    best: Grid | None = None
    for s in candidates:
        if not s > 0:
            continue
        n = np.rint(v.astype(np.float64) / float(s))
        if np.max(np.abs(n)) > max_level:
            continue
        back = n.astype(np.float32) * s
        ulps = int(np.max(np.abs(back.view(np.int32).astype(np.int64) - v.view(np.int32).astype(np.int64))))
        if np.any(np.sign(back) != np.sign(v)):
            continue
        if ulps <= max_ulps and (best is None or ulps < best.max_ulps):
            best = Grid(np.float32(s), n.astype(np.int8), ulps)
            if ulps == 0:
                break
    return best
