"""The README's module map is true: imports only point right or down, and serving needs no pandas."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "exporter"


def _layers() -> dict[str, tuple[int, int]]:
    """Module → (line, position) from the code block of the README's Architecture section."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Architecture"):]
    block = section[section.index("```") + 3:]
    block = block[:block.index("```")]
    out = {}
    for row, line in enumerate(block.strip().splitlines()):
        names = re.match(r"([\w./]+(?: ─ [\w./]+)*)", line)
        assert names, line
        for col, name in enumerate(names.group(1).split(" ─ ")):
            out[name.removesuffix(".py").rstrip("/")] = (row, col)
    return out


def _imports(path: Path) -> set[str]:
    """First-level exporter modules a file imports (``exporter.formats.native`` → ``formats``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("exporter"):
            parts = node.module.split(".")
            if len(parts) > 1:
                found.add(parts[1])
            else:
                found.update(a.name for a in node.names if (PACKAGE / f"{a.name}.py").exists())
    return found - {"__init__"}


def test_every_module_is_on_the_map_and_imports_only_right_or_down():
    layers = _layers()
    modules = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"} | {"formats"}
    assert modules == set(layers), f"README map differs from exporter/: {modules ^ set(layers)}"
    wrong = []
    for module in sorted(modules):
        paths = sorted((PACKAGE / "formats").glob("*.py")) if module == "formats" else [PACKAGE / f"{module}.py"]
        for target in set().union(*(_imports(p) for p in paths)) - {module}:
            if not layers[target] > layers[module]:
                wrong.append(f"{module} imports {target}")
    assert not wrong, "imports against the README's module map: " + ", ".join(wrong)


def test_serving_does_not_import_pandas():
    code = "import exporter.server, exporter.service, exporter.cli, sys; print('pandas' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.stdout.strip() == "False", result.stdout + result.stderr
