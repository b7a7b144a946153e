"""The shape of the code (issue 24): small modules, one package per registry kind with its
contract in ``base.py``, imports that flow one way (no cycle, not even through function-local
imports) and no private name crossing modules. Static checks on the source tree."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "r2et"
MAX_LINES = 600
REGISTRY_PACKAGES = ("explain", "methods", "attacks", "models", "data")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def is_package(name: str, mods: dict[str, Path]) -> bool:
    return mods[name].name == "__init__.py"


def type_checking_lines(tree: ast.AST) -> set[int]:
    """Line numbers inside ``if TYPE_CHECKING:`` blocks (never run)."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
            if name == "TYPE_CHECKING":
                for child in node.body:
                    for sub in ast.walk(child):
                        if hasattr(sub, "lineno"):
                            lines.add(sub.lineno)
    return lines


def imports(name: str, path: Path, mods: dict[str, Path]) -> list[tuple[str, list[str], int]]:
    """``(module, imported names, line)`` for every import in the file that runs (anywhere,
    function bodies included; ``if TYPE_CHECKING`` blocks excluded), resolved to absolute
    module names."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = type_checking_lines(tree)
    package = name if is_package(name, mods) else name.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            out += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            out.append((base, [a.name for a in node.names], node.lineno))
    return out


def edges(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the r2et modules its import statements execute: the named module, a
    submodule imported by ``from pkg import sub``, and the packages above them that the
    importer is not itself inside (their ``__init__`` runs first)."""
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        for target, names, _ in imports(name, path, mods):
            if not target.startswith("r2et"):
                continue
            found = {target} | {f"{target}.{n}" for n in names if f"{target}.{n}" in mods}
            for mod in found:
                parts = mod.split(".")
                for i in range(1, len(parts) + 1):
                    up = ".".join(parts[:i])
                    if up in mods and not (name == up or name.startswith(up + ".")):
                        graph[name].add(up)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), or a self-loop."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph[v]:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_module_over_the_limit() -> None:
    sizes = {m: len(p.read_text(encoding="utf-8").splitlines()) for m, p in modules().items()}
    assert max(sizes.values()) > 100  # the count reads real files
    over = {m: n for m, n in sizes.items() if n > MAX_LINES}
    assert not over, f"modules over {MAX_LINES} lines: {over}"


@pytest.mark.parametrize("kind", REGISTRY_PACKAGES)
def test_each_registry_is_a_package_with_its_contract(kind: str) -> None:
    base = PACKAGE / kind / "base.py"
    assert (PACKAGE / kind / "__init__.py").is_file(), f"r2et.{kind} is not a package"
    assert base.is_file(), f"r2et/{kind}/base.py (the contract) is missing"
    doc = ast.get_docstring(ast.parse(base.read_text(encoding="utf-8"))) or ""
    assert "contract" in doc.lower(), f"r2et/{kind}/base.py's docstring states no contract"
    assert "test" in doc.lower(), f"r2et/{kind}/base.py names no test every entry must pass"
    assert not (PACKAGE / f"{kind}.py").exists()


def test_cycle_finder_finds_cycles() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_edges_count_function_local_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "r2et"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from r2et.sub.a import f\n")
    (pkg / "sub" / "a.py").write_text("def f():\n    from r2et.b import g\n    return g\n")
    (pkg / "b.py").write_text("def g():\n    from r2et.sub import f\n")
    mods = {module_name_in(tmp_path, p): p for p in pkg.rglob("*.py")}
    graph = edges(mods)
    assert graph["r2et.sub.a"] == {"r2et.b"}
    assert graph["r2et.b"] == {"r2et.sub"}
    assert cycles(graph) == [["r2et.b", "r2et.sub", "r2et.sub.a"]]


def module_name_in(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_import_cycle_even_through_function_local_imports() -> None:
    mods = modules()
    graph = edges(mods)
    assert sum(map(len, graph.values())) > 50  # the graph reads real imports
    assert cycles(graph) == []


def private(part: str) -> bool:
    return part.startswith("_") and not (part.startswith("__") and part.endswith("__"))


def test_no_private_name_crosses_modules() -> None:
    """No ``from m import _x`` from another r2et module, no ``m._x`` on an imported r2et
    module, and a private module (``_checks``, ``data._prep``) imported only from inside the
    package that contains it."""
    mods = modules()
    bad = []
    for name, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        aliases: dict[str, str] = {}
        for target, names, line in imports(name, path, mods):
            if not target.startswith("r2et"):
                continue
            for i, part in enumerate(parts := target.split(".")):
                owner = ".".join(parts[:i])
                if private(part) and not (name == owner or name.startswith(owner + ".")):
                    bad.append(f"{name}:{line} imports private module {target}")
            for n in names:
                if f"{target}.{n}" in mods:
                    if private(n) and not name.startswith(target):
                        bad.append(f"{name}:{line} imports private module {target}.{n}")
                elif private(n):
                    bad.append(f"{name}:{line} imports private name {n} from {target}")
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("r2et"):
                        aliases[alias.asname or alias.name] = alias.name
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("r2et"):
                for alias in node.names:
                    if f"{node.module}.{alias.name}" in mods:
                        aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and private(node.attr):
                dotted = ast.unparse(node.value)
                if dotted in aliases and aliases[dotted] != name:
                    bad.append(f"{name}:{node.lineno} reads {dotted}.{node.attr}")
    assert not bad, "\n".join(bad)


#: The layers of docs/design.md, lowest first: a module never imports a higher layer.
LAYERS = [
    {"_registry", "_kwargs", "_io", "_checks", "_ball", "_second_order", "_threads", "_version"},
    {"models"},
    {"fastpath", "explain"},
    {"metrics"},
    {"certify"},
    {"attacks"},
    {"methods"},
    {"data"},
    {"evaluation", "verdict", "rebuild"},
    {"runs"},
    {"train", "interop", "describe", "plotting", "plugins"},
    {"bench"},
    {"html_report"},
    {"cli"},
]


def layer_of(module: str) -> int | None:
    """The layer of ``r2et.<part>...``; None for the package root (lazy, imports nothing)."""
    parts = module.split(".")
    if len(parts) < 2:
        return None
    found = [i for i, layer in enumerate(LAYERS) if parts[1] in layer]
    assert found, f"{module} is in no layer of LAYERS (add it, and to docs/design.md)"
    return found[0]


def test_imports_flow_down_the_layers() -> None:
    mods = modules()
    graph = edges(mods)
    up = [
        f"{a} -> {b}"
        for a, targets in graph.items()
        for b in targets
        if layer_of(a) is not None and layer_of(b) is not None and layer_of(b) > layer_of(a)
    ]
    assert not up, "imports that go up a layer:\n" + "\n".join(sorted(up))


def test_no_submodule_imports_its_own_package() -> None:
    mods = modules()
    bad = []
    for name, path in mods.items():
        for target, _, line in imports(name, path, mods):
            own = [p for p in mods if is_package(p, mods) and name.startswith(p + ".")]
            if target in own and target != "r2et":
                bad.append(f"{name}:{line} imports its own package {target}")
    assert not bad, "\n".join(bad)
