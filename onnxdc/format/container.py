"""The ``.onnxdc`` container, format versions 1 to 4 (specified in ``docs/format.md``).

Layout::

    magic (8) | major u16 | minor u16 | header_length u64 | header_crc32 u32 | header | payload
    magic (8) | major u16 | minor u16 | header_length varint | header_crc32 u32 | header | payload  (4.x)

All integers are little-endian. The header is UTF-8 JSON in a zstd frame (:mod:`onnxdc.format.header`
parses it; from 2.0 compact JSON, :mod:`onnxdc.format.compact`, in a frame coded with a built-in
dictionary); the payload is the concatenation of the streams the header lists, back to back in
header order (so no offsets are stored), covering the rest of the file exactly. The header carries
a CRC-32, and so does every stream (1.x, 2.x) or the payload as a whole (3.x, 4.x). A 4.x header
is binary (:mod:`onnxdc.format.binary`) and leaves each tensor's name, dtype and shape to the
skeleton, which the reader decodes when it opens the container.

The reader validates in a fixed order and raises one :class:`~onnxdc.errors.ContainerError` per
failure, naming what is wrong and where, before it allocates anything a declared size asks for.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np

from onnxdc.coders import Coder, get_coder
from onnxdc.coders.zstd import ZstdCoder
from onnxdc.errors import ConfigError, ContainerError, OnnxdcError
from onnxdc.format import binary
from onnxdc.format.header import (
    Header,
    StreamInfo,
    TensorInfo,
    _frame_size,
    _parse_stream,
    header_coder,
    parse_header,
    parse_header4,
)

__all__ = ["MAGIC", "Container", "ContainerWriter", "Header", "StreamInfo", "TensorInfo", "check_output_size",
           "open_container", "output_headroom", "output_size", "read_container", "skeleton_ceiling"]

MAGIC = b"\x89ONNXDC\n"
#: The version onnxdc writes: 4.0 (the binary header of :mod:`onnxdc.format.binary`, tensor facts
#: from the skeleton).
MAJOR_VERSION = 4
MINOR_VERSION = 0
#: The major versions this reader reads (1.x: the JSON header; 2.x and 3.x: the compact headers;
#: 4.x: the binary header).
READ_MAJOR_VERSIONS = (1, 2, 3, 4)
#: Largest skeleton a 4.0 container's open decodes (protobuf's largest message).
MAX_SKELETON_BYTES = (1 << 31) - 1
#: A 4.0 skeleton the open decodes may be this large whatever its stored bytes, and then
#: :data:`SKELETON_RATIO` times them. A skeleton holds no weights, so zstd stores it 3 to 30 times
#: smaller: 2.9 (lenet300) to 7.4 (yolo), 18.8 for a 22M-parameter transformer of 1,013 nodes,
#: 29.9 for one of 32,261 nodes, 2.2 MB (``tools/skeleton_sizes.py``). A hostile one of empty
#: messages stores thousands of times smaller and costs some 90 bytes of memory per byte parsed
#: (a million empty initializers in 2 MB: 180 MB), so the free part is small.
SKELETON_FREE_BYTES = 1 << 20
SKELETON_RATIO = 100
_PREFIX = struct.Struct("<8sHHQI")
PREFIX_SIZE = _PREFIX.size  # 24 (before 4.0; a 4.0 prefix is 17 to 20 bytes, a file at least 24)
_VERSIONS = struct.Struct("<8sHH")
MAX_HEADER_BYTES = 256 * 1024 * 1024  # cap on the stored and the decoded header
#: Default cap on the bytes one tensor, or one stream's symbols, may declare (16 GiB).
DEFAULT_MAX_TENSOR_BYTES = 1 << 34
#: Default ceiling on the bytes a container decodes to, tensors and skeleton (1 TiB: above the
#: largest ONNX models, 70B parameters in float32 are 280 GB).
DEFAULT_MAX_OUTPUT_BYTES = 1 << 40
#: Default ceiling on decoded bytes per container byte, over the whole file. Real models stay under
#: 100 (the sample models' best is 97); pruning 99.9% of a tensor gives about 2,000; only tensors
#: of one repeated value go beyond (64 MiB of zeros: 222,000), and those are allowed up to
#: :data:`RATIO_FREE_BYTES`.
DEFAULT_MAX_RATIO = 10_000.0
#: Output any container may decode to whatever its ratio (so small constant models always decode).
RATIO_FREE_BYTES = 256 << 20

@dataclass
class ContainerWriter:
    """Collects coded streams, then lays out the container bytes.

    Streams are added in the order they will sit in the payload; :meth:`add_stream` returns the
    index a tensor entry refers to.
    """

    streams: list[StreamInfo] = field(default_factory=list)
    chunks: list[bytes | memoryview] = field(default_factory=list)
    spool: BinaryIO | None = None  # when set, stream bytes beyond spool_above go to this file
    #: Stream bytes held in memory before they move to the spool: a container that fits is not
    #: written to disk twice (the spool, then the output), one that does not stays bounded.
    spool_above: int = 0
    header_size: int = 0  # prefix + stored header, known once the container is laid out
    major: int = MAJOR_VERSION  # the format version written (1 only to write 1.0 test containers)
    _size: int = 0
    _spooled: bool = False
    _crc: int = 0  # CRC-32 of the payload so far

    def add_stream(self, data: bytes | memoryview, *, count: int, coder: dict[str, Any]) -> int:
        if self.major < 3:  # a CRC-32 per stream; from 3.0 one for the payload
            self.streams.append(StreamInfo(self._size, len(data), zlib.crc32(data), count, coder))
        else:
            self.streams.append(StreamInfo(self._size, len(data), None, count, coder))
            self._crc = zlib.crc32(data, self._crc)
        self.chunks.append(data)
        self._size += len(data)
        if self.spool is not None and (self._spooled or self._size > self.spool_above):
            for piece in self.chunks:
                self.spool.write(piece)
            self.chunks.clear()
            self._spooled = True
        return len(self.streams) - 1

    def iter_bytes(self, header: Header, *, chunk: int = 1 << 24) -> Iterator[bytes | memoryview]:
        """The container as a sequence of byte chunks (streams read back from the spool, if any)."""
        hbytes = header.to_bytes(major=self.major)
        prefix = (_PREFIX.pack(MAGIC, self.major, MINOR_VERSION, len(hbytes), zlib.crc32(hbytes)) if self.major < 4
                  else prefix4(self.major, MINOR_VERSION, hbytes))
        self.header_size = len(prefix) + len(hbytes)
        yield prefix
        yield hbytes
        if not self._spooled:
            yield from self.chunks
            return
        self.spool.flush()
        self.spool.seek(0)
        while block := self.spool.read(chunk):
            yield block

    def header(self, *, producer: str, metadata: dict[str, Any], skeleton: int, skeleton_crc32: int,
               tensors: list[TensorInfo], skeleton_names: bool = False) -> Header:
        """The header of the streams added so far; from 3.0 with the payload's CRC-32 in place of
        the streams' (and ``skeleton_names``, which only 3.0 can say)."""
        if self.major < 3:
            if skeleton_names:
                raise ContainerError(f"format {self.major}.x cannot mark skeleton names", code="schema")
            return Header(producer, metadata, skeleton, tuple(self.streams), tuple(tensors), skeleton_crc32)
        return Header(producer, metadata, skeleton, tuple(self.streams), tuple(tensors), skeleton_crc32, self._crc,
                      skeleton_names)

    def to_bytes(self, header: Header) -> bytes:
        return b"".join(self.iter_bytes(header))


