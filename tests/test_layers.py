"""Imports point down: shared model code below the served lists, both below training, scoring and
evaluation, which never import one another (the pipeline, the stream and the CLI sit on top)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

LIB = Path(__file__).resolve().parents[1] / "lib" / "shoprec"
#: Each package and the packages it must not import.
FORBIDDEN = {
    "modeling": {"serving", "training", "scoring", "evaluation", "streaming", "pipeline", "cli"},
    "serving": {"training", "scoring", "evaluation", "streaming", "pipeline", "cli"},
    "training": {"scoring", "evaluation", "streaming", "pipeline", "cli"},
    "scoring": {"training", "evaluation", "streaming", "pipeline", "cli"},
    "evaluation": {"training", "scoring", "streaming", "pipeline", "cli"},
    # the stream runs the batch path's stages (etl, features, scoring) per micro-batch
    "streaming": {"training", "evaluation", "pipeline", "cli"},
}


def _imports(path: Path) -> set[str]:
    """The ``shoprec.<package>`` names a module imports, at its top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "shoprec" and len(parts) > 1:
                found.add(parts[1])
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_layer_imports_nothing_above_or_beside_it(package: str) -> None:
    wrong = {
        str(path.relative_to(LIB)): sorted(_imports(path) & FORBIDDEN[package])
        for path in sorted((LIB / package).rglob("*.py"))
    }
    assert not {k: v for k, v in wrong.items() if v}, wrong
