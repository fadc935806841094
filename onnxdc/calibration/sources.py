"""Calibration and evaluation data as users have them, made :class:`~onnxdc.calibration.samples.Samples`.

Sources, read in one way: each gives chunks (a dict of arrays, in the model's own layout), read
one after another until the samples wanted are there, so only the samples used are read:

* an ``.npz`` keyed by input name (plus optional ``labels``), or a plain ``.npy`` for a model
  with one input: one chunk, its first rows read alone (:mod:`onnxdc.calibration.data`);
* a folder of such files, taken in name order: each file one sample or a batch (below);
* from Python, a dict of arrays, or any iterable of input dicts (an onnxruntime
  ``CalibrationDataReader``, whose ``get_next()`` returns dicts and then None, works as is).

In a chunk, an input's array with the model's rank is a batch, its samples on the input's sample
axis (0 unless :class:`Layout` says otherwise); one rank less is one sample. A shared input (one
the layout names, or one the model declares with rank 0) is one value for every sample: given
once, or once per sample with equal values.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnxdc.calibration.data import (
    MAX_DATA_BYTES,
    InputSpec,
    ReadBudget,
    fit_to_model,
    input_specs,
    read_arrays,
)
from onnxdc.calibration.samples import PLAIN, Layout, Samples, select
from onnxdc.errors import DataError, Notice

#: Files a data folder may hold (names listed, not read).
MAX_FILES = 1 << 20
_SUFFIXES = (".npy", ".npz")

#: A path (a file or a folder), a dict of arrays, an iterable of input dicts, or an object whose
#: ``get_next()`` gives input dicts and then None (onnxruntime's ``CalibrationDataReader``).
Source = Any


def resolve_layout(specs: list[InputSpec], layout: Layout) -> Layout:
    """``layout`` checked against the model's inputs, completed from the graph: rank-0 inputs are
    shared, and an input whose batch dimension is not on axis 0 takes its samples there.

    The batch dimension is the symbol other inputs have on axis 0 (``N`` of ``x [N, 16]``): a
    ``state [2, N, 8]`` has its samples on axis 1. Inputs the layout names keep what it says.
    """
    names = [s.name for s in specs]
    for name in [*layout.axes, *sorted(layout.shared)]:
        if name not in names:
            raise DataError(f"input {name!r} named for its sample axis or as shared is not a model input "
                            f"(inputs: {', '.join(map(repr, names))})")
    for spec in specs:
        axis = layout.axes.get(spec.name)
        if axis is not None and spec.dims is not None and axis >= len(spec.dims):
            raise DataError(f"input {spec.name!r} has rank {len(spec.dims)} in the model; sample axis {axis} "
                            f"is out of range")
    scalars = {s.name for s in specs if s.dims == () and s.name not in layout.axes}
    return Layout({**_graph_axes(specs, layout), **layout.axes}, layout.shared | scalars)


def _graph_axes(specs: list[InputSpec], layout: Layout) -> dict[str, int]:
    """Sample axes the graph shows: the one axis > 0 carrying the batch symbol, where axis 0 does not."""
    batch = {s.params[0] for s in specs if s.params and s.params[0]}
    found = {}
    for s in specs:
        if not s.params or s.name in layout.axes or s.name in layout.shared or s.params[0] in batch:
            continue
        hits = [k for k, p in enumerate(s.params) if k and p in batch]
        if len(hits) == 1:
            found[s.name] = hits[0]
    return found


def load_samples(source: Source, *, model: onnx.ModelProto, max_samples: int | None = None,
                 layout: Layout = PLAIN, max_bytes: int = MAX_DATA_BYTES, notice: Notice | None = None) -> Samples:
    """The first ``max_samples`` samples of ``source``, canonical and checked against ``model``.

    Raises:
        DataError: the source is unreadable or empty, its chunks disagree (names, shapes), or the
            data do not fit the model's inputs (see :func:`onnxdc.calibration.data.fit_to_model`).
    """
    if isinstance(source, Samples):  # already read and checked: its own layout, not ``layout``
        return source if max_samples is None else select(source, slice(0, max_samples))
    specs = input_specs(model)
    layout = resolve_layout(specs, layout)
    by_spec = {s.name: s for s in specs}
    budget = ReadBudget(max_bytes, _label(source))
    parts: dict[str, list[np.ndarray]] = {}
    keys: frozenset[str] | None = None
    total = 0
    for read in _chunks(source, specs, layout, budget):
        what, chunk = read(None if max_samples is None else max_samples - total)
        if not isinstance(source, (str, os.PathLike)):  # files count their bytes as they read them
            budget.take(sum(np.asarray(v).nbytes for v in chunk.values()), f"keeping {what}")
        if keys is None:
            keys = frozenset(chunk)
        elif frozenset(chunk) != keys:
            raise DataError(f"{what} holds arrays {sorted(chunk)}, the data before it {sorted(keys)}")
        canon = {k: _canonical(k, np.asarray(v), by_spec.get(k), layout, what) for k, v in chunk.items()}
        count = _count(canon, layout, what)
        for k, v in canon.items():
            if parts.get(k) and parts[k][0].shape[1:] != v.shape[1:]:
                raise DataError(f"{what}: array {k!r} has shape {v.shape[1:]} per sample, the data before it "
                                f"{parts[k][0].shape[1:]}")
            parts.setdefault(k, []).append(v)
        total += count or 0
        if max_samples is not None and total >= max_samples:
            break
    if keys is None:
        raise DataError(f"{_label(source)} holds no samples")
    arrays = {k: (np.concatenate(v) if len(v) > 1 else v[0])[:max_samples] for k, v in parts.items()}
    arrays = _shared_once(arrays, layout)
    fitted = fit_to_model(arrays, [_canonical_spec(s, layout) for s in specs], notice=notice)
    return Samples(_broadcast(fitted, layout), layout)


def _label(source: Source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return f"data {'folder' if Path(source).is_dir() else 'file'} {str(source)!r}"
    return "the calibration data given"


Read = Callable[[int | None], tuple[str, Mapping[str, Any]]]


def _chunks(source: Source, specs: list[InputSpec], layout: Layout, budget: ReadBudget) -> Iterator[Read]:
    """Readers of the source's chunks in order, each told how many samples are still wanted."""
    if isinstance(source, (str, os.PathLike)):
        p = Path(source)
        single = specs[0].name if len(specs) == 1 else None
        ranks = {s.name: len(s.dims) for s in specs if s.dims is not None}

        def reader(f: Path) -> Read:
            return lambda rows: (f"data file {str(f)!r}", read_arrays(
                f, max_rows=rows, single_name=single, budget=budget,
                by_rows=lambda k, ndim: _by_rows(k, ndim, ranks, layout)))

        for f in _folder(p) if p.is_dir() else [p]:
            yield reader(f)
        return
    if isinstance(source, Mapping):
        yield lambda rows: ("the calibration data given", source)
        return
    items: Iterable[Any]
    if callable(getattr(source, "get_next", None)):  # onnxruntime's CalibrationDataReader
        items = iter(source.get_next, None)
    elif isinstance(source, Iterable) and not isinstance(source, (bytes, np.ndarray)):
        items = source
    else:
        raise DataError(f"calibration data must be a file, a folder, a dict of arrays or an iterable of input "
                        f"dicts, got {type(source).__name__}")
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise DataError(f"item {i} of the calibration data is a {type(item).__name__}, expected a dict of "
                            f"input arrays")
        yield lambda rows, i=i, item=item: (f"item {i} of the calibration data", item)


