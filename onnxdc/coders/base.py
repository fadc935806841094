"""The :class:`Coder` interface shared by every entropy / bit-packing coder.

A coder turns a 1-D stream of byte symbols (``numpy.uint8``) into bytes and back. Byte symbols are
enough for everything onnxdc stores: cluster indices (at most 8 bits), position gaps (coded with a
filler symbol when they overflow), and the byte planes of lossless tensors. The number of symbols is
not part of a coder's output: the container records it and passes it back as ``count``, so a
decoder knows how much to produce before it allocates anything.

Configs are JSON-native dicts that always hold ``"id"``; ``from_config(get_config())`` rebuilds an
equal coder, and the container stores that config next to every stream so decoding needs no flags.
"""

from __future__ import annotations

import operator
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from onnxdc.errors import ConfigError, DecodeError, EncodeError

#: Longest varint :func:`read_varint` accepts: 9 bytes hold 63 bits, enough for any size.
_VARINT_MAX_BYTES = 9


class Coder(ABC):
    """Abstract base of all coders.

    Subclasses set :attr:`coder_id`, implement :meth:`encode`, :meth:`decode` and
    :meth:`max_encoded_size`, and, when they
    take parameters, override :meth:`get_config` / accept the same keyword arguments in
    ``__init__``.
    """

    coder_id: ClassVar[str]
    #: The integer parameter a command-line spec ``id:N`` sets (``zstd:19``), or None.
    main_param: ClassVar[str | None] = None
    #: Whether :meth:`batch_part` offers streams of this coder to a batched decode.
    can_batch: ClassVar[bool] = False
    #: Whether decoding runs a numpy loop (Huffman, rANS) rather than compiled code (raw, zstd):
    #: slower, so a stream chooses it only when it saves enough bytes (``pipeline/streams.py``).
    numpy_decode: ClassVar[bool] = False
    #: The longest stream (symbols) a choice among several candidates tries this coder on (None:
    #: any); named alone, a coder codes any stream.
    auto_max_symbols: ClassVar[int | None] = None

    @abstractmethod
    def encode(self, symbols: np.ndarray) -> bytes:
        """Encode a 1-D ``uint8`` array of symbols.

        Raises:
            CoderError: if the symbols cannot be represented by this coder's settings.
        """

    @abstractmethod
    def decode(self, buf: bytes, *, count: int) -> np.ndarray:
        """Decode exactly ``count`` symbols from ``buf`` into a 1-D ``uint8`` array.

        The array may be a read-only view of ``buf`` (raw 8-bit symbols are the bytes themselves);
        callers do not write into it.

        Must never allocate more than ``count`` symbols' worth of output (plus a constant), never
        loop without progress, and raise :class:`~onnxdc.errors.CoderError` when ``buf`` is
        malformed, ends early or holds trailing bytes.
        """

    @abstractmethod
    def max_encoded_size(self, count: int) -> int:
        """Return an upper bound on ``len(encode(s))`` for every stream ``s`` of ``count`` symbols.

        A chain stores the lengths of its intermediate streams; it checks each against this bound
        before the next stage decodes, so a forged length can never make a decoder allocate more
        than a constant times the symbols the container asked for.
        """

    def batch_part(self, buf: bytes, *, count: int) -> tuple[type[Coder], Coder, bytes] | None:
        """What of decoding ``buf`` can run batched with other streams: ``(batch class, coder,
        bytes)`` such that ``batch_class.decode_batch`` of ``(coder, bytes, count)`` gives this
        stream's symbols, or None (the default: this coder decodes one stream at a time)."""
        return None

    @classmethod
    def decode_batch(cls, items: Sequence[tuple[Coder, bytes, int]]) -> list[np.ndarray]:
        """Decode several streams (coder, bytes, count) of this class together; the results and
        errors are those of :meth:`decode` on each (a batching coder overrides this)."""
        return [coder.decode(buf, count=count) for coder, buf, count in items]

    def get_config(self) -> dict[str, Any]:
        """Return a JSON-native dict from which :meth:`from_config` rebuilds this coder."""
        return {"id": self.coder_id}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Coder:
        """Build a coder from a config dict (the ``"id"`` key is dropped)."""
        params = {k: v for k, v in config.items() if k != "id"}
        return cls(**params)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Coder) and self.get_config() == other.get_config()

    def __hash__(self) -> int:
        return hash(repr(sorted(self.get_config().items())))

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k != "id")
        return f"{type(self).__name__}({params})"


