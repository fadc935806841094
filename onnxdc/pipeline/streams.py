"""Picking the smallest coding of a symbol stream among candidate coders."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from onnxdc.coders import Coder, get_coder
from onnxdc.coders.base import histogram
from onnxdc.coders.chain import ChainCoder
from onnxdc.coders.huffman import HuffmanCoder, HuffmanPlan
from onnxdc.coders.rans import RansCoder
from onnxdc.coders.rans_ctx import RansCtxCoder
from onnxdc.coders.raw import RawCoder


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


#: Streams above this many symbols probe slow zstd levels with a fast one first.
PROBE_MIN_SYMBOLS = 64 * 1024
_PROBE_LEVEL = 3
#: Above this many symbols slow zstd levels are not run at all: a level-1 run takes their place.
SLOW_MAX_SYMBOLS = 256 * 1024
_PROBE_MARGIN = 1.02
#: The zstd level kept on streams over SLOW_MAX_SYMBOLS.
_FAST_LEVEL = 1
#: Bytes a coder whose decoder runs in numpy (Huffman, rANS) must save to win over one that decodes in
#: compiled code (raw, zstd, zstd-literals): its size counts this fraction more in the choice, on
#: streams of PROBE_MIN_SYMBOLS or more. On a float exponent plane zstd-literals is within 0.2% of
#: Huffman and decodes 30x faster; shorter streams decode in milliseconds either way, and there (in
#: small models) bytes alone decide.
SLOW_DECODE_MARGIN = 0.01


def candidate_coders(*, raw: bool = True, raw_bits: int | None = None, level: int = 19, chain: bool = True,
                     zstd_before_huffman: bool = False, rans: bool = True) -> list[dict[str, Any]]:
    """The one list of candidate coders :func:`encode_best` chooses among, in tie-breaking order:
    raw (cheapest to decode), zstd-literals, Huffman, zstd at ``level``, the Huffman+zstd chain, and
    rANS (last: it wins only where its fractional bits beat every other on the stream).

    Each kind of stream takes what it can use: ``raw=False`` leaves raw out (8-bit gaps never fit
    fewer bits), ``raw_bits`` fixes raw's width (None: the stream's own bits, filled in later),
    ``chain=False`` leaves the chain out, ``rans=False`` rANS. ``zstd_before_huffman`` is the order position masks have
    always been tried in; kept, since the order decides ties and which slow zstd levels are probed.
    """
    out: list[dict[str, Any]] = []
    if raw:
        out.append({"id": "raw"} if raw_bits is None else {"id": "raw", "bits": raw_bits})
    out.append({"id": "zstd-literals"})
    pair = [{"id": "huffman"}, {"id": "zstd", "level": level}]
    out += pair[::-1] if zstd_before_huffman else pair
    if chain:
        out.append({"id": "chain", "coders": [{"id": "huffman"}, {"id": "zstd", "level": level}]})
    if rans:
        out.append({"id": "rans"})
    return out


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

    On streams of 64 Ki symbols or more, a candidate that decodes with a numpy loop (Huffman,
    rANS: :attr:`Coder.numpy_decode`, alone or in a chain) must be more than
    :data:`SLOW_DECODE_MARGIN` smaller than the others to be chosen: decompression speed is worth a
    fraction of a percent of a large stream, not more. Among several candidates, a coder is tried
    only on streams up to its :attr:`Coder.auto_max_symbols` (rANS: 256 Ki).

    A Huffman candidate is sized exactly from its plan (:meth:`HuffmanCoder.plan`) and its bits
    are packed only if it wins: the choice is the same as encoding it, for a fraction of the work.
    ``counts`` is the symbols' histogram, if the caller has it (Huffman needs it).
    """
    trials = _Trials(symbols, counts)
    margin = 1 + SLOW_DECODE_MARGIN if symbols.size >= PROBE_MIN_SYMBOLS else 1

    def cost(config: dict[str, Any]) -> float:
        return trials.size(config) * margin if _numpy_decode(config) else trials.size(config)

    best: tuple[float, dict[str, Any]] | None = None  # cost and config of the cheapest so far
    coders = [cand if isinstance(cand, Coder) else get_coder(cand) for cand in candidates]
    fits = [c for c in coders if c.auto_max_symbols is None or symbols.size <= c.auto_max_symbols]
    for coder in fits if len(coders) > 1 and fits else coders:
        config = coder.get_config()
        if symbols.size >= PROBE_MIN_SYMBOLS and _max_zstd_level(config) > _PROBE_LEVEL:
            probe_config = _with_zstd_level(config, _PROBE_LEVEL if symbols.size <= SLOW_MAX_SYMBOLS else _FAST_LEVEL)
            probe = cost(probe_config)
            if symbols.size > SLOW_MAX_SYMBOLS or (best is not None and probe > _PROBE_MARGIN * best[0]):
                if best is None or probe < best[0]:
                    best = (probe, probe_config)
                continue
        if best is not None and config.get("id") == "huffman" and best[0] <= margin * trials.floor(config):
            continue  # cannot win: even its payload alone costs more (the same choice, for less work)
        n = cost(config)
        if best is None or n < best[0]:
            best = (n, config)
    if best is None:
        raise ValueError("encode_best needs at least one candidate coder")
    return CodedStream(trials.run(best[1]), int(symbols.size), best[1])