# --------------------------------------------------------------------------- reading


class _Source:
    """Random access to container bytes: in memory, or a file read piece by piece."""

    def __init__(self, data: bytes | memoryview | None = None, *, file: BinaryIO | None = None,
                 size: int = 0) -> None:
        self._buf = memoryview(data) if data is not None else None
        self._file = file
        self.size = len(self._buf) if self._buf is not None else size

    def read(self, offset: int, length: int) -> bytes:
        if self._buf is not None:
            return bytes(self._buf[offset:offset + length])
        assert self._file is not None
        if hasattr(os, "pread"):  # no shared file position: tensors may be decoded on several threads
            data = os.pread(self._file.fileno(), length, offset)
        else:  # pragma: no cover - platforms without pread read on one thread
            self._file.seek(offset)
            data = self._file.read(length)
        if len(data) != length:
            raise ContainerError(
                f"file shrank while reading ({len(data)} of {length} bytes at offset {offset})",
                code="short-read",
            )
        return data

    def crc32(self, offset: int, length: int, *, chunk: int = 1 << 24) -> int:
        crc = 0
        for start in range(offset, offset + length, chunk):
            crc = zlib.crc32(self.read(start, min(chunk, offset + length - start)), crc)
        return crc


@dataclass(frozen=True)
class Container:
    """A validated container: its header and access to its payload (bytes in memory or a file)."""

    header: Header
    source: _Source
    version: tuple[int, int]
    header_size: int
    check_on_read: bool = False  # stream CRCs not checked when opened: check each as it is read
    _prefetched: dict[int, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    def stream_bytes(self, index: int) -> bytes:
        s = self.header.streams[index]
        data = self.source.read(self.header_size + s.offset, s.length)
        if self.check_on_read and s.crc32 is not None and zlib.crc32(data) != s.crc32:
            raise ContainerError(f"stream {index} checksum mismatch (file corrupted)", code="stream-crc")
        return data

    def decode_stream(self, index: int) -> np.ndarray:
        """Decode stream ``index`` into its ``count`` uint8 symbols (errors become ContainerError)."""
        s = self.header.streams[index]
        out = self._prefetched.pop(index, None)
        if out is None:
            coder = get_coder(s.coder)  # validated at read time, cannot fail here
            data = self.stream_bytes(index)  # its own error: checksum or short read
            try:
                out = coder.decode(data, count=s.count)
            except OnnxdcError as exc:
                raise ContainerError(f"stream {index}: {exc}", code="stream-decode") from None
        if out.shape != (s.count,):
            raise ContainerError(
                f"stream {index}: decoded {out.size} symbols, header says {s.count}",
                code="stream-count",
            )
        return out

    def prefetch(self, indices: Iterable[int]) -> None:
        """Decode streams ahead, those whose coders batch (:meth:`Coder.batch_part`) together, one
        batch per coder class; the next :meth:`decode_stream` of each returns the result.

        Huffman decoding, for one, runs a lock-step loop whose length depends on the block size,
        not on how many blocks share it. Any failure leaves the streams to :meth:`decode_stream`,
        which raises the error naming the stream.
        """
        batches: dict[type[Coder], list[tuple[int, Coder, bytes, int]]] = {}
        for i in indices:
            s = self.header.streams[i]
            coder = get_coder(s.coder)
            if not coder.can_batch:
                continue
            try:
                part = coder.batch_part(self.stream_bytes(i), count=s.count)
            except OnnxdcError:
                continue  # decode_stream will report it
            if part is not None:
                batches.setdefault(part[0], []).append((i, part[1], part[2], s.count))
        for cls, batch in batches.items():
            if len(batch) < 2:
                continue
            try:
                out = cls.decode_batch([(coder, buf, n) for _, coder, buf, n in batch])
            except OnnxdcError:
                continue
            self._prefetched.update((i, symbols) for (i, *_), symbols in zip(batch, out))


def output_size(header: Header) -> int:
    """The bytes a container decodes to: its tensors' and its skeleton's."""
    return sum(t.nbytes for t in header.tensors) + header.streams[header.skeleton].count


def check_output_size(container: Container, *, max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
                      max_ratio: float = DEFAULT_MAX_RATIO) -> int:
    """Refuse a container that declares more output than the ceilings allow; return its output size.

    A valid container of a few hundred bytes may declare gigabytes (one tensor of zeros), and the
    reader can only tell from the header. So decoding is refused, before anything is decoded or
    written, when the declared output exceeds ``max_output_bytes``, or exceeds both
    :data:`RATIO_FREE_BYTES` and ``max_ratio`` times the container's size.

    Raises:
        ConfigError: a ceiling is not a positive number.
        ContainerError: the declared output is over a ceiling (the message names the option).
    """
    if isinstance(max_output_bytes, bool) or not isinstance(max_output_bytes, int) or max_output_bytes < 0:
        raise ConfigError(f"max_output_bytes must be an integer >= 0, got {max_output_bytes!r}")
    if isinstance(max_ratio, bool) or not isinstance(max_ratio, (int, float)) or not max_ratio > 0:
        raise ConfigError(f"max_ratio must be a number > 0, got {max_ratio!r}")
    out = output_size(container.header)
    size = container.source.size
    if out > max_output_bytes:
        raise ContainerError(
            f"container declares {out} bytes of output, over the limit of {max_output_bytes} "
            f"(--max-output-bytes / max_output_bytes raises it)",
            code="limits",
        )
    if out > RATIO_FREE_BYTES and out > max_ratio * size:
        raise ContainerError(
            f"container of {size} bytes declares {out} bytes of output, {out / size:.0f} times its size, "
            f"over the limit of {max_ratio:g} times (--max-ratio / max_ratio raises it)",
            code="limits",
        )
    return out


def output_headroom(container: Container, *, max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
                    max_ratio: float = DEFAULT_MAX_RATIO) -> int:
    """The output the ceilings of :func:`check_output_size` leave beyond what the header declares
    (negative when it declares more): what decoding may add that no header count says, such as a
    3.0 skeleton's restored names."""
    size = container.source.size
    allowed = min(max_output_bytes, max(RATIO_FREE_BYTES, max_ratio * size))  # max_ratio may be inf
    return int(allowed) - output_size(container.header)


def read_container(data: bytes | memoryview, *, max_tensor_bytes: int = DEFAULT_MAX_TENSOR_BYTES,
                   skeleton_tensors: SkeletonReader | None = None) -> Container:
    """Parse and validate container bytes.

    Checks, in this order: length of the fixed prefix, magic, major version, header length cap and
    bounds, header CRC, UTF-8, JSON, schema, streams (back to back, covering the payload, CRCs),
    tensors (dtype, shape, sizes, stream references). Each failure is its own ContainerError.
    """
    return _read(_Source(data), max_tensor_bytes, skeleton_tensors=skeleton_tensors)


def open_container(file: BinaryIO, *, max_tensor_bytes: int = DEFAULT_MAX_TENSOR_BYTES,
                   check_streams: bool = True) -> Container:
    """Validate a container read from an open binary file, without loading the payload.

    Same checks as :func:`read_container`; streams are read (and CRC-checked) piece by piece, so
    memory stays bounded whatever the file size. The file must stay open while the container is used.

    ``check_streams=False`` defers each stream's CRC check to the moment the stream is read for
    decoding (:meth:`Container.stream_bytes`), still before any of its bytes are decoded (a 3.x
    container has no stream CRCs: the CRC-32 of each decoded tensor and of the skeleton then
    catch what corruption changes, and the coders refuse what does not decode): a reader
    that decodes every stream (decompression) then reads the payload once, not twice, and the
    checks run in its decoding threads. Corruption is then found mid-way, so such a reader must
    write its output atomically (as :func:`onnxdc.pipeline.paths.decompress_file` does).
    """
    file.seek(0, os.SEEK_END)
    size = file.tell()
    return _read(_Source(file=file, size=size), max_tensor_bytes, check_streams=check_streams)


def _read(src: _Source, max_tensor_bytes: int, *, check_streams: bool = True,
          skeleton_tensors: SkeletonReader | None = None) -> Container:
    if src.size < PREFIX_SIZE:
        raise ContainerError(
            f"file too short ({src.size} bytes) to be an onnxdc container (needs {PREFIX_SIZE})",
            code="too-short",
        )
    first = src.read(0, PREFIX_SIZE)
    magic, major, minor, hlen, hcrc = _PREFIX.unpack(first)
    if magic != MAGIC:
        raise ContainerError(f"not an onnxdc container (bad magic {bytes(magic)!r})", code="bad-magic")
    if major not in READ_MAJOR_VERSIONS:
        raise ContainerError(
            f"unsupported container version {major}.{minor}; this onnxdc reads "
            f"{', '.join(f'{v}.x' for v in READ_MAJOR_VERSIONS)}",
            code="version",
        )
    prefix_size = PREFIX_SIZE
    if major >= 4:  # magic, versions, then the header's length as a varint and its CRC-32
        hlen, used = _prefix_varint(first[_VERSIONS.size:])
        prefix_size = _VERSIONS.size + used + 4
        hcrc = int.from_bytes(first[prefix_size - 4:prefix_size], "little")
    if hlen > MAX_HEADER_BYTES:
        raise ContainerError(f"header length ({hlen}) exceeds the cap ({MAX_HEADER_BYTES})", code="header-size")
    if prefix_size + hlen > src.size:
        raise ContainerError(f"header length ({hlen}) exceeds file size ({src.size})", code="header-size")
    hbytes = src.read(prefix_size, hlen)
    if zlib.crc32(hbytes) != hcrc:
        raise ContainerError("header checksum mismatch (file corrupted)", code="header-crc")
    size = _frame_size(hbytes) if major < 4 else 0  # a 4.0 header is no zstd frame
    if size < 0:
        raise ContainerError("header is not a zstd frame with a declared size", code="header-zstd")
    if size > MAX_HEADER_BYTES:
        raise ContainerError(f"decoded header size ({size}) exceeds the cap ({MAX_HEADER_BYTES})", code="header-size")
    header_size = prefix_size + hlen
    if major >= 4:
        return _read4(src, hbytes, (major, minor), header_size, max_tensor_bytes, check_streams, skeleton_tensors)
    try:
        coder = ZstdCoder() if major == 1 else header_coder(major)
        raw_header = coder.decode(hbytes, count=size).tobytes()
    except OnnxdcError as exc:
        raise ContainerError(f"header does not decompress ({exc})", code="header-zstd") from None
    try:
        text = raw_header.decode("utf-8")
    except UnicodeDecodeError:
        raise ContainerError("header is not valid UTF-8", code="header-utf8") from None
    header = parse_header(text, payload_size=src.size - header_size, max_tensor_bytes=max_tensor_bytes,
                          major=major)
    if check_streams and header.payload_crc32 is not None:
        if src.crc32(header_size, src.size - header_size) != header.payload_crc32:
            raise ContainerError("payload checksum mismatch (file corrupted)", code="payload-crc")
    for i, s in enumerate(header.streams if check_streams and header.payload_crc32 is None else ()):
        if src.crc32(header_size + s.offset, s.length) != s.crc32:
            raise ContainerError(f"stream {i} checksum mismatch (file corrupted)", code="stream-crc")
    return Container(header, src, (major, minor), header_size, check_on_read=not check_streams)


def skeleton_ceiling(stored: int) -> int:
    """The most bytes a 4.0 skeleton stored in ``stored`` bytes may decode to: what the open
    decodes, and so what a writer may write."""
    return min(MAX_SKELETON_BYTES, SKELETON_FREE_BYTES + SKELETON_RATIO * stored)


def prefix4(major: int, minor: int, hbytes: bytes) -> bytes:
    """A 4.x container's prefix: magic, major and minor as before, then the header's length as
    an unsigned LEB128 varint (two bytes for a small header, not eight) and its CRC-32."""
    n, out = len(hbytes), bytearray(_VERSIONS.pack(MAGIC, major, minor))
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out) + zlib.crc32(hbytes).to_bytes(4, "little")


