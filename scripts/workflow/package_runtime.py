"""The runtime's modules put into the package `spacy package --build none` wrote, then the wheel built.

`spacy package --code` ships single files: it imports each one alone at build time, so modules
that import one another (scripts/runtime/*.py, relatively) cannot go through it. This step does what
`--code` does for a package of modules: it copies them next to the package's __init__.py, writes
that __init__.py from spaCy's own template importing the modules that register the components, and
builds the wheel the way `spacy package --build wheel` does (`python -m build --wheel`). Inside the
wheel the modules are en_bert_ner.encoder_backend, en_bert_ner.entity_scores, ...; they import
nothing of this project.

spaCy lists, in meta.json's requirements, the distribution of every module whose functions the
pipeline's config names: the project's own (en-bert-ner-project, whose entry points registered the
components when `spacy package` ran). The wheel ships that code itself, and the project is on no
package index, so this step takes it out of the requirements before building: otherwise
`pip install` of the wheel fails on it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import typer
from wasabi import msg

from scripts.lib.atomic import write_text_atomic
from scripts.lib.cli import fail

# The runtime's modules that register spaCy factories: the package's __init__.py imports them, as --code would.
COMPONENT_MODULES = ("encoder_backend", "entity_scores")


class PackagingError(Exception):
    """The package folder or the runtime is not what this step expects: the message names it and the fix."""


def package_module_folder(package_dir: Path) -> Path:
    """The Python package inside a folder `spacy package` wrote (meta.json's lang_name beside setup.py)."""
    meta_file = package_dir / "meta.json"
    if not (package_dir / "setup.py").is_file() or not meta_file.is_file():
        raise PackagingError(
            f"{package_dir} is not a package folder written by `spacy package` (no setup.py and meta.json). "
            "Run `python -m spacy package training/model-best packages --build none` first and pass the folder "
            "it names, e.g. packages/en_bert_ner-1.0.0."
        )
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    folder = package_dir / f"{meta['lang']}_{meta['name']}"
    if not (folder / "__init__.py").is_file():
        raise PackagingError(f"{folder} has no __init__.py: run `spacy package` again with --force.")
    return folder


def runtime_modules(runtime_dir: Path) -> list[Path]:
    """The runtime's modules to ship: every .py file of the folder but its own __init__.py."""
    modules = sorted(path for path in runtime_dir.glob("*.py") if path.name != "__init__.py")
    missing = [name for name in COMPONENT_MODULES if runtime_dir / f"{name}.py" not in modules]
    if missing:
        raise PackagingError(
            f"{runtime_dir} has no {', '.join(name + '.py' for name in missing)}: pass the runtime's folder, "
            "scripts/runtime."
        )
    return modules


def own_distributions(runtime_dir: Path) -> set[str]:
    """The installed distributions that provide the runtime's top-level package (scripts): the project's own."""
    from importlib.metadata import packages_distributions

    top_level = runtime_dir.resolve().parent.name
    return {canonical_name(name) for name in packages_distributions().get(top_level, [])}


def canonical_name(distribution: str) -> str:
    """A distribution's name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", distribution).lower()


def drop_requirements(package_dir: Path, distributions: set[str]) -> list[str]:
    """meta.json's requirements without those on `distributions` (rewritten in place); the ones dropped."""
    from packaging.requirements import Requirement

    meta_file = package_dir / "meta.json"
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    requirements = meta.get("requirements", [])
    dropped = [each for each in requirements if canonical_name(Requirement(each).name) in distributions]
    if dropped:
        meta["requirements"] = [each for each in requirements if each not in dropped]
        write_text_atomic(meta_file, json.dumps(meta, indent=2) + "\n")
    return dropped


def package_init(component_modules: Sequence[str]) -> str:
    """The package's __init__.py as `spacy package --code` writes it for these modules."""
    from spacy.cli.package import TEMPLATE_INIT

    return TEMPLATE_INIT.format(imports="\n".join(f"from . import {name}" for name in component_modules))


def add_runtime(package_dir: Path, runtime_dir: Path) -> list[str]:
    """Copy the runtime's modules into the package and import its components from its __init__.py; their names."""
    folder = package_module_folder(package_dir)
    modules = runtime_modules(runtime_dir)
    for module in modules:
        shutil.copyfile(module, folder / module.name)
    write_text_atomic(folder / "__init__.py", package_init(COMPONENT_MODULES))
    return [module.stem for module in modules]


def build_wheel(package_dir: Path) -> Path:
    """`python -m build --wheel` in the package folder, as `spacy package --build wheel` runs it; the wheel's path."""
    result = subprocess.run([sys.executable, "-m", "build", ".", "--wheel"], cwd=package_dir)
    wheels = sorted((package_dir / "dist").glob("*.whl"), key=lambda path: path.stat().st_mtime)
    if result.returncode != 0 or not wheels:
        raise PackagingError(
            f"`python -m build --wheel` failed in {package_dir} (exit status {result.returncode}; its output is "
            "above). It needs the `build` package and setuptools: pip install build."
        )
    return wheels[-1]


def main(
    package_dir: Path = typer.Argument(
        ..., help="Folder `spacy package --build none` wrote, e.g. packages/en_bert_ner-1.0.0"
    ),
    runtime_dir: Path = typer.Argument(Path("scripts/runtime"), help="The runtime's modules to ship"),
) -> None:
    """Ship the runtime in PACKAGE_DIR's package and build its wheel into PACKAGE_DIR/dist."""
    try:
        shipped = add_runtime(package_dir, runtime_dir)
        msg.good(f"Added the runtime's {len(shipped)} modules to the package", ", ".join(shipped))
        dropped = drop_requirements(package_dir, own_distributions(runtime_dir))
        if dropped:
            msg.info("Dropped from the requirements (the wheel ships that code)", ", ".join(dropped))
        wheel = build_wheel(package_dir)
    except PackagingError as err:
        fail("Packaging failed", err)
    msg.good("Built the wheel", str(wheel))


if __name__ == "__main__":
    typer.run(main)
