"""The import graph the architecture promises (docs/architecture.md), read from every module's imports."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = {  # package -> top-level modules it must never import
    "fedssl": {"flwr", "client_app", "server_app", "export", "launcher", "bench"},
    "export": {"flwr", "client_app", "server_app", "launcher", "bench"},
    "launcher": {"flwr", "torch", "client_app", "server_app", "export", "bench"},
    "client_app": {"server_app", "export", "launcher", "bench"},
    "server_app": {"client_app", "export", "launcher", "bench"},
}


def imported_packages(path: Path) -> set[str]:
    """Top-level names of every module ``path`` imports (also inside functions)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_packages_import_only_downwards(package):
    offenders = {str(path.relative_to(REPO)): sorted(imported_packages(path) & FORBIDDEN[package])
                 for path in sorted((REPO / package).rglob("*.py"))}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_launcher_loads_neither_torch_nor_flower():
    code = "import sys, launcher.cli; print(sorted({'torch', 'flwr'} & {m.split('.')[0] for m in sys.modules}))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr
