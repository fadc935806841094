"""Stage 3a: coding the positions of the surviving weights (the encoder side; the decoders,
which check what they read, are :mod:`onnxdc.format.positions`).

Schemes (the smallest is chosen per tensor by the caller):

* ``relative`` — Han et al.'s relative indexing: the gap from the previous surviving weight, in
  ``b`` bits. A gap wider than ``M = 2**b - 1`` is bridged by filler symbols. Our filler is the
  symbol 0, meaning "advance M positions, no weight here", so the weight stream needs no padding
  entries (the paper pads with zero weights instead). Symbols 1..M mean "advance that many and
  place the next weight". With ``b = 8`` the symbols are bytes and can go to any entropy coder: the
  entropy-coded alternative.
* ``mask`` — one bit per element (dense bitmap), cheaper when more than ~1/8 of weights survive.
* ``dense`` — no position stream: every element has an index (zero has its own code).
"""

from __future__ import annotations

import numpy as np

SCHEMES = ("relative", "mask", "dense")


def relative_symbols(positions: np.ndarray, *, bits: int) -> np.ndarray:
    """Relative-index symbols (uint8) for sorted flat ``positions``, with filler symbols 0."""
    m = (1 << bits) - 1
    if positions.size == 0:
        return np.zeros(0, dtype=np.uint8)
    gaps = np.diff(positions.astype(np.int64), prepend=-1)
    fillers = (gaps - 1) // m
    rem = gaps - fillers * m
    total = int(fillers.sum()) + positions.size
    out = np.zeros(total, dtype=np.uint8)
    # Each gap emits `fillers` zeros followed by its remainder: the remainder lands at the end.
    ends = np.cumsum(fillers + 1) - 1
    out[ends] = rem.astype(np.uint8)
    return out


def relative_histogram(nonzero: np.ndarray, *, bits: int, chunk: int = 1 << 20) -> np.ndarray:
    """The histogram (256 counts) of :func:`relative_symbols` of the flat positions where
    ``nonzero`` is true, without building the symbols or the positions: chunk by chunk, so that a
    tensor of millions of weights costs a few megabytes rather than 50 bytes a survivor."""
    m = (1 << bits) - 1
    flat = nonzero.reshape(-1)
    counts = np.zeros(256, dtype=np.int64)
    last = -1
    for s in range(0, flat.size, chunk):
        pos = np.flatnonzero(flat[s:s + chunk]) + s
        if pos.size == 0:
            continue
        gaps = np.diff(pos, prepend=last)
        last = int(pos[-1])
        fillers = (gaps - 1) // m
        counts[0] += int(fillers.sum())
        counts += np.bincount(gaps - fillers * m, minlength=256)[:256]
    return counts


def relative_symbol_count(positions: np.ndarray, *, bits: int) -> int:
    """Number of symbols :func:`relative_symbols` would emit (without building them)."""
    if positions.size == 0:
        return 0
    gaps = np.diff(positions.astype(np.int64), prepend=-1)
    return int(((gaps - 1) // ((1 << bits) - 1)).sum()) + positions.size


def mask_symbols(mask: np.ndarray) -> np.ndarray:
    """The keep-mask as bytes, eight elements per byte, MSB first."""
    return np.packbits(mask.reshape(-1).astype(bool))
