"""The allocation of the automatic mode: which point of its curve every tensor takes.

Each tensor takes the point minimizing ``bytes + λ · s · D``; λ moves along the distinct choices
(:class:`Path`, each tensor stepping along the lower convex hull of its curve), real trials
gallop and bisect to the smallest choice within the budget (:func:`search`, :func:`climb`), and
greedy moves off the hull, each checked by a real run, take the slack that is left
(:func:`refine`). The trials themselves are the caller's (:mod:`onnxdc.auto.engine`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from onnxdc.auto.budget import Budget, mean_cosine
from onnxdc.auto.curves import Curve
from onnxdc.auto.hull import lower_hull
from onnxdc.auto.refresh import Quantized
from onnxdc.evaluate import EvalResult

#: Real trials of the allocation at most (each is one run over the checking samples).
MAX_TRIALS = 12
#: Real trials of the greedy refinement after the path search, at most.
REFINE_TRIALS = 6


@dataclass(frozen=True)
class Path:
    """The distinct allocations along λ, from the most careful (0) to the smallest.

    Each tensor walks the lower convex hull of its (bytes, s·D) points; the allocations are the
    most careful picks plus one step of one tensor per event, in decreasing λ.
    """

    careful: dict[int, int]
    events: tuple[tuple[float, int, int], ...]  # (λ, slot, point taken below λ)

    def __len__(self) -> int:
        return len(self.events) + 1

    def picks(self, k: int) -> dict[int, int]:
        idx = dict(self.careful)
        for _, slot, j in self.events[:k]:
            idx[slot] = j
        return idx


def lagrangian_path(curves: dict[int, Curve], sens: dict[int, float]) -> tuple[Path, dict[int, list[float]]]:
    """The :class:`Path` of the curves under the sensitivities, and every point's predicted loss."""
    careful, events, losses = {}, [], {}
    for slot, c in curves.items():
        loss = [sens[slot] * p.distortion for p in c.points]
        losses[slot] = loss
        chain, lams = lower_hull([p.est_bytes for p in c.points], loss)
        careful[slot] = chain[-1]
        events.extend((lam, slot, j) for lam, j in zip(lams, chain[:-1]))
    events.sort(key=lambda e: (-e[0], e[1], e[2]))
    return Path(careful, tuple(events)), losses


def predicted(path: Path, losses: dict[int, list[float]]) -> list[float]:
    """Summed predicted loss of every allocation along the path."""
    idx = dict(path.careful)
    total = sum(losses[s][j] for s, j in idx.items())
    out = [total]
    for _, slot, j in path.events:
        total += losses[slot][j] - losses[slot][idx[slot]]
        idx[slot] = j
        out.append(total)
    return out


def search(path: Path, pred: list[float], trial, *, budget: Budget, max_trials: int = MAX_TRIALS) -> tuple[int, int]:  # noqa: ANN001
    """The largest allocation index that meets the budget in real trials (gallop, then bisect),
    assuming a more careful allocation never measures worse; returns (index, trials)."""
    results: dict[int, bool] = {}

    def ok(k: int) -> bool:
        if k not in results:
            results[k] = trial(k)
        return results[k]

    n = len(path)
    if budget.cosine_floor is not None:
        fits = [k for k, loss in enumerate(pred) if loss <= 1.0 - budget.cosine_floor]
        start = fits[-1] if fits else 0
    else:
        start = n // 2
    good, bad = -1, n
    if ok(start):
        good, step = start, 1
        while good + step < bad and len(results) < max_trials - 1:
            if not ok(good + step):
                bad = good + step
                break
            good, step = good + step, step * 2
        else:
            if good + step >= bad and good + 1 < bad and len(results) < max_trials - 1 and ok(bad - 1):
                good = bad - 1
    else:
        bad, step = start, 1
        while bad > 0 and len(results) < max_trials - 1:
            k = max(0, bad - step)
            if ok(k):
                good = k
                break
            bad, step = k, step * 2
    while good >= 0 and bad - good > 1 and len(results) < max_trials:
        mid = (good + bad) // 2
        if ok(mid):
            good = mid
        else:
            bad = mid
    return max(good, 0), len(results)


def climb(lo: int, hi: int, ok, *, max_trials: int) -> tuple[int | None, int]:  # noqa: ANN001
    """The largest ``i`` in ``lo..hi`` with ``ok(i)``, galloping up from ``lo`` then bisecting
    (``ok`` assumed to hold up to some threshold only); (None, trials) if ``ok(lo)`` fails."""
    trials = 1
    if not ok(lo):
        return None, trials
    good, bad, step = lo, hi + 1, 1
    while good + step < bad and trials < max_trials:
        trials += 1
        if not ok(good + step):
            bad = good + step
            break
        good, step = good + step, step * 2
    while bad - good > 1 and trials < max_trials:
        mid = (good + bad) // 2
        trials += 1
        if ok(mid):
            good = mid
        else:
            bad = mid
    return good, trials


@dataclass(frozen=True, eq=False)
class Outcome:
    """One allocation tried for real: the picks, the tensors as quantized, and how they measured."""

    picks: dict[int, int]
    quantized: dict[int, Quantized]
    evaluation: EvalResult | None
    met: bool


def refine(start: Outcome, curves: dict[int, Curve], losses: dict[int, list[float]],
           run: Callable[[dict[int, int]], Outcome], *, budget: Budget, boundary: float | None,
           max_trials: int = REFINE_TRIALS) -> Outcome:
    """Greedy steps off the Lagrangian path, each checked by a real run (``run``).

    The path only visits each curve's lower convex hull; between two hull points a tensor often
    has points the allocation could afford but λ never picks, and real losses differ from the
    predicted ones by a factor that the trials measure. Each step moves one tensor to the point
    saving the most bytes whose predicted loss, scaled by the measured real/predicted ratio, still
    fits the budget (or the smallest real loss seen to fail, for budgets without a cosine floor).
    """
    allowed = (1.0 - budget.cosine_floor) if budget.cosine_floor is not None else boundary
    failed: set[tuple[int, int]] = set()
    best_so_far = start
    for _ in range(max_trials):
        picks = best_so_far.picks
        real = 1.0 - mean_cosine(best_so_far.evaluation)
        pred = sum(losses[s][j] for s, j in picks.items())
        scale = real / pred if pred > 0 and real > 0 else 1.0
        move = None
        for s, c in curves.items():
            cur = c.points[picks[s]]
            for j, p in enumerate(c.points):
                saved = cur.est_bytes - p.est_bytes
                if saved <= 0 or (s, j) in failed:
                    continue
                extra = max(losses[s][j] - losses[s][picks[s]], 0.0) * scale
                if allowed is not None and real + extra > allowed:
                    continue
                key = (saved, -extra, -s, -j)
                if move is None or key > move[0]:
                    move = (key, s, j)
        if move is None:
            break
        _, s, j = move
        got = run({**picks, s: j})
        if got.met:
            best_so_far = got
        else:
            failed.add((s, j))
    return best_so_far
