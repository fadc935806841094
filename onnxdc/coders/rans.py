"""Static rANS (range asymmetric numeral systems), with interleaved lanes decoded by numpy.

An order-0 entropy coder without Huffman's whole-bit codes: a symbol of probability p costs
log2(1/p) bits, so a skewed stream (cluster indices, position gaps) codes to within a fraction of
a percent of its order-0 entropy, where Huffman loses up to a bit a symbol on the most frequent
one. The model is static: the symbols' frequencies, quantized to a total of ``2**prob_bits``, are
sent with the stream; the encoder picks ``prob_bits`` (1..16) that makes model + payload smallest.

Symbol ``i`` belongs to lane ``i % lanes``; each lane is an rANS coder with a 32-bit state
renormalized 16 bits at a time (Giesen's ``rans_word``), so one decoding step decodes one symbol of
every lane at once with numpy: the Python loop runs ``count / lanes`` times. The lanes share one
stream of 16-bit words, read in step order and, within a step, in lane order. A numpy step costs
about 13 µs whatever its width and a symbol decoded by plain Python about 0.2 µs, so streams of at
most :data:`SCALAR_LANES` lanes (the automatic choices' streams have at most 4) decode symbol by
symbol instead: the same symbols, the same checks, 6.5 ms instead of 64 ms for 26,624 symbols in
4 lanes.

Stream layout (the empty stream codes zero symbols)::

    varint  lanes        1..min(count, 4096)
    byte    prob_bits    1..16; M = 2**prob_bits
    byte    max_symbol   largest symbol present
    varint  freq         of symbols 0..max_symbol, each <= M, adding up to exactly M; a zero
                         is followed by a varint: how many more zeros follow it (one run)
    u32     states       each lane's state after encoding (its decoder's start), in [2**16, 2**32)
    u16     words        the renormalization words, little-endian, to the end of the stream

The decoder accepts only what the encoder writes: frequencies adding up to M, states in range, no
more words than ``count`` symbols can need and enough to hold them (unless one symbol has all of
M, when any count is one state: bounding ``count`` is then the container's job), every word used, and each lane ending in the initial
state 2**16 (which the encoder starts from). It allocates the ``count`` output symbols, lookup
tables of M entries and per-step temporaries of ``lanes`` entries, whatever the stream claims.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from onnxdc.coders.base import Coder, check_count, check_symbols, histogram, read_varint, write_varint
from onnxdc.coders.registry import register_coder
from onnxdc.errors import DecodeError

#: Most lanes a stream may have.
MAX_LANES = 4096
#: Streams of at most this many lanes decode symbol by symbol (:func:`_decode_scalar`): below it a
#: step of numpy calls (about 13 µs) costs more than its lanes' symbols in plain Python (0.15-0.25 µs
#: each; 37 lanes: 43 ms against 104 ms for 300,000 symbols).
SCALAR_LANES = 64
#: Symbols per lane the encoder aims for (decoding steps, each a dozen numpy calls). A lane costs
#: about 3 bytes (its final state holds 32 bits, about 16 of them information): 0.3% of a stream at
#: 1 bit a symbol. Fewer steps decode faster (43,008 symbols: 835 ms in one lane, 65 ms in 10,
#: 18 ms in 42) for more bytes; 8,192 steps are about 0.1 s whatever the stream.
LANE_SYMBOLS = 8192
_MAX_PROB_BITS = 16
_LOW = 1 << 16  # L: every state lies in [L, 2**32) between steps
_WORD = 16


def lanes_for(count: int) -> int:
    """The lanes the encoder uses for ``count`` symbols: one per :data:`LANE_SYMBOLS`, rounded up."""
    return max(1, min(MAX_LANES, -(-count // LANE_SYMBOLS)))


def encode_lanes(f: np.ndarray, c: np.ndarray, *, lanes: int, bits: int) -> tuple[bytes, bytes]:
    """rANS-encode a stream whose symbol ``i`` (of lane ``i % lanes``) has frequency ``f[i]`` and
    cumulative frequency ``c[i]`` (int64, of a total of ``2**bits``): the lanes' final states (u32
    each) and the renormalization words, as the decoders read them (step order, then lane order).

    Shared by the order-0 and the context coder, which differ only in where ``f`` and ``c`` come
    from. The loop runs backwards over the ``count / lanes`` steps (the decoder reads forwards),
    each a handful of whole-step numpy calls on arrays laid out by step beforehand: the encoder's
    cost is these calls, not the arithmetic (a 200 Ki-symbol stream in 25 lanes is 8,192 steps).
    """
    n = f.size
    x = np.full(lanes, _LOW, dtype=np.int64)
    words: list[np.ndarray] = []
    full, rest = divmod(n, lanes)
    shift = 32 - bits

    def step(xs: np.ndarray, fs: np.ndarray, cs: np.ndarray, limit: np.ndarray) -> None:
        emit = xs >= limit
        words.append((xs[emit] & 0xFFFF)[::-1].astype("<u2"))
        np.right_shift(xs, _WORD, out=xs, where=emit)
        q = xs // fs
        xs += (q << bits) - q * fs + cs  # x = (q << bits) + (x - q*f) + c, in place

    if rest:  # the last step holds fewer symbols than there are lanes
        fs, cs = f[full * lanes:], c[full * lanes:]
        step(x[:rest], fs, cs, fs << shift)
    f2 = f[:full * lanes].reshape(full, lanes)
    c2 = c[:full * lanes].reshape(full, lanes)
    limits = f2 << shift
    for t in range(full - 1, -1, -1):
        step(x, f2[t], c2[t], limits[t])
    return x.astype("<u4").tobytes(), np.concatenate(words)[::-1].tobytes()


def quantize(counts: np.ndarray, prob_bits: int) -> np.ndarray:
    """Frequencies adding up to ``2**prob_bits``, each present symbol at least 1, close to
    proportional to ``counts`` (the rounding is fixed up greedily by the least costly changes).

    Raises:
        ValueError: more distinct symbols than ``2**prob_bits`` (no frequency of 1 is left for each).
    """
    counts = np.asarray(counts, dtype=np.int64)
    total, m = int(counts.sum()), 1 << prob_bits
    present = counts > 0
    if int(present.sum()) > m:
        raise ValueError(f"{int(present.sum())} distinct symbols need more than {prob_bits} probability bits")
    freq = np.where(present, np.maximum(1, (counts * m + total // 2) // max(total, 1)), 0)
    weights = counts.astype(np.float64)
    while (diff := m - int(freq.sum())) != 0:
        f = np.maximum(freq, 1).astype(np.float64)
        if diff > 0:  # raise the frequency whose increase saves the most bits
            gain = np.where(present, weights * np.log2((f + 1) / f), -np.inf)
            freq[int(np.argmax(gain))] += 1
        else:  # lower the one whose decrease costs the least (never below 1)
            loss = np.where(freq > 1, weights * np.log2(f / np.maximum(f - 1, 1)), np.inf)
            freq[int(np.argmin(loss))] -= 1
    return freq


def _model_bytes(freq: np.ndarray) -> bytes:
    top = int(np.flatnonzero(freq).max())
    out, s = bytearray([top]), 0
    while s <= top:
        out += write_varint(int(freq[s]))
        if freq[s]:
            s += 1
            continue
        run = int(np.flatnonzero(freq[s:])[0])  # zeros from s on (symbol top is present)
        out += write_varint(run - 1)
        s += run
    return bytes(out)


def _read_model(buf: bytes, pos: int, m: int) -> tuple[np.ndarray, int]:
    """The frequencies at ``buf[pos:]`` and the position after them (see the module docstring)."""
    if pos >= len(buf):
        raise DecodeError("rans stream is too short for its model")
    top, pos = buf[pos], pos + 1
    freq = np.zeros(256, dtype=np.int64)
    s = 0
    while s <= top:
        f, pos = read_varint(buf, pos)
        if f > m:
            raise DecodeError(f"rans frequency of symbol {s} ({f}) exceeds the total {m}")
        if f:
            freq[s] = f
            s += 1
            continue
        run, pos = read_varint(buf, pos)
        s += run + 1
        if s > top:
            raise DecodeError(f"rans zero run passes the max symbol {top}")
    if int(freq.sum()) != m:
        raise DecodeError(f"rans frequencies add up to {int(freq.sum())}, expected {m}")
    return freq, pos


def _payload_bits(counts: np.ndarray, freq: np.ndarray, prob_bits: int) -> float:
    used = counts > 0
    return float((counts[used] * (prob_bits - np.log2(freq[used]))).sum())


@register_coder
class RansCoder(Coder):
    """Static order-0 rANS with interleaved lanes (see the module docstring). No parameters: the
    encoder picks the lanes and the probability precision per stream, and the stream records them."""

    coder_id = "rans"
    numpy_decode = True
    can_batch = True
    #: Automatic choices try rANS on streams of at most this many symbols (at most 4 lanes, decoded
    #: symbol by symbol, 4-5 M symbols/s): on longer ones its decoder (25-35 M symbols/s in numpy
    #: lanes) slowed the 25M-parameter benchmark model's decompression from 0.31 to 0.56 s for
    #: 0.16% of its bytes.
    auto_max_symbols = 1 << 15

    def max_encoded_size(self, count: int) -> int:
        if count == 0:
            return 0
        lanes = lanes_for(count)
        # header + model (256 varints of 3 bytes) + states + at most 16 bits a symbol, plus one word a lane
        return 3 + 2 + 3 * 256 + 4 * lanes + 2 * count + 2 * lanes

    def plan(self, counts: np.ndarray) -> tuple[int, np.ndarray, int]:
        """The probability precision, frequencies and estimated size (bytes) the encoder uses for
        a stream of histogram ``counts``: the precision that makes model + payload smallest."""
        distinct = int(np.count_nonzero(counts))
        best: tuple[int, np.ndarray, int] | None = None
        for bits in range(max(1, math.ceil(math.log2(max(distinct, 1)))), _MAX_PROB_BITS + 1):
            freq = quantize(counts, bits)
            size = len(_model_bytes(freq)) + math.ceil(_payload_bits(counts, freq, bits) / 8)
            if best is None or size < best[2]:
                best = (bits, freq, size)
        assert best is not None
        return best

    def estimate_size(self, counts: np.ndarray) -> int:
        """The size :meth:`encode` gives a stream of histogram ``counts``, to within a few bytes
        (the ideal payload bits of its model, rounded up, plus header and lane states)."""
        n = int(counts.sum())
        if n == 0:
            return 0
        lanes = lanes_for(n)
        return len(write_varint(lanes)) + 1 + 4 * lanes + self.plan(counts)[2]

    def encode(self, symbols: np.ndarray) -> bytes:
        symbols = check_symbols(symbols)
        n = symbols.size
        if n == 0:
            return b""
        bits, freq, _ = self.plan(histogram(symbols))
        lanes = lanes_for(n)
        cum = np.concatenate([[0], np.cumsum(freq)[:-1]]).astype(np.int64)
        freq64 = freq.astype(np.int64)
        states, words = encode_lanes(freq64[symbols], cum[symbols], lanes=lanes, bits=bits)
        return write_varint(lanes) + bytes([bits]) + _model_bytes(freq) + states + words

    def batch_part(self, buf: bytes, *, count: int) -> tuple[type[Coder], Coder, bytes]:
        """rANS streams decode together, all their lanes in one lock-step (:func:`decode_many`)."""
        return RansCoder, self, buf

    @classmethod
    def decode_batch(cls, items: Sequence[tuple[Coder, bytes, int]]) -> list[np.ndarray]:
        return decode_many([(buf, count) for _, buf, count in items])

    def decode(self, buf: bytes, *, count: int) -> np.ndarray:
        parsed = _parse(buf, count)
        if isinstance(parsed, np.ndarray):
            return parsed
        return _decode_one(parsed)


@dataclass(frozen=True)
class _Parsed:
    """A validated stream: its lanes' states, words and model."""

    count: int
    bits: int
    freq: np.ndarray
    states: np.ndarray  # int64, one per lane
    words: np.ndarray  # uint16

    @property
    def steps(self) -> int:
        return -(-self.count // self.states.size)


def _parse(buf: bytes, count: int) -> _Parsed | np.ndarray:
    """Check a stream's header, model and sizes (see the module docstring); the decoded symbols
    when there is nothing to decode (no symbols)."""
    count = check_count(count)
    if count == 0:
        if len(buf):
            raise DecodeError(f"rans stream of 0 symbols must be empty, got {len(buf)} bytes")
        return np.zeros(0, dtype=np.uint8)
    lanes, pos = read_varint(buf, 0)
    if not 1 <= lanes <= min(count, MAX_LANES):
        raise DecodeError(f"rans stream has {lanes} lanes, expected 1..{min(count, MAX_LANES)}")
    if pos >= len(buf):
        raise DecodeError("rans stream is too short for its header")
    bits, pos = buf[pos], pos + 1
    if not 1 <= bits <= _MAX_PROB_BITS:
        raise DecodeError(f"rans probability bits must be in 1..{_MAX_PROB_BITS}, found {bits}")
    freq, pos = _read_model(buf, pos, 1 << bits)
    nwords, odd = divmod(len(buf) - pos - 4 * lanes, 2)
    if nwords < 0 or odd:
        raise DecodeError(f"rans stream of {lanes} lanes has {len(buf) - pos} bytes after its model")
    if nwords > count * bits // _WORD + lanes:  # the encoder spends at most prob_bits a symbol
        raise DecodeError(f"rans stream holds {nwords} words, more than {count} symbols can need")
    fmax = int(freq.max())
    if fmax < 1 << bits and count * (bits - math.log2(fmax)) > _WORD * (nwords + lanes) + 64:
        # each symbol takes at least log2(M / fmax) bits of the words and the states' 16 bits a lane
        raise DecodeError(f"rans stream of {nwords} words cannot hold {count} symbols")
    states = np.frombuffer(buf, dtype="<u4", count=lanes, offset=pos).astype(np.int64)
    if (states < _LOW).any():
        raise DecodeError("rans stream has a lane state below its lower bound")
    words = np.frombuffer(buf, dtype="<u2", count=nwords, offset=pos + 4 * lanes)
    return _Parsed(count, bits, freq, states, words)


def _tables(freq: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Slot -> symbol, frequency and bias (slot - cumulative frequency): M entries each."""
    symbol_of = np.repeat(np.arange(256, dtype=np.uint8), freq)
    freq_of = freq[symbol_of]
    bias_of = np.arange(1 << bits, dtype=np.int64) - (np.cumsum(freq) - freq)[symbol_of]
    return symbol_of, freq_of, bias_of


def decode_many(items: Sequence[tuple[bytes, int]]) -> list[np.ndarray]:
    """Decode several streams (bytes, count) in one lock-step over all their lanes.

    The loop runs as many steps as the longest stream needs (about :data:`LANE_SYMBOLS`), whatever
    the number of streams: a model of dozens of small coded tensors pays the loop's fixed cost once.
    Streams of few lanes decode symbol by symbol (:func:`_decode_scalar`) unless a wider stream's
    lock-step runs at least as many steps as they need: they then join it at no extra step.
    Results and errors are those of :meth:`RansCoder.decode` on each stream, up to which stream an
    error names.
    """
    out: list[np.ndarray | None] = [None] * len(items)
    parsed: list[tuple[int, _Parsed]] = []
    for i, (buf, count) in enumerate(items):
        p = _parse(buf, count)
        if isinstance(p, np.ndarray):
            out[i] = p
        else:
            parsed.append((i, p))
    scalar, joint = split_by_decoder(parsed, SCALAR_LANES)
    for i, p in scalar:
        out[i] = _decode_scalar(p)
    if len(joint) == 1:
        i, p = joint[0]
        out[i] = _decode_one(p)
    elif joint:
        for (i, _), symbols in zip(joint, _decode_joint([p for _, p in joint])):
            out[i] = symbols
    return out  # type: ignore[return-value]


def split_by_decoder(parsed: list[tuple[int, Any]], scalar_lanes: int) -> tuple[list, list]:
    """``(index, parsed stream)`` pairs split into those decoded symbol by symbol and those decoded
    in one lock-step: a stream of at most ``scalar_lanes`` lanes goes symbol by symbol unless a
    wider stream's lock-step runs at least as many steps as it needs, when it joins at no extra
    step. Shared by ``rans`` and ``rans-ctx`` (their parsed streams both have ``states``, ``steps``)."""
    wide = max((p.steps for _, p in parsed if p.states.size > scalar_lanes), default=0)
    scalar = [(i, p) for i, p in parsed if p.states.size <= scalar_lanes and p.steps > wide]
    joint = [(i, p) for i, p in parsed if p.states.size > scalar_lanes or p.steps <= wide]
    return scalar, joint


def _decode_one(p: _Parsed) -> np.ndarray:
    """One stream's symbols, by whichever of the two decoders is faster for its lanes."""
    if p.states.size <= SCALAR_LANES:
        return _decode_scalar(p)
    return _decode_lanes(p.states.copy(), p.words, p.freq, p.bits, p.count)


def _decode_scalar(p: _Parsed) -> np.ndarray:
    """:func:`_decode_lanes` symbol by symbol in plain Python: the same symbols and checks, faster
    for a few lanes (see :data:`SCALAR_LANES`). Tables and words are read through memoryviews of
    their arrays, so memory stays that of the numpy decoder (Python lists would cost 36 bytes an
    entry)."""
    symbol_of, freq_of, bias_of = _tables(p.freq, p.bits)
    sym, fr, bi = memoryview(symbol_of), memoryview(freq_of), memoryview(bias_of)
    w = memoryview(p.words.astype(np.uint16))  # native byte order, which a memoryview indexes
    states = p.states.tolist()
    lanes, count, bits, nwords = len(states), p.count, p.bits, len(w)
    mask, low, pos = (1 << bits) - 1, _LOW, 0
    out = bytearray(count)
    for start in range(0, count, lanes):
        for lane in range(min(lanes, count - start)):
            x = states[lane]
            s = x & mask
            out[start + lane] = sym[s]
            x = fr[s] * (x >> bits) + bi[s]
            if x < low:
                if pos == nwords:
                    raise DecodeError(f"rans stream ends early (needs more than its {nwords} words)")
                x = (x << _WORD) | w[pos]
                pos += 1
            states[lane] = x
    return scalar_result(out, pos, nwords, states, coder="rans")


def scalar_result(out: bytearray, pos: int, nwords: int, states: list[int], *, coder: str) -> np.ndarray:
    """A symbol-by-symbol decoder's symbols, once it has checked that the stream ends where they
    do: every word read and every lane back at the encoder's initial state. (The renormalization
    inside both scalar loops is written out in each: a call per symbol would cost them a third.)"""
    if pos != nwords or any(x != _LOW for x in states):
        raise DecodeError(f"{coder} stream does not end where its symbols do (corrupt or trailing words)")
    return np.frombuffer(out, dtype=np.uint8)


def _decode_joint(streams: list[_Parsed]) -> list[np.ndarray]:
    """The lanes of every stream as one array, each reading its own stream's words (see
    :func:`decode_many`)."""
    nstreams = len(streams)
    lanes = np.array([p.states.size for p in streams])
    lane_start = np.concatenate([[0], np.cumsum(lanes)])
    stream_of = np.repeat(np.arange(nstreams), lanes)
    local = np.arange(lane_start[-1]) - lane_start[stream_of]
    tables = [_tables(p.freq, p.bits) for p in streams]
    table_start = np.concatenate([[0], np.cumsum([1 << p.bits for p in streams])])
    symbol_of = np.concatenate([t[0] for t in tables])
    freq_of = np.concatenate([t[1] for t in tables])
    bias_of = np.concatenate([t[2] for t in tables])
    counts = np.array([p.count for p in streams])
    out_start = np.concatenate([[0], np.cumsum(counts)])
    words = np.concatenate([p.words for p in streams]).astype(np.int64)
    nwords = np.array([p.words.size for p in streams])
    word_start = np.concatenate([[0], np.cumsum(nwords)])[:-1]
    read = np.zeros(nstreams, dtype=np.int64)
    x = np.concatenate([p.states for p in streams])
    bits_l = np.array([p.bits for p in streams])[stream_of]
    mask_l = (1 << bits_l) - 1
    base_l = table_start[stream_of]
    stride_l = lanes[stream_of]
    at_l = out_start[stream_of] + local  # output index of each lane's symbol at step 0
    steps = -(-counts // lanes)
    last = counts - (steps - 1) * lanes  # lanes of each stream decoding in its last step
    out = np.empty(int(out_start[-1]), dtype=np.uint8)
    changes = set((steps - 1).tolist()) | set(steps.tolist())
    act = np.zeros(0, dtype=np.int64)
    for t in range(int(steps.max())):
        if t in changes or t == 0:  # a stream enters its last step or is done: the active lanes change
            keep = np.where(t < steps - 1, lanes, np.where(t == steps - 1, last, 0))
            act = np.flatnonzero(local < keep[stream_of])
            a_mask, a_base, a_bits, a_stream = mask_l[act], base_l[act], bits_l[act], stream_of[act]
            a_at, a_stride = at_l[act], stride_l[act]
        xa = x[act]
        sl = (xa & a_mask) + a_base
        out[a_at + t * a_stride] = symbol_of[sl]
        xa = freq_of[sl] * (xa >> a_bits) + bias_of[sl]
        refill_states(xa, a_stream, words, word_start, read, nwords, coder="rans")
        x[act] = xa
    if (read != nwords).any() or (x != _LOW).any():
        raise DecodeError("rans stream does not end where its symbols do (corrupt or trailing words)")
    return [out[out_start[i]:out_start[i + 1]] for i in range(nstreams)]


def refill_states(xa: np.ndarray, stream: np.ndarray, words: np.ndarray, word_start: np.ndarray,
                  read: np.ndarray, nwords: np.ndarray, *, coder: str) -> None:
    """Refill, in place, the lock-step lanes of ``xa`` whose state fell below the renormalization
    bound, each with the next word of its own stream (``read`` words taken so far per stream)."""
    refill = np.flatnonzero(xa < _LOW)
    if not refill.size:
        return
    sid = stream[refill]
    per = np.bincount(sid, minlength=nwords.size)
    if (read + per > nwords).any():
        s = int(np.flatnonzero(read + per > nwords)[0])
        raise DecodeError(f"{coder} stream ends early (needs more than its {int(nwords[s])} words)")
    rank = np.arange(refill.size) - (np.cumsum(per) - per)[sid]
    xa[refill] = (xa[refill] << _WORD) | words[word_start[sid] + read[sid] + rank]
    read += per


def _decode_lanes(x: np.ndarray, words: np.ndarray, freq: np.ndarray, bits: int, count: int) -> np.ndarray:
    lanes = x.size
    symbol_of, freq_of, bias_of = _tables(freq, bits)
    mask = (1 << bits) - 1
    steps = -(-count // lanes)
    out = np.empty(steps * lanes, dtype=np.uint8)
    slot, f, b = (np.empty(lanes, dtype=np.int64) for _ in range(3))
    low = np.empty(lanes, dtype=bool)
    pos = 0
    for t in range(steps):
        k = min(lanes, count - t * lanes)  # the last step may decode fewer lanes
        xs, sl, fs, bs, lo = x[:k], slot[:k], f[:k], b[:k], low[:k]
        np.bitwise_and(xs, mask, out=sl)
        np.take(symbol_of, sl, out=out[t * lanes:t * lanes + k])
        np.take(freq_of, sl, out=fs)
        np.take(bias_of, sl, out=bs)
        np.right_shift(xs, bits, out=xs)
        np.multiply(xs, fs, out=xs)
        np.add(xs, bs, out=xs)
        np.less(xs, _LOW, out=lo)
        refill = np.flatnonzero(lo)
        if refill.size:
            end = pos + refill.size
            if end > words.size:
                raise DecodeError(f"rans stream ends early (needs more than its {words.size} words)")
            xs[refill] = (xs[refill] << _WORD) | words[pos:end]
            pos = end
    if pos != words.size or (x != _LOW).any():
        raise DecodeError("rans stream does not end where its symbols do (corrupt or trailing words)")
    return out[:count]
