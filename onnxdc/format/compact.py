"""The 2.0 and 3.0 headers' compact JSON, to and from the 1.0 header's JSON object.

A 2.0 header says what a 1.0 header says, in fewer bytes (the object model, its limits and its
validation are the same; :func:`expand` rebuilds the 1.0 object, which
:func:`onnxdc.format.header.parse_header` then checks as it checks any 1.0 header):

- the top level is an object of short keys: ``p`` producer, ``m`` metadata (left out when empty),
  ``c`` skeleton CRC-32, ``k`` the skeleton's stream, ``t`` the tensors;
- a tensor is an array ``[slot, name, path, dtype, shape, crc32, encoding, params, streams]``,
  plus ``nbytes`` as a tenth item only when it is not what the dtype and shape give; ``path`` is
  ``0`` when it is ``graph.initializer[slot]`` (the usual case: initializers come first);
- a tensor's streams sit in the payload in its order, tensor after tensor, the skeleton's last:
  offsets and stream indices are implied; each is ``[role, length, crc32, coder]``, plus ``count``
  as a fifth item when it differs from ``length``; the skeleton's has no role;
- a coder is its id alone when every parameter has its default (``"huffman"``), an array of its
  stages for a chain, else its config without the default-valued parameters.

:func:`expand` refuses anything else with one :class:`~onnxdc.errors.ContainerError`. It runs after
the text passed the 1.0 caps on objects, values and depth, and it builds a bounded number of objects
per compact one, so what it allocates stays within a constant of the caps.

3.0 differs in three ways, each bytes a small model pays for (on the CRNN sample, 20 stream CRCs
were a seventh of its header):

- the streams carry no CRC-32: a stream is ``[role, length, coder]`` (plus ``count``), and the top
  level's ``s`` is the CRC-32 of the whole payload (each tensor still has the CRC-32 of its
  decoded bytes, which catches what a stream's would and a decoder's bugs too);
- ``f`` is ``1`` when the skeleton's derived value names are marks (:mod:`onnxdc.onnx_io.names`);
- a ``shared`` tensor's params leave out what its shape and codebook stream give (``numel``,
  ``k``) and the defaults of :data:`SHARED_DEFAULTS`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from onnxdc.coders import get_coder
from onnxdc.dtypes import CODEBOOK_DTYPES, expected_nbytes
from onnxdc.errors import ContainerError, OnnxdcError

_TOP_KEYS = {2: {"p", "m", "c", "k", "t"}, 3: {"p", "m", "c", "k", "t", "s", "f"}}
_REQUIRED = {2: {"p", "c", "k", "t"}, 3: {"p", "c", "k", "t", "s"}}
_TENSOR_ITEMS = 9
_STREAM_ITEMS = {2: 4, 3: 3}
#: 3.0: the params a ``shared`` tensor leaves out when they have these values.
SHARED_DEFAULTS: dict[str, Any] = {"codebook_dtype": "float32", "position_bits": 0, "zero_code": False}


def _initializer_path(slot: Any) -> str:
    return f"graph.initializer[{slot}]"


def compact(obj: dict[str, Any], *, major: int = 3) -> dict[str, Any]:
    """The compact form (of format ``major``, 2 or 3) of a valid header object whose streams are in
    tensor order (the tensors' streams in order, the skeleton's last), as
    :class:`~onnxdc.format.container.ContainerWriter` lays them out; a 3.0 form needs the
    object's ``payload_crc32``.

    Raises:
        ContainerError: the streams are not in that order (such a header has no 2.0 form).
    """
    streams = obj["streams"]
    next_index = 0
    tensors = []
    for t in obj["tensors"]:
        entries = []
        for role, index in t["streams"].items():
            if index != next_index:
                raise ContainerError(f"tensor {t['name']!r} stream {role!r} is not in tensor order", code="schema")
            entries.append(_compact_stream(streams[index], role, major))
            next_index += 1
        path = 0 if t["path"] == _initializer_path(t["slot"]) else t["path"]
        params = t["params"]
        if major >= 3 and t["encoding"] == "shared":
            codebook = streams[t["streams"]["codebook"]]["count"] if "codebook" in t["streams"] else None
            params = _compact_shared(params, t["shape"], codebook)
        item = [t["slot"], t["name"], path, t["dtype"], t["shape"], t["crc32"], t["encoding"], params, entries]
        if t["nbytes"] != expected_nbytes(t["dtype"], math.prod(t["shape"])):
            item.append(t["nbytes"])
        tensors.append(item)
    if obj["skeleton"] != next_index or len(streams) != next_index + 1:
        raise ContainerError("the skeleton's stream is not the last stream", code="schema")
    out = {"p": obj["producer"], "c": obj["skeleton_crc32"], "k": _compact_stream(streams[-1], None, major)[1:],
           "t": tensors}
    if obj["metadata"]:
        out["m"] = obj["metadata"]
    if major >= 3:
        if obj.get("payload_crc32") is None:
            raise ContainerError("a header without the payload's CRC-32 has no 3.0 form", code="schema")
        out["s"] = obj["payload_crc32"]
        if obj.get("skeleton_names"):
            out["f"] = 1
    return out


def _compact_stream(s: dict[str, Any], role: str | None, major: int) -> list[Any]:
    item = [role, s["length"], *([] if major >= 3 else [s["crc32"]]), compact_coder(s["coder"])]
    if s["count"] != s["length"]:
        item.append(s["count"])
    return item


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b  # False is not 0


def _itemsize(codebook_dtype: Any) -> int | None:
    name = CODEBOOK_DTYPES.get(codebook_dtype) if isinstance(codebook_dtype, str) else None
    return None if name is None else np.dtype(name).itemsize


def _compact_shared(params: dict[str, Any], shape: list[int], codebook_count: int | None) -> dict[str, Any]:
    out = {k: v for k, v in params.items() if not (k in SHARED_DEFAULTS and _same(v, SHARED_DEFAULTS[k]))}
    if _same(params.get("numel"), math.prod(shape)):
        del out["numel"]
    size = _itemsize(params.get("codebook_dtype"))
    if size is not None and codebook_count is not None and _same(params.get("k"), codebook_count // size) \
            and codebook_count % size == 0:
        del out["k"]
    return out


def _expand_shared(params: Any, shape: Any, codebook_count: Any) -> Any:
    """The full params of a 3.0 ``shared`` tensor; anything malformed is left for the encoding's
    check to refuse, naming the tensor."""
    if not isinstance(params, dict):
        return params
    out = {**{k: v for k, v in SHARED_DEFAULTS.items() if k not in params}, **params}
    if "numel" not in out and isinstance(shape, list) and len(shape) <= 64 and all(
            isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= 1 << 62 for d in shape):
        out["numel"] = math.prod(shape)
    size = _itemsize(out.get("codebook_dtype"))
    if "k" not in out and size is not None and isinstance(codebook_count, int) and codebook_count % size == 0:
        out["k"] = codebook_count // size
    return out


def compact_coder(config: dict[str, Any]) -> Any:
    """A coder config without its default-valued parameters (see the module docstring)."""
    if config.get("id") == "chain":
        return [compact_coder(c) for c in config["coders"]]
    try:
        defaults = get_coder({"id": config["id"]}).get_config()
    except OnnxdcError:
        return config
    rest = {k: v for k, v in config.items() if k != "id" and (k not in defaults or defaults[k] != v)}
    return config["id"] if not rest else {"id": config["id"], **rest}


def expand_coder(value: Any) -> Any:
    """The full coder config of a compact one; a value that is no coder is returned for the
    header's coder check to refuse (it names the stream)."""
    if isinstance(value, list):
        value = {"id": "chain", "coders": [expand_coder(c) for c in value]}
    elif isinstance(value, str):
        value = {"id": value}
    try:
        return get_coder(value).get_config()
    except (OnnxdcError, RecursionError):
        return value


