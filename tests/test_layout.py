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
    """The name a module imports as: every part installs under famos (famos/training/x.py is
    famos.training.x)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    if parts[0] != "famos":
        parts.insert(0, "famos")
    return ".".join(parts)


def part_of(module: str) -> str:
    """famos.training.loop -> training; famos.units -> famos."""
    second = module.split(".")[1] if "." in module else ""
    return second if second in PARTS else "famos"


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
        part = part_of(name)
        for imported in imports_of(path, modules):
            if part_of(imported) in FORBIDDEN.get(part, ()):
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
    source.write_text("def f():\n    from famos.export.writer import export_bundle\n")
    assert imports_of(source, project_modules()) == {"famos.export.writer"}


# One job per module: past this a module has taken on a second job (the design review's bound).
MAX_MODULE_LINES = 450
# Names that each part defines on purpose: a command's entry point, and the two sides of the
# gRPC seam, which mirror each other (the server's and the client's conversions).
SHARED_NAMES = {"main", "render_request", "render_event"}
# Concepts with one home: the module that defines each, and the only modules that may compute it.
ONE_HOME = {
    "dpi_for_print_size": ("famos.units", {"famos.request", "famos.clients.batch.planning"}),
    "output_size": ("famos.units", {"famos.request", "famos.request_args", "famos.training.evaluate"}),
    "plan_chunks": ("famos.planning", {"famos.chunk_loop"}),
}


def shipped_modules() -> dict[str, pathlib.Path]:
    return {name: path for name, path in project_modules().items()
            if not path.name.endswith(("_pb2.py", "_pb2_grpc.py")) and "node_modules" not in path.parts}


def test_every_module_has_one_job_by_size():
    over = [f"{name}: {n} lines" for name, path in shipped_modules().items()
            if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES]
    assert not over, f"split by job (at most {MAX_MODULE_LINES} lines):\n" + "\n".join(over)


def test_no_name_is_defined_in_two_modules():
    """Two top-level classes or functions of one name (two `Job`s, two `tiff_options`) are one
    concept with two homes, or two concepts a reader will confuse."""
    homes: dict[str, list[str]] = {}
    for name, path in shipped_modules().items():
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.ClassDef, ast.FunctionDef)) and not node.name.startswith("_"):
                homes.setdefault(node.name, []).append(name)
    twice = {name: where for name, where in homes.items() if len(where) > 1 and name not in SHARED_NAMES}
    assert not twice, "\n".join(f"{name}: {', '.join(where)}" for name, where in sorted(twice.items()))


def test_request_policies_are_called_from_their_one_home(tmp_path):
    """The output size and the DPI policy are resolved in famos.request (and the batch's and the
    training canvas's own rules); a door computing them itself is a fifth home."""
    modules = shipped_modules()
    wrong = []
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                called = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
                if called in ONE_HOME:
                    home, allowed = ONE_HOME[called]
                    if name != home and name not in allowed:
                        wrong.append(f"{name} calls {called} (its home: {home}; allowed: {sorted(allowed)})")
    assert not wrong, "\n".join(wrong)

    stray = tmp_path / "door.py"  # the check is not vacuous: a door's own DPI policy is caught
    stray.write_text("from famos.units import dpi_for_print_size\ndpi_for_print_size(width_px=1, height_px=1, print_size=(1, 1))\n")
    assert any(isinstance(n, ast.Call) and getattr(n.func, "id", "") in ONE_HOME for n in ast.walk(ast.parse(stray.read_text())))
