"""The architecture as a test: which part may import which, and no import cycle anywhere.

Imports are read from the source (ast), top-level and inside functions alike, so a cycle cannot
hide behind a late import.
"""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PARTS = ("famos", "training", "export", "render_server", "clients", "protos", "viewer")
# part -> parts it must never import
FORBIDDEN = {
    "famos": {"training", "export", "render_server", "clients", "viewer"},
    "viewer": {"training", "export", "render_server", "clients"},
    "training": {"export", "render_server", "clients"},
    "export": {"render_server", "clients", "training"},
    "render_server": {"export", "training", "clients"},
    "clients": {"render_server", "export", "training"},
}


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, pathlib.Path]:
    return {module_name(p): p for part in PARTS for p in (ROOT / part).rglob("*.py")}


def imports_of(path: pathlib.Path, modules: dict[str, pathlib.Path]) -> set[str]:
    """Project modules that ``path`` imports (``from a.b import c`` counts a.b.c when it is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(name for name in names if name in modules)
    return found


def test_parts_import_only_what_the_design_allows():
    modules = project_modules()
    broken = []
    for name, path in modules.items():
        part = name.split(".")[0]
        for imported in imports_of(path, modules):
            if imported.split(".")[0] in FORBIDDEN.get(part, ()):
                broken.append(f"{name} imports {imported}")
    assert not broken, "\n".join(broken)


def test_no_import_cycles():
    modules = project_modules()
    graph = {name: {m for m in imports_of(path, modules) if m != name} for name, path in modules.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycles.append(" -> ".join(stack[stack.index(target):] + [target]))
            elif target not in state:
                visit(target, stack + [target])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "\n".join(cycles)


def test_the_check_sees_a_forbidden_import(tmp_path):
    """The import reader finds imports inside functions too (where cycles used to hide)."""
    source = tmp_path / "late.py"
    source.write_text("def f():\n    from export.writer import export_bundle\n")
    assert imports_of(source, project_modules()) == {"export.writer"}
