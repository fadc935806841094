"""Zstandard: a general-purpose coder for byte planes and for the output of other coders.

The stream is exactly one zstd frame with its content size in the header (nothing for an empty
stream). Compression is single-threaded so the same symbols always give the same bytes. The
decoder trusts nothing in the frame: the declared content size must equal ``count`` before
anything is allocated, the output is capped at ``count`` bytes, and bytes after the frame are
refused.

``zstd-literals`` writes the same kind of frame with match finding all but switched off, so a frame
is almost only Huffman-coded literal blocks: an order-0 entropy coder like :mod:`huffman`, as small
to within a fraction of a percent on memoryless data (a float exponent plane), whose decoder is
zstd's compiled one — tens of times faster than any numpy Huffman decoder. Both share the decoder.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import zstandard

from onnxdc.coders.base import Coder, check_count, check_int_param, check_symbols
from onnxdc.coders.registry import register_coder
from onnxdc.errors import DecodeError

_MIN_LEVEL = 1
_MAX_LEVEL = 22
#: Compressed bytes fed to the decoder per call.
_SLICE = 256
#: A frame declaring at most this many times its own length is decoded in one call (output
#: buffer allocated once at the declared size); beyond it, slice by slice, so a forged frame of a
#: few bytes that claims gigabytes fails before memory is used up.
_ONE_CALL_RATIO = 64


@register_coder
class ZstdCoder(Coder):
    """Compress symbols as one Zstandard frame.

    Args:
        level: Compression level, 1 (fast) to 22 (smallest).
    """

    coder_id = "zstd"
    main_param = "level"

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
        return self._compressor().compress(symbols.tobytes())

    def _compressor(self) -> zstandard.ZstdCompressor:
        return zstandard.ZstdCompressor(level=self.level, write_content_size=True, write_checksum=False, threads=0)

    def decode(self, buf: bytes, *, count: int) -> np.ndarray:
        """Decompress exactly ``count`` symbols from one frame (see :func:`decompress_exact`)."""
        return decompress_exact(buf, count=count)


@register_coder
class ZstdLiteralsCoder(ZstdCoder):
    """A zstd frame of (almost) only Huffman-coded literals: an order-0 coder with a fast decoder.

    The encoder's match finder is starved — one probe of a 64-entry hash table, 7-byte minimum
    matches, no search — so it finds next to no matches in noisy data, and a frame is zstd's
    literal blocks: a Huffman table (at most 11-bit codes) per 128 KiB block. That is what a
    float exponent plane or a stream of cluster indices needs, at the size of :mod:`huffman`
    to within a fraction of a percent; compression runs at hundreds of MB/s and decoding is
    zstd's. Any zstd decoder reads the frames, so decoding is :class:`ZstdCoder`'s.
    """

    coder_id = "zstd-literals"
    main_param = None  # no level: always zstd level 1 literals

    def __init__(self) -> None:
        super().__init__(level=1)

    def get_config(self) -> dict[str, Any]:
        return {"id": self.coder_id}

    def _compressor(self) -> zstandard.ZstdCompressor:
        params = zstandard.ZstdCompressionParameters(
            window_log=17, hash_log=6, chain_log=6, search_log=1, min_match=7, target_length=0,
            strategy=zstandard.STRATEGY_FAST, write_content_size=True, write_checksum=False, threads=0,
        )
        return zstandard.ZstdCompressor(compression_params=params)


def decompress_exact(buf: bytes, *, count: int, dictionary: zstandard.ZstdCompressionDict | None = None) -> np.ndarray:
    """Decompress one zstd frame that must hold exactly ``count`` bytes, trusting nothing in it.

    Shared by every zstd-framed stream and by the container's 2.0 header (which uses a built-in
    ``dictionary``): the memory used is bounded by ``count``, never by what the frame claims.

    Raises:
        CoderError: the frame is malformed, lacks a content size, declares a size other than
            ``count``, decompresses to another length, or is followed by other bytes.
    """
    count = check_count(count)
    if count == 0:
        if len(buf):
            raise DecodeError(f"zstd stream of 0 symbols must be empty, got {len(buf)} bytes")
        return np.zeros(0, dtype=np.uint8)
    try:
        declared = zstandard.frame_content_size(buf)
    except zstandard.ZstdError as exc:
        raise DecodeError(f"invalid zstd frame header: {exc}") from None
    if declared < 0:
        raise DecodeError("zstd frame does not declare its content size")
    if declared != count:
        raise DecodeError(f"zstd frame declares {declared} bytes, expected {count}")
    decompressor = zstandard.ZstdDecompressor(dict_data=dictionary)
    if count <= _ONE_CALL_RATIO * len(buf):
        try:
            # The declared size is the output buffer: a frame that decodes to more fails.
            out = decompressor.decompress(buf, allow_extra_data=False)
        except zstandard.ZstdError as exc:
            raise DecodeError(f"corrupt zstd stream: {exc}") from None
        if len(out) != count:
            raise DecodeError(f"zstd stream decoded to {len(out)} bytes, expected {count}")
        return np.frombuffer(out, dtype=np.uint8)
    out = bytearray()
    dobj = decompressor.decompressobj()
    view = memoryview(buf)
    try:
        # Small input slices bound what one call can produce (a zstd RLE block turns 4 bytes
        # into 128 KiB), so a frame that lies about its size fails before memory is used up,
        # and memory grows only with what really decodes.
        for start in range(0, len(view), _SLICE):
            out += dobj.decompress(view[start:start + _SLICE])
            if len(out) > count:
                raise DecodeError(f"zstd stream decodes to more than {count} bytes")
            if dobj.eof and start + _SLICE < len(view):
                raise DecodeError("zstd stream has trailing bytes after its frame")
    except zstandard.ZstdError as exc:
        raise DecodeError(f"corrupt zstd stream: {exc}") from None
    if not dobj.eof or dobj.unused_data:
        raise DecodeError("zstd stream is truncated or has trailing bytes")
    if len(out) != count:
        raise DecodeError(f"zstd stream decoded to {len(out)} bytes, expected {count}")
    return np.frombuffer(out, dtype=np.uint8)
