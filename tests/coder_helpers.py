"""Checks shared by the coder tests, run over every registered coder (as numcodecs tests/common.py).

Each helper takes a built coder and asserts one contract of :class:`onnxdc.coders.Coder`, so a
new coder gets the whole suite by adding its configs to the test's list.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import numpy as np
import pytest

from onnxdc.coders import Coder, get_coder
from onnxdc.coders.chain import ChainCoder
from onnxdc.coders.raw import RawCoder
from onnxdc.errors import CoderError


def symbol_limit(coder: Coder) -> int:
    """Return the largest symbol ``coder`` can encode (a chain's first stage decides)."""
    if isinstance(coder, ChainCoder):
        return symbol_limit(coder.stages[0])
    if isinstance(coder, RawCoder):
        return (1 << coder.bits) - 1
    return 255


def fit_symbols(coder: Coder, symbols: np.ndarray) -> np.ndarray:
    """Mask ``symbols`` to what ``coder`` can represent (raw coders of fewer than 8 bits)."""
    return (np.asarray(symbols, dtype=np.uint8) & symbol_limit(coder)).astype(np.uint8)


def check_encode_decode(coder: Coder, symbols: np.ndarray) -> bytes:
    """Round-trip ``symbols``; check determinism, the output type and the size bound."""
    encoded = coder.encode(symbols)
    assert isinstance(encoded, bytes)
    assert coder.encode(symbols) == encoded, "encoding must be deterministic"
    assert len(encoded) <= coder.max_encoded_size(symbols.size)
    decoded = coder.decode(encoded, count=symbols.size)
    assert isinstance(decoded, np.ndarray)
    assert decoded.dtype == np.uint8 and decoded.ndim == 1
    np.testing.assert_array_equal(decoded, symbols)
    return encoded


def check_config(coder: Coder) -> None:
    """Check that the config is JSON-native and rebuilds an equal coder."""
    config = coder.get_config()
    assert config["id"] == coder.coder_id
    rebuilt = get_coder(json.loads(json.dumps(config)))
    assert type(rebuilt) is type(coder)
    assert rebuilt == coder
    assert rebuilt.get_config() == config
    assert hash(rebuilt) == hash(coder)


def check_decode_fails_or_fits(coder: Coder, buf: bytes, count: int) -> None:
    """Decoding ``buf`` may raise only :class:`CoderError`, or must return ``count`` symbols."""
    try:
        out = coder.decode(buf, count=count)
    except CoderError:
        return
    assert out.dtype == np.uint8 and out.shape == (count,)


def check_decode_fails(coder: Coder, buf: bytes, count: int) -> None:
    """Decoding ``buf`` must raise :class:`CoderError` (and no other exception)."""
    with pytest.raises(CoderError):
        coder.decode(buf, count=count)


def check_rejects_malformed(coder: Coder, symbols: np.ndarray) -> None:
    """Truncations and trailing bytes must fail; flips and wrong counts may only fail cleanly."""
    encoded = coder.encode(symbols)
    count = symbols.size
    for cut in range(len(encoded)):
        check_decode_fails(coder, encoded[:cut], count)
    for tail in (b"\x00", b"\x01", b"\xff\xff\xff"):
        check_decode_fails(coder, encoded + tail, count)
    for i in range(len(encoded)):
        for mask in (0x01, 0x80, 0xFF):
            flipped = bytearray(encoded)
            flipped[i] ^= mask
            check_decode_fails_or_fits(coder, bytes(flipped), count)
    for wrong in _wrong_counts(count):
        check_decode_fails_or_fits(coder, encoded, wrong)
    for bad in (-1, 1.5, True, "3", None):
        check_decode_fails(coder, encoded, bad)  # type: ignore[arg-type]


def _wrong_counts(count: int) -> Iterable[int]:
    # No astronomically large counts here: a one-symbol Huffman stream rightly expands to any
    # count, so bounding ``count`` is the container's job, not the coder's.
    candidates = {0, 1, count - 1, count + 1, 2 * count + 7, 1000 * count + 1}
    return sorted(c for c in candidates if c >= 0 and c != count)
