"""Decompression: a container back to a ModelProto, every tensor checked against the skeleton and
its checksum."""

from __future__ import annotations

import zlib
from collections.abc import Iterator

import onnx

from onnxdc.errors import ContainerError, ModelError, Progress
from onnxdc.format.container import (
    DEFAULT_MAX_OUTPUT_BYTES,
    DEFAULT_MAX_RATIO,
    Container,
    TensorInfo,
    check_output_size,
    output_headroom,
    read_container,
)
from onnxdc.format.registry import RawBuffer, as_bytes, batched, decode_tensor
from onnxdc.onnx_io.names import names_are_text, restore_names, restored_growth
from onnxdc.onnx_io.tensors import has_data, iter_tensors, parse_model, set_raw_data
from onnxdc.pipeline.jobs import ordered_map

#: Largest message protobuf serializes: a restored skeleton must stay one (its names' growth is
#: bounded by this less four times the marked skeleton, room for the length prefixes that grow).
_MAX_PROTO_BYTES = (1 << 31) - 1


def decompress(data: bytes | Container, *, progress: Progress | None = None,
               max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES, max_ratio: float = DEFAULT_MAX_RATIO
               ) -> onnx.ModelProto:
    """Rebuild the ModelProto a container holds, every tensor checked against its checksum.

    A container declaring more output than ``max_output_bytes``, or more than ``max_ratio`` times
    its size (beyond 256 MiB), is refused before anything is decoded
    (:func:`onnxdc.format.container.check_output_size`).

    Raises:
        ContainerError: the container is malformed, corrupted, does not match its skeleton, or
            declares more output than the ceilings allow.
    """
    container = data if isinstance(data, Container) else read_container(data)
    check_output_size(container, max_output_bytes=max_output_bytes, max_ratio=max_ratio)
    model, tensors = decoded_tensors(container, progress=progress, max_output_bytes=max_output_bytes,
                                     max_ratio=max_ratio)
    for proto, raw in tensors:
        set_raw_data(proto, raw)
    return model


def decoded_tensors(container: Container, *, progress: Progress | None = None,
                    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES, max_ratio: float = DEFAULT_MAX_RATIO
                    ) -> tuple[onnx.ModelProto, Iterator[tuple[onnx.TensorProto, bytes]]]:
    """The skeleton model and a lazy sequence of (its tensor, decoded raw bytes) for every stored tensor.

    Each tensor is checked against the skeleton (slot, name, dtype, shape) before anything is
    decoded, and against its checksum as it is decoded. The ceilings bound the skeleton's
    restored names (:func:`matched_tensors`).
    """
    model, pairs = matched_tensors(container, max_output_bytes=max_output_bytes, max_ratio=max_ratio)

    def tensors() -> Iterator[tuple[onnx.TensorProto, bytes]]:
        decoded = decode_in_order(container, [info for _, info in pairs])
        for done, ((t, info), raw) in enumerate(zip(pairs, decoded), 1):
            if progress:  # before the yield: a consumer may stop after the last tensor
                progress(done, len(pairs), info.name)
            yield t, as_bytes(raw)

    return model, tensors()


def decode_in_order(container: Container, infos: list[TensorInfo], jobs: int = 1) -> Iterator[RawBuffer]:
    """The decoded raw bytes of ``infos``' tensors, in that order: streams prefetched in bounded
    batches (:func:`onnxdc.format.registry.batched`), tensors decoded on ``jobs`` threads (at most
    ``2 * jobs`` ahead of the consumer)."""
    return ordered_map(lambda k: decode_tensor(infos[k], container), batched(container, infos), jobs)


def matched_tensors(container: Container, *, max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
                    max_ratio: float = DEFAULT_MAX_RATIO
                    ) -> tuple[onnx.ModelProto, list[tuple[onnx.TensorProto, TensorInfo]]]:
    """The skeleton model and, for every stored tensor in header order, its proto and header entry.

    A 3.0 skeleton's restored names are output no header count declares, and a few bytes of
    marks may stand for gigabytes of them: they may add only what the output ceilings leave
    (:func:`onnxdc.format.container.output_headroom`).

    Raises:
        ContainerError: the skeleton does not decode, or its names do not restore within the
            ceilings, or a tensor entry does not match the skeleton's tensor in its slot (name,
            dtype, shape), or that tensor already holds data.
    """
    header = container.header
    skel_bytes = container.decode_stream(header.skeleton).tobytes()
    if not header.skeleton_names and zlib.crc32(skel_bytes) != header.skeleton_crc32:
        raise ContainerError("skeleton checksum mismatch after decoding", code="skeleton-crc")
    try:
        model = parse_model(skel_bytes, name="skeleton")
    except ModelError as exc:
        raise ContainerError(f"the skeleton stream does not hold a model: {exc}") from None
    if header.skeleton_names:  # the derived names come back; the CRC is the original skeleton's
        if not names_are_text(model):
            raise ContainerError("the skeleton's node names, op types, inputs or outputs are not valid UTF-8",
                                 code="header-utf8")
        headroom = max(0, min(output_headroom(container, max_output_bytes=max_output_bytes, max_ratio=max_ratio),
                              _MAX_PROTO_BYTES - 4 * len(skel_bytes)))
        nodes = container.version[0] >= 4  # 4.0 marks node names too
        if restored_growth(model, stop_above=headroom, nodes=nodes) > headroom:
            raise ContainerError(
                f"the skeleton's names restore to more than {headroom} bytes, what the output limits leave "
                f"(--max-output-bytes / max_output_bytes, --max-ratio / max_ratio raise them, to 2 GiB)",
                code="limits")
        try:
            restore_names(model, nodes=nodes)
        except ValueError as exc:
            raise ContainerError(f"the skeleton's names do not restore: {exc}", code="skeleton-crc") from None
        if zlib.crc32(model.SerializeToString(deterministic=True)) != header.skeleton_crc32:
            raise ContainerError("skeleton checksum mismatch after decoding", code="skeleton-crc")
    slots = {info.slot for info in header.tensors}  # a hostile skeleton may hold millions of others
    by_slot = {r.slot: r for r in iter_tensors(model) if r.slot in slots}
    pairs = []
    for info in header.tensors:
        ref = by_slot.get(info.slot)
        if ref is None:
            raise ContainerError(f"tensor {info.name!r} refers to slot {info.slot}, which the model lacks")
        t = ref.proto
        if t.name != info.name or t.data_type != info.dtype or tuple(t.dims) != info.shape:
            raise ContainerError(
                f"tensor {info.name!r} (slot {info.slot}) does not match the skeleton's tensor {t.name!r}"
            )
        if has_data(t):
            raise ContainerError(f"slot {info.slot} ({t.name!r}) already holds data in the skeleton")
        pairs.append((t, info))
    return model, pairs

