"""Tests of every coder: round trips, configs, malformed input, Huffman optimality, specs."""

from __future__ import annotations

import heapq
import importlib
import inspect
import itertools
import pkgutil

import numpy as np
import pytest
import zstandard
from coder_helpers import (
    check_config,
    check_decode_fails,
    check_decode_fails_or_fits,
    check_encode_decode,
    check_rejects_malformed,
    fit_symbols,
    symbol_limit,
)
from hypothesis import given, settings
from hypothesis import strategies as st

import onnxdc.coders
from onnxdc.coders import Coder, coder_from_spec, get_coder, registered_coders
from onnxdc.coders.base import read_varint, write_varint
from onnxdc.coders.chain import ChainCoder
from onnxdc.coders.huffman import HuffmanCoder, decode_many, huffman_code_lengths, payload_bits
from onnxdc.coders.raw import RawCoder
from onnxdc.coders.zstd import ZstdCoder, ZstdLiteralsCoder
from onnxdc.errors import CoderError, ConfigError, ContainerError, DecodeError, EncodeError, UnknownCoderError

HUFF = {"id": "huffman"}
ZSTD = {"id": "zstd"}
CONFIGS = {
    "raw1": {"id": "raw", "bits": 1},
    "raw3": {"id": "raw", "bits": 3},
    "raw5": {"id": "raw", "bits": 5},
    "raw8": {"id": "raw", "bits": 8},
    "huffman8": {"id": "huffman", "max_bits": 8},
    "huffman12": {"id": "huffman", "max_bits": 12},
    "huffman15": {"id": "huffman", "max_bits": 15},
    "huffman-block7": {"id": "huffman", "max_bits": 15, "block_size": 7},
    "zstd1": {"id": "zstd", "level": 1},
    "zstd19": {"id": "zstd", "level": 19},
    "zstd-literals": {"id": "zstd-literals"},
    "zstd-dict": {"id": "zstd-dict"},
    "rans": {"id": "rans"},
    "rans+zstd": {"id": "chain", "coders": [{"id": "rans"}, ZSTD]},
    "rans-ctx-row1": {"id": "rans-ctx", "row": 1},
    "rans-ctx-row7": {"id": "rans-ctx", "row": 7},
    "rans-ctx-row144": {"id": "rans-ctx", "row": 144},
    "zstd-dict-header3": {"id": "zstd-dict", "dictionary": "header-2", "level": 3},
    "zstd-literals+zstd": {"id": "chain", "coders": [{"id": "zstd-literals"}, ZSTD]},
    "huffman+zstd": {"id": "chain", "coders": [HUFF, ZSTD]},
    "zstd+huffman": {"id": "chain", "coders": [ZSTD, HUFF]},
    "huffman+huffman": {"id": "chain", "coders": [HUFF, {"id": "huffman", "block_size": 7}]},
    "zstd+zstd": {"id": "chain", "coders": [{"id": "zstd", "level": 1}, ZSTD]},
    "raw5+zstd": {"id": "chain", "coders": [{"id": "raw", "bits": 5}, ZSTD]},
    "nested": {
        "id": "chain",
        "coders": [{"id": "chain", "coders": [{"id": "raw", "bits": 8}, HUFF]}, ZSTD],
    },
}
CODERS = {name: get_coder(config) for name, config in CONFIGS.items()}
coder_params = pytest.mark.parametrize("coder", CODERS.values(), ids=CODERS.keys())


