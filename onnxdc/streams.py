"""Picking the smallest coding of a symbol stream among candidate coders."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from onnxdc.coders import Coder, get_coder


@dataclass(frozen=True)
class CodedStream:
    """A stream after coding: its bytes, symbol count and the config that decodes it."""

    data: bytes
    count: int
    coder: dict[str, Any]


def order0_entropy_bits(symbols: np.ndarray) -> float:
    """Total order-0 (memoryless) entropy of a uint8 stream, in bits: the bound a symbol coder meets."""
    if symbols.size == 0:
        return 0.0
    counts = np.bincount(symbols, minlength=256).astype(np.float64)
    p = counts[counts > 0] / symbols.size
    return float(-(counts[counts > 0] * np.log2(p)).sum())


def encode_best(symbols: np.ndarray, candidates: Sequence[Coder | dict[str, Any]]) -> CodedStream:
    """Encode ``symbols`` with every candidate and keep the smallest output.

    Ties go to the earlier candidate, so the choice (and the container bytes) are deterministic.
    """
    best: CodedStream | None = None
    for cand in candidates:
        coder = cand if isinstance(cand, Coder) else get_coder(cand)
        data = coder.encode(symbols)
        if best is None or len(data) < len(best.data):
            best = CodedStream(data, int(symbols.size), coder.get_config())
    if best is None:
        raise ValueError("encode_best needs at least one candidate coder")
    return best
