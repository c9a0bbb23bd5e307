"""The package's own import graph: no import circles, and no module reaches up into __init__.

The graph is built from the source (AST), counting every import statement, also those inside
functions: a deferred import hides a circle from the interpreter, not from the design.
"""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "ddm_numba"


def _modules():
    """{dotted name: (path, is_package)} for every .py file of ddm_numba."""
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        mods[".".join(parts)] = (path, is_pkg)
    return mods


def _imports(name, path, is_pkg, mods):
    """(target module, statement) for each intra-package import in one module."""
    package = name if is_pkg else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in mods:
                    yield alias.name, node
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                if sub in mods:          # from . import module
                    yield sub, node
                elif source in mods:     # from .module import name
                    yield source, node


def import_graph():
    mods = _modules()
    return {name: {target for target, _ in _imports(name, path, is_pkg, mods)} - {name}
            for name, (path, is_pkg) in mods.items()}


def cycles(graph):
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_the_package():
    graph = import_graph()
    assert {"ddm_numba", "ddm_numba.analysis.report", "ddm_numba.plotting"} <= set(graph)
    assert "ddm_numba.analysis.fields" in graph["ddm_numba.analysis.report"]


def test_no_import_cycles_in_the_package():
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_imports_the_version_from_a_package_init():
    mods = _modules()
    offenders = []
    for name, (path, is_pkg) in mods.items():
        if name == "ddm_numba":
            continue
        for target, node in _imports(name, path, is_pkg, mods):
            if (isinstance(node, ast.ImportFrom) and mods[target][1]
                    and any(a.name == "__version__" for a in node.names)):
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert offenders == []


# Public entry points whose keyword options are the user's interface (the CLI commands, and the
# API functions that mirror their options one to one); everything else, kernels included, takes
# at most MAX_PARAMS.
MAX_PARAMS = 12
ENTRY_POINTS = {("ddm_numba/matching.py", "fit"), ("ddm_numba/learn/fit.py", "fit_data"),
                ("ddm_numba/analysis/report.py", "analyze"), ("ddm_numba/simulate.py", "sample_pair"),
                ("ddm_numba/simulate.py", "sample_network"), ("cli/main.py", "sweep"),
                ("cli/main.py", "fit"), ("cli/main.py", "sample"), ("cli/main.py", "analyze")}


def test_no_function_takes_more_than_a_dozen_parameters():
    """Kernels take the named tuples of backends/arrays.py (or plain tuples) rather than long
    argument lists; the only exceptions are the public entry points above."""
    root = PACKAGE.parent
    long = []
    for path in sorted(list(PACKAGE.rglob("*.py")) + list((root / "cli").glob("*.py"))):
        rel = path.relative_to(root).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), rel)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = node.args
                count = (len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs)
                         + (a.vararg is not None) + (a.kwarg is not None))
                if count > MAX_PARAMS and (rel, node.name) not in ENTRY_POINTS:
                    long.append(f"{rel}:{node.lineno} {node.name} ({count})")
    assert not long, long
    assert len(ENTRY_POINTS) == 9      # the list does not grow quietly (8: sample_network, for
    #                                    ddm sample's --first-trial; 9: ddm sweep)
