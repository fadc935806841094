"""Checks of a produced model with onnx's own checker."""

from __future__ import annotations

import os

import onnx


def check_model_quietly(path: str | os.PathLike[str]) -> str | None:
    """Run ``onnx.checker`` on a model file; return its complaint's first line, or None if it passes.

    The checker is given the path, not a loaded proto, so models with external data (or over the
    2 GB protobuf limit) are checked too.
    """
    try:
        onnx.checker.check_model(os.fspath(path))
    except (onnx.checker.ValidationError, onnx.onnx_cpp2py_export.checker.ValidationError) as exc:  # type: ignore[attr-defined]
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    except Exception as exc:  # noqa: BLE001 - the checker raises several unrelated types
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    return None
