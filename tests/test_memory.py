"""The automatic mode's chunked helpers equal the whole-array computations they replace, and
freed memory can be given back (what benchmarks/auto_speed.md's transformer RSS figure relies on)."""

from __future__ import annotations

import platform
import sys

import numpy as np
import pytest

from onnxdc.memory import bound_heap, release_memory
from onnxdc.stages.ecq import MAX_LEVEL, level_values, table_error, uniform_table
from onnxdc.stages.positions import relative_histogram, relative_symbols
from onnxdc.stages.quantize import ShareConfig, kmeans_1d

RNG = np.random.default_rng(3)


def _levels(n: int, density: float) -> np.ndarray:
    lv = RNG.integers(-MAX_LEVEL, MAX_LEVEL + 1, size=n).astype(np.int8)
    lv[RNG.random(n) > density] = 0
    return lv


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64])
def test_level_values_equal_the_table_lookup_in_every_dtype(dtype: type) -> None:
    lv = _levels(3_000_003, 0.3).reshape(3, -1)  # more than one chunk, a partial last one
    table = uniform_table(0.0123)
    got = level_values(table, lv, dtype)
    assert got.dtype == dtype and got.shape == lv.shape
    np.testing.assert_array_equal(got, table[lv.astype(np.int64) + MAX_LEVEL].astype(dtype))


def test_table_error_equals_the_squared_error_of_the_lookup() -> None:
    lv = _levels(2_500_000, 0.5)
    w = (RNG.standard_normal(lv.size) * 0.05).astype(np.float32)
    table = uniform_table(0.01)
    want = float(np.sum((table[lv.astype(np.int64) + MAX_LEVEL] - w.astype(np.float64)) ** 2))
    assert table_error(table, lv, w) == pytest.approx(want, rel=1e-12)
    assert table_error(table, np.zeros(0, np.int8), np.zeros(0, np.float32)) == 0.0


@pytest.mark.parametrize("density", [0.0, 1e-6, 0.01, 0.5, 1.0])
def test_relative_histogram_counts_the_relative_symbols(density: float) -> None:
    nz = RNG.random(2_100_000) < density
    nz[-1] = density == 1.0  # a survivor on the last position or none
    want = np.bincount(relative_symbols(np.flatnonzero(nz), bits=8), minlength=256)
    # Small chunks too: gaps that span chunk boundaries and chunks without survivors.
    for chunk in (1 << 20, 4096, 7):
        if chunk == 7 and density > 0.01:
            continue
        np.testing.assert_array_equal(relative_histogram(nz, bits=8, chunk=chunk), want)


def test_kmeans_assignment_in_chunks_is_the_nearest_stored_value() -> None:
    v = RNG.standard_normal(1_500_000).astype(np.float32)
    v[v == 0] = 1.0
    c = kmeans_1d(v, config=ShareConfig(bits=3, max_iter=20))
    cb = c.codebook.astype(np.float64)
    mids = (cb[:-1] + cb[1:]) / 2.0
    np.testing.assert_array_equal(c.indices, np.searchsorted(mids, v.astype(np.float64), side="left"))


def test_release_memory_trims_where_glibc_is_and_is_harmless_elsewhere() -> None:
    on_glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert release_memory() is on_glibc
    assert release_memory() is on_glibc  # the lookup is cached; callable any number of times
    assert bound_heap() is on_glibc and bound_heap() is on_glibc


def test_statistics_with_weights_set_in_their_own_copy_equal_those_of_a_replaced_model() -> None:
    from pathlib import Path

    from onnxdc.api import AUTO_MIN_ELEMENTS, SharingConfig, load_data, load_model
    from onnxdc.auto.trials import TrialRunner, replaced_model
    from onnxdc.calibration.calibrate import weight_of
    from onnxdc.calibration.samples import select
    from onnxdc.calibration.stats import collect_stats, settable
    from onnxdc.pipeline.plan import plan_sharing

    models = Path(__file__).resolve().parent.parent / "models"
    model = load_model(models / "lenet5.onnx")
    data = select(load_data(models / "lenet5.calib.npz"), slice(0, 24))
    plans = plan_sharing(model, SharingConfig(min_elements=AUTO_MIN_ELEMENTS))
    assert settable(model, list(plans))
    first = list(plans)[:2]
    changed = {s: (weight_of(plans[s]) * 0.5).astype(np.float32) for s in first}
    want = collect_stats(replaced_model(model, changed), plans, data, reference=model)
    got = collect_stats(model, plans, data, reference=model, replaced=changed)
    assert set(got) == set(want)
    for s in want:
        for a, b in zip(want[s].h + want[s].g, got[s].h + got[s].g):
            np.testing.assert_array_equal(a, b)
    # The runner's weights: the caller's own arrays, not copies of them.
    originals = {s: weight_of(p) for s, p in plans.items()}
    runner = TrialRunner(model, list(plans), data, originals=originals)
    assert all(runner.original[s] is originals[s] for s in runner.original)
