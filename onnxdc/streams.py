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


#: Streams above this many symbols probe slow zstd levels with a fast one first.
PROBE_MIN_SYMBOLS = 64 * 1024
_PROBE_LEVEL = 3
#: Above this many symbols slow zstd levels are not run at all: the level-3 probe is kept instead.
SLOW_MAX_SYMBOLS = 4 * 1024 * 1024
_PROBE_MARGIN = 1.02


def encode_best(symbols: np.ndarray, candidates: Sequence[Coder | dict[str, Any]]) -> CodedStream:
    """Encode ``symbols`` with every candidate and keep the smallest output.

    Ties go to the earlier candidate, so the choice (and the container bytes) are deterministic.
    On large streams a candidate using a slow zstd level (zstd -19 runs at about 1 MB/s) is first
    tried with level 3: zstd's high levels only find more and longer matches, so when level 3 is
    not within 2% of the best so far, the stream has too few repeats for level 19 to win, and it is
    skipped (the level-3 result still competes). Streams over 4 Mi symbols never run the slow
    level. The decisions depend only on the data, so output stays deterministic.
    """
    best: CodedStream | None = None
    for cand in candidates:
        coder = cand if isinstance(cand, Coder) else get_coder(cand)
        config = coder.get_config()
        if symbols.size >= PROBE_MIN_SYMBOLS and _max_zstd_level(config) > _PROBE_LEVEL:
            probe_config = _with_zstd_level(config, _PROBE_LEVEL)
            probe = get_coder(probe_config).encode(symbols)
            if symbols.size > SLOW_MAX_SYMBOLS or (best is not None and len(probe) > _PROBE_MARGIN * len(best.data)):
                if best is None or len(probe) < len(best.data):
                    best = CodedStream(probe, int(symbols.size), probe_config)
                continue
        data = coder.encode(symbols)
        if best is None or len(data) < len(best.data):
            best = CodedStream(data, int(symbols.size), config)
    if best is None:
        raise ValueError("encode_best needs at least one candidate coder")
    return best


def _max_zstd_level(config: dict[str, Any]) -> int:
    if config.get("id") == "zstd":
        return int(config.get("level", 19))
    return max((_max_zstd_level(c) for c in config.get("coders", [])), default=0)


def _with_zstd_level(config: dict[str, Any], level: int) -> dict[str, Any]:
    if config.get("id") == "zstd":
        return {**config, "level": level}
    if "coders" in config:
        return {**config, "coders": [_with_zstd_level(c, level) for c in config["coders"]]}
    return config
