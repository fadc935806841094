"""The rANS coder: its size against the order-0 entropy, its stream layout, and malformed streams
(the shared round-trip and malformed-input checks run over it in ``tests/test_coders.py``)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from coder_helpers import check_decode_fails, check_encode_decode

from onnxdc.coders import get_coder
from onnxdc.coders.base import write_varint
from onnxdc.coders.rans import (
    LANE_SYMBOLS,
    SCALAR_LANES,
    RansCoder,
    _decode_lanes,
    _decode_scalar,
    _parse,
    lanes_for,
    quantize,
)
from onnxdc.coders.rans import _model_bytes as _model
from onnxdc.errors import CoderError, DecodeError
from onnxdc.pipeline.streams import encode_best, order0_entropy_bits

RANS = RansCoder()


def _model_bytes(symbols: np.ndarray) -> int:
    """Bytes of the stream's header and frequency table."""
    _, freq, _ = RANS.plan(np.bincount(symbols, minlength=256))
    return len(write_varint(lanes_for(symbols.size))) + 1 + len(_model(freq))


@pytest.mark.parametrize("p", [0.05, 0.3, 0.7])
def test_within_half_a_percent_of_the_order0_entropy_on_long_streams(p: float) -> None:
    """1M geometric symbols, 1.3 to 5.7 bits each: size <= 1.005 x (entropy + model bytes), the
    lane states included in the size."""
    rng = np.random.default_rng(int(p * 100))
    symbols = np.minimum(rng.geometric(p, size=1_000_000) - 1, 255).astype(np.uint8)
    size = len(check_encode_decode(RANS, symbols))
    entropy = order0_entropy_bits(symbols) / 8
    assert entropy < size <= 1.005 * (entropy + _model_bytes(symbols)), (size, entropy)


def test_lane_states_are_what_is_left_on_very_skewed_streams() -> None:
    """0.3 bits a symbol: the ~3 bytes a lane (one per 8,192 symbols) are 1% of the stream; the rest
    stays within 0.5% of the entropy."""
    rng = np.random.default_rng(95)
    symbols = np.minimum(rng.geometric(0.95, size=1_000_000) - 1, 255).astype(np.uint8)
    size = len(check_encode_decode(RANS, symbols))
    entropy = order0_entropy_bits(symbols) / 8
    assert size <= 1.005 * (entropy + _model_bytes(symbols)) + 3 * lanes_for(symbols.size)


def test_automatic_choices_try_rans_on_short_streams_only() -> None:
    rng = np.random.default_rng(6)
    symbols = (rng.random(RansCoder.auto_max_symbols + 1) < 0.05).astype(np.uint8)
    several = [{"id": "zstd-literals"}, {"id": "rans"}]
    assert encode_best(symbols, several).coder == {"id": "zstd-literals"}
    assert encode_best(symbols[:-1], several).coder == {"id": "rans"}
    assert encode_best(symbols, [{"id": "rans"}]).coder == {"id": "rans"}  # named alone: any stream


def test_beats_huffman_where_whole_bits_cost_most() -> None:
    """95% zeros: Huffman spends at least a bit a symbol, rANS about 0.3."""
    rng = np.random.default_rng(5)
    symbols = (rng.random(200_000) < 0.05).astype(np.uint8) * rng.integers(1, 32, 200_000).astype(np.uint8)
    rans, huff = len(RANS.encode(symbols)), len(get_coder({"id": "huffman"}).encode(symbols))
    assert rans < 0.6 * huff
    short = symbols[:RansCoder.auto_max_symbols]
    assert encode_best(short, [{"id": "huffman"}, {"id": "zstd-literals"}, {"id": "rans"}]).coder == {"id": "rans"}


