"""Fixtures several test modules share."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from model_builders import hidden_state_model


@pytest.fixture
def hidden(tmp_path: Path) -> tuple[Path, Path]:
    """A model whose only output is a hidden state, and 64 samples of its input."""
    model = tmp_path / "hidden.onnx"
    onnx.save(hidden_state_model(), str(model))
    data = tmp_path / "hidden.npz"
    np.savez(data, x=np.random.default_rng(1).standard_normal((64, 4, 32)).astype(np.float32))
    return model, data
