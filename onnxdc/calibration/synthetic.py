"""Synthetic inputs built from a model's input specs, for when no real data is at hand.

Float inputs are standard normal; integer inputs that index an embedding table (a Gather's
indices, possibly through a Cast) are drawn within the table's rows, other integers in [0, 16);
booleans are fair coins. Symbolic dimensions take a value from ``dims`` (by name), the sample
count for the first dimension, and 16 otherwise. Real data measures accuracy far better: callers
should say so when they fall back to these.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from onnxdc.calibration.data import input_specs
from onnxdc.calibration.samples import PLAIN, Layout, Samples
from onnxdc.calibration.sources import load_samples, resolve_layout
from onnxdc.errors import ConfigError

DEFAULT_DIM = 16


def parse_dims(specs: tuple[str, ...] | list[str]) -> dict[str, int]:
    """Parse ``name=value`` dimension settings."""
    out: dict[str, int] = {}
    for spec in specs:
        name, sep, value = spec.partition("=")
        if not sep or not name:
            raise ConfigError(f"--dim expects name=value, got {spec!r}")
        try:
            out[name] = int(value)
        except ValueError:
            raise ConfigError(f"--dim value must be an integer, got {spec!r}") from None
        if out[name] < 1:
            raise ConfigError(f"--dim value must be >= 1, got {spec!r}")
    return out


def _vocab_sizes(model: onnx.ModelProto) -> dict[str, int]:
    """Graph input name -> rows of the embedding table it indexes (through Cast/Identity)."""
    inits = {t.name: t for t in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    out: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type != "Gather" or len(node.input) < 2 or node.input[0] not in inits:
            continue
        name = node.input[1]
        while name in producers and producers[name].op_type in ("Cast", "Identity"):
            name = producers[name].input[0]
        rows = int(inits[node.input[0]].dims[0]) if inits[node.input[0]].dims else 0
        if rows:
            out[name] = min(out.get(name, rows), rows)
    return out


def _shape(inp: onnx.ValueInfoProto, *, samples: int, dims: dict[str, int],
           axis: int | None = 0) -> tuple[list[int], list[str]]:
    """One input's synthetic shape (samples on ``axis``; None: a shared input, no samples), and
    the symbolic dimensions in it that get ``DEFAULT_DIM``."""
    shape, defaulted = [], []
    for i, d in enumerate(inp.type.tensor_type.shape.dim):
        if d.HasField("dim_value") and d.dim_value > 0:
            # A fixed batch dimension: stack enough batches along it (run in slices of it).
            shape.append(d.dim_value if i != axis else d.dim_value * -(-samples // d.dim_value))
        elif d.dim_param in dims:
            shape.append(dims[d.dim_param])
        elif i == axis:
            shape.append(samples)
        else:
            shape.append(DEFAULT_DIM)
            defaulted.append(d.dim_param or "?")
    return shape, defaulted


def _axes(model: onnx.ModelProto, layout: Layout | None) -> Layout:
    return resolve_layout(input_specs(model), layout or PLAIN)


def _axis(layout: Layout, name: str) -> int | None:
    return None if name in layout.shared else layout.axis(name)


def defaulted_dims(model: onnx.ModelProto, dims: dict[str, int] | None = None,
                   layout: Layout | None = None) -> list[str]:
    """Symbolic non-batch input dimensions :func:`synthetic_inputs` sets to ``DEFAULT_DIM``."""
    inits = {t.name for t in model.graph.initializer}
    resolved = _axes(model, layout)
    names = [n for inp in model.graph.input if inp.name not in inits
             for n in _shape(inp, samples=1, dims=dims or {}, axis=_axis(resolved, inp.name))[1]]
    return list(dict.fromkeys(names))


def synthetic_inputs(model: onnx.ModelProto, *, samples: int, dims: dict[str, int] | None = None,
                     seed: int = 0, layout: Layout | None = None) -> Samples:
    """Random inputs for every graph input that is not an initializer, as
    :class:`~onnxdc.calibration.samples.Samples`: each input's samples on its sample axis
    (``layout``, completed from the graph as data files are), shared inputs one value."""
    dims = dims or {}
    resolved = _axes(model, layout)
    rng = np.random.default_rng(seed)
    vocab = _vocab_sizes(model)
    inits = {t.name for t in model.graph.initializer}
    out: dict[str, np.ndarray] = {}
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        tt = inp.type.tensor_type
        if not inp.type.HasField("tensor_type"):
            raise ConfigError(f"input {inp.name!r} is not a tensor; synthetic inputs cannot be built for it")
        shape, _ = _shape(inp, samples=samples, dims=dims, axis=_axis(resolved, inp.name))
        np_type = helper.tensor_dtype_to_np_dtype(tt.elem_type)
        if tt.elem_type == TensorProto.BOOL:
            arr = rng.random(shape) < 0.5
        elif np.issubdtype(np_type, np.integer):
            high = vocab.get(inp.name, 16)
            arr = rng.integers(0, high, size=shape).astype(np_type)
        elif np.issubdtype(np_type, np.floating) or tt.elem_type == TensorProto.BFLOAT16:
            arr = rng.standard_normal(shape).astype(np_type)
        else:
            raise ConfigError(f"input {inp.name!r} has element type {tt.elem_type}; no synthetic data for it")
        out[inp.name] = arr
    return load_samples(out, model=model, layout=resolved)
