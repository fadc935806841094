"""Shared helpers of the CLI tests: run a command, check the one-line error, fake a full disk."""

from __future__ import annotations

import errno
import os
from typing import Any

from click.testing import CliRunner, Result

from onnxdc.cli.main import main


def run(*args: Any) -> Result:
    """Run ``onnxdc ARGS`` in process (every argument as a string)."""
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_error(result: Result, code: int, *fragments: str) -> str:
    """The command failed with ``code`` and one 'onnxdc: error:' line naming each fragment."""
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception  # no escaped exception
    assert "Traceback" not in result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("onnxdc: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


class FullDisk:
    """A file object that takes the first ``keep`` bytes written, then fails like a full disk."""

    def __init__(self, fh: Any, keep: int = 1000) -> None:
        self.fh = fh
        self.keep = keep

    def write(self, data: bytes) -> int:
        self.fh.write(bytes(data)[:self.keep])
        self.fh.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fh, name)

    def __enter__(self) -> FullDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.fh.close()
