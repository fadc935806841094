"""Picking the smallest coding of a symbol stream among candidate coders."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from onnxdc.coders import Coder, get_coder
from onnxdc.coders.chain import ChainCoder


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
SLOW_MAX_SYMBOLS = 256 * 1024
_PROBE_MARGIN = 1.02


def encode_best(symbols: np.ndarray, candidates: Sequence[Coder | dict[str, Any]]) -> CodedStream:
    """Encode ``symbols`` with every candidate and keep the smallest output.

    Ties go to the earlier candidate, so the choice (and the container bytes) are deterministic.
    On large streams a candidate using a slow zstd level (zstd -19 runs at about 1 MB/s) is first
    tried with level 3: zstd's high levels only find more and longer matches, so when level 3 is
    not within 2% of the best so far, the stream has too few repeats for level 19 to win, and it is
    skipped (the level-3 result still competes). Streams over 256 Ki symbols never run the slow
    level. The decisions depend only on the data, so output stays deterministic.
    """
    best: CodedStream | None = None
    done: dict[str, bytes] = {}  # outputs by config, so a chain reuses its first stage's output

    def run(config: dict[str, Any]) -> bytes:
        key = json.dumps(config, sort_keys=True)
        if key not in done:
            coder = get_coder(config)
            first = json.dumps(config.get("coders", [None])[0], sort_keys=True)
            if isinstance(coder, ChainCoder) and first in done:
                done[key] = coder.encode_from(done[first])
            else:
                done[key] = coder.encode(symbols)
        return done[key]

    for cand in candidates:
        config = cand.get_config() if isinstance(cand, Coder) else get_coder(cand).get_config()
        if symbols.size >= PROBE_MIN_SYMBOLS and _max_zstd_level(config) > _PROBE_LEVEL:
            probe_config = _with_zstd_level(config, _PROBE_LEVEL)
            probe = run(probe_config)
            if symbols.size > SLOW_MAX_SYMBOLS or (best is not None and len(probe) > _PROBE_MARGIN * len(best.data)):
                if best is None or len(probe) < len(best.data):
                    best = CodedStream(probe, int(symbols.size), probe_config)
                continue
        data = run(config)
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
