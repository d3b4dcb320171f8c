"""Imports flow one way: every subpackage (and top-level module) of `weighted_mtp` sits in a layer
and imports only from its own layer or lower ones, with no cycle between subpackages. Imports
inside functions count too (hiding an import in a function does not remove the dependency), and
the package's own modules are imported at the top: at most a handful of function-level ones.
The layers are written down in the README ("Architecture: layers")."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "src" / "weighted_mtp"

# Lowest first. A unit may import from its own layer (without a cycle) or any lower one.
LAYERS = [
    {"errors", "files", "jsonl", "constants", "log", "cache", "weighted_mtp"},  # core
    {"config"},  # typed schema, loading, the objective registry
    {"losses", "rl", "metrics"},  # pure maths
    {"data", "rag"},  # records, sampling, collation; passages and retrievers
    {"world"},  # the synthetic multi-hop world StepER and CLaRa share
    {"models"},  # MTP model, heads, loaders, the embedded models
    {"eval", "weighting", "mtp_heads"},  # generation + sandboxed scoring; token weights; head distillation
    {"steper", "clara"},  # method packages
    {"objectives"},  # one objective per method, registered by stage name
    {"training"},  # the one loop
    {"report", "recipes"},  # reports of runs; runs that chain training runs
    {"study", "quickstart"},
    {"cli", "__main__"},
]
MAX_FUNCTION_LEVEL = 15


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    return ".".join(rel.parts).removesuffix(".__init__")


def _imports(path: Path):
    """(imported module, line, inside a function) for every import of the package's own modules;
    relative imports are resolved, `from weighted_mtp import x` counts as module `weighted_mtp.x`,
    and `if TYPE_CHECKING:` blocks are skipped (they never run)."""
    tree = ast.parse(path.read_text())
    here = _module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] if base == "weighted_mtp" else [base]
        else:
            continue
        in_function, type_checking = False, False
        p = parents.get(node)
        while p is not None:
            in_function |= isinstance(p, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            type_checking |= isinstance(p, ast.If) and "TYPE_CHECKING" in ast.unparse(p.test)
            p = parents.get(p)
        if type_checking:
            continue
        for target in targets:
            if target == "weighted_mtp" or target.startswith("weighted_mtp."):
                yield target, node.lineno, in_function


def _graph():
    edges: dict[tuple[str, str], list[str]] = {}
    function_level = []
    for path in sorted(PACKAGE.rglob("*.py")):
        src = _unit(_module_name(path))
        for target, line, in_function in _imports(path):
            where = f"{path.relative_to(PACKAGE)}:{line}"
            if in_function:
                function_level.append(f"{where} {target}")
            dst = _unit(target)
            if dst != src:
                edges.setdefault((src, dst), []).append(where)
    return edges, function_level


def _rank(unit: str) -> int:
    for i, layer in enumerate(LAYERS):
        if unit in layer:
            return i
    raise AssertionError(f"weighted_mtp.{unit} is in no layer of tests/test_import_layers.py (and the README): "
                         "place it before importing it")


def test_every_unit_has_a_layer():
    units = {_unit(_module_name(p)) for p in PACKAGE.rglob("*.py")}
    for unit in units:
        _rank(unit)


def test_no_lower_layer_imports_a_higher_one():
    edges, _ = _graph()
    upward = [f"{src} -> {dst} ({', '.join(where[:3])})" for (src, dst), where in sorted(edges.items())
              if _rank(dst) > _rank(src)]
    assert not upward, "imports against the layer order:\n" + "\n".join(upward)


def test_no_import_cycle_between_subpackages():
    edges, _ = _graph()
    graph: dict[str, set[str]] = {}
    for src, dst in edges:
        graph.setdefault(src, set()).add(dst)
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(unit: str, path: list[str]) -> list[str] | None:
        state[unit] = 1
        for nxt in sorted(graph.get(unit, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt] if nxt in path else [unit, nxt]
            if nxt not in state and (cycle := visit(nxt, path + [nxt])):
                return cycle
        state[unit] = 2
        return None

    for unit in sorted(graph):
        if unit not in state:
            cycle = visit(unit, [unit])
            assert cycle is None, "import cycle: " + " -> ".join(
                f"{a} ({edges[(a, b)][0]})" for a, b in zip(cycle, cycle[1:])) + f" -> {cycle[-1]}"


def test_own_modules_are_imported_at_the_top():
    _, function_level = _graph()
    assert len(function_level) <= MAX_FUNCTION_LEVEL, (
        f"{len(function_level)} function-level imports of the package's own modules (at most "
        f"{MAX_FUNCTION_LEVEL}); import them at the top of the file:\n" + "\n".join(function_level))


def test_the_checker_sees_function_level_and_relative_imports(tmp_path):
    """The parser itself: an import inside a function and a relative import both count."""
    pkg = tmp_path / "weighted_mtp" / "models"
    pkg.mkdir(parents=True)
    f = pkg / "x.py"
    f.write_text("from ..training import loop\n\ndef g():\n    from weighted_mtp.objectives import base\n")
    global PACKAGE
    saved, PACKAGE = PACKAGE, tmp_path / "weighted_mtp"
    try:
        found = sorted(_imports(f))
    finally:
        PACKAGE = saved
    assert found == [("weighted_mtp.objectives", 4, True), ("weighted_mtp.training", 1, False)]
