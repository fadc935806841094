"""Serializing a model whose big tensors arrive later, without building the whole message.

``SerializeToString`` of a model with 100 MB of ``raw_data`` copies the data several times (into
the message, into the serialized buffer, into a Python bytes) before a single byte is written.
:func:`splice_layout` instead serializes the model with a short marker in place of each pending
tensor's data, then rewrites the length prefixes of the messages around each marker for the real
data size. Writing the pieces with the data in place of the markers gives exactly the bytes
``SerializeToString(deterministic=True)`` would give for the filled model, so the data can be
written straight from the decoder, and decoded while earlier pieces are written.
"""

from __future__ import annotations

from collections.abc import Sequence

import onnx
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from onnxdc.coders.base import write_varint

#: Marks a pending tensor's data in the serialized skeleton; followed by the tensor's index.
_MAGIC = b"\xffonnxdc-splice\x00\xfe"
_MARKER_BYTES = len(_MAGIC) + 8
_RAW_DATA = onnx.TensorProto.DESCRIPTOR.fields_by_name["raw_data"]
_LENGTH_DELIMITED = 2

#: A piece of the output: serialized bytes, or the index of a tensor whose data go there.
Piece = bytes | int


class _Unsupported(Exception):
    """The serialized model holds something the splicer does not handle (the caller falls back)."""


def splice_layout(model: onnx.ModelProto, tensors: Sequence[tuple[onnx.TensorProto, int]]) -> list[Piece] | None:
    """Lay out ``model`` with ``tensors`` (proto, data length) filled, as bytes and tensor indices.

    The tensors' ``raw_data`` is set to a marker (the caller fills or discards the model after).
    Returns None when the layout cannot be made safely (a marker found where none was put, or a
    wire feature this walker does not handle); the caller then serializes the filled model.
    """
    for i, (proto, _) in enumerate(tensors):
        proto.raw_data = _MAGIC + i.to_bytes(8, "little")
    data = model.SerializeToString(deterministic=True)
    if data.count(_MAGIC) != len(tensors):
        return None
    sizes = [n for _, n in tensors]
    try:
        pieces, _ = _walk(memoryview(data), 0, len(data), model.DESCRIPTOR, sizes)
    except _Unsupported:
        return None
    if sorted(p for p in pieces if isinstance(p, int)) != list(range(len(tensors))):
        return None
    return pieces


def _walk(data: memoryview, start: int, end: int, desc: Descriptor, sizes: list[int]) -> tuple[list[Piece], int]:
    """Re-lay the fields of one message in ``data[start:end]``; return its pieces and new length."""
    pieces: list[Piece] = []
    length = 0
    pos = start
    copy_from = start  # fields without a marker are copied through in one piece
    raw = bytes(data[start:end])
    while pos < end:
        field_start = pos
        tag, pos = _varint(data, pos, end)
        wire = tag & 7
        if wire == 0:
            _, pos = _varint(data, pos, end)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == _LENGTH_DELIMITED:
            size, body = _varint(data, pos, end)
            pos = body + size
            if raw.find(_MAGIC, body - start, pos - start) < 0:
                continue
            field = desc.fields_by_number.get(tag >> 3)
            if field is None:
                raise _Unsupported
            if copy_from < field_start:
                pieces.append(bytes(data[copy_from:field_start]))
                length += field_start - copy_from
            head = bytes(data[field_start:body - _varint_len(data, field_start, body)])
            if field is _RAW_DATA or (field.full_name == _RAW_DATA.full_name):
                if size != _MARKER_BYTES or bytes(data[body:body + len(_MAGIC)]) != _MAGIC:
                    raise _Unsupported
                index = int.from_bytes(data[body + len(_MAGIC):pos], "little")
                if index >= len(sizes):
                    raise _Unsupported
                prefix = head + write_varint(sizes[index])
                pieces += [prefix, index]
                length += len(prefix) + sizes[index]
            elif field.type == FieldDescriptor.TYPE_MESSAGE:
                inner, inner_len = _walk(data, body, pos, field.message_type, sizes)
                prefix = head + write_varint(inner_len)
                pieces += [prefix, *inner]
                length += len(prefix) + inner_len
            else:
                raise _Unsupported
            copy_from = pos
        else:
            raise _Unsupported
    if pos != end:
        raise _Unsupported
    if copy_from < end:
        pieces.append(bytes(data[copy_from:end]))
        length += end - copy_from
    return pieces, length


def _varint(data: memoryview, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise _Unsupported
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _varint_len(data: memoryview, field_start: int, body: int) -> int:
    """Bytes of the length varint that ends at ``body`` (the tag varint precedes it)."""
    _, after_tag = _varint(data, field_start, body)
    return body - after_tag


