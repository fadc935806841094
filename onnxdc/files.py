"""Safe output files: written to a temporary file beside the target, then renamed into place.

A crash, a full disk or an interrupt never leaves a half-written output, and an output is never
written over one of the command's inputs.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from onnxdc.errors import OutputError


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


def write_atomic(path: str | os.PathLike[str], data: bytes | Iterable[bytes]) -> None:
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
