"""The runtime's modules put into the package spaCy wrote, and the wheel that imports them from itself."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import spacy
from spacy.cli.package import package

from scripts.workflow.package_runtime import (
    COMPONENT_MODULES,
    PackagingError,
    add_runtime,
    build_wheel,
    drop_requirements,
    own_distributions,
    package_init,
    package_module_folder,
    runtime_modules,
)
from tests.conftest import PROJECT_DIR, install_wheel

RUNTIME = PROJECT_DIR / "scripts" / "runtime"


@pytest.fixture
def package_dir(tmp_path: Path) -> Path:
    """What `spacy package --build none` writes for a pipeline of the entity_scores component alone."""
    nlp = spacy.blank("en")
    nlp.add_pipe("entity_scores")
    nlp.to_disk(tmp_path / "pipeline")
    (tmp_path / "packages").mkdir()
    package(
        tmp_path / "pipeline", tmp_path / "packages", name="probe", version="0.0.1", create_wheel=False, silent=True
    )
    return tmp_path / "packages" / "en_probe-0.0.1"


def test_every_runtime_module_but_its_init_is_shipped():
    assert [path.name for path in runtime_modules(RUNTIME)] == sorted(
        path.name for path in RUNTIME.glob("*.py") if path.name != "__init__.py"
    )


def test_a_folder_without_the_components_is_refused(tmp_path: Path):
    (tmp_path / "helpers.py").write_text("")
    with pytest.raises(PackagingError, match=r"has no encoder_backend\.py, entity_scores\.py: pass .*scripts/runtime"):
        runtime_modules(tmp_path)


def test_a_folder_spacy_did_not_write_is_refused(tmp_path: Path):
    with pytest.raises(PackagingError, match=r"not a package folder written by `spacy package`.*--build none"):
        package_module_folder(tmp_path)


def test_the_init_is_spacys_own_importing_the_components():
    init = package_init(COMPONENT_MODULES)
    assert "from . import encoder_backend\nfrom . import entity_scores\n" in init
    assert "def load(**overrides):" in init


def test_the_runtime_lands_beside_the_packages_init(package_dir: Path):
    shipped = add_runtime(package_dir, RUNTIME)
    folder = package_dir / "en_probe"
    assert sorted(path.stem for path in folder.glob("*.py")) == sorted(["__init__", *shipped])
    assert (folder / "internals.py").read_text() == (RUNTIME / "internals.py").read_text()
    assert "from . import entity_scores" in (folder / "__init__.py").read_text()


@pytest.mark.slow
def test_the_project_is_no_requirement_of_the_wheel(package_dir: Path):
    """spaCy names the project's distribution, whose entry points registered the components; the wheel ships them."""
    requirements = json.loads((package_dir / "meta.json").read_text())["requirements"]
    assert any(each.startswith("en-bert-ner-project") for each in requirements)
    assert own_distributions(RUNTIME) == {"en-bert-ner-project"}
    assert [
        each.split("<")[0].split(">")[0] for each in drop_requirements(package_dir, own_distributions(RUNTIME))
    ] == ["en-bert-ner-project"]
    kept = json.loads((package_dir / "meta.json").read_text())["requirements"]
    assert kept == [each for each in requirements if not each.startswith("en-bert-ner-project")]
    assert drop_requirements(package_dir, own_distributions(RUNTIME)) == []


def test_the_wheel_imports_its_runtime_from_itself(package_dir: Path, tmp_path: Path):
    add_runtime(package_dir, RUNTIME)
    drop_requirements(package_dir, own_distributions(RUNTIME))
    wheel = build_wheel(package_dir)
    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read(next(name for name in archive.namelist() if name.endswith("METADATA"))).decode()
    assert "en-bert-ner-project" not in metadata
    site = install_wheel(wheel, tmp_path / "site")
    code = (
        "import sys, spacy, en_probe; nlp = en_probe.load(); "
        "print(sys.modules['en_probe.entity_scores'].__file__, sys.modules['en_probe.internals'].__file__, "
        "nlp.pipe_names)"
    )
    # The modules answer from the wheel's folder (tests/test_layout.py: they import nothing of the project;
    # test_workflow.py loads a real wheel in a virtualenv without the project).
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(str(site)) == 2 and "['entity_scores']" in result.stdout
