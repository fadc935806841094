"""File to file: compress and decompress models of any size, one tensor at a time.

A model over 2 GB cannot even be one protobuf message, and loading it whole (plus its coded
streams) multiplies its size in memory. These functions keep external data on disk until their
tensor is coded, spool coded streams to a temporary file, read containers piece by piece, and
write decoded tensors straight to an external data file — while producing exactly the bytes of
the in-memory :func:`onnxdc.pipeline.encode.compress` and :func:`onnxdc.pipeline.decode.decompress`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from onnxdc.errors import ConfigError, ContainerError, Notice, Progress
from onnxdc.fileio.atomic import regular_file_size, spool_beside, write_atomic
from onnxdc.fileio.oserrors import read_error
from onnxdc.format.container import DEFAULT_MAX_OUTPUT_BYTES, DEFAULT_MAX_RATIO, check_output_size, open_container
from onnxdc.format.header import Header
from onnxdc.format.registry import RawBuffer
from onnxdc.onnx_io.tensors import load_model_lazy
from onnxdc.onnx_io.write import EXTERNAL_DATA_THRESHOLD, write_model, write_model_inline
from onnxdc.pipeline.decode import decode_in_order, matched_tensors
from onnxdc.pipeline.encode import CompressConfig, ContainerWriter, encode_model

#: Coded bytes kept in memory before compress_file spools them to disk.
SPOOL_ABOVE = 128 << 20


def compress_file(path: str | os.PathLike[str], out: str | os.PathLike[str], *,
                  config: CompressConfig | None = None, progress: Progress | None = None,
                  notice: Notice | None = None, overwrite: bool = True) -> tuple[Header, int]:
    """Compress a model file into a container file, one tensor at a time.

    External data stay on disk until their tensor is coded, and coded streams beyond
    :data:`SPOOL_ABOVE` bytes are spooled to a temporary file beside ``out``, so memory holds the
    graph, a few tensors in flight, the header and at most that much coded data — not the model.
    The output equals :func:`compress`'s bytes for the same model; it is written atomically
    (see :func:`onnxdc.fileio.atomic.write_atomic` for ``overwrite``). Calibration needs the whole model
    in onnxruntime: use :func:`compress`.

    Returns:
        The container's header and its stored size (prefix included), for reports.
    """
    config = config if config is not None else CompressConfig()
    if config.calibration is not None:
        raise ConfigError("compress_file does not calibrate; load the model and use compress()")
    skeleton, read = load_model_lazy(path)
    out_path = Path(out)
    with spool_beside(out_path) as spool:
        writer = ContainerWriter(spool=spool, spool_above=SPOOL_ABOVE)
        header, _, _ = encode_model(skeleton, writer=writer, config=config, read=read, keep_values=False,
                                    progress=progress, notice=notice)
        write_atomic(out_path, writer.iter_bytes(header), overwrite=overwrite)
    return header, writer.header_size


def decompress_file(path: str | os.PathLike[str], out: str | os.PathLike[str], *, external_data: bool | None = None,
                    progress: Progress | None = None, jobs: int = 1, overwrite: bool = True,
                    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES, max_ratio: float = DEFAULT_MAX_RATIO) -> bool:
    """Decode a container file into a model file, one tensor at a time.

    The container is read piece by piece and each tensor is written as it is decoded (inline,
    spliced into the serialized skeleton, or to a data file beside ``out`` with external data: see
    :func:`onnxdc.onnx_io.write.write_model`), so memory holds
    the graph and a few tensors. ``jobs`` threads decode tensors ahead of the writer (numpy, zlib
    and zstd release the GIL); the output does not depend on it. ``external_data=None`` chooses
    external data when the tensors exceed what one protobuf message can hold. Returns whether
    external data were written. ``overwrite`` as in :func:`onnxdc.fileio.atomic.write_atomic`.

    A container declaring more output than ``max_output_bytes``, or more than ``max_ratio`` times
    its size (beyond 256 MiB), is refused before anything is decoded or written
    (:func:`onnxdc.format.container.check_output_size`).
    """
    regular_file_size(path, error=ContainerError, what="container")  # not /dev/zero, not a FIFO
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below, after the lazy decoding is consumed
    except OSError as exc:
        raise read_error(exc, path, cls=ContainerError) from None
    with fh:
        container = open_container(fh, check_streams=False)  # each stream checked as it is decoded
        check_output_size(container, max_output_bytes=max_output_bytes, max_ratio=max_ratio)
        model, pairs = matched_tensors(container, max_output_bytes=max_output_bytes, max_ratio=max_ratio)
        if external_data is None:
            external_data = needs_external_data(container.header)

        def data(order: list[int]) -> Iterator[RawBuffer]:
            decoded = decode_in_order(container, [pairs[i][1] for i in order], jobs)
            for done, (i, raw) in enumerate(zip(order, decoded), 1):
                if progress:  # before the yield: the writer stops after the last tensor
                    progress(done, len(order), pairs[i][1].name)
                yield raw

        if external_data:
            protos = [t for t, _ in pairs]
            write_model(model, out, external_data=True, tensors=zip(protos, data(list(range(len(pairs))))),
                        overwrite=overwrite)
        else:
            write_model_inline(model, out, [(t, info.nbytes) for t, info in pairs], data, overwrite=overwrite)
    return external_data


def needs_external_data(header: Header) -> bool:
    """Whether the decoded tensors are too large for one protobuf message (write external data)."""
    return sum(t.nbytes for t in header.tensors) > EXTERNAL_DATA_THRESHOLD
