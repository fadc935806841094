"""Tensor encodings: how a stored tensor's streams rebuild its raw bytes.

Each encoding is a module-level pair of functions registered here by name, by the encoding's own
module in this package (:mod:`onnxdc.format.planes`, :mod:`onnxdc.format.shared`, imported by the
package so that any use of the format has them); its encoder lives in :mod:`onnxdc.pipeline`: ``validate(info,
streams)`` checks a header entry before anything is decoded (so declared sizes are consistent with
the streams before allocation), and ``decode(info, container)`` returns the tensor's raw_data bytes,
as ``bytes`` or as a C-contiguous numpy array whose memory holds them (no copy into ``bytes`` when a
file is all they are for). The container reader calls :func:`validate_tensor`; the pipeline calls
:func:`decode_tensor`.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

from onnxdc.errors import ContainerError

if TYPE_CHECKING:
    from onnxdc.format.container import Container
    from onnxdc.format.header import StreamInfo, TensorInfo

Validator = Callable[["TensorInfo", "tuple[StreamInfo, ...]"], None]
Decoder = Callable[["TensorInfo", "Container"], "bytes | np.ndarray"]
#: A decoded tensor's raw bytes: ``bytes``, or a memoryview of an array's memory (for files).
RawBuffer = bytes | memoryview

_ENCODINGS: dict[str, tuple[Validator, Decoder]] = {}


def register_encoding(name: str, validate: Validator, decode: Decoder) -> None:
    """Register an encoding's validator and decoder under ``name``."""
    _ENCODINGS[name] = (validate, decode)


def _lookup(name: str, tensor: str) -> tuple[Validator, Decoder]:
    try:
        return _ENCODINGS[name]
    except KeyError:
        raise ContainerError(
            f"tensor {tensor!r} has unknown encoding {name!r}; known: {', '.join(sorted(_ENCODINGS))}"
        ) from None


def validate_tensor(info: TensorInfo, streams: tuple[StreamInfo, ...]) -> None:
    """Check a tensor entry against its encoding's rules (raises ContainerError)."""
    _lookup(info.encoding, info.name)[0](info, streams)


def decode_tensor(info: TensorInfo, container: Container) -> RawBuffer:
    """Rebuild a tensor's raw bytes from its streams and check them against the recorded CRC.

    The result is ``bytes`` or a flat byte memoryview: files take either as is; a protobuf
    field needs ``bytes(...)`` (see :func:`as_bytes`).

    Raises:
        ContainerError: a stream does not decode, or the result has the wrong size or checksum.
    """
    data = _lookup(info.encoding, info.name)[1](info, container)
    if isinstance(data, np.ndarray):
        data = memoryview(np.ascontiguousarray(data)).cast("B")
    if len(data) != info.nbytes:
        raise ContainerError(f"tensor {info.name!r} decoded to {len(data)} bytes, header says {info.nbytes}")
    if zlib.crc32(data) != info.crc32:
        raise ContainerError(f"tensor {info.name!r} checksum mismatch after decoding", code="tensor-crc")
    return data


def as_bytes(data: RawBuffer) -> bytes:
    """``data`` as ``bytes`` (a copy only if it is a view), for a protobuf field."""
    return data if isinstance(data, bytes) else bytes(data)


#: Stream symbols decoded ahead together at most (bounds what prefetching holds in memory).
BATCH_SYMBOLS = 1 << 20
#: Streams decoded together at most: each Huffman stream brings a 1.6 MB lookup table.
BATCH_STREAMS = 64


def batched(container: Container, infos: Sequence[TensorInfo], *, max_symbols: int = BATCH_SYMBOLS,
            max_streams: int = BATCH_STREAMS) -> Iterator[int]:
    """The indices of ``infos``, in order; before each run of consecutive tensors whose streams
    hold up to ``max_symbols`` symbols (and number ``max_streams`` at most), those streams are
    decoded together (:meth:`Container.prefetch`), so a model of many small tensors is not decoded
    stream by stream.
    """
    def symbols(info: TensorInfo) -> int:
        return sum(container.header.streams[s].count for s in info.streams.values())

    i = 0
    while i < len(infos):
        j, total, streams = i + 1, symbols(infos[i]), len(infos[i].streams)
        while j < len(infos) and total + symbols(infos[j]) <= max_symbols \
                and streams + len(infos[j].streams) <= max_streams:
            total += symbols(infos[j])
            streams += len(infos[j].streams)
            j += 1
        container.prefetch([s for info in infos[i:j] for s in info.streams.values()])
        yield from range(i, j)
        i = j


def expect_params(info: TensorInfo, allowed: dict[str, type | tuple[type, ...]]) -> None:
    """Check that a tensor's params hold exactly ``allowed`` keys with values of the given types."""
    keys = set(info.params)
    if keys != set(allowed):
        raise ContainerError(
            f"tensor {info.name!r} ({info.encoding}) params must be {sorted(allowed)}, found {sorted(keys)}"
        )
    for k, typ in allowed.items():
        v = info.params[k]
        if isinstance(v, bool) and bool not in (typ if isinstance(typ, tuple) else (typ,)):
            raise ContainerError(f"tensor {info.name!r} param {k!r} has the wrong type")
        if not isinstance(v, typ):
            raise ContainerError(f"tensor {info.name!r} param {k!r} has the wrong type ({type(v).__name__})")


def expect_streams(info: TensorInfo, roles: list[str]) -> None:
    """Check that a tensor refers to exactly the stream roles ``roles``."""
    if sorted(info.streams) != sorted(roles):
        raise ContainerError(
            f"tensor {info.name!r} ({info.encoding}) streams must be {sorted(roles)}, found {sorted(info.streams)}"
        )
