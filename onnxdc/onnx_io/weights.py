"""Rewriting a weight tensor of a model as a small computation that produces it.

A deployable model keeps a weight as int8 levels and a ``DequantizeLinear``, or as uint8 indices,
a codebook and a ``Gather``. The node producing the weight takes the weight's own name as its
output, so every consumer — several nodes, nodes of subgraphs that read it from the outer scope —
is left untouched. Only two homes of a tensor are rewritten: a graph's initializer (main graph or
subgraph; not one that is also a graph input, which a caller may override) and a ``Constant``
node's ``value`` (replaced in place, so the node order stays topological). Anything else — function
bodies, training graphs, sparse tensors, other attributes — is left as it is: :func:`find_site`
says None.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import GraphProto, NodeProto, TensorProto, helper, numpy_helper

from onnxdc.onnx_io.graphs import walk_graphs


@dataclass(frozen=True, eq=False)
class Site:
    """Where a tensor lives: ``graph``'s initializer, or the Constant node ``node`` of ``graph``."""

    graph: GraphProto
    node: NodeProto | None

    def output(self, proto: TensorProto) -> str:
        """The value name the tensor's consumers read: the initializer's, or the Constant's output."""
        return proto.name if self.node is None else self.node.output[0]


def find_site(model: onnx.ModelProto, proto: TensorProto) -> tuple[Site | None, str]:
    """The rewritable home of ``proto`` (the very message, not a copy) in ``model``, or None and why."""
    for graph in walk_graphs(model.graph):
        for init in graph.initializer:
            if init is proto:
                if any(i.name == proto.name for i in graph.input):
                    return None, "an initializer that is also a graph input (callers may override it)"
                return Site(graph, None), ""
        for node in graph.node:
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                for attr in node.attribute:
                    if attr.name == "value" and attr.t is proto:
                        return Site(graph, node), ""
    return None, "not an initializer or Constant value of a graph (function body, training graph or attribute)"


def model_names(model: onnx.ModelProto) -> set[str]:
    """Every value, initializer and node name of the model's graphs (to pick fresh ones)."""
    names: set[str] = set()
    for graph in walk_graphs(model.graph):
        names.update(i.name for i in graph.input)
        names.update(o.name for o in graph.output)
        names.update(i.name for i in graph.initializer)
        names.update(v.name for v in graph.value_info)
        for node in graph.node:
            names.update(node.input)
            names.update(node.output)
            names.add(node.name)
    for func in model.functions:
        for node in func.node:
            names.update(node.output)
    return names


def fresh_name(base: str, taken: set[str]) -> str:
    """``base``, or ``base_1``, ``base_2``...: the first not in ``taken`` (which is updated)."""
    name, i = base, 0
    while name in taken:
        i += 1
        name = f"{base}_{i}"
    taken.add(name)
    return name


@dataclass(frozen=True, eq=False)
class Replacement:
    """What takes a tensor's place: new tensors (initializers, or Constant nodes at a Constant's
    place) and the nodes computing the tensor from them, the last one's output being its name."""

    proto: TensorProto
    tensors: tuple[TensorProto, ...]
    nodes: tuple[NodeProto, ...]


def dequantize(proto: TensorProto, *, output: str, levels: np.ndarray, scale: np.float32, taken: set[str],
               int4: bool = False) -> Replacement:
    """``proto`` as int8 (or, with ``int4``, packed int4: opset 21 and IR 10 on) ``levels`` (its
    shape) and a per-tensor ``DequantizeLinear`` producing ``output`` (:meth:`Site.output`).

    ``DequantizeLinear`` (opset 10 on) computes ``float32(level) * scale``; the zero point is an
    explicit zero of the levels' type, which fixes that type for every opset.
    """
    name = proto.name
    shape = tuple(proto.dims)
    q_name, z_name = fresh_name(f"{name}_quantized", taken), fresh_name(f"{name}_zero_point", taken)
    if int4:
        q, z = int4_tensor(q_name, levels, shape), int4_tensor(z_name, np.zeros(1, np.int8), ())
    else:
        q = numpy_helper.from_array(levels.astype(np.int8).reshape(shape), q_name)
        z = numpy_helper.from_array(np.array(0, dtype=np.int8), z_name)
    s = numpy_helper.from_array(np.array(scale, dtype=np.float32), fresh_name(f"{name}_scale", taken))
    node = helper.make_node("DequantizeLinear", [q.name, s.name, z.name], [output],
                            name=fresh_name(f"{name}_DequantizeLinear", taken))
    return Replacement(proto, (q, s, z), (node,))


