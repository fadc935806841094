"""Length-limited canonical Huffman coding, vectorized with numpy.

Code lengths come from package-merge, which is optimal under the ``max_bits`` limit (and equal to
plain Huffman when the limit does not bind). Codes are canonical, so the stream stores lengths
only. To decode without a Python loop per symbol, the symbols are cut into byte-aligned blocks
that are decoded in lock-step: each loop step decodes one symbol in every block at once with a
table lookup, so the loop runs ``block_size`` times, not ``count`` times.

Stream layout (the empty stream codes zero symbols)::

    byte    L            longest code length, 0..max_bits; 0 means one distinct symbol
    byte    max_symbol   largest symbol present
    -- if L == 0 the stream ends here and decodes to ``count`` copies of max_symbol --
    bytes   lengths      code lengths of symbols 0..max_symbol, 4 bits each (5 when L == 16),
                         MSB first, zero-padded to a byte (the RawCoder layout)
    varint  block_size   symbols per block, 1..count; the last block holds the rest
    byte    width        byte width of each block size below: 1, 2, 4 or 8, the smallest that fits
    bytes   sizes        byte size of every block but the last, little-endian
    bytes   blocks       back to back; the last block takes the rest of the stream

Each block holds its symbols' codes MSB first, zero-padded to a whole byte. The decoder accepts
only what the encoder writes: a complete prefix code (Kraft sum exactly 1), lengths within
``max_bits``, blocks that end in their last byte with zero padding, and no trailing bytes.
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
    histogram,
    read_varint,
    write_varint,
)
from onnxdc.coders.raw import RawCoder, packed_size
from onnxdc.coders.registry import register_coder
from onnxdc.errors import DecodeError, EncodeError

#: Largest automatic block size (symbols).
_AUTO_BLOCK_MAX = 16 * 1024

_LIMIT_BITS = 16  # longest code the 24-bit peek window below can read at any bit offset
_PEEK_BITS = 16  # bits the decoder looks up at once (at least _LIMIT_BITS)
_PEEK_MASK = (1 << _PEEK_BITS) - 1
_GROUP_MAX = 8  # most symbols one lookup decodes
_ENCODE_CHUNK = 1 << 21  # symbols packed at once, to bound the encoder's temporary arrays
_CHECK_EVERY = 64  # decode steps between overrun checks; sets the read padding below
_READ_PAD = 2 * _CHECK_EVERY + 3  # >= bytes a block can overrun between checks, plus the window
_SIZE_WIDTHS = (1, 2, 4, 8)


def huffman_code_lengths(counts: np.ndarray, max_bits: int) -> np.ndarray:
    """Return optimal code lengths of at most ``max_bits`` bits for symbol ``counts``.

    Uses package-merge: for each level from ``max_bits`` up to 1, the items of the level below are
    paired into packages and merged with the leaves; the ``2n - 2`` cheapest items of the top
    level pick the lengths. A symbol of count 0 gets length 0, and so does the only symbol of a
    one-symbol alphabet (its stream needs no bits at all).

    Raises:
        ConfigError: ``max_bits`` is not in 1..16.
        CoderError: more distinct symbols than ``2**max_bits`` codes can tell apart.
    """
    check_int_param("huffman", "max_bits", max_bits, 1, _LIMIT_BITS)
    counts = np.asarray(counts, dtype=np.int64)
    if counts.ndim != 1 or (counts < 0).any():
        raise ValueError("counts must be a 1-D array of non-negative integers")
    lengths = np.zeros(counts.size, dtype=np.uint8)
    used = np.flatnonzero(counts)
    n = used.size
    if n <= 1:
        return lengths
    if n > 1 << max_bits:
        raise EncodeError(f"{n} distinct symbols need codes longer than max_bits={max_bits}")
    order = used[np.argsort(counts[used], kind="stable")]  # ascending count, ties by symbol
    leaves = counts[order]
    leaf_flags = [np.ones(n, dtype=bool)]  # per level, deepest first: which items are leaves
    items = leaves
    for _ in range(max_bits - 1):
        pairs = items.size // 2
        packages = items[0 : 2 * pairs : 2] + items[1 : 2 * pairs : 2]
        merged = np.concatenate([leaves, packages])
        by_weight = np.argsort(merged, kind="stable")  # leaves first on ties
        items = merged[by_weight]
        leaf_flags.append(by_weight < n)
    # Walk from the top level down: the leaves among the selected items are the cheapest ones
    # (they are merged in ascending order), and each selected package selects two items below.
    depth = np.zeros(n + 1, dtype=np.int64)
    take = 2 * n - 2
    for flags in reversed(leaf_flags):
        taken_leaves = int(np.count_nonzero(flags[:take]))
        depth[0] += 1
        depth[taken_leaves] -= 1
        take = 2 * (take - taken_leaves)
    lengths[order] = np.cumsum(depth[:n])
    return lengths


def payload_bits(counts: np.ndarray, lengths: np.ndarray) -> int:
    """Return the payload size in bits of symbols with these ``counts`` coded at ``lengths``."""
    return int(np.dot(np.asarray(counts, dtype=np.int64), np.asarray(lengths, dtype=np.int64)))


@dataclass(frozen=True)
class HuffmanPlan:
    """A Huffman coding of one stream, everything but the packed bits.

    ``head`` is the stream up to the payload (header, code lengths, block sizes); ``lengths`` the
    code length of every symbol (None when no bits follow: empty or one-symbol streams);
    ``block_bytes`` the payload bytes of every block; ``size`` the whole stream's bytes.
    """

    head: bytes
    lengths: np.ndarray | None
    block: int
    block_bytes: np.ndarray
    size: int


@register_coder
class HuffmanCoder(Coder):
    """Canonical Huffman coder with codes of at most ``max_bits`` bits.

    Args:
        max_bits: Longest allowed code, 1..16; the symbols present must fit
            (``ceil(log2(distinct symbols)) <= max_bits``), which is checked at encode.
        block_size: Symbols per independently decodable block; 0 picks a size from the count.
            Decoding takes one numpy step per symbol of a block, so very large blocks are slow;
            very small ones cost padding and a size field per block.
    """

    coder_id = "huffman"
    main_param = "max_bits"
    can_batch = True
    numpy_decode = True

    def batch_part(self, buf: bytes, *, count: int) -> tuple[type[Coder], Coder, bytes]:
        """Huffman streams decode together in one lock-step (:func:`decode_many`)."""
        return HuffmanCoder, self, buf

    @classmethod
    def decode_batch(cls, items: Sequence[tuple[Coder, bytes, int]]) -> list[np.ndarray]:
        return decode_many(items)  # type: ignore[arg-type]

    def __init__(self, max_bits: int = 15, block_size: int = 0) -> None:
        self.max_bits = check_int_param(self.coder_id, "max_bits", max_bits, 1, _LIMIT_BITS)
        self.block_size = check_int_param(self.coder_id, "block_size", block_size, 0, 2**62)

    def get_config(self) -> dict[str, Any]:
        return {"id": self.coder_id, "max_bits": self.max_bits, "block_size": self.block_size}

    def max_encoded_size(self, count: int) -> int:
        if count == 0:
            return 0
        block = self._block_size_for(count)
        nblocks = -(-count // block)
        # Header, a size per block but the last, and at most 16 bits (2 bytes) per symbol.
        header = 2 + packed_size(256, 5) + len(write_varint(block)) + 1
        return header + (nblocks - 1) * _size_width(2 * block) + 2 * count

    def _block_size_for(self, count: int) -> int:
        """Pick the block size: 4 Ki symbols, growing as ``2 * sqrt(count)`` up to 16 Ki.

        Decoding loops once per symbol of a block (a fixed cost of several microseconds a step)
        while each block costs a few bytes of size field and padding: 4 Ki keeps both small for
        streams up to millions of symbols.
        """
        block = self.block_size
        if block == 0:
            block = -(-min(_AUTO_BLOCK_MAX, max(4096, math.ceil(2 * math.sqrt(count)))) // 1024) * 1024
        return min(block, count)

    def encode(self, symbols: np.ndarray) -> bytes:
        """Encode ``symbols``.

        Raises:
            CoderError: the symbols present do not fit in codes of ``max_bits`` bits.
        """
        symbols = check_symbols(symbols)
        return self.encode_planned(symbols, self.plan(symbols))

    def size_floor(self, counts: np.ndarray) -> int:
        """A lower bound on the encoded size of symbols with histogram ``counts``: the payload's bytes.

        Costs a code-length computation, not a pass over the symbols: a caller choosing among
        coders skips :meth:`plan` when even this bound cannot win.
        """
        return (payload_bits(counts, huffman_code_lengths(counts, self.max_bits)) + 7) >> 3

    def plan(self, symbols: np.ndarray, counts: np.ndarray | None = None) -> HuffmanPlan:
        """Work out the code and the exact encoded size of ``symbols`` without packing any bits.

        Packing is most of the encoder's work; a caller choosing among coders can compare
        :attr:`HuffmanPlan.size` first and pack (:meth:`encode_planned`) only if Huffman wins.
        ``counts`` is the symbols' histogram (``bincount`` of 256), if the caller has it.

        Raises:
            CoderError: the symbols present do not fit in codes of ``max_bits`` bits.
        """
        symbols = check_symbols(symbols)
        count = symbols.size
        if count == 0:
            return HuffmanPlan(b"", None, 0, np.zeros(0, dtype=np.int64), 0)
        if counts is None:
            counts = histogram(symbols)
        lengths = huffman_code_lengths(counts, self.max_bits)
        longest = int(lengths.max())
        max_symbol = int(np.flatnonzero(counts)[-1])
        head = bytes([longest, max_symbol])
        if longest == 0:
            return HuffmanPlan(head, None, 0, np.zeros(0, dtype=np.int64), len(head))
        width = 5 if longest == _LIMIT_BITS else 4
        head += RawCoder(width).encode(lengths[: max_symbol + 1])
        block = self._block_size_for(count)
        head += write_varint(block)
        block_bytes = (_block_bits(symbols, lengths, block) + 7) >> 3
        size_width = _size_width(int(block_bytes[:-1].max()) if block_bytes.size > 1 else 0)
        head += bytes([size_width]) + block_bytes[:-1].astype(f"<u{size_width}").tobytes()
        return HuffmanPlan(head, lengths, block, block_bytes, len(head) + int(block_bytes.sum()))

    def encode_planned(self, symbols: np.ndarray, plan: HuffmanPlan) -> bytes:
        """Encode ``symbols`` by a :meth:`plan` made from these very symbols."""
        if plan.lengths is None:
            return plan.head
        symbols = check_symbols(symbols)
        codes = _canonical_codes(plan.lengths, int(plan.lengths.max()))
        blocks_per_step = max(1, _ENCODE_CHUNK // plan.block)
        step = blocks_per_step * plan.block
        parts = [plan.head]
        for k, i in enumerate(range(0, symbols.size, step)):
            sizes = plan.block_bytes[k * blocks_per_step : (k + 1) * blocks_per_step]
            parts.append(_pack_blocks(symbols[i : i + step], plan.lengths, codes, plan.block, sizes))
        return b"".join(parts)

    def decode(self, buf: bytes, *, count: int) -> np.ndarray:
        """Decode exactly ``count`` symbols, validating every header field and block.

        Raises:
            CoderError: the stream is truncated, malformed, or holds trailing bytes.
        """
        parsed = self._parse(buf, count)
        return parsed if isinstance(parsed, np.ndarray) else _decode_blocks([parsed])[0]

    def _parse(self, buf: bytes, count: int) -> np.ndarray | _Parsed:
        """Validate a stream's header: the symbols themselves for trivial streams, else its parts."""
        count = check_count(count)
        if count == 0:
            if len(buf):
                raise DecodeError(f"huffman stream of 0 symbols must be empty, got {len(buf)} bytes")
            return np.zeros(0, dtype=np.uint8)
        if len(buf) < 2:
            raise DecodeError(f"huffman stream of {len(buf)} bytes is too short for its header")
        longest, max_symbol = buf[0], buf[1]
        if longest > self.max_bits:
            raise DecodeError(f"huffman code length {longest} exceeds max_bits={self.max_bits}")
        if longest == 0:
            if len(buf) != 2:
                raise DecodeError(f"one-symbol huffman stream has {len(buf) - 2} trailing bytes")
            return np.full(count, max_symbol, dtype=np.uint8)
        lengths, pos = _read_lengths(buf, 2, longest, max_symbol)
        block, pos = read_varint(buf, pos)
        if not 1 <= block <= count:
            raise DecodeError(f"huffman block size {block} is outside 1..{count}")
        sizes, pos = _read_block_sizes(buf, pos, nblocks=-(-count // block))
        payload = np.frombuffer(buf, dtype=np.uint8)[pos:]
        if count * int(lengths[lengths > 0].min()) > 8 * payload.size:
            raise DecodeError(
                f"huffman payload of {payload.size} bytes is too short for {count} symbols"
            )
        if int(sizes.sum()) > payload.size:
            raise DecodeError(
                f"huffman block sizes add up to {int(sizes.sum())} bytes, payload has {payload.size}"
            )
        sizes = np.append(sizes, payload.size - sizes.sum())
        return _Parsed(payload, sizes, lengths, longest, count, block)


def decode_many(items: Sequence[tuple[HuffmanCoder, bytes, int]]) -> list[np.ndarray]:
    """Decode several streams (coder, bytes, count) in one lock-step over all their blocks.

    The lock-step loop runs about ``block / symbols per lookup`` times whatever the number of
    blocks, so one loop over many streams costs little more than over one: a model with dozens
    of coded tensors decodes in one pass instead of dozens. The results are those of
    :meth:`HuffmanCoder.decode` on each stream; so are the errors, up to which stream and block
    they name (decode the streams one by one to find the failing one).
    """
    out: list[np.ndarray | None] = [None] * len(items)
    pending: list[tuple[int, _Parsed]] = []
    for i, (coder, buf, count) in enumerate(items):
        parsed = coder._parse(buf, count)
        if isinstance(parsed, np.ndarray):
            out[i] = parsed
        else:
            pending.append((i, parsed))
    if pending:
        for (i, _), symbols in zip(pending, _decode_blocks([p for _, p in pending])):
            out[i] = symbols
    return out  # type: ignore[return-value]


@dataclass(frozen=True)
class _Parsed:
    """A validated stream header: the payload, its block sizes and the code."""

    payload: np.ndarray
    sizes: np.ndarray
    lengths: np.ndarray
    longest: int
    count: int
    block: int


def _size_width(value: int) -> int:
    """Return the smallest width in :data:`_SIZE_WIDTHS` whose bytes can hold ``value``."""
    return next(w for w in _SIZE_WIDTHS if value < 1 << (8 * w))


def _canonical_order(lengths: np.ndarray, longest: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the coded symbols in canonical order and the span of each in a ``longest``-bit table.

    Canonical codes are handed out in order of (length, symbol), so in a table indexed by the
    next ``longest`` bits each symbol owns ``2**(longest - length)`` consecutive entries, in
    that order. Both the codes and the decoding table follow from these spans.
    """
    used = np.flatnonzero(lengths)
    order = used[np.argsort(lengths[used], kind="stable")]
    spans = np.left_shift(1, longest - lengths[order].astype(np.int64))
    return order, spans


def _canonical_codes(lengths: np.ndarray, longest: int) -> np.ndarray:
    """Return each symbol's canonical code (0 for unused symbols) as ``uint64``."""
    order, spans = _canonical_order(lengths, longest)
    codes = np.zeros(lengths.size, dtype=np.uint64)
    first_entry = np.cumsum(spans) - spans
    codes[order] = (first_entry >> (longest - lengths[order].astype(np.int64))).astype(np.uint64)
    return codes


def _block_bits(symbols: np.ndarray, lengths: np.ndarray, block: int) -> np.ndarray:
    """Return the code bits of every block of ``block`` symbols (the last one holds the rest)."""
    nbits = lengths[symbols]  # uint8: codes are at most 16 bits
    full = symbols.size // block * block
    sums = nbits[:full].reshape(-1, block).sum(axis=1, dtype=np.int64)
    if full < symbols.size:
        sums = np.append(sums, nbits[full:].sum(dtype=np.int64))
    return sums


def _group_codes(symbols: np.ndarray, lengths: np.ndarray, codes: np.ndarray, group: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Return the concatenated codes and bit lengths of every ``group`` consecutive symbols.

    Pairs come from a table of all 65536 symbol pairs, indexed by the pair read as one
    little-endian ``uint16``; two pairs make a group of four (at most 64 bits). A last, shorter
    group takes the symbols left over. Fewer, longer codes make the packing passes shorter.
    """
    n = symbols.size
    if group == 1:
        return codes[symbols], lengths[symbols].astype(np.int64)
    lens64 = lengths.astype(np.uint64)
    # Row s1, column s0: the pair (s0, s1), i.e. the uint16 s0 | s1 << 8.
    pair_code = ((codes[None, :] << lens64[:, None]) | codes[:, None]).reshape(-1)
    pair_len = (lengths[None, :].astype(np.uint8) + lengths[:, None].astype(np.uint8)).reshape(-1)
    whole = n - n % group
    pairs = symbols[:whole].view("<u2")
    gcode, glen = pair_code[pairs], pair_len[pairs]
    if group == 4:
        gcode = (gcode[0::2] << glen[1::2].astype(np.uint64)) | gcode[1::2]
        glen = glen[0::2] + glen[1::2]
    glen = glen.astype(np.int64)
    if whole < n:  # the leftover symbols, as one more (shorter) group
        code, bits = 0, 0
        for sym in symbols[whole:].tolist():
            code, bits = (code << int(lengths[sym])) | int(codes[sym]), bits + int(lengths[sym])
        gcode = np.append(gcode, np.uint64(code))
        glen = np.append(glen, bits)
    return gcode, glen


def _pack_blocks(
    symbols: np.ndarray, lengths: np.ndarray, codes: np.ndarray, block: int, block_bytes: np.ndarray
) -> bytes:
    """Pack ``symbols`` into byte-aligned blocks of ``block`` symbols of ``block_bytes`` bytes.

    ``lengths`` and ``codes`` (``uint64``) map each symbol to its code length and canonical
    code. Symbols are first joined into groups of up to four (when a block is a whole number of
    groups), whose codes are at most 64 bits.

    Every group's bit offset comes from a cumulative sum, shifted so each block starts on a
    byte. A code touches at most two 64-bit words: the part in its first word is summed per
    word (codes in one word occupy disjoint bits, so the sum is their OR) and the part spilling
    into the next word is OR-ed in; only the code crossing a word boundary spills, so those
    targets are distinct.
    """
    n = symbols.size
    group = next(g for g in (4, 2, 1) if n <= block or block % g == 0)
    code, nbits = _group_codes(symbols, lengths, codes, group)
    per_block = -(-min(block, n) // group)  # groups per block
    starts = np.arange(0, code.size, per_block)
    block_first_bit = 8 * (np.cumsum(block_bytes) - block_bytes)
    offset = np.cumsum(nbits) - nbits
    offset += np.repeat(block_first_bit - offset[starts], per_block)[: code.size]
    total = int(block_bytes.sum())
    word = offset >> 6
    end = (offset & 63) + nbits
    first_part = (code >> np.maximum(end - 64, 0).astype(np.uint64)) << np.maximum(
        64 - end, 0
    ).astype(np.uint64)
    words = np.zeros((total + 7) // 8, dtype=np.uint64)
    run_starts = np.flatnonzero(np.diff(word, prepend=-1))
    words[word[run_starts]] = np.add.reduceat(first_part, run_starts)
    spill = end > 64
    words[word[spill] + 1] |= code[spill] << (128 - end[spill]).astype(np.uint64)
    return words.astype(">u8").tobytes()[:total]


def _read_lengths(buf: bytes, pos: int, longest: int, max_symbol: int) -> tuple[np.ndarray, int]:
    """Read and validate the code-length table; return it and the position after it."""
    width = 5 if longest == _LIMIT_BITS else 4
    nbytes = packed_size(max_symbol + 1, width)
    if pos + nbytes > len(buf):
        raise DecodeError(f"huffman code-length table needs {nbytes} bytes, {len(buf) - pos} left")
    lengths = RawCoder(width).decode(buf[pos : pos + nbytes], count=max_symbol + 1)
    if int(lengths.max()) != longest:
        raise DecodeError(
            f"huffman header says the longest code is {longest} bits, table has {int(lengths.max())}"
        )
    if lengths[max_symbol] == 0:
        raise DecodeError(f"huffman max_symbol {max_symbol} has no code")
    used = lengths[lengths > 0].astype(np.int64)
    if int(np.left_shift(1, longest - used).sum()) != 1 << longest:
        raise DecodeError("huffman code lengths do not form a complete prefix code")
    return lengths, pos + nbytes


def _read_block_sizes(buf: bytes, pos: int, nblocks: int) -> tuple[np.ndarray, int]:
    """Read the sizes of all blocks but the last; return them and the position after them."""
    if pos >= len(buf):
        raise DecodeError("huffman stream ends before its block-size width")
    width = buf[pos]
    pos += 1
    if width not in _SIZE_WIDTHS:
        raise DecodeError(f"huffman block-size width must be one of {_SIZE_WIDTHS}, got {width}")
    nbytes = (nblocks - 1) * width
    if nbytes > len(buf) - pos:
        raise DecodeError(
            f"huffman stream has {len(buf) - pos} bytes left, {nblocks - 1} block sizes need {nbytes}"
        )
    if nblocks == 1:
        sizes = np.zeros(0, dtype=np.int64)
    else:
        sizes = np.frombuffer(buf, dtype=f"<u{width}", count=nblocks - 1, offset=pos)
    top = int(sizes.max()) if sizes.size else 0
    if _size_width(top) != width:
        raise DecodeError(f"huffman block sizes use {width} bytes where {_size_width(top)} suffice")
    if top > len(buf):  # also keeps the int64 sums of the sizes from overflowing
        raise DecodeError(f"huffman block size {top} exceeds the stream size {len(buf)}")
    return sizes.astype(np.int64), pos + nbytes


def _decode_blocks(streams: list[_Parsed]) -> list[np.ndarray]:
    """Decode every block of ``streams`` in lock-step and check that each ends exactly in its
    last byte.

    Each step looks up the next :data:`_PEEK_BITS` bits of every block in a table of the whole
    codes they start with (:func:`_group_table`), so one numpy step decodes several symbols of
    every block: the loop runs about ``block / symbols per lookup`` times. The loop only records
    each step's table entry; symbols, the cut at each block's symbol count and each block's exact
    end position are worked out from those entries afterwards, all at once. Several streams share
    the loop: their payloads are laid end to end and their tables stacked, each block looking up
    in its own stream's rows.
    """
    tables = [_group_table(p.lengths, p.longest) for p in streams]
    table = tables[0] if len(tables) == 1 else _GroupTable(
        *(np.concatenate([getattr(t, f) for t in tables]) for f in ("n", "symbols", "after", "bits")),
        max(t.group for t in tables))
    payload = streams[0].payload if len(streams) == 1 else np.concatenate([p.payload for p in streams])
    sizes = np.concatenate([p.sizes for p in streams])
    # A 24-bit window starting at every byte holds the next 16 bits at any bit offset (<= 7). The
    # zero padding keeps reads in bounds between overrun checks.
    data = np.zeros(payload.size + _READ_PAD, dtype=np.uint32)
    data[: payload.size] = payload
    window = (data[:-2] << 16) | (data[1:-1] << 8) | data[2:]
    start = 8 * (np.cumsum(sizes) - sizes)
    end = start + 8 * sizes
    want = np.concatenate([np.append(np.full(p.sizes.size - 1, p.block, dtype=np.int64),
                                     p.count - (p.sizes.size - 1) * p.block) for p in streams])
    rows = np.repeat(np.arange(len(streams), dtype=np.uint32) << np.uint32(_PEEK_BITS),
                     [p.sizes.size for p in streams])
    entries = _lockstep(start.copy(), end, want, window, table, rows)
    symbols = _finish_blocks(entries, table, start, end, sizes, payload, want)
    return np.split(symbols, np.cumsum([p.count for p in streams])[:-1])


@dataclass(frozen=True)
class _GroupTable:
    """What a :data:`_PEEK_BITS`-bit lookahead decodes: up to ``group`` whole codes.

    Row ``e`` (the lookahead's value) gives ``n[e]`` symbols ``symbols[e, :n[e]]``, the bits
    consumed after each of them ``after[e, :n[e]]``, and their total ``bits[e]`` (always >= 1).
    ``symbols`` has :data:`_GROUP_MAX` columns whatever ``group`` is, so a row is one ``uint64``.
    """

    n: np.ndarray
    symbols: np.ndarray
    after: np.ndarray
    bits: np.ndarray
    group: int


def _group_table(lengths: np.ndarray, longest: int) -> _GroupTable:
    """Build the multi-symbol lookup table of a canonical code.

    The ``k``-th code of an entry is read from the bits after the first ``k`` codes, zero-filled
    past the lookahead; it is kept only if all of its bits lie inside the lookahead, in which case
    the zero fill did not change it (no other code is a prefix of it). Since ``longest`` is at most
    the lookahead, the first code always fits; ``group`` is the most codes any entry holds.
    """
    order, spans = _canonical_order(lengths, longest)
    symbol_of = np.repeat(order.astype(np.uint8), spans)
    length_of = np.repeat(lengths[order].astype(np.uint32), spans)
    size = 1 << _PEEK_BITS
    ext = np.arange(size, dtype=np.uint32) << np.uint32(longest)  # the lookahead, then `longest` zeros
    used = np.zeros(size, dtype=np.uint32)
    n = np.zeros(size, dtype=np.uint8)
    symbols = np.zeros((size, _GROUP_MAX), dtype=np.uint8)
    after = np.zeros((size, _GROUP_MAX), dtype=np.uint8)
    fits = np.ones(size, dtype=bool)
    code_mask = np.uint32((1 << longest) - 1)
    group = 0
    while group < _GROUP_MAX:
        peek = (ext >> (_PEEK_BITS - used)) & code_mask
        length = length_of[peek]
        fits &= used + length <= _PEEK_BITS
        if not fits.any():
            break
        symbols[:, group] = np.where(fits, symbol_of[peek], 0)
        used += np.where(fits, length, 0).astype(np.uint32)
        after[:, group] = used
        n += fits
        group += 1
    return _GroupTable(n, symbols, after, used.astype(np.int64), group)


def _lockstep(
    pos: np.ndarray, end: np.ndarray, want: np.ndarray, window: np.ndarray, table: _GroupTable,
    rows: np.ndarray,
) -> np.ndarray:
    """Look up every block's next table entry until each block has ``want`` symbols.

    Returns the entries, one row per step (column ``b`` is block ``b``), offset by ``rows`` (the
    first table row of each block's stream). Every
    :data:`_CHECK_EVERY` steps the blocks still short of symbols are checked against their ends,
    so corrupt data stops early, and finished blocks are parked at their end, so the lookahead
    never runs past the read padding. A step consumes at least one bit per block, so the loop
    ends within ``max(want)`` steps.
    """
    nblocks = pos.size
    steps = int(want.max())
    entries = np.empty((steps, nblocks), dtype=np.uint32)
    got = np.zeros(nblocks, dtype=np.int64)
    byte = np.empty(nblocks, dtype=np.int64)
    shift = np.empty(nblocks, dtype=np.uint32)
    peek = np.empty(nblocks, dtype=np.uint32)
    step_bits = np.empty(nblocks, dtype=np.int64)
    bits_of, n_of, base = table.bits, table.n, 24 - _PEEK_BITS
    done = 0
    while done < steps:
        stop = min(done + _CHECK_EVERY, steps)
        for t in range(done, stop):
            np.right_shift(pos, 3, out=byte)
            np.take(window, byte, out=peek)
            np.bitwise_and(pos, 7, out=shift, casting="unsafe")
            np.subtract(base, shift, out=shift)
            np.right_shift(peek, shift, out=peek)
            np.bitwise_and(peek, _PEEK_MASK, out=peek)
            np.add(peek, rows, out=entries[t])
            np.take(bits_of, entries[t], out=step_bits)
            pos += step_bits
        got += n_of[entries[done:stop]].sum(axis=0, dtype=np.int64)
        done = stop
        short = got < want
        if (pos[short] > end[short]).any():
            raise DecodeError("huffman block runs past its end")
        if not short.any():
            return entries[:done]
        np.minimum(pos, np.where(short, pos, end), out=pos)
    raise DecodeError("huffman block runs past its end")  # unreachable: every step decodes a symbol


def _finish_blocks(
    entries: np.ndarray,
    table: _GroupTable,
    start: np.ndarray,
    end: np.ndarray,
    sizes: np.ndarray,
    payload: np.ndarray,
    want: np.ndarray,
) -> np.ndarray:
    """Turn the recorded entries into symbols and check where each block's codes end.

    A block's last step may look past its symbol count (into padding or the next block): only
    the first ``want`` symbols of each block are kept, and the block's codes end after the bits of
    the steps before its last one plus those of the symbols it keeps from that step.
    """
    by_block = np.ascontiguousarray(entries.T)  # (blocks, steps)
    nblocks, steps = by_block.shape
    n = table.n[by_block]
    before = np.cumsum(n, axis=1, dtype=np.int64) - n
    last = (before < want[:, None]).sum(axis=1) - 1  # the step holding each block's last symbol
    rows = np.arange(nblocks)
    keep_last = want - before[rows, last]  # symbols kept from that step, >= 1
    after_last = np.arange(steps) > last[:, None]
    n[after_last] = 0
    n[rows, last] = keep_last
    bits = table.bits[by_block]
    bits[after_last] = 0
    lead = bits.sum(axis=1) - bits[rows, last]  # bits of the steps before the last one
    pos = start + lead + table.after[by_block[rows, last], keep_last - 1]
    slack = end - pos
    bad = np.flatnonzero((slack < 0) | (slack >= 8))
    if bad.size:
        i = int(bad[0])
        raise DecodeError(
            f"huffman block {i} has {int(sizes[i])} bytes but its codes take {int(pos[i] - start[i])} bits"
        )
    last_byte = payload[(end >> 3) - 1].astype(np.int64)
    if (last_byte & ((1 << slack) - 1)).any():
        raise DecodeError("huffman block has non-zero padding bits")
    # Rows of 8 bytes move as one uint64; so do the masks of the first n bytes of a row.
    symbols = table.symbols.view(np.uint64).reshape(-1)[by_block].view(np.uint8)
    first_n = (np.arange(_GROUP_MAX) < np.arange(_GROUP_MAX + 1)[:, None]).view(np.uint64).reshape(-1)
    return symbols[first_n[n].view(bool)]
