"""The import rules of the layout (docs/architecture.md), checked on the source with ast.

Every ``import`` counts, at module level or inside a function (a late import is still a
dependency: it only hides a cycle from the interpreter). Imports under ``if TYPE_CHECKING:``
do not count: they exist for type checkers only and never run.

Layers, from the top: ``cli/`` -> ``api`` -> ``pipeline/``, ``auto/``, ``calibration/``,
``evaluate``, ``report``, ``compare`` -> ``stages/`` (pure numpy), ``format/`` -> ``coders/``;
``onnx_io/`` and ``fileio/`` beside them. Leaves any module may import: ``errors``, ``dtypes``,
``threads``, ``memory``, ``_version``.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "onnxdc"
LEAVES = {"onnxdc.errors", "onnxdc.dtypes", "onnxdc.threads", "onnxdc.memory", "onnxdc._version"}
ONNX_PACKAGES = {"onnx", "onnxruntime", "google"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, module: str, is_package: bool) -> list[str]:
    """Every module ``tree`` imports (absolute names), outside ``if TYPE_CHECKING:`` blocks."""
    found: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.append(sub if sub in MODULES else target)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the onnxdc modules and the top-level foreign packages it imports."""
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        targets = _imports(tree, name, path.name == "__init__.py")
        graph[name] = {t if t.startswith("onnxdc.") or t == "onnxdc" else t.split(".")[0]
                       for t in targets if t != name}
    return graph


GRAPH = import_graph()


def internal(name: str) -> set[str]:
    return {t for t in GRAPH[name] if t == "onnxdc" or t.startswith("onnxdc.")}


def in_layer(name: str, layer: str) -> bool:
    return name == layer or name.startswith(layer + ".")


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), and self-loops."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, ()):
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return found


def violations(rule: str, allowed) -> list[str]:  # noqa: ANN001 - a predicate
    return [f"{m} imports {t} ({rule})" for m in sorted(GRAPH) for t in sorted(GRAPH[m]) if not allowed(m, t)]


def test_the_graph_sees_the_package() -> None:
    assert "onnxdc.format.container" in GRAPH and "onnxdc.coders.huffman" in internal("onnxdc.coders")


def test_no_import_cycles() -> None:
    found = cycles({m: internal(m) for m in GRAPH})
    assert not found, "import cycles (late imports included): " + "; ".join(" <-> ".join(c) for c in found)


def test_coders_import_only_coders_and_errors() -> None:
    bad = violations("coders know bytes and symbols only", lambda m, t: not in_layer(m, "onnxdc.coders")
                     or not t.startswith("onnxdc") or in_layer(t, "onnxdc.coders") or t == "onnxdc.errors")
    assert not bad, "\n".join(bad)


def test_format_imports_only_coders() -> None:
    def ok(m: str, t: str) -> bool:
        if not in_layer(m, "onnxdc.format"):
            return True
        if t in ONNX_PACKAGES:
            return False  # a reader of the format needs no onnx
        return (not t.startswith("onnxdc") or in_layer(t, "onnxdc.format") or in_layer(t, "onnxdc.coders")
                or t in LEAVES)

    bad = violations("the format does not know how values were chosen", ok)
    assert not bad, "\n".join(bad)


def test_stages_are_pure_numpy() -> None:
    def ok(m: str, t: str) -> bool:
        if not in_layer(m, "onnxdc.stages"):
            return True
        if t in ONNX_PACKAGES:
            return False
        return not t.startswith("onnxdc") or in_layer(t, "onnxdc.stages") or t in LEAVES

    bad = violations("stages know no ONNX and no container", ok)
    assert not bad, "\n".join(bad)


def test_library_imports_no_cli() -> None:
    front = ("onnxdc.cli", "onnxdc.console", "onnxdc.__main__")
    bad = violations("the library knows no CLI", lambda m, t: any(in_layer(m, f) for f in front)
                     or not in_layer(t, "onnxdc.cli"))
    assert not bad, "\n".join(bad)


def test_cli_uses_only_the_api() -> None:
    allowed = {"onnxdc.api", "onnxdc", *LEAVES}
    bad = violations("the CLI goes through onnxdc.api", lambda m, t: not in_layer(m, "onnxdc.cli")
                     or not t.startswith("onnxdc") or t in allowed or in_layer(t, "onnxdc.cli"))
    assert not bad, "\n".join(bad)


def test_lower_layers_do_not_import_upper_ones() -> None:
    lower = ("onnxdc.coders", "onnxdc.format", "onnxdc.stages", "onnxdc.onnx_io", "onnxdc.fileio")
    upper = ("onnxdc.api", "onnxdc.pipeline", "onnxdc.auto", "onnxdc.calibration", "onnxdc.evaluate",
             "onnxdc.report", "onnxdc.compare", "onnxdc.study")
    bad = violations("never upward", lambda m, t: not any(in_layer(m, lo) for lo in lower)
                     or not any(in_layer(t, up) for up in upper))
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("script", sorted((ROOT / "benchmarks").glob("*.py")), ids=lambda p: p.name)
def test_benchmarks_use_only_the_public_api(script: Path) -> None:
    tree = ast.parse(script.read_text())
    names = {t for t in _imports(tree, "benchmarks", False) if t.startswith("onnxdc")}
    assert names <= {"onnxdc", "onnxdc.api"}, f"{script.name} imports {sorted(names - {'onnxdc', 'onnxdc.api'})}"


def test_no_module_shadows_the_standard_library() -> None:
    clash = [m for m in MODULES if m.rsplit(".", 1)[-1] in sys.stdlib_module_names]
    assert not clash, clash


def test_the_dtype_table_matches_onnx() -> None:
    """onnxdc.dtypes spells out ONNX's element types so the format needs no onnx; they agree."""
    import numpy as np
    from onnx import TensorProto, helper

    from onnxdc import dtypes

    for name, code in TensorProto.DataType.items():
        if code == 0:
            continue
        assert dtypes.TYPES[code].name == name
        assert dtypes.np_dtype(code) == np.dtype(helper.tensor_dtype_to_np_dtype(code)), name
