"""The ``planes`` encoding's validator and decoder: a tensor stored exactly as byte planes.

Params: ``itemsize`` (bytes per element, the number of planes), ``rotate`` (bits each element was
rotated left before splitting: 1 for floats, moving the sign to the lowest byte; else 0) and
``raw_planes`` (the planes stored uncoded, concatenated in the ``raw`` stream). Streams:
``plane{j}`` for every other plane ``j`` (``plane0`` is the lowest byte), and ``raw``. The encoder is
:mod:`onnxdc.pipeline.planes`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from onnxdc.dtypes import UINT_OF_WIDTH, expected_nbytes
from onnxdc.errors import ContainerError
from onnxdc.format.registry import expect_params, expect_streams, register_encoding

if TYPE_CHECKING:
    from onnxdc.format.container import Container
    from onnxdc.format.header import StreamInfo, TensorInfo

ENCODING = "planes"
#: Elements rotated and joined per step (small temporaries stay in cache).
CHUNK = 1 << 18


def join_planes(planes: list[np.ndarray], itemsize: int, rotate: int) -> np.ndarray:
    """Inverse of :func:`split_planes`: the raw bytes as a flat ``uint8`` array (planes interleaved
    into one buffer, rotated in place)."""
    if itemsize == 1:
        return planes[0]
    out = np.empty((planes[0].size, itemsize), dtype=np.uint8)
    words_all = out.view(np.dtype(UINT_OF_WIDTH[itemsize]).newbyteorder("<")).reshape(-1)
    nbits = itemsize * 8
    for start in range(0, out.shape[0], CHUNK):
        stop = start + CHUNK
        for j, plane in enumerate(planes):
            out[start:stop, j] = plane[start:stop]
        if rotate:
            words = words_all[start:stop]
            low = words << np.array(nbits - rotate, words.dtype)
            words >>= np.array(rotate, words.dtype)
            words |= low
    return out.reshape(-1)


def stream_counts(params: dict, nbytes: int) -> dict[str, int]:
    """Each stream's symbol count: one byte a value in every coded plane, the raw planes' bytes
    interleaved in ``raw``. The validator checks them and a 4.0 header leaves them implied."""
    itemsize, raw_planes = params["itemsize"], params["raw_planes"]
    per_plane = nbytes // itemsize if itemsize else 0
    counts = {f"plane{j}": per_plane for j in range(itemsize) if j not in raw_planes}
    if raw_planes:
        counts["raw"] = per_plane * len(raw_planes)
    return counts


def validate(info: TensorInfo, streams: tuple[StreamInfo, ...]) -> None:
    expect_params(info, {"itemsize": int, "rotate": int, "raw_planes": list})
    itemsize, rotate, raw_planes = info.params["itemsize"], info.params["rotate"], info.params["raw_planes"]
    if itemsize not in UINT_OF_WIDTH or not 0 <= rotate < 8 * itemsize or (itemsize == 1 and rotate):
        raise ContainerError(f"tensor {info.name!r} has invalid planes params {info.params!r}")
    if (not all(type(j) is int for j in raw_planes) or sorted(set(raw_planes)) != raw_planes
            or any(not 0 <= j < itemsize for j in raw_planes) or (itemsize == 1 and raw_planes)):
        raise ContainerError(f"tensor {info.name!r} has invalid raw_planes {raw_planes!r}")
    coded = [j for j in range(itemsize) if j not in raw_planes]
    expect_streams(info, [f"plane{j}" for j in coded] + (["raw"] if raw_planes else []))
    want = expected_nbytes(info.dtype, math.prod(info.shape))
    if want is not None and want != info.nbytes:
        raise ContainerError(
            f"tensor {info.name!r} nbytes ({info.nbytes}) does not match its shape and dtype ({want})"
        )
    if info.nbytes % itemsize:
        raise ContainerError(f"tensor {info.name!r} nbytes ({info.nbytes}) is not a multiple of {itemsize}")
    for role, want_count in stream_counts(info.params, info.nbytes).items():
        count = streams[info.streams[role]].count
        if count != want_count:
            raise ContainerError(f"tensor {info.name!r} {role} holds {count} symbols, expected {want_count}")


def decode(info: TensorInfo, container: Container) -> np.ndarray:
    itemsize, raw_planes = info.params["itemsize"], info.params["raw_planes"]
    planes: dict[int, np.ndarray] = {}
    if raw_planes:
        for j, part in zip(raw_planes, np.split(container.decode_stream(info.streams["raw"]), len(raw_planes))):
            planes[j] = part
    for j in range(itemsize):
        if j not in planes:
            planes[j] = container.decode_stream(info.streams[f"plane{j}"])
    return join_planes([planes[j] for j in range(itemsize)], itemsize, info.params["rotate"])


register_encoding(ENCODING, validate, decode)
