"""Layers import only downward (see docs/architecture.md): a lower layer importing a higher one fails."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.imports import imported_modules

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ["kernels", "protocols", "actors", "mesh", "simulations", "bootstrap"]
# Each layer may import itself and the layers listed before it.
ALLOWED = {layer: set(LAYERS[: i + 1]) for i, layer in enumerate(LAYERS)}


def imported_layers(path: Path) -> list[tuple[int, str]]:
    return [
        (line, name.split(".")[0]) for line, name in imported_modules(path) if name.split(".")[0] in LAYERS
    ]


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
