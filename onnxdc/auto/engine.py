"""The automatic mode: a rate–distortion allocation over every tensor, checked on held-out samples.

1. **Statistics**, one pass: every layer's input second moment ``H`` on the fitting samples
   (:mod:`onnxdc.calibration.stats`).
2. **Curves**: per tensor, entropy-constrained uniform quantizations at steps half an octave
   apart and several dead-zone widths, GPTQ-rounded against ``H``, Deep Compression's k-means at
   2-6 bits and the exact tensor, each with its closed-form layer error ``D`` and estimated bytes
   (:mod:`onnxdc.auto.curves`).
3. **Sensitivities**: one whole-model run per tensor (that tensor alone quantized, on the fitting
   samples) maps layer error to output fidelity: the outputs' cosine deficit is ``s · D`` for
   small errors (both are quadratic in the weight error).
4. **Allocation**: each tensor takes the point minimizing ``bytes + λ · s · D``; λ moves along the
   distinct choices (each tensor stepping along the lower convex hull of its curve) from the
   choice whose predicted deficit meets the budget, and real runs on the checking samples, which
   fitting never saw, gallop and bisect to the smallest choice that meets the budget. Refreshed
   trials (:func:`refresh`: each layer refit to the inputs it sees once the layers before it are
   compressed) then climb further along λ, and greedy moves off the hull (:func:`refine`), each
   checked by a real run, take the slack that is left.
5. **Encoding and verification**: the container is decoded and checked once more on the checking
   samples; should it miss, the choices before are encoded in turn, down to every tensor exact.

Deterministic: the same model, data and settings give the same bytes, whatever the thread counts.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import onnx

from onnxdc.auto.budget import Budget, mean_cosine
from onnxdc.auto.curves import Curve, CurvePoint, level_bytes, tensor_curve
from onnxdc.auto.hull import lower_hull
from onnxdc.auto.search import AutoResult, Choice, Progress, _escape_glob, auto_sharing, split
from onnxdc.auto.trials import TrialRunner
from onnxdc.calibration.calibrate import CalibratedTensor, weight_of
from onnxdc.calibration.stats import RowCache, collect_stats
from onnxdc.errors import Notice
from onnxdc.evaluate import EvalResult, compare, output_metrics, prepare_reference
from onnxdc.pipeline.settings import Rule, SharingConfig
from onnxdc.stages.ecq import MAX_LEVEL
from onnxdc.stages.quantize import Clustering
from onnxdc.threads import single_blas_thread

#: Relative layer error at which a tensor's sensitivity is first probed.
PROBE_ERROR = 1e-3
#: Real trials of the allocation at most (each is one run over the checking samples).
MAX_TRIALS = 12
#: Trials with refreshed layers (see :func:`refresh`) along the path, at most; 0 turns the refresh off.
REFRESH_TRIALS = 4
#: Statistics passes of one refresh at most (consecutive layers share a pass beyond that).
REFRESH_PASSES = 4
#: Real trials of the greedy refinement after the path search, at most.
REFINE_TRIALS = 6
#: Samples of the fitting split the sensitivities are measured on, at most.
SENSITIVITY_SAMPLES = 64
#: ... and at most this many input bytes, but never fewer than MIN_SENSITIVITY_SAMPLES samples.
SENSITIVITY_BYTES = 16 << 20
MIN_SENSITIVITY_SAMPLES = 8


def deficit(ref_outputs: list[np.ndarray], outputs: list[np.ndarray], samples: int) -> float:
    """``1 -`` the mean per-sample cosine of the worst output (what :attr:`Budget.min_cosine`
    judges): the fidelity loss the allocation adds up."""
    cos = [output_metrics("", r, c, samples=samples).cosine_mean for r, c in zip(ref_outputs, outputs)]
    return float(1.0 - min(cos)) if cos else 0.0


def dequantized(curve: Curve, i: int, dtype: np.dtype) -> np.ndarray | None:
    """Point ``i``'s weights (None for the exact point)."""
    return None if curve.points[i].exact else plain_quantized(curve, i).weights(dtype)


