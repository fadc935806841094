"""Stage 1 of Deep Compression: magnitude pruning.

Three rules, as in Han et al. and their reference implementations:

* ``sparsity``: per tensor, drop exactly ``round(sparsity * n)`` weights of smallest magnitude
  (the count is exact and the result deterministic);
* ``std_threshold``: Han's rule, drop ``|w| < q * std(w)``;
* ``global``: one magnitude threshold across all selected tensors, so that ``sparsity`` of all
  their weights together are dropped — layers with many small weights lose more.

Pruned weights become exact zeros.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from onnxdc.errors import ConfigError


@dataclass(frozen=True)
class PruneConfig:
    """Pruning settings for one tensor (or, with ``global_``, for all of them).

    Attributes:
        sparsity: fraction of weights to drop, in [0, 1).
        std_threshold: drop weights below this multiple of the tensor's standard deviation.
        global_: apply ``sparsity`` as one threshold across all selected tensors.
    """

    sparsity: float | None = None
    std_threshold: float | None = None
    global_: bool = False

    def __post_init__(self) -> None:
        if self.sparsity is not None and not 0.0 <= self.sparsity < 1.0:
            raise ConfigError(f"sparsity must be in [0, 1), got {self.sparsity}")
        if self.std_threshold is not None and not (self.std_threshold >= 0 and np.isfinite(self.std_threshold)):
            raise ConfigError(f"std threshold must be a finite number >= 0, got {self.std_threshold}")
        if self.sparsity is not None and self.std_threshold is not None:
            raise ConfigError("choose one pruning rule: sparsity or std threshold, not both")
        if self.global_ and self.sparsity is None:
            raise ConfigError("global pruning needs a sparsity")

    @property
    def active(self) -> bool:
        """Whether this config prunes anything at all."""
        return bool(self.sparsity) or self.std_threshold is not None


def prune(w: np.ndarray, *, config: PruneConfig) -> np.ndarray:
    """Return a boolean mask of the weights that survive (True = kept) for one tensor.

    Weights that are already exactly zero never survive: they need no storage either way.
    """
    flat = np.abs(np.asarray(w, dtype=np.float32).reshape(-1))
    keep = flat != 0
    if config.std_threshold is not None:
        keep &= flat >= config.std_threshold * float(np.std(w, dtype=np.float64))
    elif config.sparsity:
        k = int(round(config.sparsity * flat.size))
        if k > 0:
            drop = _smallest(flat, k)
            keep[drop] = False
    return keep.reshape(np.shape(w))


def _smallest(mag: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` smallest magnitudes (exactly ``k``; deterministic for a given input)."""
    if k >= mag.size:
        return np.arange(mag.size)
    return np.argpartition(mag, k - 1)[:k]


def prune_global(weights: Sequence[np.ndarray], *, sparsity: float) -> list[np.ndarray]:
    """Masks for several tensors under one magnitude threshold hitting ``sparsity`` overall."""
    if not 0.0 <= sparsity < 1.0:
        raise ConfigError(f"sparsity must be in [0, 1), got {sparsity}")
    mags = [np.abs(np.asarray(w, dtype=np.float32).reshape(-1)) for w in weights]
    if not mags:
        return []
    allmag = np.concatenate(mags)
    k = int(round(sparsity * allmag.size))
    keep_all = allmag != 0
    if k > 0:
        keep_all[_smallest(allmag, k)] = False
    masks, start = [], 0
    for w, m in zip(weights, mags):
        masks.append(keep_all[start:start + m.size].reshape(np.shape(w)))
        start += m.size
    return masks
