"""The container header: its dataclasses and the strict parser of its JSON.

Every key is known (unknown keys are refused, except inside the free-form ``metadata``), every
number is range-checked, and the streams must tile the payload exactly; each failure raises one
:class:`~onnxdc.errors.ContainerError` naming what and where. Tensor entries are further checked by
their encoding (:func:`onnxdc.format.registry.validate_tensor`) before anything is decoded.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import zstandard

from onnxdc.coders import get_coder
from onnxdc.coders.zstd import ZstdCoder
from onnxdc.coders.zstd_dict import ZstdDictCoder
from onnxdc.errors import ContainerError, OnnxdcError
from onnxdc.format import binary
from onnxdc.format.compact import compact, expand
from onnxdc.format.registry import validate_tensor

#: Most JSON objects and arrays a header may hold. The 256 MiB cap on the text does not bound the
#: memory of what it parses into: ``{}`` is 3 bytes of text and a hundred of memory. A header onnxdc
#: writes holds 10 to 13 per stored tensor, so this allows some 75,000 tensors (at most 130 MB
#: and 4 s of parsing).
MAX_HEADER_CONTAINERS = 1_000_000
#: Most JSON values (numbers, strings, objects, arrays...) a header may hold: onnxdc writes 37 to 43
#: per stored tensor.
MAX_HEADER_VALUES = 4_000_000
#: Largest decoded metadata of a 4.0 header (its JSON then meets the caps above). A user's own
#: entries are a few; within the caps above 16 MiB of JSON (3.3 million short strings, stored in
#: 3 KB) took 500 MB and 2 s to parse, 1 MiB takes a sixteenth.
MAX_METADATA_BYTES = 1 << 20
#: Deepest nesting of JSON objects and arrays in a header (onnxdc writes 6 with two-stage chains).
MAX_HEADER_DEPTH = 32

#: The built-in zstd dictionary a 2.x and a 3.x header is coded with (part of the format: a new one
#: is a new major).
HEADER_DICTIONARIES = {2: "header-2", 3: "header-3", 4: "header-3"}
#: The zstd level headers are written with.
HEADER_LEVEL = 19

_HEADER_KEYS = {"producer", "metadata", "skeleton", "skeleton_crc32", "streams", "tensors"}
#: 3.0's: one CRC-32 of the whole payload instead of one per stream; the skeleton's derived value
#: names left out (:mod:`onnxdc.onnx_io.names`).
_HEADER_OPTIONAL = {"payload_crc32", "skeleton_names"}
_STREAM_KEYS = {"length", "count", "coder"}
_TENSOR_KEYS = {"slot", "path", "name", "dtype", "shape", "nbytes", "crc32", "encoding", "params", "streams"}


@dataclass(frozen=True)
class StreamInfo:
    """Where one coded stream lives in the payload and how to decode it."""

    offset: int
    length: int
    crc32: int | None  # None in 3.0, where the header holds the whole payload's CRC-32 instead
    count: int
    coder: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        # No offset: streams sit back to back in header order, so offsets follow from the lengths.
        crc = {} if self.crc32 is None else {"crc32": self.crc32}
        return {"length": self.length, **crc, "count": self.count, "coder": self.coder}


@dataclass(frozen=True)
class TensorInfo:
    """One stored tensor: where it goes in the model, what it is, and which streams rebuild it.

    ``nbytes`` and ``crc32`` describe the decoded raw_data bytes, checked after decoding so that a
    coder bug cannot pass silently.
    """

    slot: int
    path: str
    name: str
    dtype: int
    shape: tuple[int, ...]
    nbytes: int
    crc32: int
    encoding: str
    params: dict[str, Any]
    streams: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        return {"slot": self.slot, "path": self.path, "name": self.name, "dtype": self.dtype,
                "shape": list(self.shape), "nbytes": self.nbytes, "crc32": self.crc32,
                "encoding": self.encoding, "params": self.params, "streams": self.streams}


@dataclass(frozen=True)
class Header:
    """The container header (everything but the payload)."""

    producer: str
    metadata: dict[str, Any]
    skeleton: int
    streams: tuple[StreamInfo, ...]
    tensors: tuple[TensorInfo, ...]
    skeleton_crc32: int = 0  # CRC-32 of the decoded skeleton bytes
    payload_crc32: int | None = None  # 3.0: CRC-32 of the payload (the streams then have none)
    skeleton_names: bool = False  # 3.0: the skeleton's derived value names are marks

    def to_bytes(self, *, major: int = 4) -> bytes:
        """The header as stored by format ``major``: 1, the key-sorted JSON in one zstd frame; 2
        and 3, the compact JSON of that major (:mod:`onnxdc.format.compact`) in one frame coded with
        the major's built-in dictionary (:data:`HEADER_DICTIONARIES`); 4, binary
        (:mod:`onnxdc.format.binary`), the metadata (when there is any) its JSON in such a frame."""
        if major == 1:
            return ZstdCoder(level=HEADER_LEVEL).encode(np.frombuffer(self.to_json_bytes(), dtype=np.uint8))
        if major >= 4:
            text = _dumps(self.metadata) if self.metadata else None
            if text is not None and len(text) > MAX_METADATA_BYTES:  # never write what no reader opens
                raise ContainerError(f"metadata of {len(text)} bytes of JSON is over the limit "
                                     f"({MAX_METADATA_BYTES >> 20} MiB)", code="limits")
            meta = header_coder(major).encode(np.frombuffer(text, dtype=np.uint8)) if text is not None else None
            return binary.encode(self.to_json(), meta)
        return header_coder(major).encode(np.frombuffer(self.to_compact_json_bytes(major=major), dtype=np.uint8))

    def to_json(self) -> dict[str, Any]:
        """The header as the 1.0 JSON object (the object model of every version; 3.0's two keys
        appear only when set)."""
        extra: dict[str, Any] = {} if self.payload_crc32 is None else {"payload_crc32": self.payload_crc32}
        if self.skeleton_names:
            extra["skeleton_names"] = True
        return {"producer": self.producer, "metadata": self.metadata, "skeleton": self.skeleton,
                "skeleton_crc32": self.skeleton_crc32, **extra,
                "streams": [s.to_json() for s in self.streams],
                "tensors": [t.to_json() for t in self.tensors]}

    def to_json_bytes(self) -> bytes:
        """The header's 1.0 JSON text, refused if a reader would refuse it (see :func:`check_json_size`).

        Raises:
            ContainerError: the header holds more JSON objects or values, or nests them deeper, than
                a reader accepts.
        """
        return _dumps(self.to_json())

    def to_compact_json_bytes(self, *, major: int = 3) -> bytes:
        """The header's compact JSON text of format ``major`` (2 or 3), refused if a reader would
        refuse it.

        Raises:
            ContainerError: as :meth:`to_json_bytes`, or the streams are not in tensor order.
        """
        return _dumps(compact(self.to_json(), major=major))


def header_coder(major: int = 3) -> ZstdDictCoder:
    """The coder of a 2.x or 3.x header's frame."""
    return ZstdDictCoder(dictionary=HEADER_DICTIONARIES[major], level=HEADER_LEVEL)