@single_blas_thread
def sensitivities(curves: dict[int, Curve], runner: TrialRunner, ref_outputs: list[np.ndarray],
                  dtypes: dict[int, np.dtype], progress: Progress | None = None) -> dict[int, float]:
    """Cosine deficit per unit of layer error, per tensor, from one or a few whole-model runs."""
    out = {}
    for done, (slot, c) in enumerate(curves.items(), 1):
        lossy = [i for i, p in enumerate(c.points) if not p.exact and p.distortion > 0]
        if progress:
            progress(done, len(curves), "sensitivity")
        if not lossy or c.energy <= 0:
            out[slot] = 0.0
            continue
        rel = np.array([c.points[i].distortion / c.energy for i in lossy])
        j = int(np.argmin(np.abs(np.log(rel) - math.log(PROBE_ERROR))))
        s = 0.0
        for _ in range(4):  # coarser while the outputs do not move measurably
            i = lossy[j]
            d = deficit(ref_outputs, runner.outputs({slot: dequantized(c, i, dtypes[slot])}), runner.n)
            s = max(d, 0.0) / c.points[i].distortion
            if d > 1e-7 or j == 0:
                break
            j = max(0, j - 2)
        out[slot] = s
    return out


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
    if budget.min_cosine is not None:
        fits = [k for k, loss in enumerate(pred) if loss <= 1.0 - budget.min_cosine]
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


@dataclass(frozen=True, eq=False)
class Quantized:
    """One tensor's final levels (zstd-packed, as curve points keep them: an allocation holds every
    tensor, and the search many allocations), and its relative layer error."""

    point: CurvePoint
    rel_error: float

    @classmethod
    def of(cls, levels: np.ndarray, step: float, rel_error: float, kappa: float = 1.0,
           values: np.ndarray | None = None) -> Quantized:
        return cls(CurvePoint.of(step, 0, 0.0, levels, kappa, values), rel_error)

    @property
    def levels(self) -> np.ndarray:
        return self.point.levels

    @property
    def step(self) -> float:
        return self.point.step

    @property
    def kappa(self) -> float:
        return self.point.kappa

    @property
    def values(self) -> np.ndarray | None:
        return self.point.values

    def table(self) -> np.ndarray:
        return self.point.table()

    def weights(self, dtype: np.dtype) -> np.ndarray:
        return self.table()[self.levels.astype(np.int64) + MAX_LEVEL].astype(dtype)


