"""Whole-model runs with some weights replaced, in one onnxruntime session.

The automatic mode measures dozens of candidate models: one per tensor for its sensitivity, then
the allocation's trials. Building a graph and a session for each costs more than running it, so
the weights it varies become graph inputs of one session, fed with each run. Weights that cannot
become inputs (Constant nodes, initializers of subgraphs) are set in a copy of the model instead,
with a session per run.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from onnxdc.calibration.stats import model_feed
from onnxdc.evaluate import run_model, session
from onnxdc.onnx_io.tensors import iter_tensors, le_bytes, set_raw_data
from onnxdc.threads import single_blas_thread

#: Input bytes one onnxruntime run of a trial takes at most (the batch follows from it).
RUN_INPUT_BYTES = 8 << 20


class TrialRunner:
    """Runs ``model`` on ``data`` with any of the ``slots``' weights replaced."""

    def __init__(self, model: onnx.ModelProto, slots: list[int], data: dict[str, np.ndarray],
                 *, originals: dict[int, np.ndarray] | None = None) -> None:
        """``originals`` (slot -> the tensor's array, e.g. the caller's own) saves reading every
        weight into a copy of its own: a model-sized array less per runner."""
        self.model = model
        self.feed = model_feed(model, data)
        self.n = len(next(iter(self.feed.values())))
        refs = {r.slot: r for r in iter_tensors(model)}
        main = {t.name for t in model.graph.initializer}
        self.names = {s: refs[s].proto.name for s in slots
                      if refs[s].path.startswith("graph.initializer[") and refs[s].proto.name in main}
        self._fed = len(self.names) == len(slots)
        if self._fed:
            from onnxdc.onnx_io.tensors import tensor_array, tensor_raw_bytes

            m = onnx.ModelProto()
            m.CopyFrom(model)
            moved = set(self.names.values())
            inputs = {i.name for i in m.graph.input}
            keep = [t for t in m.graph.initializer if t.name not in moved]
            originals = originals or {}
            self.original = {s: originals[s] if s in originals else tensor_array(refs[s].proto, tensor_raw_bytes(refs[s].proto))
                             for s in self.names}
            for s, name in self.names.items():
                if name not in inputs:
                    m.graph.input.append(helper.make_tensor_value_info(
                        name, refs[s].proto.data_type, list(refs[s].proto.dims)))
            del m.graph.initializer[:]
            m.graph.initializer.extend(keep)
            self.session = session(m, arena=False)

    @single_blas_thread
    def outputs(self, weights: dict[int, np.ndarray], *, batch_size: int | None = None) -> list[np.ndarray]:
        """The model's outputs with ``weights`` (slot -> array in the tensor's shape) replaced."""
        if batch_size is None:  # a run's activations scale with its inputs: large inputs, small batches
            per_sample = sum(v[:1].nbytes for v in self.feed.values())
            batch_size = int(max(1, min(256, RUN_INPUT_BYTES // max(per_sample, 1))))
        if not self._fed:
            return run_model(session(replaced_model(self.model, weights)), self.feed, batch_size=batch_size)
        ws = {self.names[s]: np.ascontiguousarray((weights[s] if s in weights else self.original[s])
                                                  .astype(self.original[s].dtype, copy=False))
              for s in self.names}
        return run_model(self.session, self.feed, batch_size=batch_size, whole=ws)

    def replaced(self, weights: dict[int, np.ndarray]) -> onnx.ModelProto:
        """A copy of the model with ``weights`` set."""
        return replaced_model(self.model, weights)


def replaced_model(model: onnx.ModelProto, weights: dict[int, np.ndarray]) -> onnx.ModelProto:
    """A copy of ``model`` with ``weights`` (slot -> array) set in place of its tensors."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    refs = {r.slot: r for r in iter_tensors(m)}
    for s, w in weights.items():
        dtype = onnx.helper.tensor_dtype_to_np_dtype(refs[s].proto.data_type)
        set_raw_data(refs[s].proto, le_bytes(np.asarray(w).astype(dtype)))
    return m