def _dumps(obj: dict[str, Any]) -> bytes:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    check_json_size(text)  # never write a container no reader opens
    _check_depth(_walk(obj)[0])
    return text.encode("utf-8")


def parse_header(text: str, *, payload_size: int, max_tensor_bytes: int, major: int = 1) -> Header:
    """Parse and validate the header's JSON text of format ``major`` (see the module docstring): a
    2.x or 3.x header's compact JSON is expanded (:func:`onnxdc.format.compact.expand`) before the
    same checks.

    The text is counted before it is parsed (:func:`check_json_size`), so what it parses into
    stays within a bounded multiple of the caps, whatever the text holds.
    """
    obj = _load_json(text)
    return _parse_header(expand(obj, major=major) if major >= 2 else obj, payload_size, max_tensor_bytes,
                         _HEADER_OPTIONAL if major >= 3 else set())


def parse_header4(parsed: binary.Parsed, tensors: binary.SkeletonTensors, *, payload_size: int,
                  max_tensor_bytes: int) -> Header:
    """Validate a decoded 4.0 header (:func:`onnxdc.format.binary.decode`) whose tensors' facts
    come from its skeleton's ``tensors``: its metadata is JSON under the caps of every header, and
    the 1.0 object it stands for gets the 1.0 checks."""
    metadata: Any = {}
    if parsed.metadata is not None:
        frame = parsed.metadata
        size = _frame_size(frame)
        if size < 0:
            raise ContainerError("header metadata is not a zstd frame with a declared size", code="header-zstd")
        if size > MAX_METADATA_BYTES:
            raise ContainerError(f"header metadata declares {size} bytes, over the limit ({MAX_METADATA_BYTES >> 20} MiB)",
                                 code="limits")
        try:
            text = header_coder(4).decode(frame, count=size).tobytes().decode("utf-8")
        except OnnxdcError as exc:
            raise ContainerError(f"header metadata does not decompress ({exc})", code="header-zstd") from None
        except UnicodeDecodeError:
            raise ContainerError("header metadata is not valid UTF-8", code="header-utf8") from None
        metadata = _load_json(text)
    return _parse_header(binary.resolve(parsed, tensors, metadata), payload_size, max_tensor_bytes, _HEADER_OPTIONAL)


