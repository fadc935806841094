"""onnxdc: Deep Compression (pruning, weight sharing, entropy coding) for ONNX models."""

from __future__ import annotations

__version__ = "0.1.0"

from onnxdc.container import Container, read_container  # noqa: E402
from onnxdc.errors import (  # noqa: E402
    CoderError,
    ConfigError,
    ContainerError,
    DataError,
    ModelError,
    OnnxdcError,
    OutputError,
    UnknownCoderError,
)
from onnxdc.graphio import load_model  # noqa: E402
from onnxdc.pipeline import CompressConfig, CompressResult, compress, decompress  # noqa: E402

__all__ = [
    "CoderError", "CompressConfig", "CompressResult", "ConfigError", "Container", "ContainerError", "DataError",
    "ModelError", "OnnxdcError", "OutputError", "UnknownCoderError", "__version__", "compress",
    "decompress", "load_model", "read_container",
]