class _Trials:
    """The candidate outputs and Huffman plans of one :func:`encode_best` call.

    A plain object, not closures: closures that call themselves form a reference cycle, which would
    keep every candidate's output (and the symbols, often a view pinning a whole tensor's planes)
    alive until the cyclic garbage collector happens to run — hundreds of MB on a large model.
    """

    def __init__(self, symbols: np.ndarray, counts: np.ndarray | None) -> None:
        self.symbols = symbols
        self.counts = counts
        self.done: dict[str, bytes] = {}  # outputs by config, so a chain reuses its first stage's output
        self.plans: dict[str, tuple[HuffmanCoder, HuffmanPlan]] = {}

    def histogram(self) -> np.ndarray:
        if self.counts is None:
            self.counts = histogram(self.symbols)
        return self.counts

    def run(self, config: dict[str, Any]) -> bytes:
        key = json.dumps(config, sort_keys=True)
        if key not in self.done:
            coder = get_coder(config)
            first = json.dumps(config.get("coders", [None])[0], sort_keys=True)
            if key in self.plans:
                self.done[key] = self.plans[key][0].encode_planned(self.symbols, self.plans[key][1])
            elif isinstance(coder, ChainCoder) and (first in self.done or first in self.plans):
                self.done[key] = coder.encode_from(self.run(config["coders"][0]))  # first stage packed once
            else:
                self.done[key] = coder.encode(self.symbols)
        return self.done[key]

    def size(self, config: dict[str, Any]) -> int:
        coder = get_coder(config)
        symbols = self.symbols
        if isinstance(coder, RawCoder) and (coder.bits == 8 or int(symbols.max(initial=0)) >> coder.bits == 0):
            return coder.max_encoded_size(symbols.size)  # exact; packed only if it wins
        if isinstance(coder, RansCoder):
            return coder.estimate_size(self.histogram())  # within a few bytes; coded only if it wins
        if isinstance(coder, RansCtxCoder):
            return coder.estimate_size(symbols)  # the same, from the symbols' contexts
        if not isinstance(coder, HuffmanCoder):
            return len(self.run(config))
        key = json.dumps(config, sort_keys=True)
        if key not in self.plans:
            self.plans[key] = (coder, coder.plan(symbols, self.histogram()))
        return self.plans[key][1].size

    def floor(self, config: dict[str, Any]) -> int:
        return get_coder(config).size_floor(self.histogram())


def _numpy_decode(config: dict[str, Any]) -> bool:
    """Whether the coder, or a stage of the chain, decodes with a numpy loop (:attr:`Coder.numpy_decode`)."""
    return get_coder(config).numpy_decode or any(_numpy_decode(c) for c in config.get("coders", []))


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
