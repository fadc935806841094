"""File to file: compress and decompress models of any size, one tensor at a time.

A model over 2 GB cannot even be one protobuf message, and loading it whole (plus its coded
streams) multiplies its size in memory. These functions keep external data on disk until their
tensor is coded, spool coded streams to a temporary file, read containers piece by piece, and
write decoded tensors straight to an external data file — while producing exactly the bytes of
the in-memory :func:`onnxdc.pipeline.compress` and :func:`onnxdc.pipeline.decompress`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from onnxdc.container import open_container
from onnxdc.errors import ConfigError, ContainerError
from onnxdc.files import EXTERNAL_DATA_THRESHOLD, write_atomic, write_model
from onnxdc.graphio import load_model_lazy
from onnxdc.header import Header
from onnxdc.pipeline import CompressConfig, ContainerWriter, Progress, decoded_tensors, encode_model


def compress_file(path: str | os.PathLike[str], out: str | os.PathLike[str], *,
                  config: CompressConfig | None = None, progress: Progress | None = None) -> tuple[Header, int]:
    """Compress a model file into a container file, one tensor at a time.

    External data stay on disk until their tensor is coded, and the coded streams are spooled to a
    temporary file beside ``out``, so memory holds the graph, a few tensors in flight and the
    header — not the model. The output equals :func:`compress`'s bytes for the same model; it is
    written atomically. Calibration needs the whole model in onnxruntime: use :func:`compress`.

    Returns:
        The container's header and its stored size (prefix included), for reports.
    """
    config = config if config is not None else CompressConfig()
    if config.calibration is not None:
        raise ConfigError("compress_file does not calibrate; load the model and use compress()")
    skeleton, read = load_model_lazy(path)
    out_path = Path(out)
    with tempfile.TemporaryFile(dir=out_path.parent if str(out_path.parent) else ".") as spool:
        writer = ContainerWriter(spool=spool)
        header, _ = encode_model(skeleton, writer=writer, config=config, read=read, keep_values=False,
                                 progress=progress)
        write_atomic(out_path, writer.iter_bytes(header))
    return header, writer.header_size


def decompress_file(path: str | os.PathLike[str], out: str | os.PathLike[str], *, external_data: bool | None = None,
                    progress: Progress | None = None) -> bool:
    """Decode a container file into a model file, one tensor at a time.

    The container is read piece by piece and, with external data, each tensor goes straight to
    ``OUT.data``, so memory holds the graph and one tensor. ``external_data=None`` chooses it when
    the tensors exceed what one protobuf message can hold. Returns whether external data were written.
    """
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below, after the lazy decoding is consumed
    except FileNotFoundError:
        raise ContainerError(f"no such file: {str(path)!r}") from None
    except OSError as exc:
        raise ContainerError(f"cannot read {str(path)!r}: {exc.strerror}") from None
    with fh:
        container = open_container(fh)
        model, tensors = decoded_tensors(container, progress=progress)
        if external_data is None:
            external_data = needs_external_data(container.header)
        write_model(model, out, external_data=external_data, tensors=tensors)
    return external_data


def needs_external_data(header: Header) -> bool:
    """Whether the decoded tensors are too large for one protobuf message (write external data)."""
    return sum(t.nbytes for t in header.tensors) > EXTERNAL_DATA_THRESHOLD
