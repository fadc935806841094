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
from typing import TYPE_CHECKING

import numpy as np
import onnx

from onnxdc.calibrate import CalibratedTensor, calibrate, compress_alone, quantized_model
from onnxdc.errors import ConfigError
from onnxdc.evaluate import EvalResult, evaluate_candidate, prepare_reference
from onnxdc.prune import PruneConfig
from onnxdc.settings import Rule, SharingConfig
from onnxdc.sparse import relative_symbols
from onnxdc.streams import order0_entropy_bits

if TYPE_CHECKING:
    from onnxdc.pipeline import CompressResult

SPARSITIES = (0.0, 0.5, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97)
BITS = (8, 5, 4, 3)
Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class Budget:
    """What the compressed model must keep on the calibration set.

    Attributes:
        max_drop: top-1 fall in points (against labels, or agreement without labels).
        min_agreement: top-1 agreement with the original, as a fraction.
        min_cosine: mean cosine similarity of the outputs.
    """

    max_drop: float | None = None
    min_agreement: float | None = 0.995
    min_cosine: float | None = 0.999

    def __post_init__(self) -> None:
        if self.max_drop is not None and self.max_drop < 0:
            raise ConfigError(f"max drop must be >= 0 points, got {self.max_drop}")
        if self.min_cosine is not None and not -1 <= self.min_cosine <= 1:
            raise ConfigError(f"min cosine must be in [-1, 1], got {self.min_cosine}")

    def met(self, ev: EvalResult) -> bool:
        """Whether an evaluation on the calibration set is within the budget."""
        if self.max_drop is not None and (ev.top1_drop_points or 0.0) > self.max_drop + 1e-9:
            return False
        if self.min_agreement is not None and ev.agreement_top1 is not None \
                and ev.agreement_top1 < self.min_agreement:
            return False
        return not (self.min_cosine is not None and mean_cosine(ev) < self.min_cosine)

    def to_json(self) -> dict:
        return {"max_drop": self.max_drop, "min_agreement": self.min_agreement, "min_cosine": self.min_cosine}


def mean_cosine(ev: EvalResult) -> float:
    return float(np.mean([o.cosine for o in ev.outputs])) if ev.outputs else 1.0


@dataclass(frozen=True)
class Point:
    """One tensor at one setting, measured alone."""

    tensor: str
    sparsity: float
    bits: int
    est_bytes: int
    cosine: float
    agreement: float | None
    top1: float | None

    def to_json(self) -> dict:
        return {"tensor": self.tensor, "sparsity": self.sparsity, "bits": self.bits, "est_bytes": self.est_bytes,
                "cosine": self.cosine, "agreement": self.agreement, "top1": self.top1}


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
    n = min(max_samples, len(next(iter(data.values()))))
    n_check = max(1, int(round(n * check_fraction))) if n > 1 else 0
    fit = {k: v[:n - n_check] if n_check else v[:n] for k, v in data.items()}
    check = {k: v[n - n_check:n] if n_check else v[:n] for k, v in data.items()}
    return fit, check


def sensitivity(model: onnx.ModelProto, plans: dict, fit: dict[str, np.ndarray], check: dict[str, np.ndarray], *,
                sparsities: tuple[float, ...] = SPARSITIES, bits: tuple[int, ...] = BITS,
                progress: Progress | None = None) -> dict[int, list[Point]]:
    """Measure every planned tensor alone over ``sparsities`` × ``bits`` (slot -> points).

    Each tensor is fitted on ``fit`` and measured on ``check``.
    """
    from onnxdc.pipeline import tensor_label

    feed = fit
    ref = prepare_reference(model, check)
    total = len(plans) * len(sparsities) * len(bits)
    done = 0
    out: dict[int, list[Point]] = {}
    for slot, plan in plans.items():
        name = tensor_label(plan.candidate.ref)
        pts = []
        solver = compress_alone(model, plan, feed)
        for s in sparsities:
            for b in bits:
                p = replace(plan, settings=replace(plan.settings, prune=PruneConfig(sparsity=s),
                                                   share=replace(plan.settings.share, bits=b)), keep=None)
                ct = solver(p)
                ev = evaluate_candidate(ref, quantized_model(model, {slot: (p, ct)}))
                pts.append(Point(name, s, b, estimate_bytes(ct), mean_cosine(ev), ev.agreement_top1,
                                 ev.candidate_top1))
                done += 1
                if progress:
                    progress(done, total, name)
        out[slot] = pts
    return out


@dataclass(frozen=True)
class Choice:
    """The automatic settings and how they measured."""

    settings: dict[int, tuple[float, int]]  # slot -> (sparsity, bits)
    rules: tuple[Rule, ...]
    calibrated: dict[int, CalibratedTensor]
    evaluation: EvalResult | None  # None only when there was nothing to choose
    lam: float
    tried: int


def _best(pts: list[Point], lam: float) -> tuple[float, int]:
    best = min(pts, key=lambda p: (p.est_bytes + lam * max(0.0, 1.0 - p.cosine), -p.sparsity, p.bits))
    return best.sparsity, best.bits


