"""Value names an exporter derives from node names: left out of a skeleton, derived again.

``torch.onnx`` names a node's ``i``-th output ``f"{node.name}_output_{i}"`` and the next node
repeats it as an input: on a small model these names are a third of the skeleton's bytes and what
zstd codes worst (the CRNN sample: 3,173 bytes, 30 nodes). :func:`predict_names` replaces, in the
main graph, each such output by :data:`MARK` and each input naming one by :data:`MARK` and the
producer's distance back (``"\\x001"``: the previous node's first output; ``"\\x003.1"``: the second
output of the node three back). :func:`restore_names` undoes it. Other references to those names
(graph outputs, ``value_info``, subgraphs) are left as they are: they still read correctly once
the outputs are restored. A model that uses :data:`MARK` in any name, or names two outputs alike,
is left alone.

The caller proves each use lossless: the pipeline serializes the restored model and compares it
with the original bytes before it keeps the prediction, and the reader checks the skeleton's
CRC-32 after restoring.
"""

from __future__ import annotations

import onnx

#: Stands for a derived name; a NUL, which no exporter puts in a name.
MARK = "\x00"


def _derived(node: onnx.NodeProto, i: int) -> str:
    return f"{node.name}_output_{i}"


def predict_names(model: onnx.ModelProto) -> onnx.ModelProto | None:
    """A copy of ``model`` with the main graph's derived value names marked; None when no name is
    derived, or a name already holds :data:`MARK`, or two outputs share a name."""
    nodes = model.graph.node
    producer: dict[str, tuple[int, int]] = {}
    seen: set[str] = set()
    for k, node in enumerate(nodes):
        if MARK in node.name:
            return None
        for i, out in enumerate(node.output):
            if MARK in out or (out and out in seen):
                return None
            seen.add(out)
            if out and node.name and out == _derived(node, i):
                producer[out] = (k, i)
    if not producer or any(MARK in x for node in nodes for x in node.input):
        return None
    out_model = onnx.ModelProto()
    out_model.CopyFrom(model)
    for j, node in enumerate(out_model.graph.node):
        for i, name in enumerate(node.output):
            if name in producer:
                node.output[i] = MARK
        for i, name in enumerate(node.input):
            if name in producer:
                k, o = producer[name]
                node.input[i] = f"{MARK}{j - k}" + (f".{o}" if o else "")
    return out_model


def restore_names(model: onnx.ModelProto) -> None:
    """Undo :func:`predict_names` in place.

    Raises:
        ValueError: a mark that names no node output (a corrupted skeleton).
    """
    nodes = model.graph.node
    for node in nodes:
        for i, name in enumerate(node.output):
            if name == MARK:
                node.output[i] = _derived(node, i)
    for j, node in enumerate(nodes):
        for i, name in enumerate(node.input):
            if name.startswith(MARK):
                node.input[i] = _resolve(nodes, j, name)


def _resolve(nodes, j: int, mark: str) -> str:  # noqa: ANN001 - a repeated NodeProto field
    dist, _, out = mark[1:].partition(".")
    if not _is_int(dist) or (out and not out.isdigit()):
        raise ValueError(f"node {j} input {mark!r} is not a derived name")
    k, i = j - int(dist), int(out or 0)
    if not 0 <= k < len(nodes) or i >= len(nodes[k].output):
        raise ValueError(f"node {j} input {mark!r} names no node output")
    return nodes[k].output[i]


def _is_int(text: str) -> bool:
    return text.lstrip("-").isdigit() and len(text) < 20
