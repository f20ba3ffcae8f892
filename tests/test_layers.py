"""The package's layers: imports point down, no module imports its way back to itself."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "chaosstream"

LAYERS: list[set[str]] = [
    {"_version", "yamlfile"},
    {"streams"},
    {"faults"},
    {"proxy", "mock", "toxiproxy"},
    {"verify"},
    {"clients", "load"},
    {"integrations", "testing", "examples"},
    {"cli"},
    {"__main__"},
]
"""Lowest first. A module may import its own layer's packages only within the same package."""


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(path: Path, name: str, is_package: bool) -> set[str]:
    """Every chaosstream module ``path`` imports, at any depth (lazy imports count too)."""
    out: set[str] = set()
    base = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("chaosstream"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base.rsplit(".", node.level - 1)[0] if node.level > 1 else base
                target = f"{anchor}.{node.module}" if node.module else anchor
            else:
                target = node.module or ""
            if target.startswith("chaosstream"):
                out.add(target)
                out.update(f"{target}.{a.name}" for a in node.names)
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        deps = {d for d in _imports(path, name, path.name == "__init__.py") if d in mods}
        graph[name] = deps - {name}
    return graph


def _layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"{module} is in no layer: add its top-level name to LAYERS")


def test_every_module_has_a_layer() -> None:
    """Each top-level module or package of chaosstream is placed in a layer."""
    for module in _graph():
        if module != "chaosstream":
            _layer(module)


def test_imports_point_down() -> None:
    """No module imports from a higher layer, nor from a sibling package of its own layer."""
    upward = []
    for module, deps in _graph().items():
        if module == "chaosstream":
            continue
        for dep in deps:
            if dep == "chaosstream":
                continue
            same_package = module.split(".")[1] == dep.split(".")[1]
            if _layer(dep) > _layer(module) or (_layer(dep) == _layer(module) and not same_package):
                upward.append(f"{module} -> {dep}")
    assert not upward, "imports that point up or sideways:\n" + "\n".join(sorted(upward))


def test_no_import_circles() -> None:
    """No chain of imports leads a module back to itself (package faces excepted)."""
    graph = _graph()
    # A package's __init__ re-exporting its children is not a circle of logic.
    inner = {
        m: {d for d in deps if not (m.startswith(d + ".") and d in graph)}
        for m, deps in graph.items()
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in inner[v]:
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
                circles.append(sorted(component))

    for v in sorted(inner):
        if v not in index:
            visit(v)
    assert not circles, f"import circles: {circles}"


def _is_module(dotted: str) -> bool:
    return (PACKAGE.parent / (dotted.replace(".", "/") + ".py")).exists()


def test_no_private_names_across_modules() -> None:
    """A module never imports another module's private (_x) name; shared code gets a public home."""
    bad = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("chaosstream"):
                bad += [
                    f"{path.relative_to(PACKAGE.parent)}: {node.module}.{a.name}"
                    for a in node.names
                    if a.name.startswith("_")
                    and not a.name.startswith("__")
                    # a package's own private submodules (structlog's _private habit) are fine
                    and not _is_module(f"{node.module}.{a.name}")
                ]
    assert not bad, "private names imported across modules:\n" + "\n".join(bad)


@pytest.mark.parametrize("package", sorted(p.parent.name for p in PACKAGE.glob("*/__init__.py")))
def test_package_states_its_job(package: str) -> None:
    """Each package's __init__ opens with a docstring line stating its job and an __all__."""
    tree = ast.parse((PACKAGE / package / "__init__.py").read_text())
    doc = ast.get_docstring(tree)
    assert doc and doc.splitlines()[0].endswith("."), f"{package}: a first line stating its job"
    names = [
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, (ast.Assign, ast.AnnAssign))
        and any(
            isinstance(t, ast.Name) and t.id == "__all__"
            for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
        )
    ]
    # Its order is ruff's RUF022 (constants, classes, functions), checked by the lint test.
    assert names, f"{package}: no __all__"


TESTS = Path(__file__).resolve().parent


def _twin(path: Path) -> Path:
    rel = path.relative_to(PACKAGE)
    return TESTS / rel.parent / f"test_{path.name}"


def _public_modules() -> list[Path]:
    return sorted(
        p
        for p in PACKAGE.rglob("*.py")
        if not p.name.startswith("_") and not any(part.startswith("_") for part in p.parts)
    )


def test_every_public_module_has_a_test_twin() -> None:
    """chaosstream/x/y.py is tested in tests/x/test_y.py (mitmproxy's habit)."""
    missing = [
        f"{p.relative_to(PACKAGE.parent)} -> {_twin(p).relative_to(TESTS.parent)}"
        for p in _public_modules()
        if not _twin(p).is_file()
    ]
    assert not missing, "modules without a test twin:\n" + "\n".join(missing)