def choose(model: onnx.ModelProto, plans: dict, fit: dict[str, np.ndarray], check: dict[str, np.ndarray],
           points: dict[int, list[Point]], *, budget: Budget, steps: int = 8,
           progress: Progress | None = None) -> Choice:
    """Search λ for the smallest settings whose layer-by-layer compression (fitted on ``fit``)
    meets ``budget`` on ``check``."""
    from onnxdc.pipeline import tensor_label

    feed = fit
    ref = prepare_reference(model, check)
    total_bytes = sum(max(p.est_bytes for p in pts) for pts in points.values()) or 1

    def trial(lam: float) -> tuple[bool, dict, dict, EvalResult]:
        picks = {slot: _best(pts, lam) for slot, pts in points.items()}
        sub = {slot: replace(plans[slot], keep=None,
                             settings=replace(plans[slot].settings, prune=PruneConfig(sparsity=s),
                                              share=replace(plans[slot].settings.share, bits=b)))
               for slot, (s, b) in picks.items()}
        cal = calibrate(model, sub, feed, max_samples=len(next(iter(feed.values()))))
        ev = evaluate_candidate(ref, quantized_model(model, {s: (sub[s], cal[s]) for s in sub}))
        return budget.met(ev), picks, cal, ev

    # λ in bytes per unit of (1 - cosine): from "bytes only" to "quality only", on a log scale.
    lo, hi = math.log10(total_bytes) - 3, math.log10(total_bytes) + 9
    best = None
    tried = 0
    ok, picks, cal, ev = trial(10 ** hi)
    tried += 1
    if not ok:
        # Even the most careful settings miss the budget: keep them, the caller reports it.
        return Choice(picks, _rules(plans, picks, tensor_label), cal, ev, 10 ** hi, tried)
    best = (picks, cal, ev, 10 ** hi)
    for _ in range(steps):
        mid = (lo + hi) / 2
        ok, picks, cal, ev = trial(10 ** mid)
        tried += 1
        if progress:
            progress(tried, steps + 1, f"lambda=1e{mid:.1f}")
        if ok:
            best, hi = (picks, cal, ev, 10 ** mid), mid
        else:
            lo = mid
    picks, cal, ev, lam = best
    return Choice(picks, _rules(plans, picks, tensor_label), cal, ev, lam, tried)


def _rules(plans: dict, picks: dict[int, tuple[float, int]], label: Callable) -> tuple[Rule, ...]:
    rules = []
    for slot, (s, b) in sorted(picks.items()):
        name = label(plans[slot].candidate.ref)
        rules.append(Rule(_escape_glob(name), {"sparsity": s, "bits": b}))
    return tuple(rules)


def _escape_glob(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[]" else c for c in name)


def recipe_toml(rules: tuple[Rule, ...], *, header: str = "") -> str:
    """Rules as a TOML recipe (the format :func:`onnxdc.settings.load_recipe` reads)."""
    lines = [f"# {line}" for line in header.splitlines()] + ([""] if header else [])
    for r in rules:
        lines.append("[[rule]]")
        lines.append(f"match = {_toml_str(r.match)}")
        for k, v in r.settings.items():
            lines.append(f"{k} = {_toml_str(v) if isinstance(v, str) else repr(v).lower() if isinstance(v, bool) else v}")
        lines.append("")
    return "\n".join(lines)


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


def compress_auto(model: onnx.ModelProto, *, base: SharingConfig, data: dict[str, np.ndarray], budget: Budget,
                  max_samples: int = 512, metadata: dict | None = None, zstd_level: int = 19, jobs: int = 1,
                  progress: Progress | None = None) -> AutoResult:
    """Measure sensitivity, choose per-tensor settings within ``budget``, and compress with them.

    If no setting meets the budget, every weight is stored losslessly instead (never a broken
    model), and ``budget_met`` is False.
    """
    from onnxdc.pipeline import CompressConfig, compress, plan_sharing

    plans = plan_sharing(model, base)
    if not plans:
        res = compress(model, config=CompressConfig(metadata=dict(metadata or {}), zstd_level=zstd_level, jobs=jobs))
        empty = Choice({}, (), {}, None, 0.0, 0)
        return AutoResult(res, empty, {}, base, True)
    fit, check = split(data, max_samples=max_samples)
    points = sensitivity(model, plans, fit, check, progress=progress)
    choice = choose(model, plans, fit, check, points, budget=budget, progress=progress)
    met = budget.met(choice.evaluation)
    meta = dict(metadata or {})
    meta["auto"] = {"budget": budget.to_json(), "budget_met": met, "lambda": choice.lam, "trials": choice.tried,
                    "fit_samples": len(next(iter(fit.values()))), "check_samples": len(next(iter(check.values()))),
                    "check_eval": choice.evaluation.to_json()}
    if not met:
        res = compress(model, config=CompressConfig(metadata=meta, zstd_level=zstd_level, jobs=jobs))
        return AutoResult(res, choice, points, base, False)
    sharing = auto_sharing(base, choice)
    n_fit = len(next(iter(fit.values())))
    # choose() already calibrated these exact settings on ``fit``: reuse it rather than redo it.
    res = compress(model, config=CompressConfig(sharing=sharing, calibration=fit, calib_samples=n_fit,
                                                metadata=meta, zstd_level=zstd_level, jobs=jobs),
                   calibrated=choice.calibrated)
    # Verify what was written, decoded from the container bytes, on the held-out samples.
    from onnxdc.pipeline import decompress

    verified = evaluate_candidate(prepare_reference(model, check), decompress(res.data))
    if not budget.met(verified):  # pragma: no cover - the same values were measured in choose()
        res = compress(model, config=CompressConfig(metadata={**meta, "auto": {**meta["auto"], "budget_met": False}},
                                                    zstd_level=zstd_level, jobs=jobs))
        return AutoResult(res, choice, points, base, False, verified)
    return AutoResult(res, choice, points, sharing, True, verified)
