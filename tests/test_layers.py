"""The package's architecture holds: layers import downwards only (import-linter's contract
in ``pyproject.toml``), no module cycles, and Ray's private API is reached from one module."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grimp

PACKAGE = Path(__file__).resolve().parents[1] / "unipose_ray"


def test_the_layers_contract_is_kept():
    lint = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint), "--no-cache"], cwd=PACKAGE.parent, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "1 kept, 0 broken" in result.stdout


def test_no_module_imports_one_that_imports_it_back():
    graph = grimp.build_graph("unipose_ray")
    cycles = sorted({tuple(sorted((a, b))) for a in graph.modules
                     for b in graph.find_modules_directly_imported_by(a)
                     if graph.chain_exists(importer=b, imported=a)})
    assert cycles == []


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
    return names


def test_only_runtime_ray_internals_imports_rays_private_modules():
    private = {
        str(path.relative_to(PACKAGE.parent)): sorted(
            name for name in _imported_modules(path)
            if name.startswith("ray.") and ("._private" in name or "._internal" in name))
        for path in PACKAGE.rglob("*.py")}
    users = {path: names for path, names in private.items() if names}
    assert set(users) == {"unipose_ray/runtime/ray_internals.py"}, users
