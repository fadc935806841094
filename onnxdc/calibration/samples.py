"""Samples as the rest of onnxdc consumes them: every array with its samples on axis 0.

Real models do not all take their batch on axis 0: a streaming model's ``state`` may carry it on
axis 1, a scalar ``sr`` is one value for every sample, an exported OCR model takes exactly one
sample per run. Rather than teach every consumer (splitting, subsetting, statistics, trials,
evaluation) about each case, the data are kept in one canonical form, samples on axis 0 for
every array (a shared input broadcast, without copying, to one row per sample), and a
:class:`Layout` says how a batch of canonical rows becomes the model's feed. Only the two loops
that run onnxruntime sessions (:func:`onnxdc.evaluate.run_model` and
:func:`onnxdc.calibration.stats.collect_stats`) look at the layout; everything else slices axis 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from onnxdc.errors import DataError


@dataclass(frozen=True)
class Layout:
    """Where each model input takes its samples.

    Attributes:
        axes: the model's sample axis per input, for the inputs where it is not 0.
        shared: inputs fed unchanged to every batch (a sample rate, a flag): no sample axis in
            the model, one value for all samples.
    """

    axes: Mapping[str, int] = field(default_factory=dict)
    shared: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        object.__setattr__(self, "axes", dict(self.axes))
        object.__setattr__(self, "shared", frozenset(self.shared))
        both = sorted(set(self.axes) & self.shared)
        if both:
            raise DataError(f"input {both[0]!r} is given both a sample axis and as shared by every sample")
        bad = {k: v for k, v in self.axes.items() if v < 0}
        if bad:
            name, axis = next(iter(bad.items()))
            raise DataError(f"input {name!r}: sample axis must be >= 0, got {axis}")

    def __hash__(self) -> int:
        return hash((tuple(sorted(self.axes.items())), self.shared))

    def axis(self, name: str) -> int:
        """The model's sample axis of input ``name`` (0 unless told otherwise)."""
        return self.axes.get(name, 0)

    def to_model(self, name: str, part: np.ndarray) -> np.ndarray:
        """A batch of canonical rows of input ``name`` as the model takes it."""
        if name in self.shared:
            return np.ascontiguousarray(part[0])
        axis = self.axis(name)
        return part if axis == 0 else np.ascontiguousarray(np.moveaxis(part, 0, axis))

    def feed(self, batch: Mapping[str, np.ndarray], names: Iterable[str]) -> dict[str, np.ndarray]:
        """The model feed for the inputs ``names`` from a batch of canonical rows."""
        return {n: self.to_model(n, batch[n]) for n in names}

    def fixed_batch(self, inputs: Iterable[Any]) -> int | None:
        """The batch size a session's inputs fix (the literal at a sample axis, e.g. 1), or None.

        ``inputs`` are onnxruntime ``NodeArg``s (``name``, ``shape``); inputs absent from the data
        (weights fed as inputs) are for the caller to leave out.
        """
        fixed = []
        for i in inputs:
            if i.name in self.shared or not i.shape:
                continue
            axis = self.axis(i.name)
            dim = i.shape[axis] if axis < len(i.shape) else None
            if isinstance(dim, int) and dim > 0:
                fixed.append(dim)
        return min(fixed) if fixed else None


#: The layout of data that say nothing else: every input batched on axis 0.
PLAIN = Layout()


@dataclass(frozen=True, eq=False)
class Samples(Mapping[str, np.ndarray]):
    """Canonical data (samples on axis 0, optional ``labels``) with the layout that feeds them.

    A read-only mapping from input name to array, so code that reads a plain dict of arrays
    reads this too; code that builds a new selection of rows goes through :func:`select` so the
    layout stays with the data.
    """

    arrays: Mapping[str, np.ndarray]
    layout: Layout = PLAIN

    def __getitem__(self, key: str) -> np.ndarray:
        return self.arrays[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.arrays)

    def __len__(self) -> int:
        return len(self.arrays)


def layout_of(data: Mapping[str, np.ndarray]) -> Layout:
    """The layout ``data`` carry (:data:`PLAIN` for a plain dict)."""
    return data.layout if isinstance(data, Samples) else PLAIN


def like(data: Mapping[str, np.ndarray], arrays: dict[str, np.ndarray]) -> Mapping[str, np.ndarray]:
    """``arrays`` with the layout of ``data``: what every selection of rows returns."""
    return Samples(arrays, data.layout) if isinstance(data, Samples) else arrays


def select(data: Mapping[str, np.ndarray], index: slice | np.ndarray) -> Mapping[str, np.ndarray]:
    """The samples ``index`` (a slice or integer positions on axis 0) of every array of ``data``."""
    return like(data, {k: v[index] for k, v in data.items()})
