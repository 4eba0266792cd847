"""The dependency arrows of DESIGN.md, made executable: each layer imports only what it may.

(import-linter cannot follow our package-dir mapping, so the imports are read with ast.)
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ALLOWED = {
    "stream": set(),
    "analyzers": {"stream"},
    "simulators": set(),
    "viewer": {"stream"},
    "devices": {"stream", "simulators"},
    "service": {"stream", "analyzers", "devices", "viewer", "simulators"},
}


def emlive_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for n in names:
            parts = n.split(".")
            if parts[0] == "emlive" and len(parts) > 1:
                found.add(parts[1])
    return found


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layer_imports_only_what_design_allows(layer):
    for path in (ROOT / layer).rglob("*.py"):
        bad = emlive_imports(path) - ALLOWED[layer] - {layer}
        assert not bad, f"{path.relative_to(ROOT)} imports emlive.{bad} (allowed: {ALLOWED[layer]})"
