"""The ``onnxdc`` console entry point: signal handling that holds from the first line on.

It imports nothing heavy before installing its handlers, so an interrupt that lands anywhere —
while numpy and onnx are still being imported, or halfway through writing an output — ends with
one line on stderr and the shell's usual status (130 for SIGINT, 143 for SIGTERM), after every
``finally`` and context manager on the way (the ones that remove temporary files) has run.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence
from types import FrameType


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived.

    A ``BaseException`` like ``KeyboardInterrupt``, so no ``except Exception`` swallows it, but not
    a ``KeyboardInterrupt``, which click would turn into "Aborted!" and exit 1.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    @property
    def message(self) -> str:
        return "interrupted" if self.signum == signal.SIGINT else "terminated"


def _raise(signum: int, _frame: FrameType | None) -> None:
    raise Interrupted(signum)


def install_handlers() -> None:
    """Make SIGINT and SIGTERM raise :class:`Interrupted` in the main thread."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _raise)


def run(argv: Sequence[str] | None = None) -> None:
    """Run the command line (``argv`` or ``sys.argv[1:]``) as the ``onnxdc`` program."""
    install_handlers()
    try:
        from onnxdc.cli import main

        main.main(args=list(argv) if argv is not None else None, prog_name="onnxdc")
    except Interrupted as exc:
        for signum in (signal.SIGINT, signal.SIGTERM):  # a second signal now ends the process at once
            signal.signal(signum, signal.SIG_DFL)
        sys.stderr.write(f"onnxdc: {exc.message}\n")
        sys.stderr.flush()
        sys.exit(exc.exit_code)
