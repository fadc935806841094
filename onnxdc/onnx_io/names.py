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

From format 4.0 node names are marked too (``nodes=True``): ``torch.onnx`` names a node
``f"{scope}{op_type}"``, then ``f"{scope}{op_type}_{k}"`` for the ``k``-th repeat of that base in the
graph. Such a name is stored as its scope and :data:`MARK` (``"/conv1/\x00"``, or ``"\x00"`` with no
scope), where ``k`` counts the earlier marked nodes of the same base; a name that does not follow
the pattern is kept as it is.

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


def _suffix(k: int) -> str:
    return f"_{k}" if k else ""


def _node_marks(nodes) -> dict[int, str]:  # noqa: ANN001 - a repeated NodeProto field
    """Node index -> its stored (marked) name, for the nodes whose name follows the pattern."""
    counts: dict[str, int] = {}
    marked: dict[int, str] = {}
    for j, node in enumerate(nodes):
        name, op = node.name, node.op_type
        if not op:
            continue
        base = name
        if not name.endswith(op):
            base, _, k = name.rpartition("_")
            if not base.endswith(op) or not (_is_int(k, signed=False) and k == str(int(k)) and k != "0"):
                continue
        if name != base + _suffix(counts.get(base, 0)):
            continue
        counts[base] = counts.get(base, 0) + 1
        marked[j] = base[:len(base) - len(op)] + MARK
    return marked


def _restored_node_names(nodes) -> list[str | None]:  # noqa: ANN001 - a repeated NodeProto field
    """Each node's restored name where it is marked (a name ending in :data:`MARK`), else None."""
    counts: dict[str, int] = {}
    out: list[str | None] = []
    for node in nodes:
        if node.name.endswith(MARK):
            base = node.name[:-1] + node.op_type
            out.append(base + _suffix(counts.get(base, 0)))
            counts[base] = counts.get(base, 0) + 1
        else:
            out.append(None)
    return out


def predict_names(model: onnx.ModelProto, *, nodes: bool = False) -> onnx.ModelProto | None:
    """A copy of ``model`` with the main graph's derived value names (and with ``nodes``, node
    names) marked; None when nothing is derived, or a name already holds :data:`MARK`, or two
    outputs share a name."""
    with_nodes = nodes
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
    node_marks = _node_marks(nodes) if with_nodes else {}
    if not (producer or node_marks) or any(MARK in x for node in nodes for x in node.input):
        return None
    out_model = onnx.ModelProto()
    out_model.CopyFrom(model)
    for j, stored in node_marks.items():
        out_model.graph.node[j].name = stored
    for j, node in enumerate(out_model.graph.node):
        for i, name in enumerate(node.output):
            if name in producer:
                node.output[i] = MARK
        for i, name in enumerate(node.input):
            if name in producer:
                k, o = producer[name]
                node.input[i] = f"{MARK}{j - k}" + (f".{o}" if o else "")
    return out_model


def restore_names(model: onnx.ModelProto, *, nodes: bool = False) -> None:
    """Undo :func:`predict_names` (with the same ``nodes``) in place, in time linear in the model
    and the names it writes (a reader bounds those first with :func:`restored_growth`).

    Raises:
        ValueError: a mark that names no node output (a corrupted skeleton).
    """
    with_nodes = nodes
    nodes = model.graph.node
    if with_nodes:
        for node, name in zip(nodes, _restored_node_names(nodes)):
            if name is not None:
                node.name = name
    for node in nodes:
        for i, name in enumerate(node.output):
            if name == MARK:
                node.output[i] = _derived(node, i)
    for j, node in enumerate(nodes):
        for i, name in enumerate(node.input):
            if name.startswith(MARK):
                node.input[i] = _resolve(nodes, j, name)


def names_are_text(model: onnx.ModelProto) -> bool:
    """Whether the main graph's node names, op types, inputs and outputs are text, what restoring
    reads: protobuf gives a string that is not UTF-8 as bytes (a hostile skeleton's)."""
    return all(isinstance(node.name, str) and isinstance(node.op_type, str)
               and all(isinstance(x, str) for x in node.input) and all(isinstance(x, str) for x in node.output)
               for node in model.graph.node)


def restored_growth(model: onnx.ModelProto, *, stop_above: int, nodes: bool = False) -> int:
    """The bytes restoring the marks adds to the main graph's names (marks that name no output
    count nothing: restoring refuses them); once over ``stop_above``, a number over it.

    A mark is a few bytes and the name it stands for as long as its node's, so a hostile skeleton
    of one node with a long name and many marks restores to gigabytes. This sums before anything
    is written and stops once over, so its cost is linear in the model plus ``stop_above``.
    """
    with_nodes = nodes
    nodes = model.graph.node
    added = 0
    names = [len(n.name.encode("utf-8")) for n in nodes]
    if with_nodes:
        for j, name in enumerate(_restored_node_names(nodes)):
            if name is not None:
                added += len(name.encode("utf-8")) - names[j]
                names[j] = len(name.encode("utf-8"))
                if added > stop_above:
                    return added
    for j, node in enumerate(nodes):
        marks = [i for i, name in enumerate(node.output) if name == MARK]
        if marks:
            size = names[j]
            added += sum(size + len(f"_output_{i}") - 1 for i in marks)
            if added > stop_above:
                return added
    for j, node in enumerate(nodes):
        for name in node.input:
            if name.startswith(MARK):
                ref = _producer(nodes, j, name)
                if ref is not None:
                    k, i = ref
                    out = nodes[k].output[i]
                    size = (names[k] + len(f"_output_{i}") if out == MARK
                            else len(out.encode("utf-8")))
                    added += size - len(name.encode("utf-8"))
                    if added > stop_above:
                        return added
    return added


def _producer(nodes, j: int, mark: str) -> tuple[int, int] | None:  # noqa: ANN001 - a repeated NodeProto field
    """The node and output index a mark at node ``j`` names, None when it names none."""
    dist, dot, out = mark[1:].partition(".")
    if not _is_int(dist) or (dot and not _is_int(out, signed=False)):
        return None
    k, i = j - int(dist), int(out or 0)
    if not 0 <= k < len(nodes) or i >= len(nodes[k].output):
        return None
    return k, i


def _resolve(nodes, j: int, mark: str) -> str:  # noqa: ANN001 - a repeated NodeProto field
    ref = _producer(nodes, j, mark)
    if ref is None:  # the mark's text is cut: a hostile one may be any length
        shown = repr(mark[:24]) + ("..." if len(mark) > 24 else "")
        raise ValueError(f"node {j} input {shown} names no node output")
    return nodes[ref[0]].output[ref[1]]


def _is_int(text: str, *, signed: bool = True) -> bool:
    """ASCII digits (after a ``-`` when ``signed``), fewer than 20: what ``int`` reads in constant time."""
    digits = text[1:] if signed and text.startswith("-") else text
    return 0 < len(digits) < 20 and digits.isascii() and digits.isdigit()
