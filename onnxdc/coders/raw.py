"""Fixed-width bit packing: each symbol keeps its low ``bits`` bits, most significant bit first.

This is the baseline every entropy coder must beat, and the right coder when indices are close
to uniform (a 5-bit cluster index costs exactly 5 bits). The output is exactly
``ceil(count * bits / 8)`` bytes; the last byte is padded with zero bits, and the decoder checks
both the length and the padding so each stream has one byte form. ``bits=8`` is the identity.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from onnxdc.coders.base import Coder, check_count, check_int_param, check_symbols
from onnxdc.coders.registry import register_coder
from onnxdc.errors import DecodeError, EncodeError


@register_coder
class RawCoder(Coder):
    """Pack symbols at a fixed ``bits`` bits each (1..8).

    Args:
        bits: Width of every symbol; symbols must be below ``2**bits``.
    """

    coder_id = "raw"
    main_param = "bits"

    def __init__(self, bits: int = 8) -> None:
        self.bits = check_int_param(self.coder_id, "bits", bits, 1, 8)

    def get_config(self) -> dict[str, Any]:
        return {"id": self.coder_id, "bits": self.bits}

    def max_encoded_size(self, count: int) -> int:
        return packed_size(count, self.bits)

    def encode(self, symbols: np.ndarray) -> bytes:
        """Pack ``symbols`` MSB first.

        Raises:
            CoderError: a symbol does not fit in ``bits`` bits.
        """
        symbols = check_symbols(symbols)
        if self.bits == 8:
            return symbols.tobytes()
        top = int(symbols.max()) if symbols.size else 0
        if top >> self.bits:
            raise EncodeError(f"symbol {top} does not fit in {self.bits} bits")
        # Shifted to the top of its byte, each symbol unpacks to a row whose first ``bits``
        # columns are its code; packbits concatenates those rows MSB first.
        bit_rows = np.unpackbits((symbols << (8 - self.bits))[:, None], axis=1)[:, : self.bits]
        return np.packbits(bit_rows.ravel()).tobytes()

    def decode(self, buf: bytes, *, count: int) -> np.ndarray:
        """Unpack exactly ``count`` symbols.

        Raises:
            CoderError: ``buf`` is not exactly ``ceil(count * bits / 8)`` bytes, or its padding
                bits are not zero.
        """
        count = check_count(count)
        expected = packed_size(count, self.bits)
        if len(buf) != expected:
            raise DecodeError(
                f"raw stream of {count} symbols at {self.bits} bits must be {expected} bytes, "
                f"got {len(buf)}"
            )
        data = np.frombuffer(buf, dtype=np.uint8)
        if self.bits == 8:  # the bytes are the symbols: a read-only view, not a copy (75 MB of a 100 MB
            return data     # lossless model's low mantissa planes)
        bits = np.unpackbits(data)
        used = count * self.bits
        if bits[used:].any():
            raise DecodeError("raw stream has non-zero padding bits")
        # packbits pads each ``bits``-bit row on the right to a byte; shifting undoes that.
        rows = np.packbits(bits[:used].reshape(count, self.bits), axis=1).reshape(count)
        return rows >> (8 - self.bits)


def packed_size(count: int, bits: int) -> int:
    """Return the byte size of ``count`` symbols packed at ``bits`` bits each."""
    return (count * bits + 7) // 8