def _frame_size(frame: bytes) -> int:
    """The content size a zstd frame declares, or -1 if it declares none or is not one frame."""
    try:
        return zstandard.frame_content_size(frame)
    except zstandard.ZstdError:
        return -1


def _load_json(text: str) -> Any:
    """Parse header JSON under the caps on objects, values and depth, refusing lone surrogates."""
    check_json_size(text)
    try:
        obj = json.loads(text, object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constant,
                         parse_float=_finite_float)
    except (ValueError, RecursionError) as exc:
        raise ContainerError(f"header is not valid JSON ({exc})", code="header-json") from None
    depth, surrogate = _walk(obj)
    _check_depth(depth)
    if surrogate:
        raise ContainerError("header is not valid UTF-8 (a string escape holds a lone surrogate)", code="header-utf8")
    return obj


def _check_depth(depth: int) -> None:
    if depth > MAX_HEADER_DEPTH:
        raise ContainerError(
            f"header nests JSON {depth} levels deep, more than the limit ({MAX_HEADER_DEPTH})",
            code="limits",
        )


def check_json_size(text: str) -> None:
    """Refuse header text that would parse into more objects or values than the caps allow.

    Upper bounds from character counts, no parse: every object or array opens with ``{`` or ``[``,
    and every value but the first of its object or array follows a ``,``. Those characters inside
    strings count too, which only overestimates (a real header is far below the caps).
    """
    containers = text.count("{") + text.count("[")
    if containers > MAX_HEADER_CONTAINERS:
        raise ContainerError(
            f"header holds up to {containers} JSON objects and arrays, more than the limit ({MAX_HEADER_CONTAINERS})",
            code="limits",
        )
    values = containers + text.count(",") + 1
    if values > MAX_HEADER_VALUES:
        raise ContainerError(
            f"header holds up to {values} JSON values, more than the limit ({MAX_HEADER_VALUES})",
            code="limits",
        )


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name}")


def _finite_float(text: str) -> float:
    """Parse a JSON number, refusing one that overflows to infinity (``1e999``) like NaN literals."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"non-finite number {text}")
    return value


def _walk(obj: Any) -> tuple[int, bool]:
    """The nesting depth of a parsed JSON value, and whether it holds a string no UTF-8 can encode
    (``"\\ud800"`` escapes).

    Python's json module accepts such escapes; the strings would then fail wherever they are printed
    or written (tensor names, the producer), long after the header was accepted. The depth is
    measured here, not during parsing: the parser's own recursion limit bounds it meanwhile.
    """
    stack = [(obj, 0)]
    deepest, surrogate = 0, False
    while stack:
        v, depth = stack.pop()
        if isinstance(v, str):
            if not surrogate:
                try:
                    v.encode("utf-8")
                except UnicodeEncodeError:
                    surrogate = True
        elif isinstance(v, (dict, list)):
            depth += 1
            deepest = max(deepest, depth)
            if isinstance(v, dict):
                stack.extend((k, depth) for k in v)
            stack.extend((x, depth) for x in (v.values() if isinstance(v, dict) else v))
    return deepest, surrogate


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_keys(obj: Any, allowed: set[str], what: str, optional: set[str] = frozenset()) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise ContainerError(f"{what} must be a JSON object, found {type(obj).__name__}", code="schema")
    missing = allowed - obj.keys()
    if missing:
        raise ContainerError(f"{what} lacks key(s) {', '.join(sorted(missing))}", code="schema")
    unknown = obj.keys() - allowed - optional
    if unknown:
        raise ContainerError(f"{what} has unknown key(s) {', '.join(sorted(unknown))}", code="schema")
    return obj


def _nonneg_int(v: Any, what: str, cap: int = 1 << 62) -> int:
    if not _is_int(v) or v < 0 or v > cap:
        raise ContainerError(f"{what} must be an integer in [0, {cap}], found {v!r}", code="schema")
    return v


def _parse_header(obj: Any, payload_size: int, max_tensor_bytes: int, optional: set[str]) -> Header:
    _check_keys(obj, _HEADER_KEYS, "header", optional)
    payload_crc = obj.get("payload_crc32")
    if payload_crc is not None:
        payload_crc = _nonneg_int(payload_crc, "header.payload_crc32", 0xFFFFFFFF)
    names = obj.get("skeleton_names", False)
    if not isinstance(names, bool):
        raise ContainerError("header.skeleton_names must be true or false", code="schema")
    if not isinstance(obj["producer"], str):
        raise ContainerError("header.producer must be a string", code="schema")
    if not isinstance(obj["metadata"], dict):
        raise ContainerError("header.metadata must be an object", code="schema")
    if not isinstance(obj["streams"], list) or not isinstance(obj["tensors"], list):
        raise ContainerError("header.streams and header.tensors must be arrays", code="schema")
    streams = []
    end = 0
    for i, s in enumerate(obj["streams"]):
        info = _parse_stream(i, s, end, max_tensor_bytes, payload_crc is not None)
        end += info.length
        if end > payload_size:
            raise ContainerError(f"stream {i} end ({end}) exceeds payload size ({payload_size})", code="offsets")
        streams.append(info)
    streams = tuple(streams)
    if end != payload_size:
        raise ContainerError(
            f"streams cover {end} bytes but the payload holds {payload_size} (trailing data)",
            code="offsets",
        )
    skeleton = _nonneg_int(obj["skeleton"], "header.skeleton")
    if skeleton >= len(streams):
        raise ContainerError(f"skeleton stream {skeleton} does not exist ({len(streams)} streams)", code="references")
    used = {skeleton}
    tensors = []
    slots: set[int] = set()
    for i, t in enumerate(obj["tensors"]):
        info = _parse_tensor(i, t, max_tensor_bytes)
        if info.slot in slots:
            raise ContainerError(f"tensor {i} ({info.name!r}) reuses slot {info.slot}", code="references")
        slots.add(info.slot)
        for role, idx in info.streams.items():
            if idx >= len(streams):
                raise ContainerError(
                    f"tensor {info.name!r} stream {role!r} refers to missing stream {idx}",
                    code="references",
                )
            if idx in used:
                raise ContainerError(f"tensor {info.name!r} stream {role!r} reuses stream {idx}", code="references")
            used.add(idx)
        validate_tensor(info, streams)
        tensors.append(info)
    if len(used) != len(streams):
        raise ContainerError(f"{len(streams) - len(used)} stream(s) belong to no tensor", code="references")
    skeleton_crc = _nonneg_int(obj["skeleton_crc32"], "header.skeleton_crc32", 0xFFFFFFFF)
    return Header(obj["producer"], obj["metadata"], skeleton, streams, tuple(tensors), skeleton_crc, payload_crc,
                  names)


def _parse_stream(i: int, s: Any, offset: int, max_bytes: int, payload_crc: bool) -> StreamInfo:
    """One stream entry: with its CRC-32, unless the header has the payload's (3.0), then without."""
    _check_keys(s, _STREAM_KEYS if payload_crc else _STREAM_KEYS | {"crc32"}, f"stream {i}")
    info = StreamInfo(
        offset=offset,
        length=_nonneg_int(s["length"], f"stream {i} length"),
        crc32=None if payload_crc else _nonneg_int(s["crc32"], f"stream {i} crc32", 0xFFFFFFFF),
        count=_nonneg_int(s["count"], f"stream {i} count", max_bytes),
        coder=s["coder"],
    )
    try:
        get_coder(info.coder)
    except (OnnxdcError, RecursionError) as exc:
        raise ContainerError(f"stream {i} has a bad coder config: {exc}", code="coder-config") from None
    return info