def expand(obj: Any, *, major: int = 3) -> dict[str, Any]:
    """The 1.0 header object a compact header of format ``major`` stands for (see the module docstring).

    Raises:
        ContainerError: the compact header is not of the form above (code ``schema``).
    """
    if not isinstance(obj, dict):
        raise ContainerError(f"header must be a JSON object, found {type(obj).__name__}", code="schema")
    missing, unknown = _REQUIRED[major] - obj.keys(), obj.keys() - _TOP_KEYS[major]
    if missing:
        raise ContainerError(f"header lacks key(s) {', '.join(sorted(missing))}", code="schema")
    if unknown:
        raise ContainerError(f"header has unknown key(s) {', '.join(sorted(unknown))}", code="schema")
    if not isinstance(obj["t"], list):
        raise ContainerError("header.t (tensors) must be an array", code="schema")
    streams: list[dict[str, Any]] = []
    tensors = []
    for i, t in enumerate(obj["t"]):
        if not isinstance(t, list) or len(t) not in (_TENSOR_ITEMS, _TENSOR_ITEMS + 1):
            raise ContainerError(f"tensor {i} must be an array of {_TENSOR_ITEMS} or {_TENSOR_ITEMS + 1} items",
                                 code="schema")
        slot, name, path, dtype, shape, crc, encoding, params, entries = t[:_TENSOR_ITEMS]
        if not isinstance(entries, list):
            raise ContainerError(f"tensor {i} streams must be an array", code="schema")
        roles: dict[str, int] = {}
        for j, entry in enumerate(entries):
            role, stream = _expand_stream(entry, f"tensor {i} stream {j}", has_role=True, major=major)
            if not isinstance(role, str) or role in roles:
                raise ContainerError(f"tensor {i} stream {j} role must be a new string, found {role!r}", code="schema")
            roles[role] = len(streams)
            streams.append(stream)
        if major >= 3 and encoding == "shared":
            codebook = streams[roles["codebook"]]["count"] if "codebook" in roles else None
            params = _expand_shared(params, shape, codebook)
        tensor = {"slot": slot, "name": name, "path": _initializer_path(slot) if path == 0 else path,
                  "dtype": dtype, "shape": shape, "crc32": crc, "encoding": encoding, "params": params,
                  "streams": roles}
        tensor["nbytes"] = t[_TENSOR_ITEMS] if len(t) > _TENSOR_ITEMS else _implied_nbytes(tensor, i)
        tensors.append(tensor)
    streams.append(_expand_stream([None, *obj["k"]] if isinstance(obj["k"], list) else obj["k"],
                                  "the skeleton's stream", has_role=False, major=major)[1])
    out = {"producer": obj["p"], "metadata": obj.get("m", {}), "skeleton": len(streams) - 1,
           "skeleton_crc32": obj["c"], "streams": streams, "tensors": tensors}
    if major >= 3:
        out["payload_crc32"] = obj["s"]
        if "f" in obj:
            if not _same(obj["f"], 1):
                raise ContainerError(f"header.f must be 1 when present, found {obj['f']!r}", code="schema")
            out["skeleton_names"] = True
    return out