def _prefix_varint(data: bytes) -> tuple[int, int]:
    """The header length of a 4.x prefix and the bytes its varint takes (at most 4: the cap is
    256 MiB); the 12 bytes after the versions always hold it and the CRC-32."""
    v = 0
    for i in range(4):
        v |= (data[i] & 0x7F) << 7 * i
        if not data[i] & 0x80:
            if i and not data[i]:
                break
            return v, i + 1
    raise ContainerError("the header length is not a canonical varint of at most 4 bytes", code="header-size")


def _read4(src: _Source, hbytes: bytes, version: tuple[int, int], header_size: int, max_tensor_bytes: int,
           check_streams: bool, skeleton_tensors: SkeletonReader | None) -> Container:
    """A 4.0 container: the binary header, then the skeleton decoded for its tensors' facts.

    The skeleton's stream is checked like any stream before it is decoded, and its declared size
    bounded by its stored bytes (:data:`SKELETON_FREE_BYTES` plus :data:`SKELETON_RATIO` times
    them), so a small hostile file cannot make its open parse a large model; the reader reads the
    facts of the slots the header names, no other.
    """
    reader = skeleton_tensors or _SKELETON_READERS.get("onnx")
    if reader is None:
        raise ContainerError("a 4.0 container's tensors are described by its skeleton, and no skeleton "
                             "reader is registered (open it through onnxdc.read_container)", code="version")
    parsed = binary.decode(hbytes)
    payload = src.size - header_size
    sk, offset = parsed.skeleton, parsed.skeleton_offset
    end = offset + sk["length"]
    if end > payload:
        raise ContainerError(f"stream end ({end}) exceeds payload size ({payload})", code="offsets")
    if end != payload:
        raise ContainerError(f"streams cover {end} bytes but the payload holds {payload} (trailing data)",
                             code="offsets")
    _parse_stream(sum(len(t[5]) for t in parsed.tensors), sk, offset, max_tensor_bytes, True)
    if check_streams and src.crc32(header_size, payload) != parsed.payload_crc32:
        raise ContainerError("payload checksum mismatch (file corrupted)", code="payload-crc")
    cap = skeleton_ceiling(sk["length"])
    if sk["count"] > cap:
        raise ContainerError(f"the skeleton declares {sk['count']} bytes, over the limit ({cap}: "
                             f"{SKELETON_FREE_BYTES >> 20} MiB and {SKELETON_RATIO} times its {sk['length']} "
                             f"stored bytes)", code="limits")
    try:
        symbols = get_coder(sk["coder"]).decode(src.read(header_size + offset, sk["length"]), count=sk["count"])
    except (OnnxdcError, RecursionError) as exc:
        raise ContainerError(f"the skeleton's stream does not decode: {exc}", code="stream-decode") from None
    if symbols.shape != (sk["count"],):
        raise ContainerError("the skeleton's stream decodes to the wrong size", code="stream-count")
    try:
        facts = reader(symbols.tobytes(), frozenset(t[0] for t in parsed.tensors))
    except ContainerError:
        raise
    except OnnxdcError as exc:
        raise ContainerError(f"the skeleton stream does not hold a model: {exc}") from None
    header = parse_header4(parsed, facts, payload_size=payload, max_tensor_bytes=max_tensor_bytes)
    container = Container(header, src, version, header_size, check_on_read=not check_streams)
    container._prefetched[header.skeleton] = symbols
    return container


#: Reads a 4.0 skeleton's stored-tensor facts (:data:`onnxdc.format.binary.SkeletonTensors`) from
#: its bytes, those of the given slots only (the header's: a hostile skeleton may hold millions of
#: tensors), raising an :class:`~onnxdc.errors.OnnxdcError` when they are no model.
SkeletonReader = Callable[[bytes, frozenset[int]], binary.SkeletonTensors]
_SKELETON_READERS: dict[str, SkeletonReader] = {}


def register_skeleton_reader(reader: SkeletonReader) -> None:
    """Set how 4.0 containers read their skeleton's tensors. The format knows no ONNX: the layer
    that does registers its reader (:mod:`onnxdc.pipeline`, on import)."""
    _SKELETON_READERS["onnx"] = reader
