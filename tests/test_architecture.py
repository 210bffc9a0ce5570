"""The import graph against the layer order, and ARCHITECTURE.md's module map against the tree.

Every import counts: top-level, inside functions (lazy) and under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "p2p_ledger"

# What each part may import (besides itself). "" is the package's own __init__.py.
ALLOWED = {
    "": {"core", "trio"},
    "core": set(),
    "trio": {"core"},
    "sim": {"core"},
    "harness": {"core", "trio", "sim"},
    "testing": {"core", "trio", "sim", "harness"},
    "cli": {"", "core", "trio", "sim", "harness", "testing"},
    "__main__": {"cli"},
}


def _modules() -> dict[str, Path]:
    """Dotted name (without the ``p2p_ledger.`` prefix) → file; a package is its __init__."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules ``name`` imports (names relative to the package)."""
    parts = [p for p in name.split(".") if p]
    package = parts if path.name == "__init__.py" else parts[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name.removeprefix("p2p_ledger").lstrip(".") for a in node.names
                       if a.name.split(".")[0] == "p2p_ledger"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            elif (node.module or "").split(".")[0] == "p2p_ledger":
                module = (node.module or "").removeprefix("p2p_ledger").lstrip(".")
            else:
                continue
            # ``from . import x`` imports the module x; ``from .m import y`` imports m
            targets = [module, *(f"{module}.{a.name}".lstrip(".") for a in node.names)]
        else:
            continue
        found.update(t for t in targets if t in modules and t != name)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _part(name: str) -> str:
    return name.split(".")[0]


def test_imports_point_down_the_layers() -> None:
    bad = [f"{name} imports {dep}" for name, deps in _graph().items() for dep in sorted(deps)
           if _part(dep) != _part(name) and _part(dep) not in ALLOWED[_part(name)]]
    assert not bad, "imports against the layer order (ARCHITECTURE.md):\n" + "\n".join(bad)


def test_there_is_no_import_cycle() -> None:
    graph = _graph()
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for dep in sorted(graph[name]):
            if state.get(dep) == 1:
                cycle = path[path.index(dep):] + [dep] if dep in path else [name, dep]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep, [*path, dep])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def _module_map() -> list[str]:
    """The modules ARCHITECTURE.md lists, in order, as dotted names."""
    text = (ROOT / "ARCHITECTURE.md").read_text()
    block = re.search(r"```\np2p_ledger/\n(.*?)```", text, re.S)
    assert block, "ARCHITECTURE.md has no module map (a code block starting with p2p_ledger/)"
    listed, folder = [], ""
    for line in block.group(1).splitlines():
        m = re.match(r"( +)([\w.]+)(/|\.py)\s", line + " ")
        if not m:
            continue
        indent, stem, kind = len(m.group(1)), m.group(2), m.group(3)
        if kind == "/":
            folder = stem
        elif indent == 2:
            listed.append("" if stem == "__init__" else stem)
        else:
            listed.append(f"{folder}.{stem}")
    return listed


def test_the_module_map_matches_the_tree_and_its_order() -> None:
    listed = _module_map()
    tree = {n for n, p in _modules().items()
            if p.name != "__init__.py" and n != "__main__"} | {""}
    assert set(listed) == tree, (f"missing from ARCHITECTURE.md: {sorted(tree - set(listed))}; "
                                 f"listed but absent: {sorted(set(listed) - tree)}")
    graph = _graph()
    position = {name: i for i, name in enumerate(listed)}
    bad = [f"{name} imports {dep}, listed below it" for name in listed
           for dep in sorted(graph[name]) if dep in position and _part(dep) == _part(name)
           and "." in name and position[dep] > position[name]]
    assert not bad, "ARCHITECTURE.md lists each module below what it imports:\n" + "\n".join(bad)