def _expand_stream(entry: Any, what: str, *, has_role: bool, major: int) -> tuple[Any, dict[str, Any]]:
    items = _STREAM_ITEMS[major]
    if not isinstance(entry, list) or len(entry) not in (items, items + 1):
        n = items - (0 if has_role else 1)
        raise ContainerError(f"{what} must be an array of {n} or {n + 1} items", code="schema")
    if major >= 3:
        role, length, coder = entry[:items]
        crc: dict[str, Any] = {}
    else:
        role, length, crc32, coder = entry[:items]
        crc = {"crc32": crc32}
    count = entry[items] if len(entry) > items else length
    return role, {"length": length, **crc, "count": count, "coder": expand_coder(coder)}


def _implied_nbytes(tensor: dict[str, Any], i: int) -> int:
    shape = tensor["shape"]
    dims_ok = isinstance(shape, list) and len(shape) <= 64 and all(
        isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= 1 << 62 for d in shape)
    dtype = tensor["dtype"]
    nbytes = (expected_nbytes(dtype, math.prod(shape)) if dims_ok and isinstance(dtype, int)
              and not isinstance(dtype, bool) else None)
    if nbytes is None:
        raise ContainerError(f"tensor {i} ({tensor['name']!r}) needs nbytes: its dtype and shape do not give it",
                             code="schema")
    return nbytes