def _by_rows(key: str, ndim: int, ranks: dict[str, int], layout: Layout) -> bool:
    """Whether a file's array ``key`` of rank ``ndim`` is a batch on axis 0 (its first rows read alone)."""
    if key == "labels":
        return True
    if key in layout.shared or layout.axis(key) != 0:
        return False
    return key not in ranks or ndim != ranks[key] - 1  # one sample is read whole; a wrong rank fails later


def _folder(p: Path) -> list[Path]:
    try:
        names = []
        with os.scandir(p) as it:
            for entry in it:
                if entry.name.endswith(_SUFFIXES) and not entry.name.startswith("."):
                    names.append(entry.name)
                    if len(names) > MAX_FILES:
                        raise DataError(f"data folder {str(p)!r} holds more than {MAX_FILES:,} data files")
    except OSError as exc:
        raise DataError(f"cannot list data folder {str(p)!r}: {exc.strerror or exc}") from None
    if not names:
        raise DataError(f"data folder {str(p)!r} holds no .npy or .npz files")
    return [p / n for n in sorted(names)]


def _canonical(key: str, arr: np.ndarray, spec: InputSpec | None, layout: Layout, what: str) -> np.ndarray:
    """``arr`` (one chunk's array ``key``) with its samples on axis 0: a batch, or one sample."""
    if arr.dtype.kind not in "biuf" or arr.dtype.hasobject:
        raise DataError(f"{what}: array {key!r} has dtype {arr.dtype.str!r}; expected booleans, integers or floats")
    if key == "labels":
        return arr.reshape(1) if arr.ndim == 0 else arr
    rank = None if spec is None or spec.dims is None else len(spec.dims)
    if key in layout.shared:
        if rank is None or arr.ndim == rank:
            return arr[None]  # one value, shared by every sample
        if arr.ndim != rank + 1:
            raise DataError(f"{what}: input {key!r} is shared by every sample and has rank {rank} in the model, "
                            f"the data's array has shape {arr.shape}")
        return arr
    axis = layout.axis(key)
    if rank is not None and arr.ndim == rank - 1:
        return arr[None]  # one sample
    if arr.ndim == 0:
        raise DataError(f"{what}: array {key!r} is a 0-d scalar; expected an array whose axis {axis} counts "
                        f"samples (or name the input shared by every sample)")
    if axis and (arr.ndim <= axis or (rank is not None and arr.ndim != rank)):
        raise DataError(f"{what}: input {key!r} has rank {rank} in the model with its samples on axis {axis}, "
                        f"the data's array has shape {arr.shape}")
    return np.moveaxis(arr, axis, 0) if axis else arr


