"""Layers import only downward (see docs/architecture.md): a lower layer importing a higher one fails."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ["kernels", "protocols", "actors", "mesh", "simulations", "bootstrap"]
# Each layer may import itself and the layers listed before it.
ALLOWED = {layer: set(LAYERS[: i + 1]) for i, layer in enumerate(LAYERS)}


def imported_layers(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        found += [(node.lineno, name.split(".")[0]) for name in names if name.split(".")[0] in LAYERS]
    return found


@pytest.mark.parametrize("layer", LAYERS)
def test_layer_imports_only_downward(layer: str) -> None:
    violations = [
        f"{path.relative_to(ROOT)}:{line} imports {target}"
        for path in sorted((ROOT / layer).rglob("*.py"))
        for line, target in imported_layers(path)
        if target not in ALLOWED[layer]
    ]
    assert not violations, "imports that point up a layer:\n" + "\n".join(violations)


def test_the_checker_catches_an_upward_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from mesh.data_dir import DataDir\nimport bootstrap.cli\n")
    assert [target for _, target in imported_layers(bad)] == ["mesh", "bootstrap"]
    assert "mesh" not in ALLOWED["protocols"]
