"""A chain of coders: the first codes the symbols, each next one codes the previous one's bytes.

``huffman+zstd`` lets zstd find the repeats Huffman cannot see; ``raw:5+zstd`` packs indices
before compressing them. A chain is itself a coder, so chains may nest.

Stream layout: one varint per intermediate stream (the output length of every stage but the
last, first stage first), then the last stage's output. Decoding runs the stages backwards, and
each stage needs the symbol count of its output, which is the recorded length of the stream
before it (``count`` for the first stage).

A chain has at most :data:`MAX_CHAIN_STAGES` stages, counting those of nested chains (onnxdc
writes two; a longer chain buys nothing a reader should pay for). The recorded lengths are
untrusted. Before any stage decodes, each is checked against the largest output its stage could
produce from the stream before it (:meth:`Coder.max_encoded_size`) and against
:func:`intermediate_limit` of the chain's ``count`` and stream size: no coder onnxdc ships writes
more than about one byte per input byte (Huffman codes average at most 8 bits a symbol, zstd
grows by at most 1/256), so an intermediate stream of more than twice the symbols plus the stream
size is a forgery. A stage's decoder allocates only about as much as its ``count``, so the whole
chain allocates at most :data:`MAX_CHAIN_STAGES` times that limit: a small multiple of the
declared output plus the stream size, whatever the stages' own bounds multiply to.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from onnxdc.coders.base import Coder, check_count, check_symbols, read_varint, write_varint
from onnxdc.coders.registry import get_coder, register_coder
from onnxdc.errors import ConfigError, DecodeError

#: Most stages a chain may have, nested chains' stages included (onnxdc writes two).
MAX_CHAIN_STAGES = 4
#: Slack of :func:`intermediate_limit` for the stages' fixed overheads (headers, block sizes).
_INTERMEDIATE_SLACK = 4096


def intermediate_limit(count: int, stream_size: int) -> int:
    """The longest intermediate stream a chain decoding ``count`` symbols from ``stream_size``
    bytes may record: twice the symbols plus the stream plus a constant (see the module docstring).
    """
    return 2 * count + stream_size + _INTERMEDIATE_SLACK


@register_coder
class ChainCoder(Coder):
    """Apply ``coders`` in order when encoding, in reverse when decoding.

    Args:
        coders: Two or more coder configs (dicts with an ``"id"``), first stage first.
    """

    coder_id = "chain"

    def __init__(self, coders: list[dict[str, Any]]) -> None:
        if not isinstance(coders, list) or len(coders) < 2:
            raise ConfigError(f"chain coders must be a list of at least 2 configs, got {coders!r}")
        if len(coders) > MAX_CHAIN_STAGES:  # before building stages: a forged config may be huge
            raise ConfigError(f"chain has {len(coders)} stages, at most {MAX_CHAIN_STAGES} are allowed")
        self.stages = [get_coder(config) for config in coders]
        if self.depth > MAX_CHAIN_STAGES:
            raise ConfigError(
                f"chain has {self.depth} stages counting nested chains, at most {MAX_CHAIN_STAGES} are allowed"
            )

    @property
    def depth(self) -> int:
        """Stages of the chain, those of nested chains counted one by one."""
        return sum(stage.depth if isinstance(stage, ChainCoder) else 1 for stage in self.stages)

    def get_config(self) -> dict[str, Any]:
        return {"id": self.coder_id, "coders": [stage.get_config() for stage in self.stages]}

    def max_encoded_size(self, count: int) -> int:
        size = count
        header = 0
        for stage in self.stages[:-1]:
            size = stage.max_encoded_size(size)
            header += len(write_varint(size))
        return header + self.stages[-1].max_encoded_size(size)

    def encode(self, symbols: np.ndarray) -> bytes:
        return self.encode_from(self.stages[0].encode(check_symbols(symbols)))

    def encode_from(self, first: bytes) -> bytes:
        """Finish the chain from the first stage's output (lets a caller reuse a computed stage)."""
        header = bytearray(write_varint(len(first)))
        data = np.frombuffer(first, dtype=np.uint8)
        for stage in self.stages[1:-1]:
            out = stage.encode(data)
            header += write_varint(len(out))
            data = np.frombuffer(out, dtype=np.uint8)
        return bytes(header) + self.stages[-1].encode(data)

    def decode(self, buf: bytes, *, count: int) -> np.ndarray:
        """Decode the last stage first, each with the recorded length of its output.

        Raises:
            CoderError: a recorded length is truncated or larger than its stage can produce, or
                any stage fails to decode.
        """
        first = self.decode_to_first(buf, count=count)
        return self.stages[0].decode(first, count=check_count(count))

    def batch_part(self, buf: bytes, *, count: int) -> tuple[type[Coder], Coder, bytes] | None:
        """The first stage's batch part of the bytes the other stages decode to (they run now)."""
        if not self.can_batch:
            return None  # nothing to batch: the stages decode when the stream is read
        return self.stages[0].batch_part(self.decode_to_first(buf, count=count), count=count)

    @property
    def can_batch(self) -> bool:  # type: ignore[override]
        return self.stages[0].can_batch

    def decode_to_first(self, buf: bytes, *, count: int) -> bytes:
        """Decode every stage but the first: the bytes the first stage decodes into ``count``
        symbols (lets a caller decode many first stages together)."""
        counts = [check_count(count)]
        limit = intermediate_limit(counts[0], len(buf))
        pos = 0
        for stage in self.stages[:-1]:
            size, pos = read_varint(buf, pos)
            bound = min(stage.max_encoded_size(counts[-1]), limit)
            if size > bound:
                raise DecodeError(
                    f"chain stage {stage.coder_id!r} output of {size} bytes exceeds its bound "
                    f"{bound} for {counts[-1]} symbols"
                )
            counts.append(size)
        data = self.stages[-1].decode(buf[pos:], count=counts.pop())
        for stage in reversed(self.stages[1:-1]):
            data = stage.decode(data.tobytes(), count=counts.pop())
        return data.tobytes()
