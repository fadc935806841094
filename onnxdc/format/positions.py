"""Decoding the positions of a weight-shared tensor's surviving weights, checked against the
header (the schemes are described in :mod:`onnxdc.stages.positions`, which codes them).
"""

from __future__ import annotations

import numpy as np

from onnxdc.errors import ContainerError


def decode_relative(symbols: np.ndarray, *, bits: int, numel: int, nnz: int, name: str) -> np.ndarray:
    """Positions from relative symbols, checked against ``numel`` and ``nnz``.

    Raises:
        ContainerError: a symbol exceeds ``2**bits - 1``, the count of weights is not ``nnz``,
            or a position runs past the tensor.
    """
    m = (1 << bits) - 1
    if symbols.size and int(symbols.max()) > m:
        raise ContainerError(f"tensor {name!r}: position symbol exceeds {m}")
    is_weight = symbols != 0
    if int(is_weight.sum()) != nnz:
        raise ContainerError(f"tensor {name!r}: positions give {int(is_weight.sum())} weights, header says {nnz}")
    steps = np.where(is_weight, symbols.astype(np.int64), m)
    pos = np.cumsum(steps) - 1
    positions = pos[is_weight]
    if positions.size and positions[-1] >= numel:
        raise ContainerError(f"tensor {name!r}: position {int(positions[-1])} is outside {numel} elements")
    if symbols.size and not is_weight[-1]:
        raise ContainerError(f"tensor {name!r}: position stream ends with a filler")
    return positions


def decode_mask(symbols: np.ndarray, *, numel: int, nnz: int, name: str) -> np.ndarray:
    """Positions from a packed mask, checked against ``numel`` (padding zero) and ``nnz``."""
    if symbols.size != (numel + 7) // 8:
        raise ContainerError(f"tensor {name!r}: mask has {symbols.size} bytes, expected {(numel + 7) // 8}")
    bits = np.unpackbits(symbols)
    if bits[numel:].any():
        raise ContainerError(f"tensor {name!r}: mask padding bits are not zero")
    positions = np.flatnonzero(bits[:numel])
    if positions.size != nnz:
        raise ContainerError(f"tensor {name!r}: mask gives {positions.size} weights, header says {nnz}")
    return positions
