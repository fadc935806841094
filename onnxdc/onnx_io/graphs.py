"""The one subgraph walker: graphs held by node attributes (If branches, Loop and Scan bodies).

Tensor traversal, candidate selection and calibration's model slicing all descend into subgraphs;
they do it through these two functions, so a new kind of graph attribute is handled once.
"""

from __future__ import annotations

from collections.abc import Iterator

from onnx import AttributeProto, GraphProto, NodeProto


def attribute_graphs(attr: AttributeProto) -> list[tuple[str, GraphProto]]:
    """The graphs ``attr`` holds, each with its path below the attribute (``.g``, ``.graphs[j]``)."""
    if attr.type == AttributeProto.GRAPH:
        return [(".g", attr.g)]
    if attr.type == AttributeProto.GRAPHS:
        return [(f".graphs[{j}]", g) for j, g in enumerate(attr.graphs)]
    return []


def node_graphs(node: NodeProto) -> Iterator[GraphProto]:
    """The graphs directly held by ``node``'s attributes, in attribute order."""
    for attr in node.attribute:
        for _, g in attribute_graphs(attr):
            yield g


def walk_graphs(graph: GraphProto) -> Iterator[GraphProto]:
    """``graph`` and every graph nested in it, depth first, in node and attribute order."""
    yield graph
    for node in graph.node:
        for g in node_graphs(node):
            yield from walk_graphs(g)
