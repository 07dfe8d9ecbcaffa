"""The layout's rules: no CLI imports another CLI, the shipped component stands alone, no torch for JSON readers."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PROJECT_DIR

SCRIPTS = PROJECT_DIR / "scripts"


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(PROJECT_DIR).with_suffix("").parts)


def is_cli(path: Path) -> bool:
    """A CLI module is one that runs as `python -m`: it ends with an `if __name__ == "__main__":` block."""
    return 'if __name__ == "__main__":' in path.read_text(encoding="utf-8")


def imported_modules(path: Path) -> set[str]:
    """Every module the file imports, at the top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


CLI_MODULES = {module_name(path): path for path in SCRIPTS.rglob("*.py") if is_cli(path)}


def test_the_rooms_hold_the_clis():
    rooms = {name.split(".")[1] for name in CLI_MODULES}
    assert rooms == {"workflow", "tools", "benchmarks"}
    assert "scripts.workflow.evaluate" in CLI_MODULES and "scripts.lib.scoring" not in CLI_MODULES


@pytest.mark.parametrize("name", sorted(CLI_MODULES))
def test_no_cli_module_imports_another(name: str):
    others = set(CLI_MODULES) - {name}
    imported = imported_modules(CLI_MODULES[name]) & others
    assert not imported, f"{name} imports the CLI module(s) {sorted(imported)}: move what they share into a library"


def test_the_shipped_component_imports_nothing_of_the_project():
    """`spacy package --code` copies this one file into the wheel, where no `scripts` package exists."""
    imported = imported_modules(SCRIPTS / "components" / "encoder_backend.py")
    assert not {name for name in imported if name.split(".")[0] == "scripts"}


def test_a_benchmark_that_only_reads_json_does_not_import_torch():
    code = "import sys, scripts.benchmarks.accuracy; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_DIR, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
