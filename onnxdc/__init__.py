"""onnxdc: Deep Compression (pruning, weight sharing, entropy coding) for ONNX models."""

from __future__ import annotations

from onnxdc._version import __version__
from onnxdc.container import Container, read_container
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
from onnxdc.graphio import load_model
from onnxdc.pipeline import CompressConfig, CompressResult, compress, decompress

__all__ = [
    "CoderError", "CompressConfig", "CompressResult", "ConfigError", "Container", "ContainerError", "DataError",
    "ModelError", "OnnxdcError", "OutputError", "UnknownCoderError", "__version__", "compress",
    "decompress", "load_model", "read_container",
]
