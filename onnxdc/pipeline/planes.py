"""Lossless tensor storage: byte-plane split plus entropy coding (encoding ``"planes"``).

Float weights look random as a whole, but their bytes do not: the exponent byte of trained weights
takes a handful of values while the low mantissa bytes are close to uniform. Splitting a tensor's
raw bytes into planes (byte *j* of every element) and coding each plane on its own lets a symbol
coder reach the exponent's low entropy and leaves the mantissa stored raw — the approach of
lossless weight compressors such as ZipNN. For float types the element is first rotated left by one
bit, so the sign moves to the lowest (noisy) byte and the top plane holds the whole exponent.

Integer tensors (int8 weights of quantized models, int64 shapes) go through the same path: one
plane per byte, each coded with whichever candidate coder is smallest.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from onnx import TensorProto

from onnxdc.format.registry import expect_params, expect_streams, register_encoding
from onnxdc.errors import ContainerError
from onnxdc.onnx_io.tensors import expected_nbytes, plane_itemsize
from onnxdc.pipeline.streams import CodedStream, encode_best, order0_entropy_bits

if TYPE_CHECKING:
    from onnxdc.format.container import Container, StreamInfo, TensorInfo

ENCODING = "planes"
_UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}
_FLOATS = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE,
           TensorProto.COMPLEX64, TensorProto.COMPLEX128}
#: Above this order-0 entropy (bits/byte) a plane is stored raw without trying other coders.
_NOISE_BITS = 7.98


RAW = {"id": "raw", "bits": 8}


def plane_candidates(level: int) -> list[dict]:
    """Candidate coders for a byte plane (raw first: it wins ties; then the fast order-0 coder)."""
    return [RAW, {"id": "zstd-literals"}, {"id": "huffman"}, {"id": "zstd", "level": level}]


def encode_planes(raw: bytes, *, data_type: int, level: int = 19) -> tuple[dict, dict[str, CodedStream]]:
    """Split ``raw`` into byte planes and code each with the best candidate.

    A plane that no coder shrinks (the noisy low mantissa bytes) is stored as is; all such planes
    share one stream, ``raw``, so a float32 tensor costs two streams in the header, not four.
    The others get a stream each, ``plane{j}`` (``plane0`` is the lowest byte).
    """
    itemsize = plane_itemsize(data_type)
    if len(raw) % itemsize:
        itemsize = 1
    rotate = 1 if data_type in _FLOATS and itemsize > 1 else 0
    planes = split_planes(raw, itemsize, rotate)
    streams: dict[str, CodedStream] = {}
    raw_planes: list[int] = []
    for j, plane in enumerate(planes):
        noise = _is_noise(plane)
        if noise and itemsize > 1:  # joins the raw stream: nothing to code
            raw_planes.append(j)
            continue
        coded = encode_best(plane, plane_candidates(level)[:1] if noise else plane_candidates(level))
        if coded.coder == RAW and itemsize > 1:
            raw_planes.append(j)
        else:
            streams[f"plane{j}"] = coded
    if raw_planes:
        if raw_planes == list(range(raw_planes[0], raw_planes[-1] + 1)):  # adjacent rows: a view
            joined = planes[raw_planes[0]:raw_planes[-1] + 1].reshape(-1)
        else:
            joined = np.concatenate([planes[j] for j in raw_planes])
        streams["raw"] = CodedStream(memoryview(joined), int(joined.size), RAW)
    return {"itemsize": itemsize, "rotate": rotate, "raw_planes": raw_planes}, streams


#: The noise test looks at this many evenly spaced runs of a plane at most (a 64 Ki-symbol sample
#: estimates a byte's entropy to within about 0.003 bits, far inside the test's margin).
_NOISE_SAMPLE = 1 << 16
_NOISE_RUN = 256


def _is_noise(plane: np.ndarray) -> bool:
    """Whether a sample of the plane is too close to uniform bytes for any coder to shrink it."""
    sample = _sample(plane)
    return order0_entropy_bits(sample) > _NOISE_BITS * sample.size


def _sample(plane: np.ndarray) -> np.ndarray:
    """Runs of :data:`_NOISE_RUN` bytes spread evenly over ``plane`` (all of it, if small)."""
    runs = _NOISE_SAMPLE // _NOISE_RUN
    if plane.size <= 2 * _NOISE_SAMPLE:
        return plane
    starts = np.linspace(0, plane.size - _NOISE_RUN, runs).astype(np.int64)
    return plane[starts[:, None] + np.arange(_NOISE_RUN)].reshape(-1)


#: Elements rotated and split per step: small temporaries stay in cache, and the only large
#: allocations are the planes themselves (fresh memory costs page faults on every touch).
_CHUNK = 1 << 18


def split_planes(raw: bytes, itemsize: int, rotate: int) -> np.ndarray:
    """Return the byte planes of ``raw`` (after rotating each element left by ``rotate`` bits) as
    the rows of one ``itemsize × n`` array, so adjacent planes are one contiguous buffer."""
    if itemsize == 1:
        return np.frombuffer(raw, dtype=np.uint8).copy().reshape(1, -1)
    words = np.frombuffer(raw, dtype=np.dtype(_UINT[itemsize]).newbyteorder("<"))
    planes = np.empty((itemsize, words.size), dtype=np.uint8)
    nbits = itemsize * 8
    for start in range(0, words.size, _CHUNK):
        part = words[start:start + _CHUNK]
        if rotate:
            part = (part << np.array(rotate, part.dtype)) | (part >> np.array(nbits - rotate, part.dtype))
        as_bytes = part.astype(part.dtype.newbyteorder("<"), copy=False).view(np.uint8).reshape(-1, itemsize)
        for j in range(itemsize):
            planes[j][start:start + _CHUNK] = as_bytes[:, j]
    return planes


def join_planes(planes: list[np.ndarray], itemsize: int, rotate: int) -> np.ndarray:
    """Inverse of :func:`split_planes`: the raw bytes as a flat ``uint8`` array (planes interleaved
    into one buffer, rotated in place)."""
    if itemsize == 1:
        return planes[0]
    out = np.empty((planes[0].size, itemsize), dtype=np.uint8)
    words_all = out.view(np.dtype(_UINT[itemsize]).newbyteorder("<")).reshape(-1)
    nbits = itemsize * 8
    for start in range(0, out.shape[0], _CHUNK):
        stop = start + _CHUNK
        for j, plane in enumerate(planes):
            out[start:stop, j] = plane[start:stop]
        if rotate:
            words = words_all[start:stop]
            low = words << np.array(nbits - rotate, words.dtype)
            words >>= np.array(rotate, words.dtype)
            words |= low
    return out.reshape(-1)


def _validate(info: TensorInfo, streams: tuple[StreamInfo, ...]) -> None:
    expect_params(info, {"itemsize": int, "rotate": int, "raw_planes": list})
    itemsize, rotate, raw_planes = info.params["itemsize"], info.params["rotate"], info.params["raw_planes"]
    if itemsize not in _UINT or not 0 <= rotate < 8 * itemsize or (itemsize == 1 and rotate):
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
    per_plane = info.nbytes // itemsize
    expected = {f"plane{j}": per_plane for j in coded}
    if raw_planes:
        expected["raw"] = per_plane * len(raw_planes)
    for role, want_count in expected.items():
        count = streams[info.streams[role]].count
        if count != want_count:
            raise ContainerError(f"tensor {info.name!r} {role} holds {count} symbols, expected {want_count}")


def _decode(info: TensorInfo, container: Container) -> np.ndarray:
    itemsize, raw_planes = info.params["itemsize"], info.params["raw_planes"]
    planes: dict[int, np.ndarray] = {}
    if raw_planes:
        for j, part in zip(raw_planes, np.split(container.decode_stream(info.streams["raw"]), len(raw_planes))):
            planes[j] = part
    for j in range(itemsize):
        if j not in planes:
            planes[j] = container.decode_stream(info.streams[f"plane{j}"])
    return join_planes([planes[j] for j in range(itemsize)], itemsize, info.params["rotate"])


register_encoding(ENCODING, _validate, _decode)