def check_int_param(coder_id: str, name: str, value: object, low: int, high: int) -> int:
    """Return ``value`` if it is an ``int`` in ``low..high`` (bools are refused), else raise.

    Raises:
        ConfigError: ``value`` is not an integer in range.
    """
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{coder_id} {name} must be an integer in {low}..{high}, got {value!r}")
    return value


def check_symbols(symbols: np.ndarray) -> np.ndarray:
    """Return ``symbols`` as a contiguous 1-D ``uint8`` array, or raise.

    Coders work on byte symbols only; a wider dtype would be silently truncated by the bit
    tricks they use, so it is refused instead.

    Raises:
        CoderError: ``symbols`` is not a 1-D ``uint8`` numpy array.
    """
    if not isinstance(symbols, np.ndarray):
        raise EncodeError(f"symbols must be a 1-D uint8 array, got {type(symbols).__name__}")
    if symbols.dtype != np.uint8 or symbols.ndim != 1:
        raise EncodeError(
            f"symbols must be a 1-D uint8 array, got a {symbols.ndim}-D {symbols.dtype} array"
        )
    return np.ascontiguousarray(symbols)


def check_count(count: int) -> int:
    """Return ``count`` as a non-negative ``int``, or raise.

    Raises:
        CoderError: ``count`` is not a non-negative integer.
    """
    if isinstance(count, bool):
        raise DecodeError(f"symbol count must be an integer, got {count!r}")
    try:
        value = operator.index(count)
    except TypeError:
        raise DecodeError(f"symbol count must be an integer, got {count!r}") from None
    if value < 0:
        raise DecodeError(f"symbol count must be >= 0, got {value}")
    return value


def write_varint(value: int) -> bytes:
    """Encode a non-negative integer as an unsigned LEB128 varint (7 bits a byte, low first)."""
    if value < 0:
        raise ValueError(f"varint must be >= 0, got {value}")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Decode the varint at ``buf[pos:]``; return ``(value, position after it)``.

    Only the minimal encoding :func:`write_varint` produces is accepted, so every value has one
    byte form and a stream cannot hide bytes in padding.

    Raises:
        CoderError: the varint is truncated, longer than 9 bytes, or not minimal.
    """
    value = 0
    for i in range(_VARINT_MAX_BYTES):
        if pos + i >= len(buf):
            raise DecodeError(f"truncated varint at offset {pos}")
        byte = buf[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if byte < 0x80:
            if byte == 0 and i > 0:
                raise DecodeError(f"non-minimal varint at offset {pos}")
            return value, pos + i + 1
    raise DecodeError(f"varint at offset {pos} is longer than {_VARINT_MAX_BYTES} bytes")


_HISTOGRAM_CHUNK = 1 << 20


def histogram(symbols: np.ndarray) -> np.ndarray:
    """How often each byte value occurs in a uint8 stream (256 counts).

    ``bincount`` widens every element to an index first; counting byte pairs (``uint16``) halves
    the elements, and the pair counts fold back into byte counts by row and column sums.
    """
    symbols = np.ascontiguousarray(symbols)
    even = symbols.size & ~1
    pairs = np.zeros(1 << 16, dtype=np.int64)
    as_pairs = symbols[:even].view(np.uint16)
    for start in range(0, as_pairs.size, _HISTOGRAM_CHUNK):  # bincount's index temporaries stay small
        pairs += np.bincount(as_pairs[start:start + _HISTOGRAM_CHUNK], minlength=1 << 16)
    pairs = pairs.reshape(256, 256)
    counts = pairs.sum(axis=0) + pairs.sum(axis=1)
    if even < symbols.size:
        counts[symbols[-1]] += 1
    return counts
