"""Zstandard with a built-in dictionary: for small streams whose vocabulary is known in advance.

An ONNX skeleton (the graph without its weights) of a small model is a few KB of op types,
attribute names and exporter-made tensor names; on its own, zstd spends most of the stream
describing them. With a dictionary of that vocabulary (:mod:`onnxdc.coders.dictionaries`) the same
frame is 10-20% smaller. The stream is one zstd frame with its content size and without the
dictionary's id (the config names the dictionary), decoded by :func:`~onnxdc.coders.zstd.decompress_exact`
with the same checks as :mod:`onnxdc.coders.zstd`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import zstandard

from onnxdc.coders.base import check_symbols
from onnxdc.coders.dictionaries import dictionary
from onnxdc.coders.registry import register_coder
from onnxdc.coders.zstd import ZstdCoder, decompress_exact
from onnxdc.errors import ConfigError


@register_coder
class ZstdDictCoder(ZstdCoder):
    """One zstd frame coded with the built-in dictionary ``dictionary``.

    Args:
        dictionary: Name of a built-in dictionary (``"onnx-1"``: ONNX graphs).
        level: Compression level, 1 to 22.
    """

    coder_id = "zstd-dict"
    main_param = "level"

    def __init__(self, dictionary: str = "onnx-1", level: int = 19) -> None:
        super().__init__(level=level)
        if not isinstance(dictionary, str):
            raise ConfigError(f"zstd-dict dictionary must be a name, got {dictionary!r}")
        self.dictionary = dictionary
        self._dict = _load(dictionary)

    def get_config(self) -> dict[str, Any]:
        return {"id": self.coder_id, "dictionary": self.dictionary, "level": self.level}

    def encode(self, symbols: np.ndarray) -> bytes:
        symbols = check_symbols(symbols)
        if symbols.size == 0:
            return b""
        return zstandard.ZstdCompressor(level=self.level, dict_data=self._dict, write_content_size=True,
                                        write_checksum=False, write_dict_id=False, threads=0
                                        ).compress(symbols.tobytes())

    def decode(self, buf: bytes, *, count: int) -> np.ndarray:
        return decompress_exact(buf, count=count, dictionary=self._dict)


def _load(name: str) -> zstandard.ZstdCompressionDict:
    return dictionary(name)
