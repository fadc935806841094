"""The 2.0 header's compact JSON, to and from the 1.0 header's JSON object.

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
"""

from __future__ import annotations

import math
from typing import Any

from onnxdc.coders import get_coder
from onnxdc.dtypes import expected_nbytes
from onnxdc.errors import ContainerError, OnnxdcError

_TOP_KEYS = {"p", "m", "c", "k", "t"}
_REQUIRED = {"p", "c", "k", "t"}
_TENSOR_ITEMS = 9
_STREAM_ITEMS = 4


def _initializer_path(slot: Any) -> str:
    return f"graph.initializer[{slot}]"


def compact(obj: dict[str, Any]) -> dict[str, Any]:
    """The compact form of a valid 1.0 header object whose streams are in tensor order (the
    tensors' streams in order, the skeleton's last), as :class:`~onnxdc.format.container.ContainerWriter`
    lays them out.

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
            entries.append(_compact_stream(streams[index], role))
            next_index += 1
        path = 0 if t["path"] == _initializer_path(t["slot"]) else t["path"]
        item = [t["slot"], t["name"], path, t["dtype"], t["shape"], t["crc32"], t["encoding"], t["params"], entries]
        if t["nbytes"] != expected_nbytes(t["dtype"], math.prod(t["shape"])):
            item.append(t["nbytes"])
        tensors.append(item)
    if obj["skeleton"] != next_index or len(streams) != next_index + 1:
        raise ContainerError("the skeleton's stream is not the last stream", code="schema")
    out = {"p": obj["producer"], "c": obj["skeleton_crc32"], "k": _compact_stream(streams[-1], None)[1:],
           "t": tensors}
    if obj["metadata"]:
        out["m"] = obj["metadata"]
    return out


def _compact_stream(s: dict[str, Any], role: str | None) -> list[Any]:
    item = [role, s["length"], s["crc32"], compact_coder(s["coder"])]
    if s["count"] != s["length"]:
        item.append(s["count"])
    return item


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


def expand(obj: Any) -> dict[str, Any]:
    """The 1.0 header object a compact header stands for (see the module docstring).

    Raises:
        ContainerError: the compact header is not of the form above (code ``schema``).
    """
    if not isinstance(obj, dict):
        raise ContainerError(f"header must be a JSON object, found {type(obj).__name__}", code="schema")
    missing, unknown = _REQUIRED - obj.keys(), obj.keys() - _TOP_KEYS
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
            role, stream = _expand_stream(entry, f"tensor {i} stream {j}", has_role=True)
            if not isinstance(role, str) or role in roles:
                raise ContainerError(f"tensor {i} stream {j} role must be a new string, found {role!r}", code="schema")
            roles[role] = len(streams)
            streams.append(stream)
        tensor = {"slot": slot, "name": name, "path": _initializer_path(slot) if path == 0 else path,
                  "dtype": dtype, "shape": shape, "crc32": crc, "encoding": encoding, "params": params,
                  "streams": roles}
        tensor["nbytes"] = t[_TENSOR_ITEMS] if len(t) > _TENSOR_ITEMS else _implied_nbytes(tensor, i)
        tensors.append(tensor)
    streams.append(_expand_stream([None, *obj["k"]] if isinstance(obj["k"], list) else obj["k"],
                                  "the skeleton's stream", has_role=False)[1])
    return {"producer": obj["p"], "metadata": obj.get("m", {}), "skeleton": len(streams) - 1,
            "skeleton_crc32": obj["c"], "streams": streams, "tensors": tensors}


def _expand_stream(entry: Any, what: str, *, has_role: bool) -> tuple[Any, dict[str, Any]]:
    if not isinstance(entry, list) or len(entry) not in (_STREAM_ITEMS, _STREAM_ITEMS + 1):
        n = _STREAM_ITEMS - (0 if has_role else 1)
        raise ContainerError(f"{what} must be an array of {n} or {n + 1} items", code="schema")
    role, length, crc, coder = entry[:_STREAM_ITEMS]
    count = entry[_STREAM_ITEMS] if len(entry) > _STREAM_ITEMS else length
    return role, {"length": length, "crc32": crc, "count": count, "coder": expand_coder(coder)}


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
