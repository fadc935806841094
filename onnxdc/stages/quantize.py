"""Stage 2 of Deep Compression: weight sharing by 1-D k-means.

Han et al. cluster each layer's surviving weights into ``2**bits`` shared values and store, per
weight, the index of its cluster. In one dimension k-means needs no generic clusterer: the clusters
of an optimal (and of every Lloyd) partition are contiguous runs of the sorted weights, so after one
sort each Lloyd iteration is a ``searchsorted`` of the midpoints between centroids plus cluster
sums from a prefix sum — O(k log n) per iteration instead of O(n k).

Zero stays exactly zero: pruned weights are not clustered, and a centroid that would round to zero
in the codebook dtype is moved to the nearest non-zero value of its cluster.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onnxdc.dtypes import CODEBOOK_DTYPES
from onnxdc.errors import ConfigError

INITS = ("linear", "density", "forgy")
#: Values assigned to their shared value at once.
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ShareConfig:
    """Weight-sharing settings for one tensor.

    Attributes:
        bits: index width; at most ``2**bits`` shared values (1..8).
        init: centroid initialization, one of the paper's ``linear`` (its best), ``density`` and
            ``forgy``.
        codebook_dtype: ``float32`` or ``float16`` storage of the shared values.
        max_iter: Lloyd iterations at most (it usually converges far sooner).
        seed: seed of ``forgy``'s random choice.
    """

    bits: int = 5
    init: str = "linear"
    codebook_dtype: str = "float32"
    max_iter: int = 300
    seed: int = 0

    def __post_init__(self) -> None:
        if not (isinstance(self.bits, int) and 1 <= self.bits <= 8):
            raise ConfigError(f"bits must be an integer in 1..8, got {self.bits!r}")
        if self.init not in INITS:
            raise ConfigError(f"unknown init {self.init!r}; choose one of {', '.join(INITS)}")
        if self.codebook_dtype not in CODEBOOK_DTYPES:
            raise ConfigError(f"codebook dtype must be float16 or float32, got {self.codebook_dtype!r}")


@dataclass(frozen=True)
class Clustering:
    """Result of k-means on one tensor's surviving weights.

    Attributes:
        codebook: the shared values (sorted, none zero) in the codebook dtype.
        indices: for each input value, the index of its shared value (uint8).
    """

    codebook: np.ndarray
    indices: np.ndarray

    def values(self) -> np.ndarray:
        """The quantized weights, ``codebook[indices]`` as float32."""
        return self.codebook.astype(np.float32)[self.indices]


def init_centroids(sorted_w: np.ndarray, k: int, method: str, *, seed: int = 0) -> np.ndarray:
    """Initial centroids for ``k`` clusters of the sorted values ``sorted_w`` (float64, sorted)."""
    lo, hi = float(sorted_w[0]), float(sorted_w[-1])
    if method == "linear":
        return np.linspace(lo, hi, k)
    if method == "density":
        # Equal steps along the CDF's y axis, mapped back through the empirical CDF.
        q = np.linspace(0.0, 1.0, k)
        return sorted_w[np.minimum((q * (sorted_w.size - 1)).round().astype(np.int64), sorted_w.size - 1)]
    if method == "forgy":
        uniq = np.unique(sorted_w)
        rng = np.random.default_rng(seed)
        return np.sort(rng.choice(uniq, size=min(k, uniq.size), replace=False))
    raise ConfigError(f"unknown init {method!r}")


def lloyd_sorted(sorted_w: np.ndarray, centroids: np.ndarray, *, max_iter: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """Run Lloyd's algorithm on sorted 1-D data.

    Returns the final centroids (sorted; empty clusters removed) and the cluster boundaries:
    cluster ``j`` is ``sorted_w[bounds[j]:bounds[j+1]]``.
    """
    prefix = np.empty(sorted_w.size + 1, dtype=np.float64)  # no second copy on the way
    prefix[0] = 0.0
    np.cumsum(sorted_w, dtype=np.float64, out=prefix[1:])
    c = np.sort(np.asarray(centroids, dtype=np.float64))
    bounds = None
    for _ in range(max(1, max_iter)):
        mids = (c[:-1] + c[1:]) / 2.0
        # Points equal to a midpoint go to the lower cluster (side="right"), as argmin would.
        new_bounds = np.concatenate([[0], np.searchsorted(sorted_w, mids, side="right"), [sorted_w.size]])
        if bounds is not None and np.array_equal(new_bounds, bounds):
            break
        bounds = new_bounds
        sizes = np.diff(bounds).astype(np.float64)
        sums = prefix[bounds[1:]] - prefix[bounds[:-1]]
        if not sizes.all():
            _relocate_empty(sorted_w, c, sizes, sums)
        c = np.sort(np.where(sizes > 0, sums / np.maximum(sizes, 1), c))
    sizes = np.diff(bounds)
    keep = sizes > 0
    c = c[keep]
    bounds = np.concatenate([[0], bounds[1:][keep]])
    return c, bounds


def _relocate_empty(sorted_w: np.ndarray, c: np.ndarray, sizes: np.ndarray, sums: np.ndarray) -> None:
    """Give each empty cluster the point farthest from its centroid (updates sizes and sums in place).

    This is scikit-learn's rule for Lloyd's algorithm: an empty cluster is wasted codebook space,
    while the worst-served point marks where another centroid reduces the error most.
    """
    empty = np.flatnonzero(sizes == 0)
    counts = sizes.astype(np.int64)
    labels = np.repeat(np.arange(c.size), counts)
    err = (sorted_w - c[labels]) ** 2
    n = min(empty.size, sorted_w.size)
    far = np.argpartition(err, -n)[:-n - 1:-1] if n else np.zeros(0, np.int64)
    for new_id, idx in zip(empty, far):
        old_id = labels[idx]
        sums[old_id] -= sorted_w[idx]
        sizes[old_id] -= 1
        sums[new_id] = sorted_w[idx]
        sizes[new_id] = 1


def share_kept(w: np.ndarray, keep: np.ndarray, *, config: ShareConfig) -> tuple[np.ndarray, Clustering]:
    """Weight-share the kept non-zero entries of ``w``: their flat positions (C order) and their
    k-means clustering. Zeros are never kept, whatever ``keep`` says.
    """
    flat = w.reshape(-1)
    pos = np.flatnonzero(keep.reshape(-1) & (flat != 0))
    return pos, kmeans_1d(flat[pos], config=config)


def kmeans_1d(values: np.ndarray, *, config: ShareConfig, k: int | None = None) -> Clustering:
    """Cluster non-zero ``values`` into at most ``k`` (default ``2**bits``) shared values.

    Raises:
        ConfigError: if ``values`` contains zeros or non-finite numbers.
    """
    v = np.asarray(values, dtype=np.float32).reshape(-1)
    cb_dtype = CODEBOOK_DTYPES[config.codebook_dtype]
    if v.size == 0:
        return Clustering(np.zeros(0, dtype=cb_dtype), np.zeros(0, dtype=np.uint8))
    if not np.all(np.isfinite(v)):
        raise ConfigError("cannot share weights that are NaN or infinite")
    sw = np.sort(v).astype(np.float64)
    k = (1 << config.bits) if k is None else k
    c0 = init_centroids(sw, min(k, sw.size), config.init, seed=config.seed)
    cents, bounds = lloyd_sorted(sw, c0, max_iter=config.max_iter)
    codebook = _safe_codebook(cents, sw, bounds, cb_dtype)
    # Assign each value to the nearest stored (rounded) centroid, so decode = codebook[index];
    # a value exactly between two centroids goes to the lower one.
    cb64 = codebook.astype(np.float64)
    mids = (cb64[:-1] + cb64[1:]) / 2.0
    indices = np.empty(v.size, dtype=np.uint8)
    for s in range(0, v.size, _CHUNK):  # no float64 and int64 copies of millions of values
        indices[s:s + _CHUNK] = np.searchsorted(mids, v[s:s + _CHUNK].astype(np.float64), side="left")
    return Clustering(codebook, indices)


def _safe_codebook(cents: np.ndarray, sw: np.ndarray, bounds: np.ndarray, dtype: type) -> np.ndarray:
    """Cast centroids to the codebook dtype, keeping them non-zero, sorted and distinct."""
    cb = cents.astype(dtype)
    for j in np.flatnonzero(cb == 0):
        members = sw[bounds[j]:bounds[j + 1]]
        far = members[np.argmax(np.abs(members))]
        cb[j] = dtype(far) if dtype(far) != 0 else np.copysign(np.finfo(dtype).smallest_subnormal, far)
    # Sorted and distinct (float16 rounding may merge neighbours). Deduplicate in float64:
    # numpy 2.4's np.unique returns unsorted duplicates for some float16 inputs.
    wide = np.sort(cb.astype(np.float64))
    wide = wide[np.concatenate([[True], np.diff(wide) > 0])] if wide.size else wide
    return wide.astype(dtype)


def inertia(values: np.ndarray, clustering: Clustering) -> float:
    """Within-cluster sum of squared errors of a clustering."""
    return float(((np.asarray(values, np.float64).reshape(-1) - clustering.codebook.astype(np.float64)[clustering.indices]) ** 2).sum())
