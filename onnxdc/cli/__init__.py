"""The command line: the main group (:mod:`onnxdc.cli.main`: error -> exit-code mapping, shared
options) and the commands, each module registering its own on the group. Commands parse options,
call :mod:`onnxdc.api` and print; no numerics, no orchestration.
"""

from onnxdc.cli.main import main

# Importing the command modules registers their commands on ``main``.
# isort: off
from onnxdc.cli import analysis as _analysis  # noqa: E402,F401
from onnxdc.cli import compress as _compress  # noqa: E402,F401
from onnxdc.cli import decompress as _decompress  # noqa: E402,F401
from onnxdc.cli import inspect_cmd as _inspect  # noqa: E402,F401
from onnxdc.cli import report as _report  # noqa: E402,F401
# isort: on

__all__ = ["main"]