def test_lanes_grow_with_the_stream() -> None:
    assert [lanes_for(n) for n in (1, LANE_SYMBOLS, LANE_SYMBOLS + 1, 10 * LANE_SYMBOLS, 10**9)] == [1, 1, 2, 10, 4096]
    symbols = np.arange(5 * LANE_SYMBOLS, dtype=np.int64).astype(np.uint8)
    assert RANS.encode(symbols)[0] == 5  # the lanes varint leads the stream


def test_quantized_frequencies_add_up_and_keep_every_symbol() -> None:
    counts = np.zeros(256, dtype=np.int64)
    counts[[0, 3, 255]] = [10**9, 1, 1]
    for bits in (2, 8, 16):
        freq = quantize(counts, bits)
        assert freq.sum() == 1 << bits and (freq[[0, 3, 255]] >= 1).all() and freq[[1, 2]].sum() == 0
    with pytest.raises(ValueError, match="3 distinct symbols need more than 1 probability bits"):
        quantize(counts, 1)


def test_golden_stream() -> None:
    """Four symbols 0 0 0 1, one lane: 1-bit probabilities 1/2 and 1/2 (no smaller with 2 bits:
    3/4, 1/4), the state 2**16 doubled four times plus the code of symbol 1 first, no words."""
    stream = write_varint(1) + bytes([1, 1, 1, 1]) + (0x100008).to_bytes(4, "little")
    symbols = np.array([0, 0, 0, 1], dtype=np.uint8)
    assert RANS.encode(symbols) == stream
    np.testing.assert_array_equal(RANS.decode(stream, count=4), symbols)


def _stream(lanes: int = 1, bits: int = 2, model: bytes = b"\x01\x03\x01", states: bytes = b"\x07\x00\x01\x00",
            words: bytes = b"") -> bytes:
    return write_varint(lanes) + bytes([bits]) + model + states + words


@pytest.mark.parametrize(("stream", "message"), [
    (_stream(lanes=0), "0 lanes, expected 1..4"),
    (_stream(lanes=5), "5 lanes, expected 1..4"),
    (_stream(bits=0), "probability bits must be in 1..16, found 0"),
    (_stream(bits=17), "probability bits must be in 1..16, found 17"),
    (_stream(model=b"\x01\x03\x02"), "frequencies add up to 5, expected 4"),
    (_stream(model=b"\x01\x05\x01"), "frequency of symbol 0 \\(5\\) exceeds the total 4"),
    (_stream(model=b"\x03\x03\x00\x05\x01"), "zero run passes the max symbol 3"),
    (write_varint(1) + bytes([2, 1]), "truncated varint"),
    (_stream(states=b"\x07\x00\x01"), "has 3 bytes after its model"),
    (_stream(states=b"\x07\x00\x00\x00"), "state below its lower bound"),
    (_stream(words=b"\x00\x00"), "does not end where its symbols do"),
    (_stream(words=b"\x00" * 64), "holds 32 words, more than 4 symbols can need"),
    (_stream(states=b"\x08\x00\x01\x00"), "ends early \\(needs more than its 0 words\\)"),
    (b"\x01", "too short for its header"),
])
def test_malformed_streams(stream: bytes, message: str) -> None:
    with pytest.raises(CoderError, match=message):
        RANS.decode(stream, count=4)


def _both_decoders(stream: bytes, count: int) -> list[np.ndarray | str]:
    """What the symbol-by-symbol and the numpy-lane decoder make of one stream: symbols or the error."""
    got: list[np.ndarray | str] = []
    for decoder in (_decode_scalar, lambda p: _decode_lanes(p.states.copy(), p.words, p.freq, p.bits, p.count)):
        try:
            got.append(decoder(_parse(stream, count)))
        except DecodeError as exc:
            got.append(str(exc))
    return got


@pytest.mark.parametrize(("n", "p"), [(1, 0.5), (5, 0.2), (LANE_SYMBOLS, 0.9), (3 * LANE_SYMBOLS + 7, 0.3),
                                      (SCALAR_LANES * LANE_SYMBOLS + 1, 0.6), (40_000, 0.999)])