def _parse_tensor(i: int, t: Any, max_bytes: int) -> TensorInfo:
    _check_keys(t, _TENSOR_KEYS, f"tensor {i}")
    if not isinstance(t["name"], str) or not isinstance(t["path"], str):
        raise ContainerError(f"tensor {i} name and path must be strings", code="schema")
    shape = t["shape"]
    if not isinstance(shape, list) or len(shape) > 64:
        raise ContainerError(f"tensor {t['name']!r} shape must be an array of at most 64 dims", code="schema")
    dims = tuple(_nonneg_int(d, f"tensor {t['name']!r} dim", max_bytes) for d in shape)
    if math.prod(dims) > max_bytes:
        raise ContainerError(
            f"tensor {t['name']!r} declares {math.prod(dims)} elements, over the limit ({max_bytes})",
            code="limits",
        )
    if not isinstance(t["params"], dict) or not isinstance(t["streams"], dict):
        raise ContainerError(f"tensor {t['name']!r} params and streams must be objects", code="schema")
    if not isinstance(t["encoding"], str):
        raise ContainerError(f"tensor {t['name']!r} encoding must be a string", code="schema")
    streams = {str(k): _nonneg_int(v, f"tensor {t['name']!r} stream {k!r}") for k, v in t["streams"].items()}
    return TensorInfo(
        slot=_nonneg_int(t["slot"], f"tensor {t['name']!r} slot"),
        path=t["path"],
        name=t["name"],
        dtype=_nonneg_int(t["dtype"], f"tensor {t['name']!r} dtype", 64),
        shape=dims,
        nbytes=_nonneg_int(t["nbytes"], f"tensor {t['name']!r} nbytes", max_bytes),
        crc32=_nonneg_int(t["crc32"], f"tensor {t['name']!r} crc32", 0xFFFFFFFF),
        encoding=t["encoding"],
        params=t["params"],
        streams=streams,
    )
