"""The lower convex hull of one tensor's (bytes, loss) points: its picks as λ grows.

Each tensor takes the point minimizing ``bytes + λ·loss``; as λ grows from 0 the pick moves from
the smallest point to the most careful one, through the hull's vertices only. Both engines (the
rate–distortion one and the grid search) walk these chains.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence


def lower_hull(bytes_: Sequence[float], loss: Sequence[float], *,
               key: Callable[[int], tuple] | None = None) -> tuple[list[int], list[float]]:
    """Indices of the hull from the smallest point to the most careful, and the λ at which each
    next one takes over.

    Ties go by ``key`` (default: fewer bytes, then less loss): it picks the starting point, and
    at the same λ the most careful point wins, then the one ``key`` orders first.
    """
    if key is None:
        def key(i: int) -> tuple:
            return (bytes_[i], loss[i])

    cur = min(range(len(bytes_)), key=key)
    chain, lams = [cur], []
    while True:
        best, best_lam = None, math.inf
        for i in range(len(bytes_)):
            dl = loss[cur] - loss[i]
            if dl <= 0:
                continue
            lam = max(0.0, (bytes_[i] - bytes_[cur]) / dl)
            if lam < best_lam or (lam == best_lam and (loss[i], key(i)) < (loss[best], key(best))):
                best, best_lam = i, lam
        if best is None:
            return chain, lams
        chain.append(best)
        lams.append(best_lam)
        cur = best
