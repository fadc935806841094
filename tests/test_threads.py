"""Output does not depend on thread counts: the same bytes with one BLAS thread or two, and with one
onnxruntime intra-op thread or two.

Each run is a fresh interpreter, since OpenBLAS reads ``OPENBLAS_NUM_THREADS`` once, when loaded.
The programs are the calibrated paths, where least squares and Cholesky factors decide roundings
and budgets: before BLAS was limited to one thread, the automatic mode's fallback came out
differently with ``OPENBLAS_NUM_THREADS=2``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from onnxdc.threads import one_blas_thread

MODELS = Path(__file__).resolve().parent.parent / "models"

_AUTO = f"""
import hashlib, sys
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
from model_builders import few_samples_model
from onnxdc.api import Budget, SharingConfig, compress_auto
model, data, _ = few_samples_model()
auto = compress_auto(model, base=SharingConfig(min_elements=256), data=data, budget=Budget())
print(hashlib.sha256(auto.result.data).hexdigest(), auto.budget_met)
"""

_CALIBRATED = f"""
import hashlib, numpy as np, onnx
from onnxdc import CompressConfig, compress
from onnxdc.pipeline.settings import SharingConfig
model = onnx.load({str(MODELS / "lenet300.onnx")!r})
data = dict(np.load({str(MODELS / "lenet300.calib.npz")!r}))
res = compress(model, config=CompressConfig(sharing=SharingConfig(sparsity=0.9, bits=5), calibration=data,
                                            calib_samples=64))
print(hashlib.sha256(res.data).hexdigest())
"""


_ORT = """
import sys
from onnxdc.api import set_session_threads
set_session_threads(int(sys.argv[1]))
"""


def _run(program: str, threads: int, ort_threads: int | None = None) -> str:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
    if ort_threads is not None:
        program, args = _ORT + program, [str(ort_threads)]
    else:
        args = []
    out = subprocess.run([sys.executable, "-c", program, *args], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.parametrize("program", [_AUTO, _CALIBRATED], ids=["auto", "calibrated"])
def test_same_bytes_with_one_or_two_blas_threads(program: str) -> None:
    one, two = _run(program, 1), _run(program, 2)
    assert len(one.split()[0]) == 64
    assert one == two


_AUTO_CONV = f"""
import hashlib, sys
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
from model_builders import small_conv_model
from onnxdc.api import Budget, SharingConfig, compress_auto
model, data = small_conv_model()
auto = compress_auto(model, base=SharingConfig(min_elements=256), data=data, budget=Budget())
print(hashlib.sha256(auto.result.data).hexdigest(), auto.budget_met, len(auto.choice.rules))
"""


@pytest.mark.parametrize("program", [_AUTO_CONV, _CALIBRATED], ids=["auto-conv", "calibrated"])
def test_same_bytes_with_one_or_two_onnxruntime_threads(program: str) -> None:
    one, two = _run(program, 1, ort_threads=1), _run(program, 1, ort_threads=2)
    assert len(one.split()[0]) == 64
    assert one == two


def test_sessions_run_explicit_threads() -> None:
    import onnxruntime as ort
    from model_builders import few_samples_model

    from onnxdc.evaluate import session, session_thread_count, session_threads
    from onnxdc.threads import usable_cores

    model = few_samples_model()[0]
    assert session_thread_count() == usable_cores() == len(os.sched_getaffinity(0))
    with session_threads(3):
        opts = session(model).get_session_options()
        assert session_thread_count() == 3
    assert session_thread_count() == usable_cores()
    assert (opts.intra_op_num_threads, opts.inter_op_num_threads) == (3, 1)
    assert opts.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert session(model, threads=1).get_session_options().intra_op_num_threads == 1


def test_blas_limit_is_counted_across_threads() -> None:
    """A worker leaving the limit must not lift it while another is still inside."""
    from threadpoolctl import threadpool_info

    def blas_threads() -> list[int]:
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    before = blas_threads()
    inside = threading.Event()
    leave = threading.Event()
    seen: list[list[int]] = []

    def worker() -> None:
        with one_blas_thread():
            inside.set()
            leave.wait(10)

    t = threading.Thread(target=worker)
    with one_blas_thread():
        t.start()
        inside.wait(10)
    seen.append(blas_threads())  # the main thread left; the worker is still inside
    leave.set()
    t.join()
    assert all(n == 1 for n in seen[0])
    assert blas_threads() == before
    assert np.isfinite(np.linalg.inv(np.eye(3))).all()
