"""The automatic mode: a rate–distortion allocation over every tensor, checked on held-out samples.

1. **Statistics**, one pass: every layer's input second moment ``H`` on the fitting samples
   (:mod:`onnxdc.calibration.stats`).
2. **Curves**: per tensor, entropy-constrained uniform quantizations at steps half an octave
   apart and several dead-zone widths, GPTQ-rounded against ``H``, Deep Compression's k-means at
   2-6 bits and the exact tensor, each with its closed-form layer error ``D`` and estimated bytes
   (:mod:`onnxdc.auto.curves`). A recurrent op's W and R first get a weight per gate, from one
   noise run per gate (:mod:`onnxdc.auto.blocks`): their ``D`` weighs each gate's columns by it.
3. **Sensitivities**: one whole-model run per tensor (that tensor alone quantized, on the fitting
   samples) maps layer error to output fidelity: the outputs' cosine deficit is ``s · D`` for
   small errors (both are quadratic in the weight error).
4. **Allocation**: each tensor takes the point minimizing ``bytes + λ · s · D``; λ moves along the
   distinct choices (each tensor stepping along the lower convex hull of its curve) from the
   choice whose predicted deficit meets the budget, and real runs on the checking samples, which
   fitting never saw, gallop and bisect to the smallest choice that meets the budget
   (:mod:`onnxdc.auto.allocate`). Refreshed trials (:mod:`onnxdc.auto.refresh`: each layer refit
   to the inputs it sees once the layers before it are compressed) then climb further along λ,
   and greedy moves off the hull, each checked by a real run, take the slack that is left.
5. **Encoding and verification**: the container is decoded and checked once more on the checking
   samples; should it miss, the choices before are encoded in turn, down to every tensor exact.

Deterministic: the same model, data and settings give the same bytes, whatever the thread counts.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import onnx

from onnxdc.auto.allocate import MAX_TRIALS, REFINE_TRIALS, Outcome, climb, lagrangian_path, predicted, refine, search
from onnxdc.auto.blocks import gate_count, gate_weights
from onnxdc.auto.budget import Budget, mean_cosine
from onnxdc.auto.curves import Curve, level_bytes, tensor_curve
from onnxdc.auto.refresh import Quantized, plain_quantized, refresh
from onnxdc.auto.search import AutoResult, Choice, Progress, _escape_glob, auto_sharing, split
from onnxdc.auto.trials import TrialRunner
from onnxdc.calibration.calibrate import CalibratedTensor, weight_of
from onnxdc.calibration.samples import select
from onnxdc.calibration.stats import RowCache, collect_stats
from onnxdc.errors import Notice
from onnxdc.evaluate import compare, output_metrics, prepare_reference
from onnxdc.memory import bound_heap, release_memory
from onnxdc.pipeline.settings import Rule, SharingConfig
from onnxdc.stages.ecq import MAX_LEVEL
from onnxdc.stages.quantize import Clustering
from onnxdc.threads import single_blas_thread

#: Relative layer error at which a tensor's sensitivity is first probed.
PROBE_ERROR = 1e-3
#: Trials with refreshed layers (:mod:`onnxdc.auto.refresh`) along the path, at most; 0 turns the refresh off.
REFRESH_TRIALS = 4
#: Samples of the fitting split the sensitivities are measured on, at most.
SENSITIVITY_SAMPLES = 64
#: ... and at most this many input bytes, but never fewer than MIN_SENSITIVITY_SAMPLES samples.
SENSITIVITY_BYTES = 16 << 20
MIN_SENSITIVITY_SAMPLES = 8
#: Models from this size on map their large blocks on their own (:func:`onnxdc.memory.bound_heap`):
#: the 22M-parameter transformer's peak fell below 1.5 GB with it, while on LeNet-5 (250 KB) the
#: extra page faults cost 4 s of 15 and saved nothing.
BOUND_HEAP_BYTES = 32 << 20


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


def gate_columns(gated: dict[int, int], weights: dict[int, np.ndarray], runner: TrialRunner,
                 ref_outputs: list[np.ndarray], progress: Progress | None = None) -> dict[int, np.ndarray | None]:
    """Each recurrent weight's column weights (slot -> gates), from one run per gate."""
    def measure(replaced: dict[int, np.ndarray]) -> float:
        return deficit(ref_outputs, runner.outputs(replaced), runner.n)

    out = {}
    for done, (slot, n) in enumerate(gated.items(), 1):
        out[slot] = gate_weights(slot, weights[slot], n, measure)
        if progress:
            progress(done, len(gated), "gates")
    return out


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
                max_samples: int = 512, record: dict | None = None, zstd_level: int = 19, jobs: int = 1,
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
    meta = dict(record or {})
    if not plans:
        res = compress(model, config=CompressConfig(record=meta, zstd_level=zstd_level, jobs=jobs))
        return AutoResult(res, Choice({}, (), {}, None, 0.0, 0), {}, base, True)
    if model.ByteSize() >= BOUND_HEAP_BYTES:  # its temporaries are given back when freed, not kept in the heap
        bound_heap()
    fit, check = split(data, max_samples=max_samples)
    stats = collect_stats(model, plans, fit, seed=base.seed, progress=progress)
    release_memory()  # each phase's peak would otherwise stack on the free heap of those before
    weights = {slot: weight_of(plan) for slot, plan in plans.items()}
    rows = {slot: row_length(weights[slot].shape, plan.candidate.op) for slot, plan in plans.items()}
    dtypes = {slot: w.dtype for slot, w in weights.items()}
    # Sensitivities are ratios, stable on a few samples; large inputs (a detector's images) get
    # fewer, so that a run per tensor stays cheap.
    per_sample = sum(v[:1].nbytes for k, v in fit.items() if k != "labels")
    n_sens = max(MIN_SENSITIVITY_SAMPLES, min(SENSITIVITY_SAMPLES, SENSITIVITY_BYTES // max(per_sample, 1)))
    sens_data = select(fit, slice(0, n_sens))
    gated = {slot: n for slot, st in stats.items() if (n := gate_count(st.form, weights[slot].shape))}
    sens_runner = sens_ref = None
    columns: dict[int, np.ndarray | None] = {}
    if gated:  # a recurrent op's gates weigh their columns' errors (onnxdc.auto.blocks): a run per gate
        sens_runner = TrialRunner(model, list(plans), sens_data, originals=weights)
        sens_ref = sens_runner.outputs({})
        columns = gate_columns(gated, weights, sens_runner, sens_ref, progress)
    curves = {}
    for done, (slot, plan) in enumerate(plans.items(), 1):
        curves[slot] = tensor_curve(slot, tensor_label(plan.candidate.ref), weights[slot], stats.get(slot),
                                    row=rows[slot], columns=columns.get(slot))
        if progress:
            progress(done, len(plans), "curves")
    needed = {slot: st.samples_needed for slot, st in stats.items()}
    del stats
    release_memory()
    if sens_runner is None:
        sens_runner = TrialRunner(model, list(plans), sens_data, originals=weights)
        sens_ref = sens_runner.outputs({})
    sens = sensitivities(curves, sens_runner, sens_ref, dtypes, progress=progress)
    del sens_runner
    release_memory()
    path, losses = lagrangian_path(curves, sens)
    pred = predicted(path, losses)
    ref = prepare_reference(model, check)
    runner = TrialRunner(model, list(plans), check, originals=weights)
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
        ev = compare(ref, runner.outputs({s: q.weights(dtypes[s]) for s, q in qs.items()}), metric=budget.metric, gates=budget.gates)
        trials["refreshed" if refreshed else "plain"] += 1
        release_memory()
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
    memo.clear()
    reference_cache = None  # the refreshes' caches (a model's worth of rows): the encoding needs neither
    release_memory()
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
                                                    record={**meta, "auto": auto_meta}, zstd_level=zstd_level,
                                                    jobs=jobs),
                       calibrated=lossy, notice=notice, keep_values=False)
        verified = compare(ref, runner.outputs({}) if not lossy else _decoded_outputs(runner, res.data, decompress),
                           metric=budget.metric, gates=budget.gates)
        if budget.met(verified) or not options:
            break
    tried = sum(trials.values())
    choice = Choice({s: (r.settings.get("sparsity", 0.0), r.settings.get("bits", 0)) for s, r in zip(sorted(picks), rules)},
                    rules, lossy, best_outcome.evaluation or verified, 0.0, tried)
    return AutoResult(res, choice, {}, sharing if lossy else base, budget.met(verified), verified)


def _bytes(qs: dict[int, Quantized], rows: dict[int, int]) -> int:
    return sum(level_bytes(q.levels, row=rows.get(s)) for s, q in qs.items())


def _decoded_outputs(runner: TrialRunner, data: bytes, decompress) -> list[np.ndarray]:  # noqa: ANN001
    """The outputs of the container's own decoded model on the runner's samples."""
    from onnxdc.evaluate import run_model, session

    return run_model(session(decompress(data, max_ratio=math.inf)), runner.feed)
