"""onnxdc: Deep Compression (pruning, weight sharing, entropy coding) for ONNX models.

The public API (:mod:`onnxdc.api`, every name of it available here) is imported on first use, so that ``import onnxdc.console`` (the command's entry
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
    DecodeError,
    EncodeError,
    ModelError,
    OnnxdcError,
    OutputError,
    UnknownCoderError,
)

__all__ = [
    "CoderError", "CompressConfig", "CompressResult", "ConfigError", "Container", "ContainerError", "DataError",
    "DecodeError", "EncodeError", "ModelError", "OnnxdcError", "OutputError", "UnknownCoderError", "__version__", "compress",
    "decompress", "load_model", "read_container",
]
#: Every other public name lives in :mod:`onnxdc.api`, imported when first asked for.


def __getattr__(name: str) -> Any:
    if name.startswith("_"):
        raise AttributeError(f"module 'onnxdc' has no attribute {name!r}")
    api = importlib.import_module("onnxdc.api")
    if name not in api.__all__:
        raise AttributeError(f"module 'onnxdc' has no attribute {name!r}")
    value = getattr(api, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(importlib.import_module("onnxdc.api").__all__))
