"""The package's shape: stages as folders, imports pointing only back to earlier stages, and a
torch-free core (the store, the index, the metric and repair run without it)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "vesuvius_data"
#: pipeline order; a module may import its own stage and earlier ones, never later ones
STAGES = {"store": 1, "index": 2, "sampling": 3, "loader": 4, "commands": 5}


def _stage(module: str) -> int:
    """Stage of a dotted module name inside the package (0: shared helpers, metrics, repair)."""
    parts = module.split(".")
    return STAGES.get(parts[1] if len(parts) > 1 else "", 0)


def _imports(path: Path) -> list[str]:
    rel = path.relative_to(PKG.parent).with_suffix("")
    package = ".".join(rel.parts[:-1]) if rel.name != "__init__" else ".".join(rel.parts[:-1])
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module
            out.append(name)
        elif isinstance(node, ast.Import):
            out += [a.name for a in node.names]
    return [m for m in out if m.startswith("vesuvius_data")]


@pytest.mark.parametrize("path", sorted(p for p in PKG.rglob("*.py") if p != PKG / "__init__.py"),
                         ids=lambda p: str(p.relative_to(PKG)))
def test_imports_point_only_to_earlier_stages(path):
    """The package's own ``__init__`` is the facade and may re-export any stage."""
    own = _stage(".".join(path.relative_to(PKG.parent).with_suffix("").parts))
    later = [m for m in _imports(path) if _stage(m) > own]
    assert not later, f"{path.relative_to(PKG)} (stage {own}) imports later stages: {later}"


def test_the_core_imports_without_torch():
    code = ("import sys, vesuvius_data, vesuvius_data.store, vesuvius_data.index, "
            "vesuvius_data.sampling, vesuvius_data.metrics, vesuvius_data.repair, "
            "vesuvius_data.derived, vesuvius_data.synthetic; "
            "assert 'torch' not in sys.modules, 'torch was imported'; "
            "vesuvius_data.make_loader; assert 'torch' in sys.modules")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
