"""Lossless tensor storage, the encoder: byte-plane split plus entropy coding (encoding ``"planes"``,
validated and decoded by :mod:`onnxdc.format.planes`).

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

import numpy as np

from onnxdc.dtypes import UINT_OF_WIDTH, is_float, plane_itemsize
from onnxdc.format.planes import CHUNK, ENCODING, join_planes
from onnxdc.pipeline.streams import CodedStream, candidate_coders, encode_best, order0_entropy_bits

#: Above this order-0 entropy (bits/byte) a plane is stored raw without trying other coders.
_NOISE_BITS = 7.98


RAW = {"id": "raw", "bits": 8}


def plane_candidates(level: int) -> list[dict]:
    """Candidate coders for a byte plane (raw first: it wins ties; then the fast order-0 coder).

    No rANS: planes are most of a large lossless model's bytes, and its numpy decoder is some 50
    times slower than zstd-literals' compiled one for a fraction of a percent.
    """
    return candidate_coders(raw_bits=8, level=level, chain=False, rans=False)


def encode_planes(raw: bytes, *, data_type: int, level: int = 19) -> tuple[dict, dict[str, CodedStream]]:
    """Split ``raw`` into byte planes and code each with the best candidate.

    A plane that no coder shrinks (the noisy low mantissa bytes) is stored as is; all such planes
    share one stream, ``raw``, so a float32 tensor costs two streams in the header, not four.
    The others get a stream each, ``plane{j}`` (``plane0`` is the lowest byte).
    """
    itemsize = plane_itemsize(data_type)
    if len(raw) % itemsize:
        itemsize = 1
    rotate = 1 if is_float(data_type) and itemsize > 1 else 0
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


def split_planes(raw: bytes, itemsize: int, rotate: int) -> np.ndarray:
    """Return the byte planes of ``raw`` (after rotating each element left by ``rotate`` bits) as
    the rows of one ``itemsize × n`` array, so adjacent planes are one contiguous buffer."""
    if itemsize == 1:
        return np.frombuffer(raw, dtype=np.uint8).copy().reshape(1, -1)
    words = np.frombuffer(raw, dtype=np.dtype(UINT_OF_WIDTH[itemsize]).newbyteorder("<"))
    planes = np.empty((itemsize, words.size), dtype=np.uint8)
    nbits = itemsize * 8
    for start in range(0, words.size, CHUNK):
        part = words[start:start + CHUNK]
        if rotate:
            part = (part << np.array(rotate, part.dtype)) | (part >> np.array(nbits - rotate, part.dtype))
        as_bytes = part.astype(part.dtype.newbyteorder("<"), copy=False).view(np.uint8).reshape(-1, itemsize)
        for j in range(itemsize):
            planes[j][start:start + CHUNK] = as_bytes[:, j]
    return planes


__all__ = ["ENCODING", "encode_planes", "join_planes", "plane_candidates", "split_planes"]
