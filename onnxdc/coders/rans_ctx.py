"""Context-modelled static rANS for 2-D symbol streams (a tensor's levels, one row per output channel).

A pruned tensor's levels are not memoryless: whole input columns die together (an MNIST border
pixel, an unused feature), so whether a column's weights were zero in the rows above predicts the
next one. Measured on the dense levels of the sample models' automatic containers (ideal bits,
models excluded, tensors of 1,000 weights or more), a context of the symbol above, ``(i-1, j)``
(one per level), takes 0.2-13% off their order-0 entropy (LeNet-5 fc1: 23,689 -> 20,705 bytes);
the column's *history*, the fraction of non-zero symbols among all the rows above in a few
buckets, takes 0.2-36% off (LeNet-5 fc1: -> 15,162; LeNet-300-100 fc1: 17,305 -> 13,642; CRNN's
GRU W: 7,065 -> 6,705), and adding the significance of the symbol above to it at most 0.4% more
(``benchmarks/context_coding.py --candidates``).
So the context is that history:

    context 0           the first row (nothing above)
    context 1           no non-zero symbol in the column so far
    contexts 2..5       a non-zero fraction f = nonzero / rows above in (0, 4/64], (4/64, 12/64],
                        (12/64, 25/64], (25/64, 1]  (compared in integers: 64 * nonzero > e * rows)

"Non-zero" means a symbol other than 0 (the dense layout's zero level). Symbol ``n`` of the stream
sits at row ``n // row``, column ``n % row``; the last row may be short (any count codes).

Symbol ``n`` belongs to lane ``n % lanes`` and decodes at step ``n // lanes``; with at most ``row``
lanes, every symbol of the rows above decodes at an earlier step, so one numpy step decodes a
symbol of every lane, its context read from per-column counters the earlier steps updated. The lanes
(one per 8,192 symbols, as :mod:`onnxdc.coders.rans`) and the 32-bit states renormalized by 16-bit
words are those of ``rans``; each context has its own quantized frequency table, all of one
precision (a step's table slot is then ``context << prob_bits | state mod M``).

Stream layout (the empty stream codes zero symbols)::

    varint  lanes        1..min(count, row, 4096)
    byte    prob_bits    1..max_prob_bits(count) (at most 16); M = 2**prob_bits, the total of
                         every context's frequencies
    byte    contexts     bit c (0..5) set: context c has a model; bit 7 set: the shared model
    models  a table per context, or the shared model (below), for the contexts present, in order
    u32     states       each lane's state after encoding, in [2**16, 2**32)
    u16     words        the renormalization words, little-endian, to the end of the stream

A table is rans' (max symbol byte, run-length varints, adding up to M). The shared model is one
table of the non-zero levels (symbol 0 absent), then a varint per context: its frequency z of
symbol 0 (M, 0, or in 1..M-P for P levels); the other M - z go to the levels in integers, each
``1 + floor((M - z - P) * table / M)`` and the remainder to the table's most frequent level (the
first, on ties). On small tensors six tables cost more than the contexts save (LeNet-5 conv2:
104 bytes of tables against 37 for the shared model, the payload 25 bytes larger); the encoder
picks the kind and the precision that make the stream smallest.

The decoder accepts only what the encoder writes (rans' checks, per context; a symbol whose context
has no model is an error) and allocates the ``count`` output symbols, ``min(row, count)`` column
counters, tables of 6 M entries (M at most 4 x count, and 2**16: :func:`max_prob_bits`) and
per-step temporaries of ``lanes`` entries.
Several streams decode in one lock-step (:meth:`RansCtxCoder.decode_batch`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from onnxdc.coders.base import (
    Coder,
    check_count,
    check_int_param,
    check_symbols,
    read_varint,
    write_varint,
)
from onnxdc.coders.rans import (
    LANE_SYMBOLS,
    MAX_LANES,
    _model_bytes,
    _payload_bits,
    _read_model,
    encode_lanes,
    quantize,
    refill_states,
    scalar_result,
    split_by_decoder,
)
from onnxdc.coders.registry import register_coder
from onnxdc.errors import DecodeError

#: Contexts: first row, column all zero so far, and one per fraction bucket.
CONTEXTS = 6
#: Bucket edges of the column's non-zero fraction, in 64ths.
EDGES = (4, 12, 25)
#: Largest row length a config may give (a tensor's row is far shorter).
MAX_ROW = 1 << 40
_LOW = 1 << 16
_WORD = 16
_MAX_PROB_BITS = 16
#: The context-set byte's flag of the shared level model.
_SHARED = 0x80
#: Streams of at most this many lanes decode symbol by symbol (:func:`_decode_scalar`, about
#: 0.4 µs a symbol against 15 µs a lock-step step: LeNet-5's auto container, its fc1 in 49 lanes
#: with the other streams riding along, decodes in 0.13 s in the lock-step and 0.17 s symbol by
#: symbol; the CRNN's, every stream of one or two lanes, in 0.075 s and 0.024 s).
SCALAR_LANES = 32


def max_prob_bits(count: int) -> int:
    """The finest precision a stream of ``count`` symbols may use: M at most twice the count
    rounded up to a power of two (finer tables cannot code fewer bits: every frequency already has
    the count's resolution), so a decoder's tables stay a constant times the count."""
    return min(_MAX_PROB_BITS, max(1, (count - 1).bit_length() + 1))


def lanes_for(count: int, row: int) -> int:
    """The lanes the encoder uses: one per :data:`LANE_SYMBOLS`, at most ``row``."""
    return max(1, min(MAX_LANES, row, -(-count // LANE_SYMBOLS)))


def contexts(symbols: np.ndarray, row: int) -> np.ndarray:
    """The context of every symbol of the stream (see the module docstring), as the decoder sees it."""
    n = symbols.size
    rows = -(-n // row)
    nz = np.zeros(rows * row, dtype=np.int64)
    nz[:n] = symbols != 0
    above = np.cumsum(nz.reshape(rows, row), axis=0) - nz.reshape(rows, row)  # non-zeros in rows above
    return _context_of(above.reshape(-1)[:n], np.arange(n, dtype=np.int64) // row)


def _context_of(nonzero: np.ndarray, rows_above: np.ndarray) -> np.ndarray:
    ctx = np.where(nonzero == 0, 1, 2)
    for e in EDGES:
        ctx += 64 * nonzero > e * rows_above
    return np.where(rows_above == 0, 0, ctx)


@register_coder
class RansCtxCoder(Coder):
    """rANS with one frequency table per column-history context (see the module docstring).

    Args:
        row: the stream's row length (symbols per row): a tensor of shape [out, ...] has
            ``prod(shape[1:])``, a recurrent W or R of [dirs, gates x hidden, in] has ``in``.
    """

    coder_id = "rans-ctx"
    numpy_decode = True
    can_batch = True
    #: Automatic choices try it on streams of at most this many symbols: the sample models' largest
    #: tensors (LeNet-5 fc1: 400,000 levels) but no weight of the 25M-parameter benchmark model, whose
    #: decompression a loop of 8,192 numpy steps would slow by about 0.15 s (at 2**19 its fc0, 524,288
    #: levels, chose rans-ctx for 0.66% of its bytes).
    auto_max_symbols = 400 * 1024

    def __init__(self, row: int) -> None:
        self.row = check_int_param(self.coder_id, "row", row, 1, MAX_ROW)

    def get_config(self) -> dict[str, Any]:
        return {"id": self.coder_id, "row": self.row}

    def max_encoded_size(self, count: int) -> int:
        if count == 0:
            return 0
        lanes = lanes_for(count, self.row)
        return 3 + CONTEXTS * (2 + 3 * 256) + 4 * lanes + 2 * count + 2 * lanes

    def _plan(self, symbols: np.ndarray) -> tuple[np.ndarray, int, int, bytes, np.ndarray, int]:
        """Contexts, the precision, the context-set byte, the model bytes, the frequencies (a row
        per context) and the estimated size: the precision (1..16) and model kind (a table per
        context, or one shared level table) that make the models and the payload smallest."""
        ctx = contexts(symbols, self.row)
        counts = np.bincount(ctx * 256 + symbols, minlength=CONTEXTS * 256).reshape(CONTEXTS, 256)
        used = sum(1 << c for c in range(CONTEXTS) if counts[c].any())
        lanes = lanes_for(symbols.size, self.row)
        fixed = len(write_varint(lanes)) + 2 + 4 * lanes
        distinct = max(int(np.count_nonzero(counts[c])) for c in range(CONTEXTS))
        best: tuple[int, int, bytes, np.ndarray, int] | None = None
        for bits in range(max(1, math.ceil(math.log2(distinct))), max_prob_bits(symbols.size) + 1):
            improved = False
            for flag, model in ((0, _full_model(counts, used, bits)), (_SHARED, _shared_model(counts, used, bits))):
                if model is None:
                    continue
                head, freq = model
                payload = sum(_payload_bits(counts[c], freq[c], bits) for c in range(CONTEXTS) if used >> c & 1)
                size = fixed + len(head) + math.ceil(payload / 8)
                if best is None or size < best[4]:
                    best, improved = (bits, used | flag, head, freq, size), True
            if not improved and bits > best[0] + 1:  # type: ignore[index]
                break  # two precisions past the best: finer tables only cost more from here on
        assert best is not None
        return ctx, *best

    def estimate_size(self, symbols: np.ndarray) -> int:
        """The size :meth:`encode` gives ``symbols``, to within a few bytes, without coding them."""
        symbols = check_symbols(symbols)
        return 0 if symbols.size == 0 else self._plan(symbols)[5]

    def encode(self, symbols: np.ndarray) -> bytes:
        symbols = check_symbols(symbols)
        n = symbols.size
        if n == 0:
            return b""
        ctx, bits, used, model, freq, _ = self._plan(symbols)
        lanes = lanes_for(n, self.row)
        head = write_varint(lanes) + bytes([bits, used]) + model
        cum = np.cumsum(freq, axis=1) - freq
        states, words = encode_lanes(freq[ctx, symbols].astype(np.int64), cum[ctx, symbols].astype(np.int64),
                                     lanes=lanes, bits=bits)
        return head + states + words

    def batch_part(self, buf: bytes, *, count: int) -> tuple[type[Coder], Coder, bytes]:
        """rans-ctx streams decode together, all their lanes in one lock-step (:func:`_decode_joint`)."""
        return RansCtxCoder, self, buf

    @classmethod
    def decode_batch(cls, items: Sequence[tuple[Coder, bytes, int]]) -> list[np.ndarray]:
        """Several streams in one lock-step: as many steps as the longest needs (about 8,192), not
        their sum. Results and errors are those of :meth:`decode` on each stream."""
        out: list[np.ndarray | None] = [None] * len(items)
        parsed: list[tuple[int, _Parsed]] = []
        for i, (coder, buf, count) in enumerate(items):
            assert isinstance(coder, RansCtxCoder)
            p = coder._parse(buf, count)
            if isinstance(p, np.ndarray):
                out[i] = p
            else:
                parsed.append((i, p))
        scalar, joint = split_by_decoder(parsed, SCALAR_LANES)
        for i, p in scalar:
            out[i] = _decode_scalar(p)
        if joint:
            for (i, _), symbols in zip(joint, _decode_joint([p for _, p in joint])):
                out[i] = symbols
        return out  # type: ignore[return-value]

    def decode(self, buf: bytes, *, count: int) -> np.ndarray:
        return self.decode_batch([(self, buf, count)])[0]

    def _parse(self, buf: bytes, count: int) -> _Parsed | np.ndarray:
        """Check a stream's header, models and sizes (see the module docstring); the decoded
        symbols when there is nothing to decode."""
        count = check_count(count)
        if count == 0:
            if len(buf):
                raise DecodeError(f"rans-ctx stream of 0 symbols must be empty, got {len(buf)} bytes")
            return np.zeros(0, dtype=np.uint8)
        most = min(count, self.row, MAX_LANES)
        lanes, pos = read_varint(buf, 0)
        if not 1 <= lanes <= most:
            raise DecodeError(f"rans-ctx stream has {lanes} lanes, expected 1..{most}")
        if pos + 2 > len(buf):
            raise DecodeError("rans-ctx stream is too short for its header")
        bits, used = buf[pos], buf[pos + 1]
        if not 1 <= bits <= max_prob_bits(count):
            raise DecodeError(f"rans-ctx probability bits must be in 1..{max_prob_bits(count)}, found {bits}")
        shared, used = used & _SHARED, used & ~_SHARED
        if not 0 < used < 1 << CONTEXTS:
            raise DecodeError(f"rans-ctx context set {used:#x} is not a non-empty subset of {CONTEXTS} contexts")
        pos += 2
        freq, pos = (_read_shared_model if shared else _read_full_model)(buf, pos, used, bits)
        nwords, odd = divmod(len(buf) - pos - 4 * lanes, 2)
        if nwords < 0 or odd:
            raise DecodeError(f"rans-ctx stream of {lanes} lanes has {len(buf) - pos} bytes after its models")
        if nwords > count * bits // _WORD + lanes:
            raise DecodeError(f"rans-ctx stream holds {nwords} words, more than {count} symbols can need")
        _check_capacity(freq, bits, used, count=count, row=self.row, nwords=nwords, lanes=lanes)
        states = np.frombuffer(buf, dtype="<u4", count=lanes, offset=pos).astype(np.int64)
        if (states < _LOW).any():
            raise DecodeError("rans-ctx stream has a lane state below its lower bound")
        words = np.frombuffer(buf, dtype="<u2", count=nwords, offset=pos + 4 * lanes).astype(np.int64)
        return _Parsed(count, self.row, bits, used, freq, states, words)


@dataclass(frozen=True)
class _Parsed:
    """A validated stream: its count, row, models, lanes' states and words."""

    count: int
    row: int
    bits: int
    used: int
    freq: np.ndarray  # CONTEXTS x 256
    states: np.ndarray  # int64, one per lane
    words: np.ndarray  # int64

    @property
    def steps(self) -> int:
        return -(-self.count // self.states.size)




def _full_model(counts: np.ndarray, used: int, bits: int) -> tuple[bytes, np.ndarray]:
    """A table per used context (rans' form): the model bytes and the frequencies."""
    freq = np.zeros((CONTEXTS, 256), dtype=np.int64)
    head = bytearray()
    for c in range(CONTEXTS):
        if used >> c & 1:
            freq[c] = quantize(counts[c], bits)
            head += _model_bytes(freq[c])
    return bytes(head), freq


def _shared_model(counts: np.ndarray, used: int, bits: int) -> tuple[bytes, np.ndarray] | None:
    """One table of the non-zero levels (symbol 0 absent) and, per used context, a varint: the
    frequency of 0; the rest of M is spread over the levels by :func:`_spread`. None when the
    stream has no non-zero level or M is too small to give each level and zero a frequency."""
    levels = counts.sum(axis=0)
    levels[0] = 0
    present = int(np.count_nonzero(levels))
    m = 1 << bits
    if present == 0 or present + 1 > m:
        return None
    table = quantize(levels, bits)
    head = bytearray(_model_bytes(table))
    freq = np.zeros((CONTEXTS, 256), dtype=np.int64)
    for c in range(CONTEXTS):
        if used >> c & 1:
            zeros, total = int(counts[c, 0]), int(counts[c].sum())
            if zeros == total:
                z = m
            elif zeros == 0:
                z = 0
            else:
                z = min(max(1, (zeros * m + total // 2) // total), m - present)
            freq[c] = _spread(table, z, bits)
            head += write_varint(z)
    return bytes(head), freq


def _spread(table: np.ndarray, zero: int, bits: int) -> np.ndarray:
    """A context's frequencies in the shared model: ``zero`` for symbol 0, and the rest R of M in
    integers over the levels of ``table``: each 1 + floor((R - P) * table / M) (P levels), the
    remainder to the most frequent level (the first, on ties). R is 0 or at least P."""
    m = 1 << bits
    rest = m - zero
    freq = np.zeros(256, dtype=np.int64)
    freq[0] = zero
    if rest:
        present = table > 0
        spread = np.where(present, ((rest - int(present.sum())) * table >> bits) + 1, 0)
        spread[int(np.argmax(table))] += rest - int(spread.sum())
        freq[1:] = spread[1:]
    return freq


def _read_full_model(buf: bytes, pos: int, used: int, bits: int) -> tuple[np.ndarray, int]:
    freq = np.zeros((CONTEXTS, 256), dtype=np.int64)
    for c in range(CONTEXTS):
        if used >> c & 1:
            freq[c], pos = _read_model(buf, pos, 1 << bits)
    return freq, pos


def _read_shared_model(buf: bytes, pos: int, used: int, bits: int) -> tuple[np.ndarray, int]:
    m = 1 << bits
    table, pos = _read_model(buf, pos, m)
    present = int(np.count_nonzero(table))
    if table[0]:
        raise DecodeError("rans-ctx shared level table gives symbol 0 a frequency")
    freq = np.zeros((CONTEXTS, 256), dtype=np.int64)
    for c in range(CONTEXTS):
        if used >> c & 1:
            z, pos = read_varint(buf, pos)
            if z > m or 0 < m - z < present:
                raise DecodeError(f"rans-ctx zero frequency {z} of context {c} leaves no room for {present} levels of {m}")
            freq[c] = _spread(table, z, bits)
    return freq, pos


def _check_capacity(freq: np.ndarray, bits: int, used: int, *, count: int, row: int, nwords: int,
                    lanes: int) -> None:
    """Refuse a count the stream's bits cannot hold, before the output is allocated.

    The first row (context 0) holds at most ``row`` symbols, and so does context 1 when its table
    has no zero (a non-zero takes its column out of context 1 for good); every other symbol costs
    at least the cheapest remaining context's log2(M / fmax) bits. (A context whose one symbol has
    all of M codes any count in no bits: bounding ``count`` is then the container's job.)
    """
    rows_only = min(count, row)
    free = rows_only * (2 if used & 2 and freq[1, 0] == 0 else 1)
    costly = [c for c in range(1, CONTEXTS) if used >> c & 1 and not (c == 1 and freq[1, 0] == 0)]
    if count <= free:
        return
    least = min((bits - math.log2(int(freq[c].max())) for c in costly), default=math.inf)
    if (count - free) * least > _WORD * (nwords + lanes) + 64:  # the words and the states' 16 bits a lane
        raise DecodeError(f"rans-ctx stream of {nwords} words cannot hold {count} symbols")


def _buckets() -> np.ndarray:
    """The context by q = ceil(64 * nonzero / rows above), 0..64 (rows above > 0): 64 * nonzero
    > e * rows exactly when q > e, and q = 0 exactly when nonzero = 0, so the contexts of the module
    docstring are ranges of q."""
    q = np.arange(65)
    return np.where(q == 0, 1, 2 + (q[:, None] > np.array(EDGES)).sum(axis=1)).astype(np.int64)


def _tables(p: _Parsed) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Slot (context << bits | x mod M) -> symbol, frequency (0 in a context without a model: an
    error when reached) and bias (slot - cumulative frequency), for every context: 6 M entries."""
    m = 1 << p.bits
    slots = np.arange(CONTEXTS * m) & (m - 1)
    ctx_of_slot = np.arange(CONTEXTS * m) >> p.bits
    cum = np.cumsum(p.freq, axis=1)
    symbol_of = np.zeros(CONTEXTS * m, dtype=np.int64)
    for c in range(CONTEXTS):
        if p.used >> c & 1:
            symbol_of[c * m:(c + 1) * m] = np.searchsorted(cum[c], slots[:m], side="right")
    freq_of = p.freq[ctx_of_slot, symbol_of]
    bias_of = slots - (cum - p.freq)[ctx_of_slot, symbol_of]
    return symbol_of.astype(np.uint8), freq_of, bias_of


def _decode_scalar(p: _Parsed) -> np.ndarray:
    """One stream symbol by symbol in plain Python (symbol ``n`` of lane ``n % lanes``, in order):
    the symbols and errors of :func:`_decode_joint`, faster for a few lanes (see
    :data:`SCALAR_LANES`). Tables, words and the column counters are numpy arrays read through
    memoryviews: memory stays that of the joint decoder."""
    symbol_of, freq_of, bias_of = _tables(p)
    sym, fr, bi = memoryview(symbol_of), memoryview(freq_of), memoryview(bias_of)
    w = memoryview(p.words)  # int64, native order (_parse made it)
    counts_above = np.full(min(p.row, p.count), -1, dtype=np.int64)  # 64 * non-zeros - 1, as there
    counter = memoryview(counts_above)
    lut = _buckets().tolist()
    states = p.states.tolist()
    lanes, count, row, bits, nwords = len(states), p.count, p.row, p.bits, len(w)
    mask, low, pos = (1 << bits) - 1, _LOW, 0
    out = bytearray(count)
    for n in range(count):
        lane = n % lanes
        x = states[lane]
        above, col = divmod(n, row)
        c = counter[col]
        slot = (x & mask) | ((lut[(c + above) // above] if above else 0) << bits)
        f = fr[slot]
        if not f:
            raise DecodeError("rans-ctx stream reaches a context that has no model")
        s = sym[slot]
        out[n] = s
        if s:
            counter[col] = c + 64
        x = f * (x >> bits) + bi[slot]
        if x < low:
            if pos == nwords:
                raise DecodeError(f"rans-ctx stream ends early (needs more than its {nwords} words)")
            x = (x << _WORD) | w[pos]
            pos += 1
        states[lane] = x
    return scalar_result(out, pos, nwords, states, coder="rans-ctx")


def _decode_joint(streams: list[_Parsed]) -> list[np.ndarray]:
    """The lock-step loop over the lanes of every stream: one symbol of every active lane a step,
    each from its own stream's table of its context, the context read from its stream's column
    counters; each lane reads its own stream's words."""
    nstreams = len(streams)
    lanes = np.array([p.states.size for p in streams], dtype=np.int64)
    stream_of = np.repeat(np.arange(nstreams), lanes)
    local = np.arange(int(lanes.sum())) - np.repeat(np.cumsum(lanes) - lanes, lanes)
    tables = [_tables(p) for p in streams]
    symbol_of, freq_of, bias_of = (np.concatenate([t[k] for t in tables]) for k in range(3))
    table_start = np.cumsum([0] + [t[0].size for t in tables])[:-1]
    counts = np.array([p.count for p in streams], dtype=np.int64)
    rows = np.array([p.row for p in streams], dtype=np.int64)
    columns = np.minimum(rows, counts)
    col_start = np.cumsum(columns) - columns
    out_start = np.cumsum(counts) - counts
    words = np.concatenate([p.words for p in streams])
    nwords = np.array([p.words.size for p in streams], dtype=np.int64)
    word_start = np.cumsum(nwords) - nwords
    read = np.zeros(nstreams, dtype=np.int64)
    x = np.concatenate([p.states for p in streams])
    bits_l = np.array([p.bits for p in streams], dtype=np.int64)[stream_of]
    # Column counters hold 64 * non-zeros - 1: ceil(64 * non-zeros / rows above) is then
    # (counter + rows above) // rows above, the index of the context in the bucket table.
    counter = np.full(int(columns.sum()), -1, dtype=np.int64)
    out = np.empty(int(counts.sum()), dtype=np.uint8)
    lut = _buckets()
    checked = any(p.used != (1 << CONTEXTS) - 1 for p in streams)
    steps = -(-counts // lanes)
    last = counts - (steps - 1) * lanes  # lanes of each stream decoding in its last step
    changes = set((steps - 1).tolist()) | set(steps.tolist()) | {0}
    first_row_steps = int((-(-rows // lanes)).max())  # steps that may hold a first-row symbol
    act = np.zeros(0, dtype=np.int64)
    xa = x[act]
    for t in range(int(steps.max())):
        if t in changes:  # a stream enters its last step or is done: the active lanes change
            x[act] = xa
            keep = np.where(t < steps - 1, lanes, np.where(t == steps - 1, last, 0))
            act = np.flatnonzero(local < keep[stream_of])
            a_stream, a_bits, a_row = stream_of[act], bits_l[act], rows[stream_of[act]]
            a_mask, a_table = (1 << a_bits) - 1, table_start[a_stream]
            a_col0, a_stride = col_start[a_stream], lanes[a_stream]
            a_n = local[act] + t * a_stride
            a_out = out_start[a_stream] + a_n
            xa = x[act]
        above, col = np.divmod(a_n, a_row)
        col += a_col0
        c = counter[col]
        if t < first_row_steps:
            ctx = np.where(above == 0, 0, lut[np.maximum(c + above, 0) // np.maximum(above, 1)])
        else:
            ctx = lut[(c + above) // above]
        slot = (xa & a_mask) + (ctx << a_bits) + a_table
        f = freq_of[slot]
        if checked and not f.all():
            raise DecodeError("rans-ctx stream reaches a context that has no model")
        sym = symbol_of[slot]
        out[a_out] = sym
        counter[col] = c + ((sym != 0) << 6)
        xa = f * (xa >> a_bits) + bias_of[slot]
        refill_states(xa, a_stream, words, word_start, read, nwords, coder="rans-ctx")
        a_n += a_stride
        a_out += a_stride
    x[act] = xa
    if (read != nwords).any() or (x != _LOW).any():
        raise DecodeError("rans-ctx stream does not end where its symbols do (corrupt or trailing words)")
    return [out[out_start[i]:out_start[i] + counts[i]] for i in range(nstreams)]
