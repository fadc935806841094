"""Zstandard: a general-purpose coder for byte planes and for the output of other coders.

The stream is exactly one zstd frame with its content size in the header (nothing for an empty
stream). Compression is single-threaded so the same symbols always give the same bytes. The
decoder trusts nothing in the frame: the declared content size must equal ``count`` before
anything is allocated, the output is capped at ``count`` bytes, and bytes after the frame are
refused.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import zstandard

from onnxdc.coders.base import Coder, check_count, check_int_param, check_symbols
from onnxdc.coders.registry import register_coder
from onnxdc.errors import CoderError

_MIN_LEVEL = 1
_MAX_LEVEL = 22
#: Compressed bytes fed to the decoder per call.
_SLICE = 256


@register_coder
class ZstdCoder(Coder):
    """Compress symbols as one Zstandard frame.

    Args:
        level: Compression level, 1 (fast) to 22 (smallest).
    """

    coder_id = "zstd"

    def __init__(self, level: int = 19) -> None:
        self.level = check_int_param(self.coder_id, "level", level, _MIN_LEVEL, _MAX_LEVEL)

    def get_config(self) -> dict[str, Any]:
        return {"id": self.coder_id, "level": self.level}

    def max_encoded_size(self, count: int) -> int:
        # ZSTD_COMPRESSBOUND from zstd.h: the worst case of one frame, header included.
        if count == 0:
            return 0
        small = ((128 << 10) - count) >> 11 if count < (128 << 10) else 0
        return count + (count >> 8) + small

    def encode(self, symbols: np.ndarray) -> bytes:
        symbols = check_symbols(symbols)
        if symbols.size == 0:
            return b""
        compressor = zstandard.ZstdCompressor(
            level=self.level, write_content_size=True, write_checksum=False, threads=0
        )
        return compressor.compress(symbols.tobytes())

    def decode(self, buf: bytes, *, count: int) -> np.ndarray:
        """Decompress exactly ``count`` symbols from one frame.

        Raises:
            CoderError: the frame is malformed, lacks a content size, declares a size other than
                ``count``, decompresses to another length, or is followed by other bytes.
        """
        count = check_count(count)
        if count == 0:
            if len(buf):
                raise CoderError(f"zstd stream of 0 symbols must be empty, got {len(buf)} bytes")
            return np.zeros(0, dtype=np.uint8)
        try:
            declared = zstandard.frame_content_size(buf)
        except zstandard.ZstdError as exc:
            raise CoderError(f"invalid zstd frame header: {exc}") from None
        if declared < 0:
            raise CoderError("zstd frame does not declare its content size")
        if declared != count:
            raise CoderError(f"zstd frame declares {declared} bytes, expected {count}")
        out = bytearray()
        dobj = zstandard.ZstdDecompressor().decompressobj()
        view = memoryview(buf)
        try:
            # Small input slices bound what one call can produce (a zstd RLE block turns 4 bytes
            # into 128 KiB), so a frame that lies about its size fails before memory is used up,
            # and memory grows only with what really decodes.
            for start in range(0, len(view), _SLICE):
                out += dobj.decompress(view[start:start + _SLICE])
                if len(out) > count:
                    raise CoderError(f"zstd stream decodes to more than {count} bytes")
                if dobj.eof and start + _SLICE < len(view):
                    raise CoderError("zstd stream has trailing bytes after its frame")
        except zstandard.ZstdError as exc:
            raise CoderError(f"corrupt zstd stream: {exc}") from None
        if not dobj.eof or dobj.unused_data:
            raise CoderError("zstd stream is truncated or has trailing bytes")
        if len(out) != count:
            raise CoderError(f"zstd stream decoded to {len(out)} bytes, expected {count}")
        return np.frombuffer(out, dtype=np.uint8)
