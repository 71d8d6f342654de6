"""The shape of the code: lines per package, the largest modules and functions, repeated places.

    python bench/code_structure.py [--repo DIR]

Lines are physical lines of `.py` files (generated protobuf modules left out). Repeated places
come from the `duplicates` tool where it is on PATH (the development machines have it), at its
default 6 shared lines and at 4.
"""

from __future__ import annotations

import argparse
import ast
import pathlib
import re
import shutil
import subprocess

PACKAGES = ("famos", "training", "export", "render_server", "clients", "viewer", "protos", "bench", "tests")


def python_files(root: pathlib.Path, package: str) -> list[pathlib.Path]:
    return [p for p in sorted((root / package).rglob("*.py"))
            if "node_modules" not in p.parts and not p.name.endswith(("_pb2.py", "_pb2_grpc.py"))]


def functions(path: pathlib.Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.name, node.end_lineno - node.lineno + 1


def repeated_pairs(root: pathlib.Path, min_lines: int) -> str:
    if shutil.which("duplicates") is None:
        return "n/a (no `duplicates` on PATH)"
    done = subprocess.run(["duplicates", "--most", "200", "--min-lines", str(min_lines), "--seconds", "120"],
                          cwd=root, capture_output=True, text=True, check=False)
    first = done.stdout.splitlines()[0] if done.stdout else ""
    found = re.match(r"(\d+) pairs", first)
    return found.group(1) if found else ("0" if "no duplicates" in first else first)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=pathlib.Path, default=pathlib.Path(__file__).resolve().parents[1])
    args = parser.parse_args(argv)
    root = args.repo.resolve()
    print(f"code structure of {root}\n")
    print("| package | files | lines | largest module (lines) |\n| --- | ---: | ---: | --- |")
    modules: list[tuple[int, str]] = []
    largest_functions: list[tuple[int, str]] = []
    for package in PACKAGES:
        files = python_files(root, package)
        if not files:
            continue
        sizes = [(len(p.read_text().splitlines()), str(p.relative_to(root))) for p in files]
        modules += sizes
        if package not in ("tests", "bench"):
            largest_functions += [(n, f"{p.relative_to(root)}:{name}") for p in files for name, n in functions(p)]
        top = max(sizes)
        print(f"| {package} | {len(files)} | {sum(n for n, _ in sizes)} | {top[1]} ({top[0]}) |")
    shipped = [m for m in modules if not m[1].startswith(("tests/", "bench/"))]
    print("\nlargest shipped modules: " + ", ".join(f"{name} {n}" for n, name in sorted(shipped)[-5:][::-1]))
    print("largest shipped functions: " + ", ".join(f"{name} {n}" for n, name in sorted(largest_functions)[-5:][::-1]))
    print(f"shipped modules over 450 lines: {sum(n > 450 for n, _ in shipped)}")
    print(f"repeated-place pairs (duplicates, 6 lines): {repeated_pairs(root, 6)}")
    print(f"repeated-place pairs (duplicates, 4 lines): {repeated_pairs(root, 4)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
