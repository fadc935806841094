"""The ``shared`` encoding: a pruned, weight-shared tensor (Deep Compression stages 1-3).

Streams:

* ``codebook``: the shared values, little-endian ``codebook_dtype``; when ``zero_code`` is true
  the first entry is an explicit 0.0 (dense layout only);
* ``indices``: one byte symbol per stored weight, an index into the codebook; ``nnz`` symbols in
  the sparse layouts, ``numel`` in the dense one;
* ``positions`` (``relative`` and ``mask`` layouts only): see :mod:`onnxdc.stages.positions`.

Params: ``op``, ``kind``, ``numel``, ``nnz``, ``bits``, ``k`` (codebook entries), ``zero_code``,
``codebook_dtype``, ``positions`` (scheme), ``position_bits`` (relative layout's gap width, else 0),
``pruned_bytes`` and ``shared_bytes`` (the report's stage sizes: values + fixed-width positions
after pruning; fixed-width indices + positions + codebook after sharing).

The tensor decodes to ``numel`` values of its own dtype: ``codebook[index]`` at the stored
positions, exact zeros elsewhere.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from onnxdc.dtypes import CODEBOOK_DTYPES, np_dtype
from onnxdc.errors import ContainerError
from onnxdc.format.positions import decode_mask, decode_relative
from onnxdc.format.registry import expect_params, expect_streams, register_encoding

if TYPE_CHECKING:
    from onnxdc.format.container import Container
    from onnxdc.format.header import StreamInfo, TensorInfo

ENCODING = "shared"
PARAMS: dict[str, Any] = {
    "op": str, "kind": str, "numel": int, "nnz": int, "bits": int, "k": int, "zero_code": bool,
    "codebook_dtype": str, "positions": str, "position_bits": int, "pruned_bytes": int,
    "shared_bytes": int,
}
#: Position schemes a shared tensor may record.
SCHEMES = ("relative", "mask", "dense")


def stream_counts(params: dict[str, Any], numel: int) -> dict[str, int]:
    """The symbol counts of the streams whose count the params fix: the indices (every element
    for ``dense``, else the survivors) and a ``mask``'s bitmap. A ``relative`` position stream's
    length depends on the gaps, and the codebook's is what gives ``k`` (a 4.0 header states
    neither). The validator checks these and a 4.0 header leaves them implied."""
    dense = params["positions"] == "dense"
    counts = {"indices": numel if dense else params["nnz"]}
    if params["positions"] == "mask":
        counts["positions"] = (numel + 7) // 8
    return counts


def validate(info: TensorInfo, streams: tuple[StreamInfo, ...]) -> None:
    expect_params(info, PARAMS)
    p = info.params
    numel = math.prod(info.shape)
    scheme = p["positions"]
    if scheme not in SCHEMES:
        raise ContainerError(f"tensor {info.name!r} has unknown positions scheme {scheme!r}")
    expect_streams(info, ["codebook", "indices"] + ([] if scheme == "dense" else ["positions"]))
    if p["numel"] != numel or not 0 <= p["nnz"] <= numel:
        raise ContainerError(f"tensor {info.name!r} numel/nnz ({p['numel']}, {p['nnz']}) do not fit shape {info.shape}")
    if p["codebook_dtype"] not in CODEBOOK_DTYPES or not 1 <= p["bits"] <= 8:
        raise ContainerError(f"tensor {info.name!r} has invalid bits or codebook dtype")
    if not 0 <= p["k"] <= 256 or (p["zero_code"] and scheme != "dense"):
        raise ContainerError(f"tensor {info.name!r} has an invalid codebook size or zero code")
    if p["pruned_bytes"] < 0 or p["shared_bytes"] < 0:  # shown by the report: never negative
        raise ContainerError(
            f"tensor {info.name!r} stage sizes ({p['pruned_bytes']}, {p['shared_bytes']}) must be >= 0"
        )
    try:
        itemsize = np_dtype(info.dtype).itemsize
    except (KeyError, TypeError, ValueError):
        raise ContainerError(f"tensor {info.name!r} dtype {info.dtype} cannot be weight-shared") from None
    if info.dtype not in (1, 10, 11, 16) or info.nbytes != numel * itemsize:
        raise ContainerError(f"tensor {info.name!r} nbytes ({info.nbytes}) does not match shape and dtype")
    cb_items = np.dtype(CODEBOOK_DTYPES[p["codebook_dtype"]]).itemsize
    if streams[info.streams["codebook"]].count != p["k"] * cb_items:
        raise ContainerError(f"tensor {info.name!r} codebook stream size does not match k={p['k']}")
    for role, want in stream_counts(p, numel).items():
        if streams[info.streams[role]].count != want:
            raise ContainerError(f"tensor {info.name!r} {role} stream holds {streams[info.streams[role]].count} "
                                 f"symbols, expected {want}")
    if scheme == "relative":
        b = p["position_bits"]
        if not 1 <= b <= 8:
            raise ContainerError(f"tensor {info.name!r} position_bits must be in 1..8, found {b}")
        limit = p["nnz"] + numel // ((1 << b) - 1) + 1
        if streams[info.streams["positions"]].count > limit:
            raise ContainerError(f"tensor {info.name!r} position stream is longer than the tensor allows")


def decode(info: TensorInfo, container: Container) -> np.ndarray:
    p = info.params
    cb_dtype = np.dtype(CODEBOOK_DTYPES[p["codebook_dtype"]]).newbyteorder("<")
    codebook = np.frombuffer(container.decode_stream(info.streams["codebook"]).tobytes(), dtype=cb_dtype)
    idx = container.decode_stream(info.streams["indices"])
    if idx.size and int(idx.max()) >= codebook.size:
        raise ContainerError(f"tensor {info.name!r}: index {int(idx.max())} outside codebook of {codebook.size}")
    out_dtype = np_dtype(info.dtype)
    cb = codebook.astype(out_dtype)
    scheme = p["positions"]
    if scheme == "dense":
        values = cb[idx]
    else:
        syms = container.decode_stream(info.streams["positions"])
        if scheme == "relative":
            pos = decode_relative(syms, bits=p["position_bits"], numel=p["numel"], nnz=p["nnz"], name=info.name)
        else:
            pos = decode_mask(syms, numel=p["numel"], nnz=p["nnz"], name=info.name)
        values = np.zeros(p["numel"], dtype=out_dtype)
        values[pos] = cb[idx]
    return values.astype(values.dtype.newbyteorder("<"), copy=False).view(np.uint8)


register_encoding(ENCODING, validate, decode)
