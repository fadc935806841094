"""The one place where an operating-system error on a file becomes an onnxdc error message.

Reading a model, a container or a data file and writing any output all fail the same few ways
(missing, a directory, no permission, name too long, disk full). Spelling each message once keeps
them identical across commands, and keeps ``OSError`` tracebacks away from users.
"""

from __future__ import annotations

import os

from onnxdc.errors import OnnxdcError, OutputError


def reason(exc: OSError) -> str:
    """The short, human reason of ``exc`` ("No space left on device"), without errno numbers."""
    if exc.strerror:
        return exc.strerror
    if exc.errno is not None:
        return os.strerror(exc.errno)
    return str(exc) or type(exc).__name__


def read_error(exc: OSError, path: str | os.PathLike[str], *, cls: type[OnnxdcError],
               kind: str | None = None) -> OnnxdcError:
    """The error to raise when reading ``path`` failed with ``exc``.

    Args:
        cls: the error class for this input (a container, a model, a data file).
        kind: what the file should be ("an ONNX file"), named when ``path`` is a directory.
    """
    name = os.fspath(path)
    if isinstance(exc, FileNotFoundError):
        return cls(f"no such file: {name!r}")
    if isinstance(exc, IsADirectoryError) and kind:
        return cls(f"is a directory, not {kind}: {name!r}")
    return cls(f"cannot read {name!r}: {reason(exc)}")


def write_error(exc: OSError, path: str | os.PathLike[str]) -> OutputError:
    """The error to raise when writing ``path`` (or a temporary file beside it) failed with ``exc``."""
    return OutputError(f"cannot write {os.fspath(path)!r}: {reason(exc)}")

