"""Safe output files: written to a temporary file beside the target, then renamed into place.

A crash, a full disk or an interrupt never leaves a half-written output, and an output is never
written over one of the command's inputs.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import onnx
from onnx import TensorProto

from onnxdc.tensor_encodings import RawBuffer, as_bytes
from onnxdc.errors import OutputError
from onnxdc.graphio import iter_tensors
from onnxdc.splice import splice_layout


def check_output_path(out: str | os.PathLike[str], *, force: bool,
                      inputs: Iterable[str | os.PathLike[str]] = ()) -> Path:
    """Validate an output path before any work is done.

    Raises:
        OutputError: the output is one of the inputs, exists without ``force``, or its directory
            is missing or not writable.
    """
    path = Path(out)
    for inp in inputs:
        if _same_file(path, Path(inp)):
            raise OutputError(f"output {str(path)!r} is the input file; refusing to overwrite it")
    if path.exists() and not force:
        raise OutputError(f"output {str(path)!r} exists; use --force to overwrite it")
    if path.is_dir():
        raise OutputError(f"output {str(path)!r} is a directory")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"output directory {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"output directory {str(parent)!r} is not writable")
    return path


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def write_atomic(path: str | os.PathLike[str], data: bytes | memoryview | Iterable[bytes | memoryview]) -> None:
    """Write ``data`` to ``path`` through a temporary file and an atomic rename.

    Raises:
        OutputError: the write failed (the temporary file is removed, the target is untouched).
    """
    target = Path(path)
    parent = target.parent if str(target.parent) else Path(".")
    chunks = [data] if isinstance(data, (bytes, bytearray, memoryview)) else data
    tmp_name = None
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent)
        with os.fdopen(fd, "wb") as fh:
            for chunk in chunks:
                fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp_name, 0o666 & ~_umask())
        os.replace(tmp_name, target)
        tmp_name = None
    except OSError as exc:
        raise OutputError(f"cannot write {str(target)!r}: {exc.strerror or exc}") from None
    finally:
        if tmp_name is not None:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: Models whose tensor data exceed this are written with external data (protobuf caps a message at 2 GiB).
EXTERNAL_DATA_THRESHOLD = 1800 * 1024 * 1024
#: Tensors at least this large go to the external data file.
EXTERNAL_MIN_BYTES = 1024


def external_data_path(out: str | os.PathLike[str]) -> Path:
    """Where :func:`write_model` puts the external data of ``out``: beside it, ``<name>.data``."""
    p = Path(out)
    return p.with_name(p.name + ".data")


def write_model(model: onnx.ModelProto, path: str | os.PathLike[str], *, external_data: bool,
                tensors: Iterable[tuple[TensorProto, RawBuffer]] | None = None) -> None:
    """Write a model atomically; with ``external_data``, large tensors go to ``<path>.data``.

    ``tensors`` (proto, raw bytes) pairs fill the model's tensors as they come — lazily decoded,
    so only one needs to be in memory when writing external data; without it, the tensors already
    holding raw_data are the ones moved out. The data file is written (through its own temporary
    file) before the model that refers to it, so a model on disk never points at missing data.
    ``model`` is modified.

    Raises:
        OutputError: a file cannot be written (nothing half-written is left behind).
    """
    if tensors is None:
        tensors = [(r.proto, r.proto.raw_data) for r in iter_tensors(model) if r.proto.HasField("raw_data")]
    if not external_data:
        for proto, raw in tensors:
            proto.raw_data = as_bytes(raw)
        write_atomic(path, model.SerializeToString(deterministic=True))
        return
    data_path = external_data_path(path)

    def chunks() -> Iterator[RawBuffer]:
        offset = 0
        for t, data in tensors:
            if len(data) < EXTERNAL_MIN_BYTES:
                t.raw_data = as_bytes(data)
                continue
            pad = (-offset) % 64  # aligned, as onnx's own writer can be asked to do
            if pad:
                yield b"\0" * pad
                offset += pad
            t.ClearField("raw_data")
            t.data_location = TensorProto.EXTERNAL
            for key, value in (("location", data_path.name), ("offset", str(offset)), ("length", str(len(data)))):
                entry = t.external_data.add()
                entry.key, entry.value = key, value
            yield data
            offset += len(data)

    write_atomic(data_path, chunks())
    try:
        write_atomic(path, model.SerializeToString(deterministic=True))
    except OutputError:
        data_path.unlink(missing_ok=True)
        raise


def write_model_inline(model: onnx.ModelProto, path: str | os.PathLike[str],
                       tensors: Sequence[tuple[TensorProto, int]],
                       data: Callable[[list[int]], Iterable[RawBuffer]]) -> None:
    """Write a model atomically with every tensor of ``tensors`` (proto, byte length) inline.

    ``data(order)`` yields the raw bytes of the tensors at those indices of ``tensors``, in that
    order: the order their data sit in the file, so each is written as it comes (see
    :mod:`onnxdc.splice`) and the filled model is never built in memory. The bytes equal
    ``SerializeToString(deterministic=True)`` of the filled model. ``model`` is modified.

    Raises:
        OutputError: the file cannot be written (nothing half-written is left behind).
    """
    pieces = splice_layout(model, tensors)
    if pieces is None:  # fill the model and serialize it whole
        protos = [proto for proto, _ in tensors]
        write_model(model, path, external_data=False, tensors=zip(protos, data(list(range(len(tensors))))))
        return
    filled = iter(data([p for p in pieces if isinstance(p, int)]))
    write_atomic(path, (p if isinstance(p, bytes) else next(filled) for p in pieces))