def _edge_streams(limit: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1234)
    skewed = np.minimum(rng.geometric(0.4, size=5000) - 1, limit)
    streams = {
        "empty": [],
        "one": [limit // 2],
        "all_equal": [3 & limit] * 1000,
        "max_symbol": [limit, 0, limit, limit],
        "max_only": [limit] * 50,
        "skewed": skewed,
        "uniform": rng.integers(0, limit + 1, size=5000),
    }
    return {name: np.asarray(s, dtype=np.uint8) for name, s in streams.items()}


STREAM_NAMES = list(_edge_streams(255))


# --- round trips and configs ----------------------------------------------------------------


@coder_params
@pytest.mark.parametrize("stream", STREAM_NAMES)
def test_round_trip_edge_streams(coder: Coder, stream: str) -> None:
    check_encode_decode(coder, _edge_streams(symbol_limit(coder))[stream])


@coder_params
@settings(max_examples=25, deadline=None)
@given(data=st.binary(max_size=3000), alphabet=st.integers(1, 256))
def test_round_trip_random(coder: Coder, data: bytes, alphabet: int) -> None:
    symbols = np.frombuffer(data, dtype=np.uint8).astype(np.int64) % alphabet
    check_encode_decode(coder, fit_symbols(coder, symbols))


@coder_params
def test_config_survives_json(coder: Coder) -> None:
    check_config(coder)


def test_every_coder_class_is_registered() -> None:
    found = []
    for info in pkgutil.iter_modules(onnxdc.coders.__path__):
        module = importlib.import_module(f"onnxdc.coders.{info.name}")
        for obj in vars(module).values():
            if (
                inspect.isclass(obj)
                and issubclass(obj, Coder)
                and obj.__module__ == module.__name__
                and not inspect.isabstract(obj)
            ):
                found.append(obj)
                assert registered_coders().get(obj.coder_id) is obj
    assert {cls.coder_id for cls in found} == set(registered_coders())


def test_every_registered_coder_is_tested() -> None:
    assert {type(c).__name__ for c in CODERS.values()} == {
        cls.__name__ for cls in registered_coders().values()
    }


def test_defaults_fill_config() -> None:
    assert get_coder({"id": "huffman"}).get_config() == {
        "id": "huffman",
        "max_bits": 15,
        "block_size": 0,
    }
    assert ChainCoder([HUFF, ZSTD]).get_config()["coders"][1] == {"id": "zstd", "level": 19}


@pytest.mark.parametrize(
    "config",
    [
        {"id": "raw", "bits": 0},
        {"id": "raw", "bits": 9},
        {"id": "raw", "bits": True},
        {"id": "raw", "bits": 5.0},
        {"id": "zstd", "level": 0},
        {"id": "zstd", "level": 23},
        {"id": "huffman", "max_bits": 0},
        {"id": "huffman", "max_bits": 17},
        {"id": "huffman", "block_size": -1},
        {"id": "zstd", "unknown": 1},
        {"id": "zstd-dict", "dictionary": "onnx-0"},
        {"id": "zstd-dict", "dictionary": 1},
        {"id": "zstd-dict", "level": 0},
        {"id": "rans", "lanes": 4},
        {"id": "rans-ctx"},
        {"id": "rans-ctx", "row": 0},
        {"id": "rans-ctx", "row": True},
        {"id": "rans-ctx", "row": 2**40 + 1},
        {"id": "chain", "coders": [ZSTD]},
        {"id": "chain", "coders": "zstd"},
        {"id": "chain", "coders": [ZSTD, "zstd"]},
        {"id": "chain", "coders": [ZSTD, {"id": "raw", "bits": 12}]},
        {"level": 3},
    ],
)
def test_bad_config_raises_config_error(config: dict) -> None:
    with pytest.raises(ConfigError):
        get_coder(config)


def test_unknown_coder_in_chain() -> None:
    # The registry re-raises a nested UnknownCoderError as ConfigError; both are ValueErrors.
    with pytest.raises(ValueError, match="unknown coder 'lzma'"):
        get_coder({"id": "chain", "coders": [ZSTD, {"id": "lzma"}]})


# --- encode errors ---------------------------------------------------------------------------


@coder_params
@pytest.mark.parametrize(
    "symbols",
    [np.zeros(3, dtype=np.int64), np.zeros((2, 2), dtype=np.uint8), [1, 2, 3], b"abc"],
    ids=["int64", "2d", "list", "bytes"],
)
def test_encode_rejects_non_symbol_arrays(coder: Coder, symbols: object) -> None:
    with pytest.raises(CoderError):
        coder.encode(symbols)  # type: ignore[arg-type]


def test_raw_rejects_symbols_too_wide() -> None:
    with pytest.raises(CoderError, match="does not fit in 3 bits"):
        RawCoder(3).encode(np.array([0, 8], dtype=np.uint8))


def test_huffman_rejects_alphabet_larger_than_max_bits() -> None:
    HuffmanCoder(max_bits=2).encode(np.arange(4, dtype=np.uint8))
    with pytest.raises(CoderError, match="5 distinct symbols"):
        HuffmanCoder(max_bits=2).encode(np.arange(5, dtype=np.uint8))
    with pytest.raises(CoderError):
        HuffmanCoder(max_bits=7).encode(np.arange(256, dtype=np.uint8))


# --- malformed input -------------------------------------------------------------------------


@coder_params
@pytest.mark.parametrize("stream", ["empty", "one", "all_equal", "small"])
def test_malformed_input_raises_only_coder_error(coder: Coder, stream: str) -> None:
    rng = np.random.default_rng(7)
    small = np.minimum(rng.geometric(0.3, size=40) - 1, 200)
    symbols = {"empty": [], "one": [9], "all_equal": [5] * 30, "small": small}[stream]
    check_rejects_malformed(coder, fit_symbols(coder, np.asarray(symbols, dtype=np.uint8)))


@coder_params
def test_huge_count_is_refused_before_allocating(coder: Coder) -> None:
    symbols = fit_symbols(coder, np.arange(40, dtype=np.uint8) % 13)
    check_decode_fails(coder, coder.encode(symbols), 2**62)


@coder_params
@settings(max_examples=40, deadline=None)
@given(buf=st.binary(max_size=64), count=st.integers(0, 100))
def test_random_bytes_raise_only_coder_error(coder: Coder, buf: bytes, count: int) -> None:
    check_decode_fails_or_fits(coder, buf, count)


def test_raw_rejects_padding_and_length() -> None:
    assert RawCoder(3).encode(np.array([1, 2, 3], dtype=np.uint8)) == b"\x29\x80"
    check_decode_fails(RawCoder(3), b"\x29\x81", 3)  # a padding bit set
    check_decode_fails(RawCoder(3), b"\x29\x80\x00", 3)


def test_zstd_rejects_frames_it_did_not_write() -> None:
    data = b"abcabcabc" * 10
    no_size = zstandard.ZstdCompressor(write_content_size=False).compress(data)
    with pytest.raises(CoderError, match="content size"):
        ZstdCoder().decode(no_size, count=len(data))
    frame = ZstdCoder().encode(np.frombuffer(data, dtype=np.uint8))
    with pytest.raises(CoderError, match="declares 90 bytes, expected 91"):
        ZstdCoder().decode(frame, count=91)
    check_decode_fails(ZstdCoder(), frame + frame, len(data))
    check_decode_fails(ZstdCoder(), b"", 1)
    check_decode_fails(ZstdCoder(), b"\x00", 0)


def test_zstd_literals_is_an_order0_coder_any_zstd_decoder_reads() -> None:
    # Memoryless skewed bytes (like a float exponent plane): no repeats worth a match.
    rng = np.random.default_rng(7)
    symbols = np.minimum(rng.geometric(0.35, size=300_000) + 100, 255).astype(np.uint8)
    lit = ZstdLiteralsCoder().encode(symbols)
    huff = get_coder(HUFF).encode(symbols)
    assert len(lit) < 1.01 * len(huff)  # within 1% of Huffman...
    assert len(lit) < 0.97 * len(ZstdCoder(1).encode(symbols))  # ...where level 1's matches cost bytes
    assert zstandard.ZstdDecompressor().decompress(lit) == symbols.tobytes()
    assert np.array_equal(ZstdCoder().decode(lit, count=symbols.size), symbols)


def test_zstd_decodes_highly_compressed_frames_in_slices() -> None:
    # 1 MiB of zeros is a frame of a few bytes: beyond the one-call ratio, decoded slice by slice,
    # with the same checks.
    zeros = np.zeros(1 << 20, dtype=np.uint8)
    for coder in (ZstdCoder(), ZstdLiteralsCoder()):
        frame = coder.encode(zeros)
        assert len(frame) * 64 < zeros.size
        assert np.array_equal(coder.decode(frame, count=zeros.size), zeros)
        check_decode_fails(coder, frame + frame, zeros.size)
        check_decode_fails(coder, frame[:-1], zeros.size)


def test_chain_rejects_intermediate_length_above_bound() -> None:
    chain = ChainCoder([{"id": "raw", "bits": 4}, ZSTD])
    forged = write_varint(3) + ZstdCoder().encode(np.zeros(3, dtype=np.uint8))
    with pytest.raises(CoderError, match="exceeds its bound 2 for 4 symbols"):
        chain.decode(forged, count=4)
    forged = write_varint(2**60) + b"\x00"
    with pytest.raises(CoderError, match="exceeds its bound"):
        chain.decode(forged, count=4)


def test_varints() -> None:
    for value in (0, 1, 127, 128, 300, 2**63 - 1):
        encoded = write_varint(value)
        assert read_varint(encoded + b"\xff", 0) == (value, len(encoded))
    for bad in (b"", b"\x80", b"\x80\x00", b"\xff" * 9 + b"\x01"):
        with pytest.raises(CoderError):
            read_varint(bad, 0)


# --- huffman format and optimality -----------------------------------------------------------


def test_huffman_golden_streams() -> None:
    # L=1, max symbol 1, lengths 1|1, block size 4, size width 1, codes 0 0 0 1.
    stream = bytes([1, 1, 0x11, 4, 1, 0x10])
    symbols = np.array([0, 0, 0, 1], dtype=np.uint8)
    assert HuffmanCoder().encode(symbols) == stream
    np.testing.assert_array_equal(HuffmanCoder().decode(stream, count=4), symbols)
    # Two blocks of two symbols: the first block's size (1 byte), then 00 | 01.
    stream = bytes([1, 1, 0x11, 2, 1, 1, 0x00, 0x40])
    assert HuffmanCoder(block_size=2).encode(symbols) == stream
    np.testing.assert_array_equal(HuffmanCoder().decode(stream, count=4), symbols)
    assert HuffmanCoder().encode(np.full(100, 7, dtype=np.uint8)) == b"\x00\x07"


@pytest.mark.parametrize(
    ("stream", "message"),
    [
        (bytes([2, 1, 0x11, 4, 1, 0x10]), "longest code is 2"),
        (bytes([1, 2, 0x11, 0x00, 4, 1, 0x10]), "max_symbol 2 has no code"),
        (bytes([2, 2, 0x22, 0x20, 4, 1, 0x10]), "complete prefix code"),
        (bytes([1, 1, 0x11, 0, 1, 0x10]), "block size 0"),
        (bytes([1, 1, 0x11, 5, 1, 0x10]), "block size 5"),
        (bytes([1, 1, 0x11, 4, 3, 0x10]), "width must be one of"),
        (bytes([1, 1, 0x11, 2, 2, 1, 0, 0x00, 0x40]), "where 1 suffice"),
        (bytes([1, 1, 0x11, 2, 1, 3, 0x00, 0x40]), "block sizes add up to 3"),
        (bytes([1, 1, 0x11, 2, 1, 2, 0x00, 0x40]), "block 0 has 2 bytes but its codes take 2 bits"),
        (bytes([1, 1, 0x11, 4, 1, 0x11]), "non-zero padding"),
        (bytes([1, 1, 0x11, 4, 1, 0x10, 0x00]), "has 2 bytes but its codes take 4 bits"),
        (bytes([1, 1, 0x11, 4, 1]), "too short for 4 symbols"),
        (bytes([0, 7, 0]), "trailing"),
        (bytes([16, 1]), "exceeds max_bits=15"),
    ],
)
def test_huffman_rejects_malformed_header(stream: bytes, message: str) -> None:
    with pytest.raises(CoderError, match=message):
        HuffmanCoder().decode(stream, count=4)


def _huffman_cost_and_depth(counts: list[int]) -> tuple[int, int]:
    """Plain Huffman cost (the sum of all merged weights) and the least tree depth reaching it."""
    heap = [(c, 0) for c in counts if c > 0]
    if len(heap) <= 1:
        return 0, 0
    heapq.heapify(heap)
    cost = 0
    while len(heap) > 1:
        (a, da), (b, db) = heapq.heappop(heap), heapq.heappop(heap)
        cost += a + b
        heapq.heappush(heap, (a + b, max(da, db) + 1))
    return cost, heap[0][1]


def _kraft_ok(lengths: np.ndarray) -> bool:
    used = lengths[lengths > 0].astype(np.int64)
    return int(np.left_shift(1, 16 - used).sum()) <= 1 << 16


@settings(max_examples=200, deadline=None)
@given(
    counts=st.lists(st.integers(0, 10**6), min_size=1, max_size=256),
    max_bits=st.integers(8, 16),
)
def test_huffman_lengths_are_optimal(counts: list[int], max_bits: int) -> None:
    lengths = huffman_code_lengths(np.array(counts), max_bits)
    cost, depth = _huffman_cost_and_depth(counts)
    bits = payload_bits(np.array(counts), lengths)
    assert _kraft_ok(lengths) and int(lengths.max(initial=0)) <= max_bits
    assert ((lengths > 0) == (np.array(counts) > 0)).all() or np.count_nonzero(counts) == 1
    if depth <= max_bits:  # the limit does not bind
        assert bits == cost
    else:
        assert bits >= cost


@pytest.mark.parametrize("seed", range(30))
def test_huffman_lengths_match_brute_force_under_tight_limit(seed: int) -> None:
    rng = np.random.default_rng(seed)
    max_bits = int(rng.integers(2, 4))
    n = int(rng.integers(2, min(6, 1 << max_bits) + 1))
    counts = rng.geometric(0.2, size=n) ** 2
    best = min(
        int(np.dot(counts, combo))
        for combo in itertools.product(range(1, max_bits + 1), repeat=n)
        if sum(2.0**-length for length in combo) <= 1
    )
    assert payload_bits(counts, huffman_code_lengths(counts, max_bits)) == best


@pytest.mark.parametrize("max_bits", [8, 12, 16])
def test_huffman_length_limit_binds_on_fibonacci_counts(max_bits: int) -> None:
    fib = [1, 1]
    while len(fib) < 22:
        fib.append(fib[-1] + fib[-2])
    counts = np.array(fib)
    lengths = huffman_code_lengths(counts, max_bits)
    assert int(lengths.max()) == max_bits and _kraft_ok(lengths)
    assert _huffman_cost_and_depth(fib)[1] > max_bits
    rng = np.random.default_rng(0)
    symbols = rng.permutation(np.repeat(np.arange(22, dtype=np.uint8), counts))
    encoded = check_encode_decode(HuffmanCoder(max_bits=max_bits, block_size=1000), symbols)
    assert encoded[0] == max_bits


def test_huffman_stream_size_matches_payload_bits() -> None:
    rng = np.random.default_rng(3)
    symbols = np.minimum(rng.geometric(0.1, size=20000) - 1, 99).astype(np.uint8)
    counts = np.bincount(symbols, minlength=256)
    bits = payload_bits(counts, huffman_code_lengths(counts, 15))
    encoded = HuffmanCoder(block_size=symbols.size).encode(symbols)
    header = 2 + (int(symbols.max()) + 2) // 2 + len(write_varint(symbols.size)) + 1
    assert len(encoded) == header + (bits + 7) // 8


# --- specs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("zstd:3", ZstdCoder(3)),
        ("raw:5", RawCoder(5)),
        ("huffman", HuffmanCoder()),
        ("huffman:12", HuffmanCoder(max_bits=12)),
        ("huffman+zstd", ChainCoder([HUFF, ZSTD])),
        (" raw:4 + zstd:1 ", ChainCoder([{"id": "raw", "bits": 4}, {"id": "zstd", "level": 1}])),
    ],
)
def test_coder_from_spec(spec: str, expected: Coder) -> None:
    assert coder_from_spec(spec) == expected


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ("", ConfigError),
        ("+", ConfigError),
        ("huffman+", ConfigError),
        ("zstd:x", ConfigError),
        ("zstd:0", ConfigError),
        ("raw:9", ConfigError),
        ("chain:2", ConfigError),
        ("chain", ConfigError),
        ("lzma", UnknownCoderError),
        ("huffman+lzma:3", ConfigError),
        ("huffman+lzma", UnknownCoderError),
    ],
)
def test_bad_coder_spec(spec: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        coder_from_spec(spec)


def test_huffman_streams_decoded_together_equal_one_by_one() -> None:
    """decode_many shares one lock-step over the blocks of many streams: the same symbols as
    decode() stream by stream, whatever their block sizes, alphabets and code-length limits."""
    rng = np.random.default_rng(7)
    items, expected = [], []
    for n, alphabet, block, max_bits in [(50_000, 32, 0, 15), (3, 4, 0, 15), (0, 1, 0, 15), (1000, 1, 0, 15),
                                         (20_000, 256, 1000, 12), (70_000, 3, 0, 8), (5, 200, 2, 16)]:
        symbols = np.minimum(rng.geometric(0.3, n) - 1, alphabet - 1).astype(np.uint8)
        coder = HuffmanCoder(block_size=block, max_bits=max_bits)
        items.append((coder, coder.encode(symbols), n))
        expected.append(symbols)
    got = decode_many(items)
    for i, (e, g) in enumerate(zip(expected, got)):
        np.testing.assert_array_equal(g, e, err_msg=f"stream {i}")
    bad = list(items)
    coder, buf, n = bad[0]
    bad[0] = (coder, buf[:-1], n)  # truncated: the batch fails as the stream alone does
    with pytest.raises(CoderError):
        decode_many(bad)
    with pytest.raises(CoderError):
        coder.decode(buf[:-1], count=n)


@settings(max_examples=40, deadline=None)
@given(data=st.binary(min_size=1, max_size=20000), alphabet=st.integers(1, 256), max_bits=st.integers(9, 16))
def test_huffman_size_floor_never_exceeds_the_encoded_size(data: bytes, alphabet: int, max_bits: int) -> None:
    # encode_best skips Huffman when another coder beats this floor: it must be a true lower bound.
    symbols = (np.frombuffer(data, dtype=np.uint8).astype(np.int64) % alphabet).astype(np.uint8)
    coder = HuffmanCoder(max_bits=max_bits)
    assert coder.size_floor(np.bincount(symbols, minlength=256)) <= len(coder.encode(symbols))


def test_errors_by_cause() -> None:
    """An encode failure is no container error; a decode failure is one, with the stream-decode code."""
    with pytest.raises(EncodeError) as enc:
        RawCoder(bits=2).encode(np.array([7], dtype=np.uint8))
    assert isinstance(enc.value, CoderError) and not isinstance(enc.value, ContainerError)
    with pytest.raises(EncodeError):
        huffman_code_lengths(np.ones(256, dtype=np.int64), 7)
    with pytest.raises(DecodeError) as dec:
        RawCoder(bits=8).decode(b"\0\0", count=3)
    assert isinstance(dec.value, ContainerError) and dec.value.code == "stream-decode"
