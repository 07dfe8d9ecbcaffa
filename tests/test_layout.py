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


RUNTIME = SCRIPTS / "runtime"
RUNTIME_MODULES = sorted(RUNTIME.glob("*.py"))
MAX_MODULE_LINES = 600


def sibling_imports(path: Path) -> set[str]:
    """The modules of its own package a file imports relatively (`from . import x`, `from .x import y`)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level:
            names.update([node.module] if node.module else [alias.name for alias in node.names])
    return names


@pytest.mark.parametrize("path", RUNTIME_MODULES, ids=lambda path: path.name)
def test_the_shipped_runtime_imports_nothing_of_the_project_but_its_own_modules(path: Path):
    """The wheel ships these modules flat inside en_bert_ner/ (scripts.workflow.package_runtime): no `scripts` there."""
    assert not {name for name in imported_modules(path) if name.split(".")[0] == "scripts"}
    assert all(
        node.level in (0, 1) for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.ImportFrom)
    )
    siblings = {module.stem for module in RUNTIME_MODULES}
    assert sibling_imports(path) <= siblings, f"{path.name} imports {sibling_imports(path) - siblings} relatively"


@pytest.mark.parametrize("module", ["scripts.runtime.backends", "scripts.lib.cli"])
def test_the_backend_names_load_without_torch(module: str):
    """The CLIs list the backends in --help; torch takes seconds to import."""
    code = f"import sys, {module}; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_DIR, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_no_module_does_many_jobs():
    """A module past this length has always turned out to hold several jobs; split it into a package."""
    lengths = {path: len(path.read_text(encoding="utf-8").splitlines()) for path in SCRIPTS.rglob("*.py")}
    assert not {str(path.relative_to(PROJECT_DIR)): n for path, n in lengths.items() if n > MAX_MODULE_LINES}


def test_a_benchmark_that_only_reads_json_does_not_import_torch():
    code = "import sys, scripts.benchmarks.accuracy; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_DIR, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


SERVING = SCRIPTS / "serving"
# The rooms of the engines behind the tools' CLIs.
ENGINES = (SERVING, SCRIPTS / "annotation")
RAY_MODULE = SERVING / "ray_app.py"


def imported_at_import_time(path: Path) -> set[str]:
    """The modules the file imports when it is itself imported: at its top, in classes, not inside functions."""
    names = set()
    pending = list(ast.parse(path.read_text(encoding="utf-8")).body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        pending.extend(ast.iter_child_nodes(node))
    return names


@pytest.mark.parametrize(
    "path", sorted(path for room in ENGINES for path in room.glob("*.py")), ids=lambda path: module_name(path)
)
def test_the_engines_import_nothing_of_the_tools(path: Path):
    """An engine serves its CLI (scripts.tools.serve, annotate, annotate_ray), never the other way round."""
    imported = {name for name in imported_modules(path) if name.split(".")[:2] == ["scripts", "tools"]}
    assert not imported, f"{module_name(path)} imports {sorted(imported)}: move what it needs into scripts/lib"


@pytest.mark.parametrize("path", sorted(set(SERVING.glob("*.py")) - {RAY_MODULE}), ids=lambda path: path.name)
def test_only_the_ray_module_of_the_server_imports_ray_when_imported(path: Path):
    """Ray takes seconds to import and `serve` on this machine never needs it: only ray_app.py imports it."""
    imported = {name for name in imported_at_import_time(path) if name.split(".")[0] == "ray"}
    assert not imported, f"{module_name(path)} imports {sorted(imported)} at its top: import it in ray_app.py only"


def test_serving_on_this_machine_does_not_import_ray():
    code = "import sys, scripts.tools.serve, scripts.serving.supervisor; print('ray' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_DIR, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
