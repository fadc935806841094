"""The refresh: picked points requantized so that each layer absorbs the error of those before it.

A curve's points quantize the original weights against the original model's inputs; once the
layers before it are compressed, a layer sees other inputs. :func:`refresh` refits each layer,
in graph order, to the inputs it then sees (``W* = H⁻¹ G W0``, from statistics with a reference
model) and rounds it again at its pick's step, dead zone and code lengths.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import onnx

from onnxdc.auto.curves import Curve, CurvePoint
from onnxdc.calibration.samples import select
from onnxdc.calibration.stats import RowCache, collect_stats, settable
from onnxdc.memory import release_memory
from onnxdc.stages.ecq import MAX_LEVEL, level_values
from onnxdc.threads import single_blas_thread

#: Statistics passes of one refresh at most (consecutive layers share a pass beyond that).
REFRESH_PASSES = 4


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
        return level_values(self.table(), self.levels, dtype)


def plain_quantized(curve: Curve, i: int) -> Quantized:
    """Point ``i`` of a curve as it stands (no refresh)."""
    p = curve.points[i]
    return Quantized(p, p.distortion / curve.energy if curve.energy else 0.0)


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
        before = [t for t in out if t not in order[start:]]
        # Layers of one group share a statistics pass: each sees those of the group before it
        # at their curve points, the earlier groups refreshed.
        key = (tuple(group), tuple(sorted((t, picks[t]) for t in [*before, *group])))
        if memo is not None and key in memo:
            out.update(memo[key])
            continue
        n = max(((needed or {}).get(t) or 0) for t in group) or None
        replaced = _Weights({t: out[t] for t in [*before, *group]}, weights)
        # Set in the pass's own trimmed copy where they can be: no whole copy of the model besides.
        direct = settable(model, list(replaced))
        stats = collect_stats(model if direct else replaced_model(model, replaced), {t: plans[t] for t in group},
                              _subset(fit, n), seed=seed, reference=model, reference_cache=reference_cache,
                              replaced=replaced if direct else None)
        del replaced
        for t in group:
            out[t] = _requantize(out[t], stats[t], weights[t], curves[t].columns)
        del stats
        release_memory()  # the pass's sessions and model copy: the next group's stack on no free heap
        if memo is not None:
            memo[key] = {t: out[t] for t in group}
    return out


class _Weights(Mapping):
    """Slot -> a quantized tensor's weights, decoded when read: a statistics pass sets them one by
    one, and a model's worth of arrays is never held at once."""

    def __init__(self, quantized: dict[int, Quantized], originals: dict[int, np.ndarray]) -> None:
        self._q, self._dtypes = quantized, {t: originals[t].dtype for t in quantized}

    def __getitem__(self, slot: int) -> np.ndarray:
        return self._q[slot].weights(self._dtypes[slot])

    def __iter__(self) -> Iterator[int]:
        return iter(self._q)

    def __len__(self) -> int:
        return len(self._q)


@single_blas_thread
def _requantize(q: Quantized, st, w: np.ndarray, columns: np.ndarray | None = None) -> Quantized:  # noqa: ANN001
    """``q``'s step, dead zone and code lengths applied to the refit target of fresh statistics
    (``st``, a LayerStats), its output columns weighed as its curve's (``columns``)."""
    from onnxdc.auto.curves import layer_energy, refit_target
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
            err += layer_error(wq, prob.w_star, h, columns)
            energy += layer_energy(prob, columns)
        return Quantized.of(weight_tensor(st.form, groups, w.shape).astype(np.int8), q.step,
                         err / energy if energy > 0 else 0.0, q.kappa, q.values)
    lengths = code_lengths(np.bincount(q.levels.reshape(-1).astype(np.int64) + MAX_LEVEL, minlength=2 * MAX_LEVEL + 1))
    lv_g, err, energy = [], 0.0, 0.0
    for h, g, w0 in zip(st.h, st.g, w0s):
        prob = LayerProblem(h, refit_target(h, g, w0))
        lam = lam_for(q.step, np.diag(prob.u), q.kappa)
        lv = ec_sweep(prob.w_star, prob.u, step=q.step, lam=lam if columns is None else lam / columns, lengths=lengths)
        lv_g.append(lv)
        err += layer_error(q.step * lv.astype(np.float64), prob.w_star, h, columns)
        energy += layer_energy(prob, columns)
    return Quantized.of(weight_tensor(st.form, lv_g, w.shape).astype(np.int8), q.step,
                     err / energy if energy > 0 else 0.0, q.kappa)


def _subset(data: dict[str, np.ndarray], n: int | None) -> dict[str, np.ndarray]:
    """``n`` evenly spaced samples of ``data`` (all when ``n`` is None or not fewer)."""
    total = len(next(iter(data.values())))
    if n is None or n >= total:
        return data
    keep = np.linspace(0, total - 1, n).round().astype(np.int64)
    return select(data, keep)
