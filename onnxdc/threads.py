"""One BLAS thread for onnxdc's linear algebra, so that results do not depend on thread counts.

OpenBLAS splits a matrix product or a factorization across its threads, and how it splits changes
the order in which floating-point sums are taken: ``XᵀX``, ``solve`` or ``cholesky`` then differ in
the last bits between ``OPENBLAS_NUM_THREADS=1`` and ``=2``, and a choice made on a threshold (a
budget met or missed, a rounding to one shared value or the next) can flip, so the same model and
settings wrote different bytes on different machines. onnxdc's matrices are small (at most a few
thousand inputs per layer); one thread costs little there and stops BLAS from spinning threads
against onnxruntime's on the same cores (the automatic mode ran 3x faster on LeNet-5 with one).

:func:`one_blas_thread` limits BLAS to one thread while any caller is inside it and restores the
user's setting when the last one leaves. The limit is process-wide (BLAS has no per-thread
setting), so entries and exits are counted under a lock: tensors coded by worker threads cannot
restore the limit while another is still computing. Recent threadpoolctl (3.8) lets only the thread that
first set an OpenBLAS limit change it again; the first entrant and the last leaver may be different
threads, so each change first hands control to the calling thread (under our lock, one at a time).
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

_lock = threading.Lock()
_depth = 0
_limiter: Any = None


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run the body with BLAS limited to one thread (re-entrant, thread-safe)."""
    global _depth, _limiter
    with _lock:
        if _depth == 0:
            from threadpoolctl import ThreadpoolController

            _take_control()
            # Scanned afresh (about 0.5 ms): a BLAS loaded since the last call is limited too.
            _limiter = ThreadpoolController().limit(limits=1, user_api="blas")
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                _take_control()
                _limiter.restore_original_limits()
                _limiter = None


def _take_control() -> None:
    """Let the calling thread change OpenBLAS' limit (a no-op where threadpoolctl has no such rule)."""
    import threadpoolctl

    clear = getattr(getattr(threadpoolctl, "OpenBLASController", None), "clear_controlling_thread", None)
    if clear is not None:
        clear(force=True)


def single_blas_thread(fn: F) -> F:
    """Decorator: ``fn`` runs inside :func:`one_blas_thread`."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with one_blas_thread():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity where the OS has one, else the core count.

    ``os.cpu_count()`` counts the machine's cores, not the ones a container or ``taskset`` leaves
    to us; sizing a thread pool by it oversubscribes the cores we actually have.
    """
    affinity = getattr(os, "sched_getaffinity", None)
    if affinity is not None:
        try:
            return max(1, len(affinity(0)))
        except OSError:  # pragma: no cover - a platform that has the call but refuses it
            pass
    return max(1, os.cpu_count() or 1)
