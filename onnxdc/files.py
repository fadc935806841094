"""Safe output files: written to a temporary file beside the target, then renamed into place.

A crash, a full disk or an interrupt never leaves a half-written output, and an output is never
written over one of the command's inputs.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import onnx
from onnx import TensorProto

from onnxdc.encodings import RawBuffer, as_bytes
from onnxdc.errors import OnnxdcError, OutputError
from onnxdc.graphio import iter_tensors
from onnxdc.splice import splice_layout


def regular_file_size(path: str | os.PathLike[str], *, error: type[OnnxdcError], what: str) -> int:
    """The size of input file ``path``, refused (as ``error``) unless it is a regular file.

    ``/dev/zero`` reads forever and a FIFO blocks the reader until someone writes: neither is a
    model or a container, so every input is checked before it is opened, and read no further than
    the size found here.

    Raises:
        OnnxdcError: ``error``: the file is missing, unreadable, a directory, or not a regular file.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise error(f"no such file: {str(path)!r}") from None
    except (OSError, ValueError) as exc:
        raise error(f"cannot read {what} {str(path)!r}: {getattr(exc, 'strerror', None) or exc}") from None
    _check_regular(st, path, error=error, what=what)
    return st.st_size


def refuse_special_file(path: str | os.PathLike[str], *, error: type[OnnxdcError], what: str) -> None:
    """Refuse (as ``error``) an input that exists but is not a regular file, before a reader that
    reports missing or unreadable files itself opens it (``numpy.load``, ``Path.read_text``).

    Raises:
        OnnxdcError: ``error``: the path is a directory, a FIFO, a device or a socket.
    """
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return  # the reader's own error says it
    _check_regular(st, path, error=error, what=what)


def read_regular_file(path: str | os.PathLike[str], *, error: type[OnnxdcError], what: str) -> bytes:
    """The bytes of input file ``path``, at most its size: :func:`regular_file_size`'s checks, then
    the same checks on the opened file (so swapping the file for a FIFO meanwhile cannot block us).

    Raises:
        OnnxdcError: ``error``, as :func:`regular_file_size`.
    """
    regular_file_size(path, error=error, what=what)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
        with os.fdopen(fd, "rb") as fh:
            st = os.fstat(fh.fileno())
            _check_regular(st, path, error=error, what=what)
            return fh.read(st.st_size)
    except FileNotFoundError:
        raise error(f"no such file: {str(path)!r}") from None
    except OSError as exc:
        raise error(f"cannot read {what} {str(path)!r}: {exc.strerror or exc}") from None


def _check_regular(st: os.stat_result, path: str | os.PathLike[str], *, error: type[OnnxdcError], what: str) -> None:
    if stat.S_ISREG(st.st_mode):
        return
    kinds = [(stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")]
    kind = next((name for test, name in kinds if test(st.st_mode)), "not a file")
    raise error(f"{what} {str(path)!r} is {kind}, expected a regular file")


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
