"""Freed memory given back to the system between the automatic mode's phases.

glibc's allocator keeps freed blocks in its heap for reuse, and raises its mmap threshold each time
a large block is freed (up to 32 MB), so that the megabyte-sized temporaries of numpy and the
buffers of each onnxruntime session end up in the heap: after a statistics pass over a 22M-parameter
model, some 350 MB of the process's resident memory was free heap nobody used (measured with
``/proc/self/status``), and each phase's peak stacked on it. :func:`release_memory` asks the
allocator to return it (``malloc_trim``); elsewhere (musl, macOS, Windows) it does nothing.
Outputs never depend on it: only the resident size does.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys


@functools.cache
def _trim():  # noqa: ANN202 - a ctypes function or None
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


def release_memory() -> bool:
    """Return the allocator's free heap pages to the system; False where that is not possible."""
    trim = _trim()
    if trim is None:
        return False
    trim(0)
    return True
