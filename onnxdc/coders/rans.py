"""Static rANS (range asymmetric numeral systems), with interleaved lanes decoded by numpy.

An order-0 entropy coder without Huffman's whole-bit codes: a symbol of probability p costs
log2(1/p) bits, so a skewed stream (cluster indices, position gaps) codes to within a fraction of
a percent of its order-0 entropy, where Huffman loses up to a bit a symbol on the most frequent
one. The model is static: the symbols' frequencies, quantized to a total of ``2**prob_bits``, are
sent with the stream; the encoder picks ``prob_bits`` (1..16) that makes model + payload smallest.

Symbol ``i`` belongs to lane ``i % lanes``; each lane is an rANS coder with a 32-bit state
renormalized 16 bits at a time (Giesen's ``rans_word``), so one decoding step decodes one symbol of
every lane at once with numpy: the Python loop runs ``count / lanes`` times. The lanes share one
stream of 16-bit words, read in step order and, within a step, in lane order.

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

import numpy as np

from onnxdc.coders.base import Coder, check_count, check_symbols, histogram, read_varint, write_varint
from onnxdc.coders.registry import register_coder
from onnxdc.errors import DecodeError

#: Most lanes a stream may have.
MAX_LANES = 4096
#: Symbols per lane the encoder aims for: a lane's 4-byte final state is then at most about 0.1%
#: of what it codes (at 2 bits a symbol); fewer symbols per lane decode faster.
LANE_SYMBOLS = 16384
_MAX_PROB_BITS = 16
_LOW = 1 << 16  # L: every state lies in [L, 2**32) between steps
_WORD = 16


def lanes_for(count: int) -> int:
    """The lanes the encoder uses for ``count`` symbols."""
    return max(1, min(MAX_LANES, count // LANE_SYMBOLS))


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
        steps = -(-n // lanes)
        x = np.full(lanes, _LOW, dtype=np.int64)
        words: list[np.ndarray] = []
        freq64 = freq.astype(np.int64)
        for t in range(steps - 1, -1, -1):  # backwards: the decoder reads forwards
            s = symbols[t * lanes:(t + 1) * lanes]
            k = s.size  # the last step may hold fewer symbols than there are lanes
            f = freq64[s]
            xs = x[:k]
            emit = np.flatnonzero(xs >= (f << (32 - bits)))[::-1]
            words.append((xs[emit] & 0xFFFF).astype("<u2"))
            xs[emit] >>= _WORD
            q, r = np.divmod(xs, f)
            xs[:] = (q << bits) + r + cum[s]
        out = write_varint(lanes) + bytes([bits]) + _model_bytes(freq) + x.astype("<u4").tobytes()
        return out + np.concatenate(words)[::-1].tobytes()

    def decode(self, buf: bytes, *, count: int) -> np.ndarray:
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
        x = np.frombuffer(buf, dtype="<u4", count=lanes, offset=pos).astype(np.int64)
        if (x < _LOW).any():
            raise DecodeError("rans stream has a lane state below its lower bound")
        words = np.frombuffer(buf, dtype="<u2", count=nwords, offset=pos + 4 * lanes)
        return _decode_lanes(x, words, freq, bits, count)


def _decode_lanes(x: np.ndarray, words: np.ndarray, freq: np.ndarray, bits: int, count: int) -> np.ndarray:
    lanes = x.size
    symbol_of = np.repeat(np.arange(256, dtype=np.uint8), freq)  # slot -> symbol, M entries
    freq_of = freq[symbol_of]
    bias_of = np.arange(1 << bits, dtype=np.int64) - (np.cumsum(freq) - freq)[symbol_of]
    mask = (1 << bits) - 1
    steps = -(-count // lanes)
    out = np.empty(steps * lanes, dtype=np.uint8)
    slot = np.empty(lanes, dtype=np.int64)
    pos = 0
    for t in range(steps):
        k = min(lanes, count - t * lanes)
        xs = x[:k]
        sl = slot[:k]
        np.bitwise_and(xs, mask, out=sl)
        np.take(symbol_of, sl, out=out[t * lanes:t * lanes + k])
        xs >>= bits
        xs *= freq_of[sl]
        xs += bias_of[sl]
        refill = np.flatnonzero(xs < _LOW)
        if refill.size:
            end = pos + refill.size
            if end > words.size:
                raise DecodeError(f"rans stream ends early (needs more than its {words.size} words)")
            xs[refill] = (xs[refill] << _WORD) | words[pos:end]
            pos = end
    if pos != words.size or (x != _LOW).any():
        raise DecodeError("rans stream does not end where its symbols do (corrupt or trailing words)")
    return out[:count]