@single_blas_thread
def refresh(model: onnx.ModelProto, plans: dict, curves: dict[int, Curve], picks: dict[int, int],
            fit: dict[str, np.ndarray], weights: dict[int, np.ndarray], *, seed: int = 0,
            memo: dict | None = None, needed: dict[int, int] | None = None,
            max_passes: int = REFRESH_PASSES, reference_cache: RowCache | None = None) -> dict[int, Quantized]:
    """Requantize the picks layer by layer so that each layer absorbs the error of those before it.

    A curve's points quantize the original weights against the original model's inputs; once the
    layers before it are compressed, a layer sees other inputs. In graph order, each layer's ``H``
    and its cross moment ``G`` with the original inputs are collected on the fitting samples with
    every layer before it already requantized; ``W* = H⁻¹ G W0`` (the least-squares weights mapping
    the inputs it now sees to the outputs the original layer gave) is GPTQ-rounded at the pick's
    step, dead zone and code lengths. Deep models group consecutive layers into at most
    ``max_passes`` statistics passes (one session pair each); with ``memo``, a group whose picks
    and those before it were refreshed before is reused. ``needed``
    (slot -> samples) takes evenly spaced fitting samples, as many as give the layer its rows: a
    high-resolution convolution needs a few images, not all of them.
    """
    from onnxdc.auto.trials import replaced_model
    from onnxdc.calibration.calibrate import layer_of

    out: dict[int, Quantized] = {}
    for s, j in picks.items():
        p = curves[s].points[j]
        if not p.exact:
            out[s] = plain_quantized(curves[s], j)
    # Every layer is requantized, those reading graph inputs too: their target is then the damped
    # least-squares one, and their code lengths those of their own levels (one more alternation).
    order = sorted((s for s in out if curves[s].has_stats), key=lambda s: (layer_of(model, plans[s])[0], s))
    size = -(-len(order) // max_passes) if order else 1
    for start in range(0, len(order), size):
        group = order[start:start + size]
        before = {t: q.weights(weights[t].dtype) for t, q in out.items() if t not in order[start:]}
        # Layers of one group share a statistics pass: each sees those of the group before it
        # at their curve points, the earlier groups refreshed.
        key = (tuple(group), tuple(sorted((t, picks[t]) for t in [*before, *group])))
        if memo is not None and key in memo:
            out.update(memo[key])
            continue
        n = max(((needed or {}).get(t) or 0) for t in group) or None
        stats = collect_stats(replaced_model(model, {**before, **{t: out[t].weights(weights[t].dtype) for t in group}}),
                              {t: plans[t] for t in group}, _subset(fit, n), seed=seed, reference=model,
                              reference_cache=reference_cache)
        for t in group:
            out[t] = _requantize(out[t], stats[t], weights[t])
        if memo is not None:
            memo[key] = {t: out[t] for t in group}
    return out


@single_blas_thread
def _requantize(q: Quantized, st, w: np.ndarray) -> Quantized:  # noqa: ANN001 - LayerStats
    """``q``'s step, dead zone and code lengths applied to the refit target of fresh statistics."""
    from onnxdc.auto.curves import refit_target
    from onnxdc.calibration.linear import weight_matrices, weight_tensor
    from onnxdc.stages.compensate import LayerProblem
    from onnxdc.stages.ecq import code_lengths, ec_sweep, lam_for, layer_error

    w0s = [m.astype(np.float64) for m in weight_matrices(st.form, w.astype(np.float32))]
    if q.kappa == 0:  # a k-means codebook: GPTQ-round the refit target to the same values
        from onnxdc.stages.compensate import obs_sweep

        table = q.table()
        used = np.flatnonzero(np.bincount(q.levels.reshape(-1).astype(np.int64) + MAX_LEVEL,
                                          minlength=2 * MAX_LEVEL + 1))
        used = used[used != MAX_LEVEL]
        cb = table[used]
        mids = (cb[:-1] + cb[1:]) / 2.0
        groups, err, energy = [], 0.0, 0.0
        for h, g, w0 in zip(st.h, st.g, w0s):
            prob = LayerProblem(h, refit_target(h, g, w0))
            wq, _ = obs_sweep(prob.w_star, prob.u, mask=np.ones(w0.shape, bool), codebook=cb)
            groups.append((used[np.searchsorted(mids, wq)] - MAX_LEVEL).astype(np.int8))
            err += layer_error(wq, prob.w_star, h)
            energy += prob.energy
        return Quantized.of(weight_tensor(st.form, groups, w.shape).astype(np.int8), q.step,
                         err / energy if energy > 0 else 0.0, q.kappa, q.values)
    lengths = code_lengths(np.bincount(q.levels.reshape(-1).astype(np.int64) + MAX_LEVEL, minlength=2 * MAX_LEVEL + 1))
    lv_g, err, energy = [], 0.0, 0.0
    for h, g, w0 in zip(st.h, st.g, w0s):
        prob = LayerProblem(h, refit_target(h, g, w0))
        lv = ec_sweep(prob.w_star, prob.u, step=q.step, lam=lam_for(q.step, np.diag(prob.u), q.kappa), lengths=lengths)
        lv_g.append(lv)
        err += layer_error(q.step * lv.astype(np.float64), prob.w_star, h)
        energy += prob.energy
    return Quantized.of(weight_tensor(st.form, lv_g, w.shape).astype(np.int8), q.step,
                     err / energy if energy > 0 else 0.0, q.kappa)


def _subset(data: dict[str, np.ndarray], n: int | None) -> dict[str, np.ndarray]:
    """``n`` evenly spaced samples of ``data`` (all when ``n`` is None or not fewer)."""
    total = len(next(iter(data.values())))
    if n is None or n >= total:
        return data
    keep = np.linspace(0, total - 1, n).round().astype(np.int64)
    return {k: v[keep] for k, v in data.items()}


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
    allowed = (1.0 - budget.min_cosine) if budget.min_cosine is not None else boundary
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


def calibrated_tensor(q: Quantized, *, has_stats: bool) -> CalibratedTensor:
    """A quantized tensor as the container's shared form: a keep-mask, a codebook of the used
    non-zero levels times the step, and each kept weight's codebook index."""
    lv = q.levels
    keep = lv != 0
    used = np.flatnonzero(np.bincount(lv[keep].astype(np.int64) + MAX_LEVEL, minlength=2 * MAX_LEVEL + 1))
    codebook = q.table()[used].astype(np.float32)
    index_of = np.zeros(2 * MAX_LEVEL + 1, dtype=np.uint8)
    index_of[used] = np.arange(used.size, dtype=np.uint8)
    indices = index_of[lv.reshape(-1)[keep.reshape(-1)].astype(np.int64) + MAX_LEVEL]
    # Short: the header of a small model is a good part of its bytes (the step is the codebook's).
    return CalibratedTensor(keep, Clustering(codebook, indices), "rd" if has_stats else "rd, no layer statistics",
                            rel_error=q.rel_error)


def _rules(plans: dict, picks: dict[int, int], qs: dict[int, Quantized]) -> tuple[Rule, ...]:
    """Recipe rules recording each tensor's pick: ``lossless`` for exact points, else the zero
    fraction and the index width of its levels (a manual re-run with them is Deep Compression at
    those settings, not the same quantizer)."""
    from onnxdc.pipeline.plan import tensor_label

    rules = []
    for slot in sorted(picks):
        name = _escape_glob(tensor_label(plans[slot].candidate.ref))
        if slot not in qs:
            rules.append(Rule(name, {"lossless": True}))
            continue
        lv = qs[slot].levels
        nz = int(np.count_nonzero(lv))
        k = int(np.unique(lv[lv != 0]).size)
        rules.append(Rule(name, {"sparsity": min(round(1.0 - nz / lv.size, 2), 0.99),
                                 "bits": max(1, math.ceil(math.log2(k + 1)))}))
    return tuple(rules)


@single_blas_thread
def compress_rd(model: onnx.ModelProto, *, base: SharingConfig, data: dict[str, np.ndarray], budget: Budget,
                max_samples: int = 512, metadata: dict | None = None, zstd_level: int = 19, jobs: int = 1,
                refresh_trials: int = REFRESH_TRIALS, progress: Progress | None = None,
                notice: Notice | None = None) -> AutoResult:
    """Compress ``model`` with per-tensor quantizers chosen within ``budget`` (see the module doc)."""
    from onnxdc.onnx_io.tensors import check_storable, has_data, iter_tensors
    from onnxdc.pipeline.decode import decompress
    from onnxdc.pipeline.encode import CompressConfig, compress
    from onnxdc.pipeline.plan import check_finite_weights, plan_sharing, tensor_label
    from onnxdc.pipeline.shared import row_length

    for ref in iter_tensors(model):  # refuse what compress() would refuse, before any search
        if has_data(ref.proto):
            check_storable(ref.proto)
    # Every tensor has its exact point on its curve, so biases are candidates too: quantized where
    # the allocation finds them worth it (their bytes weigh on small models), exact otherwise.
    base = replace(base, include_bias=True)
    plans = plan_sharing(model, base)
    check_finite_weights(plans)
    meta = dict(metadata or {})
    if not plans:
        res = compress(model, config=CompressConfig(metadata=meta, zstd_level=zstd_level, jobs=jobs))
        return AutoResult(res, Choice({}, (), {}, None, 0.0, 0), {}, base, True)
    fit, check = split(data, max_samples=max_samples)
    stats = collect_stats(model, plans, fit, seed=base.seed, progress=progress)
    weights = {slot: weight_of(plan) for slot, plan in plans.items()}
    rows = {slot: row_length(weights[slot].shape, plan.candidate.op) for slot, plan in plans.items()}
    curves = {}
    for done, (slot, plan) in enumerate(plans.items(), 1):
        curves[slot] = tensor_curve(slot, tensor_label(plan.candidate.ref), weights[slot], stats.get(slot),
                                    row=rows[slot])
        if progress:
            progress(done, len(plans), "curves")
    needed = {slot: st.samples_needed for slot, st in stats.items()}
    del stats
    dtypes = {slot: w.dtype for slot, w in weights.items()}
    # Sensitivities are ratios, stable on a few samples; large inputs (a detector's images) get
    # fewer, so that a run per tensor stays cheap.
    per_sample = sum(v[:1].nbytes for k, v in fit.items() if k != "labels")
    n_sens = max(MIN_SENSITIVITY_SAMPLES, min(SENSITIVITY_SAMPLES, SENSITIVITY_BYTES // max(per_sample, 1)))
    sens_data = {k: v[:n_sens] for k, v in fit.items()}
    sens_runner = TrialRunner(model, list(plans), sens_data)
    sens = sensitivities(curves, sens_runner, sens_runner.outputs({}), dtypes, progress=progress)
    del sens_runner
    path, losses = lagrangian_path(curves, sens)
    pred = predicted(path, losses)
    ref = prepare_reference(model, check)
    runner = TrialRunner(model, list(plans), check)
    memo: dict = {}
    reference_cache = RowCache()
    trials = {"plain": 0, "refreshed": 0}
    total = MAX_TRIALS + (refresh_trials + REFINE_TRIALS if refresh_trials else REFINE_TRIALS)

    def run(picks: dict[int, int], refreshed: bool) -> Outcome:
        """Quantize (refreshed or not) and evaluate one allocation on the checking samples."""
        if refreshed:
            qs = refresh(model, plans, curves, picks, fit, weights, seed=base.seed, memo=memo, needed=needed,
                         reference_cache=reference_cache)
        else:
            qs = {s: plain_quantized(curves[s], j) for s, j in picks.items() if not curves[s].points[j].exact}
        ev = compare(ref, runner.outputs({s: q.weights(dtypes[s]) for s, q in qs.items()}), metric=budget.metric)
        trials["refreshed" if refreshed else "plain"] += 1
        if progress:
            progress(min(sum(trials.values()), total), total, "allocation")
        return Outcome(picks, qs, ev, budget.met(ev))

    outcomes: dict[tuple[int, bool], Outcome] = {}

    def on_path(k: int, refreshed: bool) -> bool:
        if (k, refreshed) not in outcomes:
            outcomes[k, refreshed] = run(path.picks(k), refreshed)
        return outcomes[k, refreshed].met

    # The plain search finds where the budget binds; the refreshed trials start there, since a
    # refresh only lowers the error of a choice (each layer refit to the inputs it now sees).
    k, _ = search(path, pred, lambda i: on_path(i, False), budget=budget)
    # Should the container miss the budget once decoded (it should not: the trials ran these very
    # weights), the choices before are encoded in turn, down to every tensor exact.
    options = [Outcome(path.picks(0), {}, None, True), outcomes[k, False]]
    refreshed = False
    if refresh_trials and options[-1].met and any(c.has_stats for c in curves.values()):
        best, _ = climb(k, len(path) - 1, lambda i: on_path(i, True), max_trials=refresh_trials)
        if best is not None and _bytes(outcomes[best, True].quantized, rows) < _bytes(options[-1].quantized, rows):
            options.append(outcomes[best, True])
            refreshed = True
    if options[-1].met and options[-1].evaluation is not None:
        failed = [1.0 - mean_cosine(o.evaluation) for o in outcomes.values() if not o.met]
        options.append(refine(options[-1], curves, losses, lambda p: run(p, refreshed), budget=budget,
                              boundary=min(failed) if failed else None))
    n_fit = len(next(iter(fit.values())))
    while True:
        best_outcome = options.pop()
        qs, picks = best_outcome.quantized, best_outcome.picks
        rules = _rules(plans, picks, qs)
        sharing = auto_sharing(base, Choice({}, rules, {}, None, 0.0, 0))
        lossy = {s: calibrated_tensor(q, has_stats=curves[s].has_stats) for s, q in qs.items()}
        auto_meta = {"engine": "rd", "budget": {k: v for k, v in budget.to_json().items() if v is not None},
                     "trials": dict(trials), "refreshed": refreshed,
                     "fit_samples": n_fit, "check_samples": len(next(iter(check.values())))}
        res = compress(model, config=CompressConfig(sharing=sharing, calibration=fit, calib_samples=n_fit,
                                                    metadata={**meta, "auto": auto_meta}, zstd_level=zstd_level,
                                                    jobs=jobs),
                       calibrated=lossy, notice=notice)
        verified = compare(ref, runner.outputs({}) if not lossy else _decoded_outputs(runner, res.data, decompress),
                           metric=budget.metric)
        if budget.met(verified) or not options:
            break
    tried = sum(trials.values())
    choice = Choice({s: (r.settings.get("sparsity", 0.0), r.settings.get("bits", 0)) for s, r in zip(sorted(picks), rules)},
                    rules, lossy, best_outcome.evaluation or verified, 0.0, tried)
    return AutoResult(res, choice, {}, sharing if lossy else base, budget.met(verified), verified)


@dataclass(frozen=True, eq=False)
class Outcome:
    """One allocation tried for real: the picks, the tensors as quantized, and how they measured."""

    picks: dict[int, int]
    quantized: dict[int, Quantized]
    evaluation: EvalResult | None
    met: bool


def plain_quantized(curve: Curve, i: int) -> Quantized:
    """Point ``i`` of a curve as it stands (no refresh)."""
    p = curve.points[i]
    return Quantized(p, p.distortion / curve.energy if curve.energy else 0.0)


def _bytes(qs: dict[int, Quantized], rows: dict[int, int]) -> int:
    return sum(level_bytes(q.levels, row=rows.get(s)) for s, q in qs.items())


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


def _decoded_outputs(runner: TrialRunner, data: bytes, decompress) -> list[np.ndarray]:  # noqa: ANN001
    """The outputs of the container's own decoded model on the runner's samples."""
    from onnxdc.evaluate import run_model, session

    return run_model(session(decompress(data, max_ratio=math.inf)), runner.feed)
