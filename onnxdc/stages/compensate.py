"""Pruning and weight sharing that keep a layer's output: OBS-style compensation and codebook refit.

Han et al. recover accuracy by retraining; without a training loop we use the layer's calibration
inputs instead. For one layer ``Y = X @ W`` (in × out), with ``X`` the inputs it sees once the
layers before it are compressed and ``T = X_ref @ W0`` the outputs of the original model:

1. **Refit**: ``W* = argmin ||X W - T||`` (ridge-damped least squares), which also absorbs the
   error the compressed layers upstream introduced. Then ``||X Ŵ - T||² = tr((Ŵ-W*)ᵀ H (Ŵ-W*)) +
   const`` with ``H = XᵀX``: every later step minimizes that quadratic form.
2. **Prune with compensation** (SparseGPT): rows of ``W`` (inputs) are visited in order; in each
   block the weights with the smallest saliency ``w² / [H⁻¹]ᵢᵢ`` are dropped, and each row's
   error is spread onto the rows not yet visited through the Cholesky factor of ``H⁻¹``.
3. **Share with compensation** (GPTQ onto a k-means codebook): the same sweep again from ``W*``
   with the mask fixed, rounding each surviving weight to its nearest shared value.
4. **Refit the codebook**: with the assignments fixed, the shared values that minimize the output
   error solve a small k × k least-squares system — trained quantization without training. It is
   kept only if it lowers the error (it always does, up to rounding, since the k-means values are
   one feasible point).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from onnxdc.dtypes import CODEBOOK_DTYPES
from onnxdc.stages.quantize import ShareConfig, kmeans_1d
from onnxdc.threads import one_blas_thread, single_blas_thread

BLOCK = 128
#: Rows updated one by one before a block product spreads their errors further (speed only).
SUB_BLOCK = 32
DAMP = 0.01
#: Work (rows × inputs²) above which problem() keeps a subset of the rows.
PROBLEM_FLOPS = 1e10
#: Work cap (sum of squared kept weights per column) of one refit, and the columns it keeps at least.
REFIT_BUDGET = 2e7
REFIT_MIN_COLUMNS = 128


@dataclass(frozen=True, eq=False)
class LayerProblem:
    """The quadratic form of one linear group: ``H = XᵀX`` and the refit target ``W*``."""

    h: np.ndarray  # in × in, float64
    w_star: np.ndarray  # in × out, float64

    @cached_property
    def u(self) -> np.ndarray:
        """Upper Cholesky factor of ``H⁻¹`` (computed once per layer, reused by every setting)."""
        return _inverse_cholesky(self.h)

    @cached_property
    def energy(self) -> float:
        """``tr(W*ᵀ H W*)``: the layer's output energy, the scale of a relative output error."""
        return float(np.sum(self.w_star * self.hw))

    @cached_property
    def hw(self) -> np.ndarray:
        """``H @ W*``, the right-hand side of the codebook refit."""
        with one_blas_thread():
            return self.h @ self.w_star


@dataclass(frozen=True)
class Compensated:
    """Result for one tensor's groups: masks, codebook, per-weight indices, and the errors."""

    weights: list[np.ndarray]  # final in × out matrices (codebook values and zeros)
    masks: list[np.ndarray]  # True = kept
    codebook: np.ndarray
    indices: list[np.ndarray]  # uint8 in × out (meaningful where mask)
    error_kmeans: float  # output error with the k-means values
    error_refit: float  # output error with the refit values (the one kept if smaller)


@single_blas_thread
def problem(x_q: np.ndarray, x_ref: np.ndarray, w0: np.ndarray, *, chunk: int = 65536) -> LayerProblem:
    """Accumulate ``H = XᵀX`` and ``G = XᵀX_ref`` in chunks and solve for the refit target ``W*``.

    A convolution unrolls into one row per output pixel, which can be far more rows than the
    statistics need: above :data:`PROBLEM_FLOPS` of work, evenly spaced rows are kept (at least
    four per input), so large layers cost seconds, not minutes.
    """
    d = x_q.shape[1]
    same = x_ref is x_q
    cap = max_rows(d)
    if x_q.shape[0] > cap:
        rows = np.linspace(0, x_q.shape[0] - 1, cap).round().astype(np.int64)
        x_q = x_q[rows]
        x_ref = x_q if same else x_ref[rows]
    h = np.zeros((d, d))
    g = None if same else np.zeros((d, d))
    for s in range(0, x_q.shape[0], chunk):
        xq = np.asarray(x_q[s:s + chunk], dtype=np.float64)
        h += xq.T @ xq
        if g is not None:
            g += xq.T @ np.asarray(x_ref[s:s + chunk], dtype=np.float64)
    if g is None:  # the layer sees the original inputs: G = H
        g = h
    c = g @ w0.astype(np.float64)
    hd = _damped(h)
    try:
        w_star = np.linalg.solve(hd, c)
    except np.linalg.LinAlgError:
        w_star = w0.astype(np.float64)
    return LayerProblem(h, w_star)