def test_the_two_decoders_agree_on_good_and_damaged_streams(n: int, p: float) -> None:
    """Streams of few lanes decode symbol by symbol, wider ones in numpy lanes: on every stream,
    whole, cut, extended or with a word flipped, both give the same symbols or the same error."""
    rng = np.random.default_rng(n)
    symbols = np.minimum(rng.geometric(p, n) - 1, 255).astype(np.uint8)
    stream = RANS.encode(symbols)
    scalar, lanes = _both_decoders(stream, n)
    np.testing.assert_array_equal(scalar, symbols)
    np.testing.assert_array_equal(lanes, symbols)
    flipped = bytearray(stream)
    flipped[-1] ^= 0x40
    for bad in (stream[:-2], stream + b"\0\0", bytes(flipped)):
        scalar, lanes = _both_decoders(bad, n)
        if isinstance(scalar, str) or isinstance(lanes, str):
            assert scalar == lanes
        else:
            np.testing.assert_array_equal(scalar, lanes)


@pytest.mark.parametrize(("stream", "message"), [
    (_stream(words=b"\x00\x00"), "does not end where its symbols do"),
    (_stream(states=b"\x08\x00\x01\x00"), "ends early \\(needs more than its 0 words\\)"),
])
def test_the_numpy_decoder_refuses_what_the_scalar_one_does(stream: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        p = _parse(stream, 4)
        _decode_lanes(p.states.copy(), p.words, p.freq, p.bits, p.count)


def test_a_stream_cut_mid_words_fails() -> None:
    rng = np.random.default_rng(3)
    symbols = np.minimum(rng.geometric(0.2, 3 * LANE_SYMBOLS) - 1, 40).astype(np.uint8)
    stream = RANS.encode(symbols)
    check_decode_fails(RANS, stream[:-2], symbols.size)
    check_decode_fails(RANS, stream + b"\0\0", symbols.size)


def test_decoding_allocates_about_the_declared_count() -> None:
    """A forged stream that claims 4096 lanes and megabytes of words is refused, and a real one
    decodes with about its count of memory, whatever its bytes."""
    forged = _stream(lanes=4096, states=b"\x07\x00\x01\x00" * 4096, words=b"\0" * (1 << 20))
    tracemalloc.start()
    try:
        with pytest.raises(CoderError, match="more than 5000 symbols can need"):
            RANS.decode(forged, count=5000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 << 20
    symbols = np.zeros(1 << 22, dtype=np.uint8)
    symbols[::7] = 3
    stream = RANS.encode(symbols)
    tracemalloc.start()
    try:
        RANS.decode(stream, count=symbols.size)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * symbols.size + (4 << 20)


def test_streams_decoded_together_equal_one_by_one() -> None:
    """decode_many runs the lanes of every stream in one lock-step (different lanes, precisions,
    lengths, empty and one-symbol streams): the same symbols as decode() stream by stream."""
    rng = np.random.default_rng(8)
    items, expected = [], []
    for n, p in [(59_000, 0.3), (3, 0.5), (0, 0.5), (1000, 0.99), (20_000, 0.05), (70_000, 0.7), (5, 0.2),
                 (1, 0.5), (4 * LANE_SYMBOLS + 1, 0.4)]:
        symbols = np.minimum(rng.geometric(p, n) - 1, 255).astype(np.uint8)
        items.append((RANS, RANS.encode(symbols), n))
        expected.append(symbols)
    for got, want in zip(RansCoder.decode_batch(items), expected):
        np.testing.assert_array_equal(got, want)
    for cut in (items[0][1][:-2], items[0][1] + b"\0\0"):  # the batch fails as the stream alone does
        with pytest.raises(CoderError):
            RansCoder.decode_batch([(RANS, cut, items[0][2])] + items[1:])
        check_decode_fails(RANS, cut, items[0][2])
