"""Safe output files: checked before any work, written beside the target, committed in one step.

A crash, a full disk or an interrupt never leaves a half-written output or a temporary file (short
of SIGKILL), an output is never written over one of the command's inputs, a device or a FIFO, and
two writers racing for a new path never both succeed. Every OS error on an output becomes one
:class:`~onnxdc.errors.OutputError` line (:mod:`onnxdc.fileio.oserrors`).
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from onnxdc.errors import OnnxdcError, OutputError, OutputExistsError, OutputPathError
from onnxdc.fileio.oserrors import read_error, write_error

#: Used when the file system does not say how long a file name may be.
_NAME_MAX_FALLBACK = 255
#: ``os.link`` failures that mean "this file system has no hard links" (fall back to O_EXCL).
_NO_HARD_LINKS = frozenset({errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS,
                            errno.EXDEV})


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
    except OSError as exc:
        raise read_error(exc, path, cls=error) from None
    except ValueError as exc:  # a NUL byte in the name
        raise error(f"cannot read {what} {str(path)!r}: {exc}") from None
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
    except OSError as exc:
        raise read_error(exc, path, cls=error) from None


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

    ``out`` names a directory entry: any entry there counts as existing (a dangling or looping
    symbolic link too). With ``force`` a regular file or a symbolic link is replaced — the link
    itself, never the file it points to; anything else (directory, device, FIFO, socket) is never
    replaced. Nothing is written over an input, whichever of its names ``out`` uses.

    Raises:
        OutputPathError: ``out`` is one of ``inputs``, ends with a path separator, or is not a
            regular file or symbolic link (a usage error: no data makes it work); its subclass
            OutputExistsError: ``out`` exists without ``force``.
        OutputError: ``out``'s name is too long, or its directory is missing or not writable.
    """
    text = os.fspath(out)
    if text.endswith(("/", os.sep)):
        raise OutputPathError(f"output {text!r} ends with a path separator; expected a file name")
    path = Path(text)
    parent = _parent(path)
    check_name_fits(path)
    for inp in inputs:
        if _same_file(path, Path(inp)):
            raise OutputPathError(f"output {text!r} is the input file {os.fspath(inp)!r}; refusing to overwrite it")
    try:
        st: os.stat_result | None = os.lstat(path)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise write_error(exc, path) from None
    if st is not None:
        _refuse_special(path, st)
        if not force:
            raise OutputExistsError(f"output {text!r} exists; use --force to overwrite it")
    if not parent.is_dir():
        raise OutputError(f"output directory {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"output directory {str(parent)!r} is not writable")
    return path


def check_name_fits(path: Path) -> None:
    """Refuse a file name longer than the file system allows, before any work is done.

    Raises:
        OutputError: the last component of ``path`` is too long.
    """
    size = len(os.fsencode(path.name))
    try:
        limit = os.pathconf(_parent(path), "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = _NAME_MAX_FALLBACK
    if size > limit:
        raise OutputError(f"cannot write {str(path)!r}: file name too long ({size} bytes; the file system "
                          f"allows {limit})")


def _parent(path: Path) -> Path:
    return path.parent if str(path.parent) else Path(".")


def _refuse_special(path: Path, st: os.stat_result) -> None:
    """Refuse to replace anything at ``path`` but a regular file or a symbolic link."""
    mode = st.st_mode
    if stat.S_ISREG(mode) or stat.S_ISLNK(mode):
        return
    kind = ("a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "not a file")
    raise OutputPathError(f"output {str(path)!r} is {kind}, not a regular file; refusing to replace it")


def _same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` are one file (same device and inode, through any links)."""
    try:
        sa, sb = os.stat(a), os.stat(b)
    except (OSError, ValueError):
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def write_atomic(path: str | os.PathLike[str], data: bytes | memoryview | Iterable[bytes | memoryview], *,
                 overwrite: bool = True) -> None:
    """Write ``data`` to ``path`` through a temporary file beside it and one commit step.

    With ``overwrite`` the commit is an atomic rename over whatever file or link is there; without
    it the commit is exclusive (a hard link that fails if ``path`` appeared meanwhile), so two
    writers racing for a new path never both succeed. Any failure or interrupt removes the
    temporary file and leaves ``path`` as it was.

    Raises:
        OutputError: the write failed, or ``path`` exists and ``overwrite`` is false.
    """
    target = Path(path)
    chunks = [data] if isinstance(data, (bytes, bytearray, memoryview)) else data
    with temporary_beside(target) as (fh, tmp):
        try:
            for chunk in chunks:
                fh.write(chunk)
            finish(fh, tmp)
            commit(tmp, target, overwrite=overwrite)
        except OSError as exc:
            raise write_error(exc, target) from None


@contextmanager
def temporary_beside(target: Path) -> Iterator[tuple[BinaryIO, Path]]:
    """A new hidden temporary file beside ``target``, removed on exit unless it was committed."""
    prefix = "." + target.name[:_TEMP_NAME_CHARS] + "."
    try:
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=_parent(target))
    except OSError as exc:
        raise write_error(exc, target) from None
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh, tmp
    finally:
        try:
            os.unlink(tmp)
        except OSError:  # committed (renamed away), or already gone
            pass


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: Characters of the target's name kept in its temporary file's name (which must fit the name limit).
_TEMP_NAME_CHARS = 48


def finish(fh: BinaryIO, tmp: Path) -> None:
    """Flush ``fh`` to the disk and give ``tmp`` the permissions a new file gets."""
    fh.flush()
    os.fsync(fh.fileno())
    os.chmod(tmp, 0o666 & ~_umask())


def commit(tmp: Path, target: Path, *, overwrite: bool) -> None:
    """Move the finished ``tmp`` to ``target``: the single step at which the output appears.

    Raises:
        OutputExistsError: ``target`` exists and ``overwrite`` is false.
        OutputError: ``target`` is a directory, device, FIFO or socket.
        OSError: the file system refused the rename or link.
    """
    if overwrite:
        try:
            _refuse_special(target, os.lstat(target))
        except FileNotFoundError:
            pass
        os.replace(tmp, target)
        return
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise OutputExistsError(f"output {str(target)!r} exists; use --force to overwrite it") from None
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        _claim_then_replace(tmp, target)
        return
    os.unlink(tmp)


def _claim_then_replace(tmp: Path, target: Path) -> None:
    """Without hard links: create ``target`` exclusively (empty), then rename ``tmp`` over it."""
    try:
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        raise OutputExistsError(f"output {str(target)!r} exists; use --force to overwrite it") from None
    try:
        os.replace(tmp, target)
    except BaseException:
        target.unlink(missing_ok=True)  # the empty placeholder is ours
        raise


class _Spool:
    """A scratch file whose every OS error is an :class:`OutputError` naming the output it serves."""

    def __init__(self, fh: BinaryIO, target: Path) -> None:
        self._fh, self._target = fh, target

    def _call(self, name: str, *args: object) -> object:
        try:
            return getattr(self._fh, name)(*args)
        except OSError as exc:
            raise write_error(exc, self._target) from None

    def write(self, data: bytes | memoryview) -> int:
        return self._call("write", data)  # type: ignore[return-value]

    def read(self, size: int = -1) -> bytes:
        return self._call("read", size)  # type: ignore[return-value]

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._call("seek", offset, whence)  # type: ignore[return-value]

    def flush(self) -> None:
        self._call("flush")


@contextmanager
def spool_beside(target: Path) -> Iterator[BinaryIO]:
    """An unnamed temporary file in ``target``'s directory (gone when closed, even after a crash
    where the system supports unnamed files), for data too large to keep in memory.

    Raises:
        OutputError: the file cannot be created, written or read back (a full disk, say).
    """
    try:
        fh = tempfile.TemporaryFile(dir=_parent(target))
    except OSError as exc:
        raise write_error(exc, target) from None
    with fh:
        yield _Spool(fh, target)  # type: ignore[misc]
