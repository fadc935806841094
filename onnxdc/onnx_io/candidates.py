"""Which tensors go through Deep Compression, and in what role.

A tensor is a candidate when every use of it (followed through Identity / Cast / Transpose /
Reshape's data input) is a weight input of Conv, ConvTranspose, Gemm, MatMul, LSTM, GRU, RNN or the
data input of Gather (an embedding table), or a bias input of those ops. A tensor used anywhere
else — as a shape, an index, a scale, an axis — is never touched, however large and float it is.
Weights held in Constant nodes count as well as initializers, in subgraphs too.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx
from onnx import AttributeProto, GraphProto, TensorProto

from onnxdc.onnx_io.graphs import node_graphs, walk_graphs
from onnxdc.onnx_io.tensors import TensorRef, iter_tensors

FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE}

#: op type -> {input position: role}; roles are kinds of weight ("conv", "fc", "rnn",
#: "embedding") or "bias".
WEIGHT_INPUTS: dict[str, dict[int, str]] = {
    "Conv": {1: "conv", 2: "bias"},
    "ConvTranspose": {1: "conv", 2: "bias"},
    "Gemm": {0: "fc", 1: "fc", 2: "bias"},
    "MatMul": {0: "fc", 1: "fc"},
    "LSTM": {1: "rnn", 2: "rnn", 3: "bias"},
    "GRU": {1: "rnn", 2: "rnn", 3: "bias"},
    "RNN": {1: "rnn", 2: "rnn", 3: "bias"},
    "Gather": {0: "embedding"},
}
#: Ops whose first input flows through unchanged in value (only position 0 is followed).
PASSTHROUGH = {"Identity", "Cast", "Transpose", "Reshape"}


@dataclass(frozen=True)
class Candidate:
    """A tensor eligible for pruning and weight sharing."""

    ref: TensorRef
    kind: str  # conv | fc | rnn | embedding | bias
    op: str  # the consuming op type (the first of ``ops``)
    #: Every op type consuming the tensor, sorted: the nodes that read it as a weight or bias,
    #: through Identity / Cast / Transpose / Reshape (never those, nor ``Constant`` for a weight
    #: held in a Constant node). Recipe rules with ``op_type`` match against these.
    ops: tuple[str, ...] = ()


def find_candidates(model: onnx.ModelProto) -> dict[int, Candidate]:
    """Map slot -> :class:`Candidate` for every float tensor used only as a weight or bias."""
    refs = {id(r.proto): r for r in iter_tensors(model)}
    found: dict[int, Candidate] = {}
    for graph in walk_graphs(model.graph):
        found.update(_candidates_in(graph, refs))
    return found


def _candidates_in(graph: GraphProto, refs: dict[int, TensorRef]) -> dict[int, Candidate]:
    sources: dict[str, TensorRef] = {t.name: refs[id(t)] for t in graph.initializer if id(t) in refs}
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            for attr in node.attribute:
                if attr.name == "value" and attr.type == AttributeProto.TENSOR and id(attr.t) in refs:
                    sources[node.output[0]] = refs[id(attr.t)]
    consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in graph.node:
        for pos, name in enumerate(node.input):
            if name:
                consumers.setdefault(name, []).append((node, pos))
    outputs = {o.name for o in graph.output}
    # Names used inside subgraphs (implicit inputs) are uses we cannot classify: never touch them.
    inner_uses = _subgraph_uses(graph)
    result: dict[int, Candidate] = {}
    for name, ref in sources.items():
        if ref.proto.data_type not in FLOAT_TYPES:
            continue
        roles = _roles(name, consumers, outputs, inner_uses, depth=0)
        if roles is None or not roles:
            continue
        kinds = {k for k, _ in roles}
        weight_kinds = kinds - {"bias"}
        kind = sorted(weight_kinds)[0] if len(weight_kinds) == 1 else ("bias" if not weight_kinds else None)
        if kind is None or (weight_kinds and "bias" in kinds):
            continue
        ops = tuple(sorted({op for _, op in roles}))
        result[ref.slot] = Candidate(ref, kind, ops[0], ops)
    return result


def _roles(name: str, consumers: dict, outputs: set[str], inner: set[str],
           depth: int) -> set[tuple[str, str]] | None:
    """Roles of every use of ``name``; None if any use is not a weight or bias input."""
    if name in outputs or name in inner or depth > 8:
        return None
    roles: set[tuple[str, str]] = set()
    for node, pos in consumers.get(name, []):
        if node.op_type in PASSTHROUGH and pos == 0 and node.domain in ("", "ai.onnx"):
            sub = _roles(node.output[0], consumers, outputs, inner, depth + 1) if node.output else None
            if sub is None:
                return None
            roles |= sub
            continue
        role = WEIGHT_INPUTS.get(node.op_type, {}).get(pos) if node.domain in ("", "ai.onnx") else None
        if role is None:
            return None
        roles.add((role, node.op_type))
    return roles


def _subgraph_uses(graph: GraphProto) -> set[str]:
    names: set[str] = set()
    for node in graph.node:
        for g in node_graphs(node):
            for inner in walk_graphs(g):
                for n in inner.node:
                    names.update(n.input)
    return names
