"""The context-modelled rANS coder: its contexts, its size against order-0 coding on column-structured
levels, rows and counts, malformed streams and the automatic choice (the shared round-trip and
malformed-input checks run over it in ``tests/test_coders.py``)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from coder_helpers import check_decode_fails, check_encode_decode

from onnxdc.coders import get_coder
from onnxdc.coders.base import write_varint
from onnxdc.coders.rans import LANE_SYMBOLS, RansCoder
from onnxdc.coders.rans_ctx import SCALAR_LANES, RansCtxCoder, _decode_joint, _decode_scalar, contexts, lanes_for
from onnxdc.errors import CoderError, DecodeError
from onnxdc.pipeline.shared import row_length
from onnxdc.pipeline.streams import encode_best, order0_entropy_bits


def _dead_columns(rows: int, row: int, *, seed: int, dead: float = 0.4, density: float = 0.3) -> np.ndarray:
    """Levels of a pruned [rows, row] tensor: a fraction ``dead`` of the columns all zero, the
    others non-zero with probability ``density``, levels 1..7."""
    rng = np.random.default_rng(seed)
    alive = rng.random(row) >= dead
    nz = (rng.random((rows, row)) < density) & alive
    return (nz * rng.integers(1, 8, (rows, row))).astype(np.uint8).reshape(-1)


def test_contexts_follow_the_column_history() -> None:
    """Row 0: context 0; a column without non-zeros above: 1; else the bucket of its non-zero
    fraction among the rows above: (0, 4/64] -> 2, (4/64, 12/64] -> 3, (12/64, 25/64] -> 4, more -> 5."""
    col = np.array([0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], dtype=np.uint8)
    # after the 1 at row 2: 1 of 3 rows (21/64) -> 4; 1 of 5 (12.8/64) -> 4; 1 of 6 (10.7/64) -> 3;
    # 1 of 16 (4/64) -> 2.
    assert contexts(col, 1).tolist() == [0, 1, 1, 4, 4, 4, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 2, 2]
    two = np.array([5, 0, 5, 0, 0, 0], dtype=np.uint8)  # row 2: columns 0 and 1 as above
    assert contexts(two, 2).tolist() == [0, 0, 5, 1, 5, 1]


@pytest.mark.parametrize("row", [1, 2, 7, 48, 784])
@pytest.mark.parametrize("extra", [0, 1, -1])
def test_round_trip_rows_and_partial_last_rows(row: int, extra: int) -> None:
    """Any count codes: a count that is not a multiple of ``row`` ends in a short row."""
    symbols = _dead_columns(40, row, seed=row)
    n = max(0, symbols.size + extra) if extra <= 0 else symbols.size
    symbols = np.concatenate([symbols, symbols[:extra]]) if extra > 0 else symbols[:n]
    check_encode_decode(RansCtxCoder(row), symbols)


def test_beats_order0_rans_on_dead_columns() -> None:
    """40% dead columns, 30% density elsewhere: the column contexts code within 2% of what an oracle
    knowing the dead columns needs (the order-0 entropy of the live columns' levels), 12% under the
    order-0 entropy of the whole; the estimate is within a byte a lane of the stream."""
    symbols = _dead_columns(300, 784, seed=1)
    coder = RansCtxCoder(784)
    size = len(check_encode_decode(coder, symbols))
    grid = symbols.reshape(300, 784)
    oracle = order0_entropy_bits(np.ascontiguousarray(grid[:, grid.any(axis=0)]).reshape(-1)) / 8
    assert size < 1.02 * oracle
    assert size < 0.88 * order0_entropy_bits(symbols) / 8
    assert size < 0.88 * len(RansCoder().encode(symbols))
    assert 0 <= coder.estimate_size(symbols) - size <= lanes_for(symbols.size, 784) + 8  # states count 4 bytes


def test_small_streams_share_one_level_table() -> None:
    """On a small tensor six tables cost more than the levels' information: the stream sends one
    table of the non-zero levels and a zero frequency per context (flag 0x80 of the context set),
    and decodes to the same symbols."""
    symbols = _dead_columns(20, 64, seed=9)
    stream = check_encode_decode(RansCtxCoder(64), symbols)
    assert stream[2] & 0x80
    # Large, and dense columns hold other levels (1..3) than sparse ones (4..7): a table a context.
    rng = np.random.default_rng(10)
    dense = rng.random(500) < 0.5
    nz = rng.random((400, 500)) < np.where(dense, 0.6, 0.05)
    levels = np.where(dense, rng.integers(1, 4, (400, 500)), rng.integers(4, 8, (400, 500)))
    other = (nz * levels).astype(np.uint8).reshape(-1)
    stream = check_encode_decode(RansCtxCoder(500), other)
    assert lanes_for(other.size, 500) == 25 and not stream[2] & 0x80


def test_memoryless_levels_cost_little_more_than_rans() -> None:
    """No structure to find: the six tables and the lanes cost under 2% over order-0 rANS."""
    rng = np.random.default_rng(2)
    symbols = np.minimum(rng.geometric(0.5, 100_000) - 1, 15).astype(np.uint8)
    assert len(RansCtxCoder(500).encode(symbols)) < 1.02 * len(RansCoder().encode(symbols))


def test_lanes_never_exceed_the_row() -> None:
    assert [lanes_for(n, r) for n, r in ((10**6, 3), (10**6, 784), (100, 784), (10**9, 10**6))] == [3, 123, 1, 4096]
    assert RansCtxCoder(3).encode(np.zeros(10**5, dtype=np.uint8) + 1)[0] == 3  # the lanes varint leads


def _stream(lanes: int = 1, bits: int = 2, used: int = 0b11, models: bytes = b"\x00\x04" + b"\x00\x04",
            states: bytes = b"\x00\x00\x01\x00", words: bytes = b"") -> bytes:
    return write_varint(lanes) + bytes([bits, used]) + models + states + words


def test_a_handmade_stream_decodes() -> None:
    """Contexts 0 and 1 each hold only symbol 0 (frequency 4 of 4): any count decodes to zeros,
    the state never moves."""
    np.testing.assert_array_equal(RansCtxCoder(2).decode(_stream(), count=6), np.zeros(6, dtype=np.uint8))


@pytest.mark.parametrize(("stream", "message"), [
    (_stream(lanes=0), "0 lanes, expected 1..2"),
    (_stream(lanes=3), "3 lanes, expected 1..2"),
    (_stream(bits=0), "probability bits must be in 1..4, found 0"),
    (_stream(bits=5), "probability bits must be in 1..4, found 5"),  # at most 4 x 6 symbols
    (_stream(used=0), "context set 0x0 is not a non-empty subset of 6 contexts"),
    (_stream(used=0x40), "context set 0x40 is not a non-empty subset"),
    (_stream(models=b"\x00\x04" + b"\x00\x03"), "frequencies add up to 3, expected 4"),
    (_stream(models=b"\x00\x04", states=b""), "too short for its model"),
    (write_varint(1) + b"\x02", "too short for its header"),
    (_stream(states=b"\x00\x00\x00\x00"), "state below its lower bound"),
    (_stream(words=b"\x00\x00"), "does not end where its symbols do"),
    (_stream(words=b"\x00" * 64), "holds 32 words, more than 6 symbols can need"),
    (_stream(used=0b1, models=b"\x00\x04"), "of 0 words cannot hold 6 symbols"),  # 2 fit in the first row
    (_stream(used=0b100001), "reaches a context that has no model"),  # row 1 is in context 1
    (_stream(used=0x81, models=b"\x00\x04\x00"), "shared level table gives symbol 0 a frequency"),
    (_stream(used=0x83, models=b"\x02\x00\x00\x02\x02" + b"\x05\x00"), "zero frequency 5 of context 0 leaves"),
    (_stream(used=0x83, models=b"\x02\x00\x00\x02\x02" + b"\x03\x00"), "zero frequency 3 of context 0 leaves no room for 2"),
])
def test_malformed_streams(stream: bytes, message: str) -> None:
    with pytest.raises(CoderError, match=message):
        RansCtxCoder(2).decode(stream, count=6)


def test_a_count_its_words_cannot_hold_is_refused() -> None:
    """Below the first row every symbol costs at least a bit here (two symbols of 2 of 4): 200
    symbols need more than the one lane's state."""
    stream = _stream(models=b"\x00\x04" + b"\x01\x02\x02", states=b"\x00\x00\x00\x01")
    with pytest.raises(CoderError, match="of 0 words cannot hold 200 symbols"):
        RansCtxCoder(2).decode(stream, count=200)


def test_a_stream_cut_mid_words_fails() -> None:
    symbols = _dead_columns(100, 300, seed=4)
    stream = RansCtxCoder(300).encode(symbols)
    check_decode_fails(RansCtxCoder(300), stream[:-2], symbols.size)
    check_decode_fails(RansCtxCoder(300), stream + b"\0\0", symbols.size)
    check_decode_fails(RansCtxCoder(299), stream, symbols.size)  # another row: other contexts


def test_decoding_allocates_about_the_declared_count() -> None:
    """A forged stream with megabytes of words is refused before decoding, and a real one decodes
    with about its count of memory (output, column counters, tables), whatever its bytes claim."""
    forged = _stream(lanes=2, states=b"\x00\x00\x01\x00" * 2, words=b"\0" * (1 << 20))
    symbols = _dead_columns(2000, 784, seed=5)
    coder = RansCtxCoder(784)
    stream = coder.encode(symbols)
    tracemalloc.start()
    try:
        with pytest.raises(CoderError, match="more than 5000 symbols can need"):
            RansCtxCoder(2).decode(forged, count=5000)
        _, peak = tracemalloc.get_traced_memory()
        assert peak < 2 << 20
        tracemalloc.reset_peak()
        coder.decode(stream, count=symbols.size)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * symbols.size + (4 << 20)


def test_automatic_choices_try_it_on_streams_up_to_its_limit() -> None:
    rows = RansCtxCoder.auto_max_symbols // 512
    symbols = _dead_columns(rows + 1, 512, seed=6)
    ctx = {"id": "rans-ctx", "row": 512}
    several = [{"id": "zstd-literals"}, ctx]
    assert encode_best(symbols[:RansCtxCoder.auto_max_symbols], several).coder == ctx
    assert encode_best(symbols, several).coder == {"id": "zstd-literals"}
    assert encode_best(symbols, [ctx]).coder == ctx  # named alone: any stream


def test_row_lengths_of_tensors() -> None:
    """One output channel a row; a recurrent W or R of [dirs, gates x hidden, in]: one unit's inputs."""
    assert row_length((300, 784), "Gemm") == 784
    assert row_length((32, 16, 3, 3), "Conv") == 144
    assert row_length((1, 192, 224), "GRU") == 224
    assert row_length((2, 96, 32), "LSTM") == 32
    assert row_length((384,), "") == 1
    assert get_coder({"id": "rans-ctx", "row": 224}).get_config() == {"id": "rans-ctx", "row": 224}


def test_streams_decoded_together_equal_one_by_one() -> None:
    """decode_batch runs the lanes of every stream in one lock-step (different rows, lanes,
    precisions, lengths, short last rows, empty and one-symbol streams): the same symbols as
    decode() stream by stream, and a bad stream fails the batch as it fails alone."""
    items, expected = [], []
    for rows, row, seed in [(300, 784, 1), (3, 5, 2), (0, 7, 3), (1000, 1, 4), (40, 224, 5), (1, 1, 6), (7, 300, 7)]:
        symbols = _dead_columns(rows, row, seed=seed)[: max(0, rows * row - seed % 3)]
        coder = RansCtxCoder(row)
        items.append((coder, coder.encode(symbols), symbols.size))
        expected.append(symbols)
    for got, want in zip(RansCtxCoder.decode_batch(items), expected):
        np.testing.assert_array_equal(got, want)
    coder, stream, count = items[0]
    for bad in (stream[:-2], stream + b"\0\0"):
        with pytest.raises(CoderError):
            RansCtxCoder.decode_batch([(coder, bad, count)] + items[1:])
        check_decode_fails(coder, bad, count)


def test_the_dense_layout_tries_it_in_automatic_choices_only() -> None:
    """A [64, 48] weight whose third of input columns is near zero: pruning empties those columns,
    the automatic choice codes the dense levels with rans-ctx (row 48); a coder named alone, or
    contexts=False, keeps the choice without it."""
    from onnxdc.pipeline.settings import AUTO_INDEX_CODERS
    from onnxdc.pipeline.shared import encode_shared
    from onnxdc.stages.quantize import ShareConfig

    rng = np.random.default_rng(3)
    w = rng.standard_normal((64, 48)).astype(np.float32)
    w[:, rng.permutation(48)[:16]] *= 0.01
    keep = np.abs(w) > np.quantile(np.abs(w), 0.6)
    share = ShareConfig(bits=3)
    auto = encode_shared(w, keep, share=share, index_coders=AUTO_INDEX_CODERS, positions="dense", op="Gemm")
    assert auto.streams["indices"].coder == {"id": "rans-ctx", "row": 48}
    without = encode_shared(w, keep, share=share, index_coders=AUTO_INDEX_CODERS, positions="dense", op="Gemm",
                            contexts=False)
    assert without.streams["indices"].coder["id"] != "rans-ctx"
    assert len(auto.streams["indices"].data) < len(without.streams["indices"].data)
    np.testing.assert_array_equal(auto.values, without.values)
    named = encode_shared(w, keep, share=share, index_coders=[{"id": "huffman"}], positions="dense", op="Gemm")
    assert named.streams["indices"].coder["id"] == "huffman"


def _both_decoders(coder: RansCtxCoder, stream: bytes, count: int) -> list[np.ndarray | str]:
    """What the symbol-by-symbol and the lock-step decoder make of one stream: symbols or the error."""
    got: list[np.ndarray | str] = []
    for decoder in (_decode_scalar, lambda p: _decode_joint([p])[0]):
        try:
            got.append(decoder(coder._parse(stream, count)))
        except DecodeError as exc:
            got.append(str(exc))
    return got


@pytest.mark.parametrize(("rows", "row", "dead"), [(1, 7, 0.0), (3, 50, 0.4), (40, 800, 0.5), (200, 100, 0.9),
                                                   (SCALAR_LANES + 1, LANE_SYMBOLS, 0.3)])
def test_the_two_decoders_agree_on_good_and_damaged_streams(rows: int, row: int, dead: float) -> None:
    """Streams of few lanes decode symbol by symbol, wider ones in the lock-step: on every stream,
    whole, cut, extended, with a word flipped or a state changed, both give the same symbols or the
    same error."""
    symbols = _dead_columns(rows, row, seed=rows + row, dead=dead)
    coder = RansCtxCoder(row)
    stream = coder.encode(symbols)
    for got in _both_decoders(coder, stream, symbols.size):
        np.testing.assert_array_equal(got, symbols)
    flipped = bytearray(stream)
    flipped[-1] ^= 0x21
    state = bytearray(stream)
    state[-2 * 3 - 1] ^= 0x01
    for bad in (stream[:-2], stream + b"\0\0", bytes(flipped), bytes(state)):
        scalar, joint = _both_decoders(coder, bad, symbols.size)
        if isinstance(scalar, str) or isinstance(joint, str):
            assert scalar == joint
        else:
            np.testing.assert_array_equal(scalar, joint)
