"""Picking the smallest coding of a symbol stream among candidate coders."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from onnxdc.coders import Coder, get_coder
from onnxdc.coders.chain import ChainCoder
from onnxdc.coders.huffman import HuffmanCoder, HuffmanPlan


@dataclass(frozen=True)
class CodedStream:
    """A stream after coding: its bytes, symbol count and the config that decodes it."""

    data: bytes | memoryview  # a view of an array's memory when copying it into bytes buys nothing
    count: int
    coder: dict[str, Any]


def order0_entropy_bits(symbols: np.ndarray, counts: np.ndarray | None = None) -> float:
    """Total order-0 (memoryless) entropy of a uint8 stream, in bits: the bound a symbol coder meets.

    ``counts`` is the stream's histogram (``bincount`` of 256), if the caller already has it.
    """
    if symbols.size == 0:
        return 0.0
    if counts is None:
        counts = histogram(symbols)
    counts = counts.astype(np.float64)
    p = counts[counts > 0] / symbols.size
    return float(-(counts[counts > 0] * np.log2(p)).sum())


_HISTOGRAM_CHUNK = 1 << 20


def histogram(symbols: np.ndarray) -> np.ndarray:
    """How often each byte value occurs in a uint8 stream (256 counts).

    ``bincount`` widens every element to an index first; counting byte pairs (``uint16``) halves
    the elements, and the pair counts fold back into byte counts by row and column sums.
    """
    symbols = np.ascontiguousarray(symbols)
    even = symbols.size & ~1
    pairs = np.zeros(1 << 16, dtype=np.int64)
    as_pairs = symbols[:even].view(np.uint16)
    for start in range(0, as_pairs.size, _HISTOGRAM_CHUNK):  # bincount's index temporaries stay small
        pairs += np.bincount(as_pairs[start:start + _HISTOGRAM_CHUNK], minlength=1 << 16)
    pairs = pairs.reshape(256, 256)
    counts = pairs.sum(axis=0) + pairs.sum(axis=1)
    if even < symbols.size:
        counts[symbols[-1]] += 1
    return counts


#: Streams above this many symbols probe slow zstd levels with a fast one first.
PROBE_MIN_SYMBOLS = 64 * 1024
_PROBE_LEVEL = 3
#: Above this many symbols slow zstd levels are not run at all: a level-1 run takes their place.
SLOW_MAX_SYMBOLS = 256 * 1024
_PROBE_MARGIN = 1.02
#: The zstd level kept on streams over SLOW_MAX_SYMBOLS.
_FAST_LEVEL = 1
#: Bytes a coder whose decoder runs in numpy (Huffman) must save to win over one that decodes in
#: compiled code (raw, zstd, zstd-literals): its size counts this fraction more in the choice, on
#: streams of PROBE_MIN_SYMBOLS or more. On a float exponent plane zstd-literals is within 0.2% of
#: Huffman and decodes 30x faster; shorter streams decode in milliseconds either way, and there (in
#: small models) bytes alone decide.
SLOW_DECODE_MARGIN = 0.01


def encode_best(symbols: np.ndarray, candidates: Sequence[Coder | dict[str, Any]], *,
                counts: np.ndarray | None = None) -> CodedStream:
    """Encode ``symbols`` with every candidate and keep the smallest output.

    Ties go to the earlier candidate, so the choice (and the container bytes) are deterministic.
    On large streams a candidate using a slow zstd level (zstd -19 runs at about 1 MB/s) is first
    tried with level 3: zstd's high levels only find more and longer matches, so when level 3 is
    not within 2% of the best so far, the stream has too few repeats for level 19 to win, and it is
    skipped (the level-3 result still competes). Streams over 256 Ki symbols never run the slow
    level; their zstd candidate is level 1 (three times faster than level 3, and on float
    exponent planes no larger: zstd's literal Huffman does the work there, not its matches). The
    decisions depend only on the data, so output stays deterministic.

    On streams of 64 Ki symbols or more, a candidate that decodes with the numpy Huffman decoder
    (alone or in a chain) must be more than :data:`SLOW_DECODE_MARGIN` smaller than the others to
    be chosen: decompression speed is worth a fraction of a percent of a large stream, not more.

    A Huffman candidate is sized exactly from its plan (:meth:`HuffmanCoder.plan`) and its bits
    are packed only if it wins: the choice is the same as encoding it, for a fraction of the work.
    ``counts`` is the symbols' histogram, if the caller has it (Huffman needs it).
    """
    best: tuple[float, dict[str, Any]] | None = None  # cost and config of the cheapest so far
    done: dict[str, bytes] = {}  # outputs by config, so a chain reuses its first stage's output
    plans: dict[str, tuple[HuffmanCoder, HuffmanPlan]] = {}

    def run(config: dict[str, Any]) -> bytes:
        key = json.dumps(config, sort_keys=True)
        if key not in done:
            coder = get_coder(config)
            first = json.dumps(config.get("coders", [None])[0], sort_keys=True)
            if key in plans:
                done[key] = plans[key][0].encode_planned(symbols, plans[key][1])
            elif isinstance(coder, ChainCoder) and (first in done or first in plans):
                done[key] = coder.encode_from(run(config["coders"][0]))  # the first stage, packed once
            else:
                done[key] = coder.encode(symbols)
        return done[key]

    def size(config: dict[str, Any]) -> int:
        nonlocal counts
        coder = get_coder(config)
        if not isinstance(coder, HuffmanCoder):
            return len(run(config))
        key = json.dumps(config, sort_keys=True)
        if key not in plans:
            if counts is None:
                counts = histogram(symbols)
            plans[key] = (coder, coder.plan(symbols, counts))
        return plans[key][1].size

    def floor(config: dict[str, Any]) -> int:
        nonlocal counts
        if counts is None:
            counts = histogram(symbols)
        return get_coder(config).size_floor(counts)

    margin = 1 + SLOW_DECODE_MARGIN if symbols.size >= PROBE_MIN_SYMBOLS else 1

    def cost(config: dict[str, Any]) -> float:
        return size(config) * margin if _uses(config, "huffman") else size(config)

    for cand in candidates:
        config = cand.get_config() if isinstance(cand, Coder) else get_coder(cand).get_config()
        if symbols.size >= PROBE_MIN_SYMBOLS and _max_zstd_level(config) > _PROBE_LEVEL:
            probe_config = _with_zstd_level(config, _PROBE_LEVEL if symbols.size <= SLOW_MAX_SYMBOLS else _FAST_LEVEL)
            probe = cost(probe_config)
            if symbols.size > SLOW_MAX_SYMBOLS or (best is not None and probe > _PROBE_MARGIN * best[0]):
                if best is None or probe < best[0]:
                    best = (probe, probe_config)
                continue
        if best is not None and config.get("id") == "huffman" and best[0] <= margin * floor(config):
            continue  # cannot win: even its payload alone costs more (the same choice, for less work)
        n = cost(config)
        if best is None or n < best[0]:
            best = (n, config)
    if best is None:
        raise ValueError("encode_best needs at least one candidate coder")
    return CodedStream(run(best[1]), int(symbols.size), best[1])


def _uses(config: dict[str, Any], coder_id: str) -> bool:
    return config.get("id") == coder_id or any(_uses(c, coder_id) for c in config.get("coders", []))


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