def _count(canon: dict[str, np.ndarray], layout: Layout, what: str) -> int | None:
    """Samples a chunk holds (None: shared values only); a shared input has one row or as many."""
    counts = {k: len(v) for k, v in canon.items() if k not in layout.shared}
    sizes = set(counts.values())
    if len(sizes) > 1:
        shown = ", ".join(f"{k!r} {v}" for k, v in counts.items())
        raise DataError(f"arrays of {what} have different sample counts: {shown}")
    n = sizes.pop() if sizes else None
    for k in layout.shared & set(canon):
        if n is not None and len(canon[k]) not in (1, n):
            raise DataError(f"{what}: shared input {k!r} has {len(canon[k])} values for {n} samples")
    return n


def _shared_once(arrays: dict[str, np.ndarray], layout: Layout) -> dict[str, np.ndarray]:
    """Each shared input as one row, refusing values that differ between samples."""
    out = dict(arrays)
    for name in layout.shared & set(arrays):
        v = arrays[name]
        if len(v) > 1 and not (v == v[:1]).all():
            raise DataError(f"input {name!r} is shared by every sample (one value per run), but its values "
                            f"differ between samples; give it once, or give it a sample axis")
        out[name] = v[:1]
    return out


def _broadcast(arrays: dict[str, np.ndarray], layout: Layout) -> dict[str, np.ndarray]:
    """Shared rows repeated, without copying, to the sample count of the other arrays."""
    counts = {len(v) for k, v in arrays.items() if k not in layout.shared}
    n = counts.pop() if len(counts) == 1 else 1
    return {k: np.broadcast_to(v, (n, *v.shape[1:])) if k in layout.shared else v for k, v in arrays.items()}


def _canonical_spec(spec: InputSpec, layout: Layout) -> InputSpec:
    """The spec the canonical array of ``spec`` must fit: its sample axis first."""
    if spec.dims is None:
        return spec
    if spec.name in layout.shared:
        return InputSpec(spec.name, spec.dtype, (None, *spec.dims))
    axis = layout.axis(spec.name)
    if axis == 0:
        return spec
    dims = list(spec.dims)
    return InputSpec(spec.name, spec.dtype, (dims.pop(axis), *dims))