def max_rows(d: int) -> int:
    """Rows of a (rows × ``d``) input matrix that :func:`problem` uses at most."""
    return max(4 * d, int(PROBLEM_FLOPS // max(d * d, 1)))


def _damped(h: np.ndarray) -> np.ndarray:
    diag = np.diag(h)
    damp = DAMP * (float(diag.mean()) if diag.size and diag.mean() > 0 else 1.0)
    hd = h + damp * np.eye(h.shape[0])
    dead = diag == 0  # inputs that are always zero: any weight there is free
    hd[dead, dead] = 1.0
    return hd


@single_blas_thread
def _inverse_cholesky(h: np.ndarray) -> np.ndarray:
    """Upper Cholesky factor ``U`` of ``H⁻¹`` (``H⁻¹ = Uᵀ U``), as GPTQ uses it."""
    hd = _damped(h)
    for scale in (1.0, 10.0, 100.0, 1000.0):
        try:
            hinv = np.linalg.inv(hd if scale == 1.0 else hd + (scale - 1) * DAMP * np.mean(np.diag(hd)) * np.eye(hd.shape[0]))
            return np.linalg.cholesky(hinv).T
        except np.linalg.LinAlgError:
            continue
    return np.diag(1.0 / np.sqrt(np.maximum(np.diag(hd), 1e-12)))


@single_blas_thread
def obs_sweep(w: np.ndarray, u: np.ndarray, *, sparsity: float | None = None, mask: np.ndarray | None = None,
              codebook: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One SparseGPT/GPTQ sweep over the rows of ``w`` (in × out).

    With ``sparsity``, each block of rows drops that fraction of its weights by saliency; with
    ``mask``, the given weights are kept. With ``codebook`` (sorted), kept weights are rounded to
    their nearest shared value. Returns the new weights and the mask.
    """
    w = w.astype(np.float64).copy()
    n_in = w.shape[0]
    keep = np.ones_like(w, dtype=bool) if mask is None else mask.copy()
    mids = (codebook[:-1] + codebook[1:]) / 2.0 if codebook is not None and codebook.size else None
    for i1 in range(0, n_in, BLOCK):
        i2 = min(i1 + BLOCK, n_in)
        if sparsity:
            d = np.diag(u)[i1:i2, None]
            score = w[i1:i2] ** 2 / d ** 2
            k = int(round(sparsity * score.size))
            blk = np.ones(score.size, dtype=bool)
            if k:
                blk[np.argpartition(score.reshape(-1), k - 1)[:k]] = False
            keep[i1:i2] = blk.reshape(score.shape)

        def rounded(i: int, row: np.ndarray, _d: float) -> np.ndarray:
            q = codebook[np.searchsorted(mids, row)] if mids is not None else row.copy()
            return np.where(keep[i], q, 0.0)

        sweep_rows(w, u, i1, i2, rounded)
    return w, keep


def sweep_rows(w: np.ndarray, u: np.ndarray, lo: int, hi: int,
               rounded: Callable[[int, np.ndarray, float], np.ndarray]) -> None:
    """The GPTQ sweep of rows ``lo..hi`` of ``w`` (in × out, float64, in place): each row becomes
    ``rounded(index, row, u_rr)`` and its error is spread onto the rows not yet visited.

    Errors spread row by row inside sub-blocks of SUB_BLOCK rows and by one matrix product beyond
    them: the same arithmetic as a row-by-row sweep, with small per-row updates.
    """
    for j1 in range(lo, hi, SUB_BLOCK):
        j2 = min(j1 + SUB_BLOCK, hi)
        w1 = w[j1:j2]
        u1 = u[j1:j2, j1:j2]
        errs = np.zeros_like(w1)
        for r in range(j2 - j1):
            row = w1[r]
            q = rounded(j1 + r, row, u1[r, r])
            err = (row - q) / u1[r, r]
            w1[r] = q
            w1[r + 1:] -= np.outer(u1[r, r + 1:], err)
            errs[r] = err
        w[j2:] -= u[j1:j2, j2:].T @ errs


@single_blas_thread
def output_error(w_hat: np.ndarray, prob: LayerProblem) -> float:
    """``tr((Ŵ-W*)ᵀ H (Ŵ-W*))``: the layer's calibration output error, up to a constant."""
    d = w_hat - prob.w_star  # float64: in float32 a tiny error can come out negative
    return float(np.sum(d * (prob.h @ d)))


@single_blas_thread
def refit_codebook(probs: list[LayerProblem], idx: list[np.ndarray], masks: list[np.ndarray],
                   k: int) -> np.ndarray | None:
    """Shared values minimizing the summed output error for fixed assignments (None if singular).

    The normal equations are ``A c = b`` with ``A[k,l] = Σ_j Σ_{a,b} [idx[a,j]=k][idx[b,j]=l] H[a,b]``
    over kept weights; column by column only the kept rows of ``H`` are touched, so the cost is
    ``Σ_j nnz_j²`` rather than ``k · in² · out``. Evenly spaced output
    columns per group enter the system when the work would exceed ``REFIT_BUDGET`` (k ≤ 256 unknowns need
    far fewer equations than a dense layer gives); the caller
    keeps the refit only if it lowers the error over all columns.
    """
    a = np.zeros((k, k))
    b = np.zeros(k)
    for prob, ix, m in zip(probs, idx, masks):
        nnz = m.sum(axis=0).astype(np.float64)
        n_cols = ix.shape[1]
        cost = float((nnz ** 2).sum())
        if cost > REFIT_BUDGET:  # dense layers: evenly spaced columns, enough for the budget
            # ... and enough kept weights per shared value to pin it down.
            floor = max(REFIT_MIN_COLUMNS, int(np.ceil(64 * k * ix.shape[1] / max(nnz.sum(), 1.0))))
            n_cols = max(floor, int(ix.shape[1] * REFIT_BUDGET / cost))
        cols = np.unique(np.linspace(0, ix.shape[1] - 1, min(ix.shape[1], n_cols)).round().astype(np.int64))
        sub_m = m[:, cols]
        b += np.bincount(ix[:, cols][sub_m].astype(np.int64), weights=prob.hw[:, cols][sub_m], minlength=k)
        for j in cols:
            rows = np.flatnonzero(m[:, j])
            if rows.size == 0:
                continue
            lab = ix[rows, j].astype(np.int64)
            sub = prob.h[np.ix_(rows, rows)]
            a += np.bincount((lab[:, None] * k + lab[None, :]).reshape(-1), weights=sub.reshape(-1),
                             minlength=k * k).reshape(k, k)
    used = np.diag(a) > 0
    if not used.any():
        return None
    sol = np.zeros(k)
    sub_a = a[np.ix_(used, used)]
    try:
        sol[used] = np.linalg.solve(sub_a, b[used])  # A is a Gram matrix: solve, least squares if singular
    except np.linalg.LinAlgError:
        try:
            sol[used] = np.linalg.lstsq(sub_a, b[used], rcond=None)[0]
        except np.linalg.LinAlgError:
            return None
    return sol


@dataclass(frozen=True, eq=False)
class Pruned:
    """One tensor's groups after the pruning sweep: compensated weights and keep-masks."""

    weights: list[np.ndarray]
    masks: list[np.ndarray]


def prune_groups(probs: list[LayerProblem], *, sparsity: float) -> Pruned:
    """The pruning sweep of every group. It does not depend on the sharing settings, so one
    result serves every bit width tried at this sparsity."""
    sweeps = [obs_sweep(p.w_star, p.u, sparsity=sparsity) for p in probs]
    return Pruned([w for w, _ in sweeps], [m for _, m in sweeps])


@single_blas_thread
def compensate(probs: list[LayerProblem], *, sparsity: float, share: ShareConfig,
               pruned: Pruned | None = None) -> Compensated:
    """Prune, share and refit one tensor's groups (see the module docstring).

    ``pruned`` is :func:`prune_groups`' result for this ``sparsity``, when already at hand.
    """
    if pruned is None:
        pruned = prune_groups(probs, sparsity=sparsity)
    masks = pruned.masks
    survivors = np.concatenate([w[m] for w, m in zip(pruned.weights, masks)]).astype(np.float32)
    survivors = survivors[survivors != 0]
    cb_dtype = CODEBOOK_DTYPES[share.codebook_dtype]
    if survivors.size == 0:
        zeros = [np.zeros_like(p.w_star) for p in probs]
        empty = np.zeros(0, dtype=cb_dtype)
        err = sum(p.energy for p in probs)
        return Compensated(zeros, [np.zeros_like(m) for m in masks], empty,
                           [np.zeros(m.shape, np.uint8) for m in masks], err, err)
    codebook = kmeans_1d(survivors, config=share).codebook.astype(np.float64)
    finals, idxs = [], []
    for p, m in zip(probs, masks):
        wq, _ = obs_sweep(p.w_star, p.u, mask=m, codebook=codebook)
        finals.append(wq)
        idxs.append(_indices(wq, codebook))
    err_k = sum(output_error(w, p) for w, p in zip(finals, probs))
    refit = refit_codebook(probs, idxs, masks, codebook.size)
    best_cb, err_r = codebook, err_k
    if refit is not None and np.all(np.isfinite(refit.astype(cb_dtype))):  # float16 may overflow
        cand = refit.astype(cb_dtype).astype(np.float64)
        cand = np.where(cand == 0, codebook, cand)  # zero is never a shared value
        trial = [np.where(m, cand[ix], 0.0) for ix, m in zip(idxs, masks)]
        err_t = sum(output_error(w, p) for w, p in zip(trial, probs))
        if err_t <= err_k:
            best_cb, err_r, finals = cand, err_t, trial
    return Compensated(finals, masks, best_cb.astype(cb_dtype), idxs, err_k, err_r)


def _indices(wq: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    mids = (codebook[:-1] + codebook[1:]) / 2.0
    return np.searchsorted(mids, wq).astype(np.uint8)
