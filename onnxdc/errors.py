"""The onnxdc exception hierarchy.

Every failure the library can anticipate raises a subclass of :class:`OnnxdcError`, so that the
CLI can turn it into one line on stderr and a non-zero exit code, while a genuine bug still shows a
traceback.
"""

from __future__ import annotations

from collections.abc import Callable


class OnnxdcError(Exception):
    """Root of every error onnxdc raises on purpose."""


class ContainerError(OnnxdcError):
    """A ``.onnxdc`` file is malformed, truncated, corrupted or of an unsupported version.

    :attr:`code` names the check that failed, short and stable, so tests and callers assert codes
    while messages stay free to change. In the reader's order: ``"too-short"``, ``"bad-magic"``,
    ``"version"``, ``"header-size"``, ``"header-crc"``, ``"header-zstd"``, ``"header-utf8"``,
    ``"header-json"``, ``"limits"`` (JSON, tensor and output ceilings), ``"schema"``,
    ``"coder-config"``, ``"offsets"`` (streams back to back, payload covered), ``"references"``
    (skeleton, slots, stream ownership), ``"stream-crc"``, ``"short-read"``, ``"stream-decode"``,
    ``"stream-count"``, ``"tensor-crc"``, ``"skeleton-crc"``; ``"malformed"`` for the rest (an
    encoding's own parameter checks).
    """

    default_code = "malformed"
    #: Longest message: a hostile container's names (a 4.0 skeleton's, which zstd stores in a few
    #: bytes whatever their length) must not make the error line a megabyte.
    max_length = 500

    def __init__(self, message: str = "", *, code: str | None = None) -> None:
        if len(message) > self.max_length:
            message = f"{message[:self.max_length]}... ({len(message)} characters)"
        super().__init__(message)
        self.code = code or self.default_code


class CoderError(OnnxdcError):
    """A coder cannot do its job: the base of :class:`EncodeError` and :class:`DecodeError`."""


class EncodeError(CoderError):
    """Symbols cannot be encoded with a coder's settings (a symbol too wide for raw's bits, more
    distinct symbols than Huffman's ``max_bits`` allow): a failure while writing, no container error."""


class DecodeError(CoderError, ContainerError):
    """A coded stream cannot be decoded by its coder: the stream (so the container) is malformed."""

    default_code = "stream-decode"


class ModelError(OnnxdcError):
    """An input model cannot be read, or is not a valid ONNX model."""


class ConfigError(OnnxdcError, ValueError):
    """A setting is impossible (out of range, unknown key, contradictory options)."""


class UnknownCoderError(ConfigError):
    """A coder id (or a coder config) names no registered coder: a bad setting like any other.
    :attr:`coder_id` is the id asked for."""

    def __init__(self, message: str = "", *, coder_id: str | None = None) -> None:
        super().__init__(message)
        self.coder_id = coder_id


class OutputError(OnnxdcError):
    """An output file cannot be written (missing directory, exists without --force, disk full)."""


class OutputPathError(OutputError, ConfigError):
    """An output path cannot be used as given, whatever the data: it names one of the command's
    inputs, ends with a path separator, or is a directory, device, FIFO or socket (exit 2, like a
    bad option)."""


class OutputExistsError(OutputPathError):
    """The output exists and ``--force`` was not given (also when another run took the path
    between the check and the commit): a usage error, exit 2 — the command line, not the data,
    decides whether an existing file may be replaced."""


class DataError(OnnxdcError):
    """An evaluation or calibration data file is unreadable or does not fit the model's inputs."""


class MissingDependencyError(OnnxdcError):
    """An optional package a feature needs is not installed (the message names the extra)."""


#: A notice: one lowercase line about something done on the user's behalf that is no error (a cast,
#: a fallback). Library code never prints; the CLI shows notices as warnings on stderr.
Notice = Callable[[str], None]

#: A progress callback: (steps done, steps total, label). In the automatic mode the label is the
#: phase name; a new phase starts when it changes or the count starts again. Elsewhere it names the
#: item (tensor) just done.
Progress = Callable[[int, int, str], None]
