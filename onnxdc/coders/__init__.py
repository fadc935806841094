"""Coders for byte-symbol streams, one per module, found through a registry."""

from __future__ import annotations

from onnxdc.coders.base import Coder
from onnxdc.coders.registry import get_coder, register_coder, registered_coders

# Importing the modules registers their coders, in this order.
# isort: off
from onnxdc.coders import raw as _raw  # noqa: F401,E402
from onnxdc.coders import huffman as _huffman  # noqa: F401,E402
from onnxdc.coders import rans as _rans  # noqa: F401,E402
from onnxdc.coders import rans_ctx as _rans_ctx  # noqa: F401,E402
from onnxdc.coders import zstd as _zstd  # noqa: F401,E402
from onnxdc.coders import zstd_dict as _zstd_dict  # noqa: F401,E402
from onnxdc.coders import chain as _chain  # noqa: F401,E402
from onnxdc.coders.spec import coder_from_spec  # noqa: E402
# isort: on

__all__ = ["Coder", "coder_from_spec", "get_coder", "register_coder", "registered_coders"]
