"""onnxdc: Deep Compression (pruning, weight sharing, entropy coding) for ONNX models.

The public API is imported on first use, so that ``import onnxdc.console`` (the command's entry
point) is fast and can install its signal handlers before numpy and onnx load.
"""

from __future__ import annotations

import importlib
from typing import Any

from onnxdc._version import __version__
from onnxdc.errors import (
    CoderError,
    ConfigError,
    ContainerError,
    DataError,
    ModelError,
    OnnxdcError,
    OutputError,
    UnknownCoderError,
)

#: Public names and the module each comes from, imported when first asked for.
_LAZY = {
    "Container": "onnxdc.format.container", "read_container": "onnxdc.format.container", "load_model": "onnxdc.onnx_io.tensors",
    "CompressConfig": "onnxdc.pipeline.encode", "CompressResult": "onnxdc.pipeline.encode", "compress": "onnxdc.pipeline.encode",
    "decompress": "onnxdc.pipeline.encode",
}

__all__ = [
    "CoderError", "CompressConfig", "CompressResult", "ConfigError", "Container", "ContainerError", "DataError",
    "ModelError", "OnnxdcError", "OutputError", "UnknownCoderError", "__version__", "compress",
    "decompress", "load_model", "read_container",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'onnxdc' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
