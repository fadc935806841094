"""Freed memory given back to the system: the automatic mode's peak on large models.

glibc's allocator keeps freed blocks in its heap for reuse, and raises its mmap threshold each time
a large block is freed (up to 32 MB), so that the megabyte-sized temporaries of numpy and the
buffers of each onnxruntime session end up in the heap: after a statistics pass over a 22M-parameter
model, some 350 MB of the process's resident memory was free heap nobody used (measured with
``/proc/self/status``), and each phase's peak stacked on it. :func:`release_memory` asks the
allocator to return it (``malloc_trim``); :func:`bound_heap` stops the heap from filling up
within a phase: blocks from 4 MiB up are mapped and unmapped on their own (the threshold no
longer climbs), and onnxruntime's worker threads share two heaps rather than one each. On the
22M-parameter transformer the refresh passes then started from 620-870 MB instead of
800-1,640 MB. Elsewhere (musl, macOS, Windows) both do nothing. Outputs never depend on them:
only the resident size does.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

#: glibc's mallopt parameters (malloc.h) and the values :func:`bound_heap` sets.
M_ARENA_MAX = -8
M_MMAP_THRESHOLD = -3
#: Blocks from this size up are mapped on their own. Lower keeps the peak lower and costs page
#: faults: on the 22M-parameter transformer's automatic run, 1 MiB gave 139.6 s at a 1,282 MB
#: peak, 2 MiB 133.3 s at 1,370 MB, 4 MiB 109.3 s at 1,399 MB (same bytes, back to back).
MMAP_THRESHOLD = 4 << 20
ARENA_MAX = 2


@functools.cache
def _libc():  # noqa: ANN202 - a ctypes library with glibc's malloc_trim and mallopt, or None
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim, libc.mallopt  # noqa: B018 - both exist on glibc only
    except (OSError, AttributeError):  # not glibc
        return None
    return libc


def _trim():  # noqa: ANN202
    libc = _libc()
    return None if libc is None else libc.malloc_trim


@functools.cache
def bound_heap() -> bool:
    """Map large blocks on their own and cap the heaps at :data:`ARENA_MAX` (once per process;
    process-wide, as the allocator is); False where that is not possible."""
    libc = _libc()
    if libc is None:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) & bool(libc.mallopt(M_ARENA_MAX, ARENA_MAX))


def release_memory() -> bool:
    """Return the allocator's free heap pages to the system; False where that is not possible."""
    trim = _trim()
    if trim is None:
        return False
    trim(0)
    return True
