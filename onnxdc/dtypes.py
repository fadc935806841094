"""The one table of ONNX tensor element types onnxdc knows, without importing onnx.

``TensorProto.DataType`` values are part of the ONNX format (onnx.proto) and never change, so the
container reader can check sizes and rebuild arrays without loading onnx; tests compare this table
with the installed onnx. Sub-byte types pack several elements per byte of raw_data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ElementType:
    """One ONNX element type: its name, bits per element (components counted for complex types),
    the width of one plane-splitting unit in bytes (1 for packed types), and its numpy name."""

    code: int
    name: str
    bits: int
    plane_bytes: int
    numpy: str
    is_float: bool = False


_TYPES = (
    ElementType(1, "FLOAT", 32, 4, "float32", True),
    ElementType(2, "UINT8", 8, 1, "uint8"),
    ElementType(3, "INT8", 8, 1, "int8"),
    ElementType(4, "UINT16", 16, 2, "uint16"),
    ElementType(5, "INT16", 16, 2, "int16"),
    ElementType(6, "INT32", 32, 4, "int32"),
    ElementType(7, "INT64", 64, 8, "int64"),
    ElementType(8, "STRING", 0, 1, "object"),
    ElementType(9, "BOOL", 8, 1, "bool"),
    ElementType(10, "FLOAT16", 16, 2, "float16", True),
    ElementType(11, "DOUBLE", 64, 8, "float64", True),
    ElementType(12, "UINT32", 32, 4, "uint32"),
    ElementType(13, "UINT64", 64, 8, "uint64"),
    ElementType(14, "COMPLEX64", 64, 4, "complex64", True),
    ElementType(15, "COMPLEX128", 128, 8, "complex128", True),
    ElementType(16, "BFLOAT16", 16, 2, "bfloat16", True),
    ElementType(17, "FLOAT8E4M3FN", 8, 1, "float8_e4m3fn"),
    ElementType(18, "FLOAT8E4M3FNUZ", 8, 1, "float8_e4m3fnuz"),
    ElementType(19, "FLOAT8E5M2", 8, 1, "float8_e5m2"),
    ElementType(20, "FLOAT8E5M2FNUZ", 8, 1, "float8_e5m2fnuz"),
    ElementType(21, "UINT4", 4, 1, "uint4"),
    ElementType(22, "INT4", 4, 1, "int4"),
    ElementType(23, "FLOAT4E2M1", 4, 1, "float4_e2m1fn"),
    ElementType(24, "FLOAT8E8M0", 8, 1, "float8_e8m0fnu"),
    ElementType(25, "UINT2", 2, 1, "uint2"),
    ElementType(26, "INT2", 2, 1, "int2"),
    ElementType(27, "FLOAT6E2M3", 6, 1, "float6_e2m3fn"),
    ElementType(28, "FLOAT6E3M2", 6, 1, "float6_e3m2fn"),
)
TYPES: dict[int, ElementType] = {t.code: t for t in _TYPES}
BY_NAME: dict[str, ElementType] = {t.name: t for t in _TYPES}

FLOAT, FLOAT16, DOUBLE, BFLOAT16, BOOL = 1, 10, 11, 16, 9
#: The element types weight sharing works on (they have a float codebook).
SHAREABLE_FLOATS = frozenset({FLOAT, FLOAT16, BFLOAT16, DOUBLE})
#: Numpy dtypes of the codebook of a weight-shared tensor, by the name its params record.
CODEBOOK_DTYPES: dict[str, type] = {"float32": np.float32, "float16": np.float16}
#: Unsigned integers of a byte width, to rotate and split elements into planes.
UINT_OF_WIDTH: dict[int, type] = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def plane_itemsize(data_type: int) -> int:
    """The width in bytes of one element (or complex component) of ``data_type`` for plane splitting."""
    t = TYPES.get(data_type)
    return t.plane_bytes if t is not None and t.bits >= 8 else 1


def is_float(data_type: int) -> bool:
    """Whether ``data_type`` holds floats wider than a byte (planes rotate their sign bit)."""
    t = TYPES.get(data_type)
    return t is not None and t.is_float


def expected_nbytes(data_type: int, numel: int) -> int | None:
    """The raw_data byte length of a tensor of ``numel`` elements, or None if unknown (strings)."""
    t = TYPES.get(data_type)
    if t is None or t.bits == 0:
        return None
    return (numel * t.bits + 7) // 8


def dtype_name(data_type: int) -> str:
    """ONNX's name of a ``TensorProto.DataType`` value (``"FLOAT"``, ...), or its number."""
    t = TYPES.get(data_type)
    return t.name if t is not None else str(data_type)


def np_dtype(data_type: int) -> np.dtype:
    """The numpy dtype of an ONNX element type (bfloat16 and the float8 types through ml_dtypes,
    as onnx does)."""
    t = TYPES.get(data_type)
    if t is None:
        raise KeyError(f"unknown ONNX element type {data_type}")
    try:
        return np.dtype(t.numpy)
    except TypeError:
        import ml_dtypes

        return np.dtype(getattr(ml_dtypes, t.numpy))
