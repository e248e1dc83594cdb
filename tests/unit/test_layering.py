"""The layers of DESIGN.md: the library never imports scheduler/ or workers/; scheduler/ and
workers/ import greenllm only (they meet through protos/, Ray and entry points)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FORBIDDEN = {
    "greenllm": ("scheduler", "workers"),
    "scheduler": ("workers",),
    "workers": ("scheduler",),
}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_package_imports_a_layer_it_must_not(package: str) -> None:
    offenders = [
        f"{path.relative_to(REPO)} imports {bad}"
        for path in sorted((REPO / package).rglob("*.py"))
        for bad in FORBIDDEN[package]
        if bad in imported_packages(path)
    ]
    assert not offenders, offenders
