"""Sensitivity analysis and automatic per-tensor settings.

``sensitivity`` measures, for every selected tensor alone (the rest of the model intact), how the
model's outputs on the calibration set degrade with sparsity and index bits, and estimates the
tensor's coded size at each point. ``choose`` then trades bytes for degradation with one Lagrange
multiplier λ — each tensor takes the point minimizing ``bytes + λ·(1 - cosine)`` — and searches λ
for the smallest model that still meets the budget when the whole model is compressed layer by
layer and measured for real. The chosen settings become recipe rules the user can edit and reuse.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from onnxdc.auto.budget import Budget, mean_cosine
from onnxdc.auto.hull import lower_hull
from onnxdc.calibration.calibrate import CalibratedTensor, calibrate, compress_alone, quantized_model
from onnxdc.calibration.samples import select
from onnxdc.errors import ConfigError, DataError, Notice
from onnxdc.evaluate import EvalResult, evaluate_candidate, prepare_reference
from onnxdc.pipeline.settings import Rule, SharingConfig
from onnxdc.pipeline.streams import order0_entropy_bits
from onnxdc.stages.positions import relative_symbols
from onnxdc.stages.prune import PruneConfig
from onnxdc.threads import single_blas_thread

if TYPE_CHECKING:
    from onnxdc.pipeline.encode import CompressResult

SPARSITIES = (0.0, 0.5, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97)
BITS = (8, 5, 4, 3, 2)
Progress = Callable[[int, int, str], None]
#: Automatic mode's default ``min_elements``. The manual default (1024) keeps small tensors exact
#: because nothing measures what sharing them costs; automatic mode measures every tensor and
#: every curve has the exact point, so it only leaves out tensors so small that a codebook and a
#: header entry outweigh what sharing could save (CRNN's 16- and 32-value conv biases: 106 bytes).
AUTO_MIN_ELEMENTS = 16
#: Points per tensor that automatic mode measures on the whole model; the rest are predicted.
MEASURED_POINTS = 3


@dataclass(frozen=True)
class Point:
    """One tensor at one setting, measured alone (or predicted from its layer's output error)."""

    tensor: str
    sparsity: float
    bits: int
    est_bytes: int
    cosine: float
    agreement: float | None
    top1: float | None
    rel_error: float = 0.0  # the layer's relative output error on the fitting samples
    measured: bool = True  # False: cosine predicted from rel_error, agreement and top1 unknown

    def to_json(self) -> dict:
        return {"tensor": self.tensor, "sparsity": self.sparsity, "bits": self.bits, "est_bytes": self.est_bytes,
                "cosine": self.cosine, "agreement": self.agreement, "top1": self.top1, "rel_error": self.rel_error,
                "measured": self.measured}


def estimate_bytes(ct: CalibratedTensor) -> int:
    """Coded size estimate: order-0 entropy of the position gaps and indices, plus the codebook."""
    pos = np.flatnonzero(ct.keep.reshape(-1))
    bits = order0_entropy_bits(relative_symbols(pos, bits=8)) + order0_entropy_bits(ct.clustering.indices)
    return int(math.ceil(bits / 8)) + ct.clustering.codebook.nbytes


def split(data: dict[str, np.ndarray], *, max_samples: int = 512,
          check_fraction: float = 0.25) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Split calibration data into a fitting part and a held-out checking part.

    Least squares on a few hundred samples can fit them almost exactly whatever is pruned, so a
    budget measured on the fitted samples says little about new data: settings are checked on
    samples the fitting never saw.
    """
    if max_samples < 1:
        raise ConfigError(f"max samples must be >= 1, got {max_samples}")
    counts = {len(v) for k, v in data.items() if k != "labels"}
    if len(counts) != 1:
        raise DataError(f"calibration data need arrays of one sample count, found "
                        f"{sorted(counts) if counts else 'no input arrays'}")
    n = min(max_samples, counts.pop())
    if n < 1:
        raise DataError("calibration data hold zero samples")
    n_check = max(1, int(round(n * check_fraction))) if n > 1 else 0
    fit = select(data, slice(0, n - n_check if n_check else n))
    check = select(data, slice(n - n_check, n) if n_check else slice(0, n))
    return fit, check


def _settings(plan, sparsity: float, bits: int):  # noqa: ANN001, ANN202 - WeightPlan
    return replace(plan, settings=replace(plan.settings, prune=PruneConfig(sparsity=sparsity),
                                          share=replace(plan.settings.share, bits=bits)), keep=None)


@single_blas_thread
def sensitivity(model: onnx.ModelProto, plans: dict, fit: dict[str, np.ndarray], check: dict[str, np.ndarray], *,
                sparsities: tuple[float, ...] = SPARSITIES, bits: tuple[int, ...] = BITS,
                measure: int | None = None, progress: Progress | None = None) -> dict[int, list[Point]]:
    """Measure every planned tensor alone over ``sparsities`` × ``bits`` (slot -> points).

    Each tensor is fitted on ``fit`` and measured on ``check``. A full-model measurement costs an
    onnxruntime session and a pass over ``check`` per point; with ``measure=K`` only K points per
    tensor are measured, spread over its range of layer output errors, and the others' output
    cosine is predicted from their layer error. For small errors the model's cosine deficit is
    proportional to the layer's relative output error (both are quadratic in the weight error), so
    one scale per tensor, fitted on the measured points, orders all of them; the final choice is
    checked for real anyway (:func:`choose`).
    """
    from onnxdc.pipeline.plan import tensor_label

    ref = prepare_reference(model, check)
    grid = [(s, b) for s in sparsities for b in bits]
    per_tensor = len(grid) if measure is None else len(grid) + min(measure, len(grid))
    total, done = len(plans) * per_tensor, 0
    out: dict[int, list[Point]] = {}
    for slot, plan in plans.items():
        name = tensor_label(plan.candidate.ref)
        solver = compress_alone(model, plan, fit)

        def measured(p: Point, ct: CalibratedTensor, slot: int = slot, plan=plan) -> Point:  # noqa: ANN001
            ev = evaluate_candidate(ref, quantized_model(model, {slot: (_settings(plan, p.sparsity, p.bits), ct)}))
            return replace(p, cosine=mean_cosine(ev), agreement=ev.agreement_top1, top1=ev.candidate_top1,
                           measured=True)

        pts = []
        for s, b in grid:
            ct = solver(_settings(plan, s, b))
            pt = Point(name, s, b, estimate_bytes(ct), 1.0, None, None, ct.rel_error, measured=False)
            pts.append(measured(pt, ct) if measure is None else pt)
            done += 1
            if progress:
                progress(done, total, name)
        if measure is not None:
            todo = _spread(pts, measure)
            while todo:
                i = todo.pop(0)
                pts[i] = measured(pts[i], solver(_settings(plan, pts[i].sparsity, pts[i].bits)))
                done += 1
                if progress:
                    progress(done, total, name)
                if not todo and not _ratios(pts):  # no scale yet: measure the largest error too
                    rest = [j for j, p in enumerate(pts) if not p.measured and p.rel_error > 0]
                    todo = [max(rest, key=lambda j: pts[j].rel_error)] if rest else []
            pts = _predict(pts)
        out[slot] = pts
    return out


def _spread(pts: list[Point], k: int) -> list[int]:
    """Indices of up to ``k`` points evenly spread over the log of their nonzero layer errors."""
    errs = np.array([p.rel_error for p in pts])
    pos = np.flatnonzero(errs > 0)
    if pos.size == 0 or k <= 0:
        return []
    logs = np.log(errs[pos])
    targets = np.linspace(logs.min(), logs.max(), k + 2)[1:-1] if k < pos.size else logs
    picked = dict.fromkeys(int(pos[np.argmin(np.abs(logs - t))]) for t in targets)
    return sorted(picked)


def _ratios(pts: list[Point]) -> list[float]:
    """log(cosine deficit / layer error) of the measured points where both are nonzero."""
    return [math.log(1.0 - p.cosine) - math.log(p.rel_error) for p in pts
            if p.measured and p.rel_error > 0 and p.cosine < 1.0]


def _predict(pts: list[Point]) -> list[Point]:
    """Unmeasured points' cosine from their layer error and the tensor's fitted scale.

    Without a ratio (every measured point left the outputs exact) the scale is 0; the caller
    measures the largest-error point first, so that 0 is measured, not guessed.
    """
    ratios = _ratios(pts)
    scale = math.exp(float(np.median(ratios))) if ratios else 0.0
    return [p if p.measured else replace(p, cosine=max(-1.0, 1.0 - scale * p.rel_error)) for p in pts]


@dataclass(frozen=True)
class Choice:
    """The automatic settings and how they measured."""

    settings: dict[int, tuple[float, int]]  # slot -> (sparsity, bits)
    rules: tuple[Rule, ...]
    calibrated: dict[int, CalibratedTensor]
    evaluation: EvalResult | None  # None only when there was nothing to choose
    lam: float
    tried: int


def _loss(p: Point) -> float:
    return max(0.0, 1.0 - p.cosine)


def _chain(pts: list[Point]) -> tuple[list[int], list[float]]:
    """One tensor's picks as λ grows: point indices from the smallest to the most careful, and the
    λ at which each next one takes over (the lower convex hull of bytes against cosine deficit).

    Each tensor takes the point minimizing ``bytes + λ·(1 - cosine)``; ties go to the smaller
    point, then the sparser, then the fewer bits.
    """
    def order(i: int) -> tuple:
        return (pts[i].est_bytes, _loss(pts[i]), -pts[i].sparsity, pts[i].bits)

    return lower_hull([p.est_bytes for p in pts], [_loss(p) for p in pts], key=order)


@dataclass(frozen=True)
class TradeOffs:
    """Every distinct choice of per-tensor settings along λ, from the most careful (index 0) to the
    smallest (index ``len - 1``).

    Going down in λ, one tensor at a time steps back along its own chain (:func:`_chain`), so the
    choices are the careful picks plus one event per step, sorted by λ: at most (points - 1) per
    tensor, however many tensors the model has.
    """

    careful: dict[int, int]  # slot -> point index at λ = ∞
    events: tuple[tuple[float, int, int], ...]  # (λ, slot, point index taken below λ), λ decreasing
    points: dict[int, list[Point]]

    def __len__(self) -> int:
        return len(self.events) + 1

    def picks(self, i: int) -> dict[int, tuple[float, int]]:
        idx = dict(self.careful)
        for _, slot, j in self.events[:i]:
            idx[slot] = j
        return {slot: (self.points[slot][j].sparsity, self.points[slot][j].bits) for slot, j in idx.items()}

    def lam(self, i: int) -> float:
        """A λ at which choice ``i`` is the optimum."""
        above = self.events[i - 1][0] if i else math.inf
        below = self.events[i][0] if i < len(self.events) else 0.0
        if math.isinf(above):
            return 2 * below if below else 1.0
        return math.sqrt(above * below) if below else above / 2

    def predicted_losses(self) -> list[float]:
        """Summed cosine deficits of the tensors' points, for every choice."""
        total = sum(_loss(self.points[s][j]) for s, j in self.careful.items())
        out = [total]
        idx = dict(self.careful)
        for _, slot, j in self.events:
            total += _loss(self.points[slot][j]) - _loss(self.points[slot][idx[slot]])
            idx[slot] = j
            out.append(total)
        return out


def trade_offs(points: dict[int, list[Point]]) -> TradeOffs:
    """The :class:`TradeOffs` of measured (or predicted) points."""
    careful: dict[int, int] = {}
    events: list[tuple[float, int, int]] = []
    for slot, pts in points.items():
        chain, lams = _chain(pts)
        careful[slot] = chain[-1]
        events.extend((lam, slot, j) for lam, j in zip(lams, chain[:-1]))
    events.sort(key=lambda e: (-e[0], e[1]))
    return TradeOffs(careful, tuple(events), points)


@single_blas_thread
def choose(model: onnx.ModelProto, plans: dict, fit: dict[str, np.ndarray], check: dict[str, np.ndarray],
           points: dict[int, list[Point]], *, budget: Budget, steps: int = 8, compensated: bool = True,
           progress: Progress | None = None) -> Choice:
    """Find the smallest settings along λ whose layer-by-layer compression (fitted on ``fit``)
    meets ``budget`` on ``check``, in at most ``steps`` real trials.

    The search starts where the summed (predicted) cosine deficits of the tensors reach the
    budget's, then gallops and bisects over the distinct choices of :func:`trade_offs`, assuming
    that a more careful choice never measures worse. Each trial calibrates the whole model layer
    by layer and evaluates it, so the start guess saves most of the cost when it is close.
    """
    from onnxdc.pipeline.plan import tensor_label

    ref = prepare_reference(model, check)
    path = trade_offs(points)
    results: dict[int, tuple[bool, EvalResult]] = {}
    kept: dict[int, dict[int, CalibratedTensor]] = {}  # the calibration of the smallest choice met (or of 0)

    def trial(i: int) -> bool:
        if i not in results:
            picks = path.picks(i)
            sub = {slot: _settings(plans[slot], s, b) for slot, (s, b) in picks.items()}
            cal = calibrate(model, sub, fit, max_samples=len(next(iter(fit.values()))), compensated=compensated)
            ev = evaluate_candidate(ref, quantized_model(model, {s: (sub[s], cal[s]) for s in sub}),
                                    metric=budget.metric, gates=budget.gates)
            results[i] = (budget.met(ev), ev)
            if i == 0 or (results[i][0] and all(j < i for j in kept if results[j][0])):
                kept.update({i: cal})
                for j in [j for j in kept if j not in (0, i)]:
                    del kept[j]  # a whole model's masks and indices each: keep two at most
            if progress:
                progress(len(results), steps, f"trial {len(results)}: choice {i + 1} of {len(path)}")
        return results[i][0]

    if budget.cosine_floor is not None:
        allowed = 1.0 - budget.cosine_floor
        fits = [i for i, loss in enumerate(path.predicted_losses()) if loss <= allowed]
        start = fits[-1] if fits else 0
    else:
        start = len(path) // 2
    good, bad = -1, len(path)  # path[good] met the budget, path[bad] did not
    if trial(start):
        good, step = start, 1
        while good + step < bad and len(results) < steps - 1:  # gallop towards smaller choices
            if not trial(good + step):
                bad = good + step
                break
            good, step = good + step, step * 2
    else:
        bad, step = start, 1
        while len(results) < steps - 1 and bad - step > good:
            i = max(0, bad - step)
            if trial(i):
                good = i
                break
            bad, step = i, step * 2
            if i == 0:
                break
    while bad - good > 1 and good >= 0 and len(results) < steps:
        mid = (good + bad) // 2
        if trial(mid):
            good = mid
        else:
            bad = mid
    if good < 0 and trial(0):
        good = 0
    i = max(good, 0)  # good < 0: even the most careful choice misses the budget; the caller reports it
    picks = path.picks(i)
    return Choice(picks, _rules(plans, picks, tensor_label), kept[i], results[i][1], path.lam(i), len(results))


def _rules(plans: dict, picks: dict[int, tuple[float, int]], label: Callable) -> tuple[Rule, ...]:
    rules = []
    for slot, (s, b) in sorted(picks.items()):
        name = label(plans[slot].candidate.ref)
        rules.append(Rule(_escape_glob(name), {"sparsity": s, "bits": b}))
    return tuple(rules)


def _escape_glob(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[]" else c for c in name)


def recipe_toml(rules: tuple[Rule, ...], *, header: str = "") -> str:
    """Rules as a TOML recipe (the format :func:`onnxdc.pipeline.settings.load_recipe` reads)."""
    lines = [f"# {line}" for line in header.splitlines()] + ([""] if header else [])
    for r in rules:
        lines.append("[[rule]]")
        for k, v in {**r.selector(), **r.settings}.items():
            lines.append(f"{k} = {_toml_value(v)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(v: Any) -> str:
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return _toml_str(v) if isinstance(v, str) else repr(v).lower() if isinstance(v, bool) else str(v)


def _toml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def auto_sharing(base: SharingConfig, choice: Choice) -> SharingConfig:
    """The sharing config that reproduces an automatic choice (base settings + per-tensor rules)."""
    return replace(base, sparsity=None, std_threshold=None, global_prune=False, rules=base.rules + choice.rules)


@dataclass(frozen=True)
class AutoResult:
    """An automatic compression: the container, the chosen settings, and how they measured."""

    result: CompressResult
    choice: Choice
    points: dict[int, list[Point]]
    sharing: SharingConfig
    budget_met: bool
    verified: EvalResult | None = None  # the written container, decoded and measured on the calibration set


@single_blas_thread
def compress_grid(model: onnx.ModelProto, *, base: SharingConfig, data: dict[str, np.ndarray], budget: Budget,
                  max_samples: int = 512, record: dict | None = None, zstd_level: int = 19, jobs: int = 1,
                  progress: Progress | None = None, notice: Notice | None = None) -> AutoResult:
    """The grid engine (before the rate–distortion engine of :mod:`onnxdc.auto.engine` replaced it as
    the automatic mode): measure sensitivity over sparsity × bits, choose per-tensor settings within
    ``budget`` by real layer-by-layer trials, and compress with them. Kept for benchmarks that
    compare the two.

    If no compensated setting meets the budget, the search is run again with plain magnitude
    pruning and k-means (layers fitted to the calibration samples may generalize worse); if none
    of those meets it either, every weight is stored losslessly (never a broken model), and
    ``budget_met`` is False.
    """
    from onnxdc.onnx_io.tensors import check_storable, has_data, iter_tensors
    from onnxdc.pipeline.encode import CompressConfig, compress
    from onnxdc.pipeline.plan import check_finite_weights, plan_sharing

    for ref in iter_tensors(model):  # refuse what compress() would refuse, before minutes of search
        if has_data(ref.proto):
            check_storable(ref.proto)
    plans = plan_sharing(model, base)
    check_finite_weights(plans)
    if not plans:
        res = compress(model, config=CompressConfig(record=dict(record or {}), zstd_level=zstd_level, jobs=jobs))
        empty = Choice({}, (), {}, None, 0.0, 0)
        return AutoResult(res, empty, {}, base, True)
    fit, check = split(data, max_samples=max_samples)
    points = sensitivity(model, plans, fit, check, measure=MEASURED_POINTS, progress=progress)
    choice = choose(model, plans, fit, check, points, budget=budget, progress=progress)
    compensated = budget.met(choice.evaluation)
    if not compensated:
        # Layers fitted on few or unrepresentative samples can do worse on new ones than plain
        # magnitude pruning and k-means: search again without fitting before giving up.
        choice = choose(model, plans, fit, check, points, budget=budget, compensated=False, progress=progress)
    met = budget.met(choice.evaluation)
    meta = dict(record or {})
    meta["auto"] = {"budget": budget.to_json(), "budget_met": met, "compensated": compensated,
                    "lambda": choice.lam, "trials": choice.tried,
                    "fit_samples": len(next(iter(fit.values()))), "check_samples": len(next(iter(check.values()))),
                    "check_eval": choice.evaluation.to_json()}
    if not met:
        res = compress(model, config=CompressConfig(record=meta, zstd_level=zstd_level, jobs=jobs))
        return AutoResult(res, choice, points, base, False)
    sharing = auto_sharing(base, choice)
    n_fit = len(next(iter(fit.values())))
    # choose() already calibrated these exact settings on ``fit``: reuse it rather than redo it.
    res = compress(model, config=CompressConfig(sharing=sharing, calibration=fit if compensated else None,
                                                calib_samples=n_fit, record=meta, zstd_level=zstd_level,
                                                jobs=jobs),
                   calibrated=choice.calibrated if compensated else None, notice=notice)
    # Verify what was written, decoded from the container bytes, on the held-out samples.
    from onnxdc.pipeline.decode import decompress

    # Our own container: no output/stored ratio ceiling (a large, nearly constant model exceeds it).
    verified = evaluate_candidate(prepare_reference(model, check), decompress(res.data, max_ratio=math.inf),
                                  metric=budget.metric, gates=budget.gates)
    if not budget.met(verified):  # pragma: no cover - the same values were measured in choose()
        res = compress(model, config=CompressConfig(record={**meta, "auto": {**meta["auto"], "budget_met": False}},
                                                    zstd_level=zstd_level, jobs=jobs))
        return AutoResult(res, choice, points, base, False, verified)
    return AutoResult(res, choice, points, sharing, True, verified)
