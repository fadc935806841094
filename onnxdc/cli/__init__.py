"""The command line: the main group and its commands."""

from onnxdc.cli.main import main

__all__ = ["main"]