def int4_tensor(name: str, values: np.ndarray, shape: tuple[int, ...]) -> TensorProto:
    """An INT4 tensor: two values a byte, the first in the low nibble (ONNX's packing), little-endian
    ``raw_data`` like every tensor onnxdc writes."""
    nibbles = (np.asarray(values, np.int8).reshape(-1) & 0x0F).astype(np.uint8)
    if nibbles.size % 2:
        nibbles = np.append(nibbles, np.uint8(0))
    t = TensorProto(name=name, data_type=TensorProto.INT4, dims=shape)
    t.raw_data = (nibbles[0::2] | (nibbles[1::2] << 4)).tobytes()
    return t


def gather(proto: TensorProto, *, output: str, indices: np.ndarray, codebook: np.ndarray,
           taken: set[str]) -> Replacement:
    """``proto`` as uint8 ``indices`` (its shape), a 1-D ``codebook`` of its dtype, a ``Cast`` to
    int32 (Gather takes int32/int64 indices only) and a ``Gather`` on axis 0, whose output has the
    indices' shape: the tensor itself, as ``output`` (:meth:`Site.output`)."""
    name = proto.name
    idx = numpy_helper.from_array(indices.astype(np.uint8).reshape(tuple(proto.dims)), fresh_name(f"{name}_indices", taken))
    cb = numpy_helper.from_array(codebook.reshape(-1), fresh_name(f"{name}_codebook", taken))
    if cb.data_type != proto.data_type:
        raise ValueError(f"codebook of {name!r} has dtype {cb.data_type}, the tensor {proto.data_type}")
    cast_out = fresh_name(f"{name}_indices_int32", taken)
    cast = helper.make_node("Cast", [idx.name], [cast_out], to=TensorProto.INT32, name=fresh_name(f"{name}_Cast", taken))
    node = helper.make_node("Gather", [cb.name, cast_out], [output], axis=0, name=fresh_name(f"{name}_Gather", taken))
    return Replacement(proto, (idx, cb), (cast, node))


def apply(model: onnx.ModelProto, replacements: list[Replacement], taken: set[str]) -> None:
    """Put every replacement in its tensor's place (each tensor's site from :func:`find_site`).

    Each graph's initializers and nodes are rebuilt once, innermost graphs first: rebuilding a
    graph copies the subgraphs its nodes hold, which must already be rewritten by then. The
    weight's nodes go first in its graph (an initializer) or where its Constant node was, so the
    node order stays topological.

    Raises:
        ValueError: a tensor has no rewritable site (callers check :func:`find_site` first).
    """
    by_graph: dict[int, list[tuple[Site, Replacement]]] = {}
    for rep in replacements:
        site, why = find_site(model, rep.proto)
        if site is None:
            raise ValueError(f"tensor {rep.proto.name!r} cannot be rewritten: {why}")
        by_graph.setdefault(id(site.graph), []).append((site, rep))
    for graph in reversed(list(walk_graphs(model.graph))):
        todo = by_graph.get(id(graph))
        if todo:
            _rebuild(graph, todo, taken)


def _rebuild(graph: GraphProto, todo: list[tuple[Site, Replacement]], taken: set[str]) -> None:
    gone = [rep.proto for site, rep in todo if site.node is None]
    inits = [t for t in graph.initializer if not any(t is g for g in gone)]
    inits += [t for site, rep in todo if site.node is None for t in rep.tensors]
    head = [n for site, rep in todo if site.node is None for n in rep.nodes]
    at_constant = {id(site.node): rep for site, rep in todo if site.node is not None}
    body: list[NodeProto] = []
    for node in graph.node:
        rep = at_constant.get(id(node))
        if rep is None:
            body.append(node)
            continue
        body += [helper.make_node("Constant", [], [t.name], value=t, name=fresh_name(f"{t.name}_Constant", taken))
                 for t in rep.tensors]
        body += rep.nodes
    del graph.initializer[:]
    graph.initializer.extend(inits)
    del graph.node[:]
    graph.node.extend(head + body)
