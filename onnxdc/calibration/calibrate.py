"""Calibration-aware compression: layer inputs from onnxruntime, layer by layer in graph order.

For each selected weight with a linear form (:mod:`onnxdc.calibration.linear`), the layer's input is read from
two models run on the calibration set: the original (for the target outputs) and the model with
every layer before it already compressed (for the inputs it will really see), so that each layer
also corrects the error of the layers upstream. Intermediate values are exposed by adding them as
graph outputs. Weights without a linear form fall back to plain magnitude pruning; the result says
which and why.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from onnxdc.calibration.linear import (
    LinearForm,
    conv_output,
    input_matrices,
    linear_form,
    weight_matrices,
    weight_tensor,
)
from onnxdc.calibration.samples import layout_of, select
from onnxdc.evaluate import model_inputs, run_model, session
from onnxdc.onnx_io.graphs import node_graphs, walk_graphs
from onnxdc.onnx_io.tensors import iter_tensors, le_bytes, set_raw_data
from onnxdc.stages.compensate import Pruned, compensate, max_rows, problem, prune_groups
from onnxdc.stages.quantize import Clustering

#: Progress callback: (layers done, layers total, tensor name).
Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class CalibratedTensor:
    """A weight compressed with calibration: its keep-mask and clustering of the survivors."""

    keep: np.ndarray  # tensor shape, True = kept
    clustering: Clustering  # indices of the kept weights in flat (C) order
    method: str  # "compensated" or "magnitude: <reason>"
    error_kmeans: float = 0.0
    error_refit: float = 0.0
    #: Output error relative to the layer's output energy on the calibration inputs (compensated),
    #: or squared weight error relative to the weights' energy (magnitude fallback).
    rel_error: float = 0.0


def _consumer(model: onnx.ModelProto, name: str) -> tuple[onnx.NodeProto, int] | None:
    """The single main-graph node consuming ``name`` directly, with the input position."""
    uses = [(n, i) for n in model.graph.node for i, x in enumerate(n.input) if x == name]
    return uses[0] if len(uses) == 1 else None


def layer_of(model: onnx.ModelProto, plan) -> tuple[int, LinearForm | None]:  # noqa: ANN001
    """(graph position, linear form or None) of a planned weight."""
    ref = plan.candidate.ref
    use = _consumer(model, ref.proto.name) if ref.path.startswith("graph.initializer") and ref.proto.name else None
    if use is None:
        return len(model.graph.node), None
    return list(model.graph.node).index(use[0]), linear_form(use[0], use[1], tuple(ref.proto.dims))


def weight_of(plan) -> np.ndarray:  # noqa: ANN001
    from onnxdc.onnx_io.tensors import tensor_array, tensor_raw_bytes

    proto = plan.candidate.ref.proto
    return tensor_array(proto, tensor_raw_bytes(proto))


def calibrate(model: onnx.ModelProto, plans: dict, data: dict[str, np.ndarray], *,
              max_samples: int = 512, compensated: bool = True,
              progress: Progress | None = None) -> dict[int, CalibratedTensor]:
    """Compress every planned weight with compensation where it has a linear form.

    Args:
        model: the input model (not modified).
        plans: slot -> :class:`onnxdc.pipeline.plan.WeightPlan` of the weights to compress.
        data: calibration inputs keyed by model input name (``labels`` is ignored).
        max_samples: calibration samples used at most (the first ones).
        compensated: False prunes and shares every weight by magnitude, as without calibration
            data (what automatic mode falls back to when fitted layers do not generalize).

    Returns:
        slot -> :class:`CalibratedTensor` for every plan.
    """
    work = onnx.ModelProto()
    work.CopyFrom(model)
    work_refs = {r.slot: r for r in iter_tensors(work)}
    layers = sorted(((*layer_of(model, plan), slot) for slot, plan in plans.items()), key=lambda t: (t[0], t[2]))
    feed = _feed(model, data, max_samples)
    out: dict[int, CalibratedTensor] = {}
    for done, (_, form, slot) in enumerate(layers, 1):
        plan = plans[slot]
        orig = weight_of(plan)
        w = orig.astype(np.float32)
        if form is None or not compensated:
            out[slot] = _magnitude(w, plan, "no linear form for this use" if compensated else "not compensated")
        else:
            # One layer's inputs at a time, in both models, on the samples its statistics need:
            # all layers' activations at once would not fit for large inputs.
            sub = _layer_feed(model, form, w, feed)
            x_ref = _collect(model, list(form.sources), sub)
            x_q = _collect(work, list(form.sources), sub)
            out[slot] = _compensated(w, plan, form, _problems(form, w, [x_q[n] for n in form.sources],
                                                              [x_ref[n] for n in form.sources]))
        _store(work_refs[slot].proto, out[slot], orig)
        if progress:
            progress(done, len(layers), plan.candidate.ref.proto.name)
    return out


def compress_alone(model: onnx.ModelProto, plan, feed: dict[str, np.ndarray]) -> Callable:  # noqa: ANN001
    """A function compressing ``plan``'s tensor under varied settings, the rest of the model intact.

    The layer's least-squares problem is built once from the original model's activations, so
    each setting costs only the pruning and sharing sweeps.
    """
    _, form = layer_of(model, plan)
    w = weight_of(plan).astype(np.float32)
    if form is None:
        return lambda p: _magnitude(w, p, "no linear form for this use")
    got = _collect(model, list(form.sources), _layer_feed(model, form, w, _feed(model, feed, None)))
    x = [got[n] for n in form.sources]
    probs = _problems(form, w, x, x)
    last: dict[float, Pruned] = {}  # the pruning sweep of the last sparsity, shared by its bit widths

    def solve(p) -> CalibratedTensor:  # noqa: ANN001
        s = _target_sparsity(w, p)
        if s not in last:
            last.clear()
            last[s] = prune_groups(probs, sparsity=s)
        return _compensated(w, p, form, probs, last[s])

    return solve


def quantized_model(model: onnx.ModelProto, tensors: dict) -> onnx.ModelProto:
    """A copy of ``model`` with the given slots (slot -> (plan, CalibratedTensor)) quantized."""
    work = onnx.ModelProto()
    work.CopyFrom(model)
    refs = {r.slot: r for r in iter_tensors(work)}
    for slot, (plan, ct) in tensors.items():
        _store(refs[slot].proto, ct, weight_of(plan))
    return work


def _store(target: onnx.TensorProto, ct: CalibratedTensor, orig: np.ndarray) -> None:
    quantized = dense_values(ct, orig.shape).astype(orig.dtype)
    set_raw_data(target, le_bytes(quantized))


def _feed(model: onnx.ModelProto, data: dict[str, np.ndarray], max_samples: int | None) -> dict[str, np.ndarray]:
    inits = {t.name for t in model.graph.initializer}
    inputs = model_inputs(data, [i.name for i in model.graph.input if i.name not in inits])
    return select(inputs, slice(0, max_samples or None))


def _layer_feed(model: onnx.ModelProto, form: LinearForm, w: np.ndarray,
                feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The calibration samples one layer's statistics need: evenly spaced ones when fewer samples
    than ``feed`` holds already give :func:`onnxdc.stages.compensate.problem` its row cap.

    A convolution unrolls every sample into one row per output pixel, so a high-resolution layer
    needs a sample or two, not hundreds; one sample run through the model tells how many rows a
    sample gives.
    """
    n = len(next(iter(feed.values())))
    if n <= 1:
        return feed
    probe = _collect(model, list(form.sources), select(feed, slice(0, 1)))
    if form.kind == "conv":  # from the shapes: unrolling a high-resolution sample is the cost avoided
        _, oh, ow = conv_output(form, probe[form.sources[0]].shape)
        rows = oh * ow
    else:
        rows = input_matrices(form, *(probe[s].astype(np.float32) for s in form.sources))[0].shape[0]
    need = -(-max_rows(weight_matrices(form, w)[0].shape[0]) // max(rows, 1))
    if need >= n:
        return feed
    keep = np.linspace(0, n - 1, need).round().astype(np.int64)
    return select(feed, keep)


def dense_values(ct: CalibratedTensor, shape: tuple[int, ...]) -> np.ndarray:
    flat = np.zeros(int(np.prod(shape)), dtype=np.float32)
    flat[np.flatnonzero(ct.keep.reshape(-1))] = ct.clustering.values()
    return flat.reshape(shape)


def _target_sparsity(w: np.ndarray, plan) -> float:  # noqa: ANN001
    """The fraction to prune that the tensor's pruning rule asks for."""
    if plan.keep is not None:
        return 1.0 - float(plan.keep.mean())
    rule = plan.settings.prune
    if rule.std_threshold is not None:
        return float(np.mean(np.abs(w) < rule.std_threshold * np.std(w.astype(np.float64))))
    return float(rule.sparsity or 0.0)


def _magnitude(w: np.ndarray, plan, reason: str) -> CalibratedTensor:  # noqa: ANN001
    from onnxdc.stages.quantize import share_kept

    keep = plan.mask(w) & (w != 0)
    _, clus = share_kept(w, keep, config=plan.settings.share)
    w64 = w.astype(np.float64)
    energy = float(np.sum(w64 * w64))
    err = energy - float(np.sum(w64[keep] ** 2)) + float(np.sum((w64[keep] - clus.values()) ** 2))
    return CalibratedTensor(keep, clus, f"magnitude: {reason}", rel_error=err / energy if energy else 0.0)


def _problems(form: LinearForm, w: np.ndarray, x_q: list[np.ndarray], x_ref: list[np.ndarray]) -> list:
    """The per-group least-squares problems, from the values of ``form.sources`` in both models."""
    w0s = weight_matrices(form, w)
    xq_g = input_matrices(form, *(x.astype(np.float32) for x in x_q))
    xr_g = xq_g if x_ref is x_q else input_matrices(form, *(x.astype(np.float32) for x in x_ref))
    return [problem(xq, xr, w0) for xq, xr, w0 in zip(xq_g, xr_g, w0s)]


def _compensated(w: np.ndarray, plan, form: LinearForm, probs: list,  # noqa: ANN001
                 pruned: Pruned | None = None) -> CalibratedTensor:
    comp = compensate(probs, sparsity=_target_sparsity(w, plan), share=plan.settings.share, pruned=pruned)
    wt = weight_tensor(form, comp.weights, w.shape)
    keep = weight_tensor(form, comp.masks, w.shape).astype(bool) & (wt != 0)
    # Indices of the kept weights in flat order, against the (possibly unsorted) refit codebook.
    idx_t = weight_tensor(form, [i.astype(np.int64) for i in comp.indices], w.shape)
    indices = idx_t.reshape(-1)[np.flatnonzero(keep.reshape(-1))].astype(np.uint8)
    energy = sum(p.energy for p in probs)
    return CalibratedTensor(keep, Clustering(comp.codebook, indices), "compensated", comp.error_kmeans,
                            comp.error_refit, comp.error_refit / energy if energy > 0 else 0.0)


def _collect(model: onnx.ModelProto, names: list[str], feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Values of ``names`` when ``model`` runs on ``feed``.

    They become the graph's only outputs, and the nodes (and initializers) they do not depend on
    are dropped: onnxruntime runs every node of a graph, so collecting an early layer's input
    would otherwise cost a whole forward pass.
    """
    if not names:
        return {}
    graph_inputs = {i.name for i in model.graph.input}
    m, wanted = exposing(model, names)
    result: dict[str, np.ndarray] = {}
    if wanted:
        sess = session(m)
        # One run: intermediate values need not keep the batch on axis 0 (recurrent ops put time first).
        n = len(next(iter(feed.values())))
        result = dict(zip([o.name for o in sess.get_outputs()], run_model(sess, feed, batch_size=max(n, 1))))
    for n in names:
        if n in graph_inputs:
            result[n] = layout_of(feed).to_model(n, feed[n])
    return result


def exposing(model: onnx.ModelProto, names: list[str]) -> tuple[onnx.ModelProto, list[str]]:
    """A copy of ``model`` whose only outputs are the values ``names`` that are not graph inputs
    (returned second, in order), without the nodes and initializers those values do not depend
    on: onnxruntime runs every node of a graph.
    """
    graph_inputs = {i.name for i in model.graph.input}
    wanted = [n for n in dict.fromkeys(names) if n not in graph_inputs]
    # Only the needed nodes and initializers are copied: the model may be copied for every layer.
    m = _copy_without(model, {"graph"})
    m.graph.CopyFrom(_copy_without(model.graph, {"node", "initializer", "output"}))
    nodes = _needed(list(model.graph.node), wanted)
    m.graph.node.extend(nodes)
    # Less to serialize for onnxruntime; initializers that are also graph inputs (IR < 4) stay.
    reads = {x for node in nodes for x in (*node.input, *_subgraph_reads(node))} | graph_inputs | set(wanted)
    m.graph.initializer.extend(t for t in model.graph.initializer if t.name in reads)
    m.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in wanted)
    return m, wanted


def _copy_without(msg, skip: set[str]):  # noqa: ANN001, ANN202 - any protobuf message, same type back
    """A copy of ``msg`` without the fields named in ``skip``."""
    out = type(msg)()
    for field, value in msg.ListFields():
        if field.name in skip:
            continue
        repeated = getattr(field, "is_repeated", None)
        if repeated is None:  # protobuf < 5
            repeated = field.label == field.LABEL_REPEATED
        if repeated:
            getattr(out, field.name).extend(value)
        elif field.message_type is not None:
            getattr(out, field.name).CopyFrom(value)
        else:
            setattr(out, field.name, value)
    return out


def _needed(nodes: list[onnx.NodeProto], outputs: list[str]) -> list[onnx.NodeProto]:
    """The nodes ``outputs`` depend on, in their order; names a subgraph reads count as inputs."""
    want = set(outputs)
    keep = []
    for node in reversed(nodes):
        if want.isdisjoint(node.output):
            continue
        keep.append(node)
        want.update(node.input)
        want.update(_subgraph_reads(node))
    return keep[::-1]


def _subgraph_reads(node: onnx.NodeProto) -> set[str]:
    names: set[str] = set()
    for body in node_graphs(node):
        for g in walk_graphs(body):
            names.update(o.name for o in g.output)  # a body may return an outer value as is
            for sub in g.node:
                names.update(sub.input)
    return names
