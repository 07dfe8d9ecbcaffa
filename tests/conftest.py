"""Shared fixtures: where the CoNLL-2003 files are, and a tiny BERT to train on.

The real files are research-licensed and never copied into the project: tests
read them from $CONLL2003_DIR (default ../shared/data/conll2003). Locally a
missing folder skips the real-data tests; in CI (CI=true) it fails them.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.tiny_bert import build_tiny_bert

PROJECT_DIR = Path(__file__).resolve().parent.parent
FIXTURE_CONLL_DIR = Path(__file__).resolve().parent / "fixtures" / "conll_small"
REAL_SPLIT_FILES = ("train.txt", "valid.txt", "test.txt")


def flat(text: str) -> str:
    """CLI output with the line wrapping of wasabi and the boxes of rich undone."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


def real_conll_dir() -> Path | None:
    folder = Path(os.environ.get("CONLL2003_DIR", PROJECT_DIR.parent / "shared" / "data" / "conll2003"))
    return folder if all((folder / name).is_file() for name in REAL_SPLIT_FILES) else None


def missing_real_data(reason: str) -> None:
    message = (
        f"CoNLL-2003 files not found (set CONLL2003_DIR to the folder with {', '.join(REAL_SPLIT_FILES)}): {reason}"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session", autouse=True)
def onnx_graph_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The ONNX backends' graph cache for this test session (and its subprocesses), not the user's ~/.cache."""
    from scripts.runtime.backends import CACHE_VARIABLE

    folder = tmp_path_factory.mktemp("onnx_graph_cache")
    previous = os.environ.get(CACHE_VARIABLE)
    os.environ[CACHE_VARIABLE] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop(CACHE_VARIABLE, None)
    else:
        os.environ[CACHE_VARIABLE] = previous


@pytest.fixture(scope="session")
def conll2003_dir() -> Path:
    """The real CoNLL-2003 folder; tests that need exact counts use this."""
    folder = real_conll_dir()
    if folder is None:
        missing_real_data("this test checks the real corpus")
    return folder


@pytest.fixture(scope="session")
def workflow_conll_dir() -> Path:
    """Real data where present (required in CI), else the small fixture written for the project."""
    folder = real_conll_dir()
    if folder is None and os.environ.get("CI", "").lower() == "true":
        missing_real_data("CI runs the workflow on the real corpus")
    return folder or FIXTURE_CONLL_DIR


def vocabulary_texts(conll_dir: Path) -> list[str]:
    """The training split's words in runs of 200, to train a test encoder's WordPiece vocabulary on."""
    words = [
        line.split(" ")[0]
        for line in (conll_dir / "train.txt").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("-DOCSTART-")
    ]
    return [" ".join(words[i : i + 200]) for i in range(0, len(words), 200)]


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory, workflow_conll_dir: Path) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny_bert"), vocabulary_texts(workflow_conll_dir))


# --- the workflow, run once per test session ----------------------------------

PACKAGE = "en_bert_ner"
VERSION = "0.0.1"
LABELS = {"PER", "ORG", "LOC", "MISC"}
# 200 updates with warmup and decay scaled to them: about a minute on 2 cores.
SHORT_SETTINGS = {
    "training.max_steps": 200,
    "training.eval_frequency": 100,
    "training.patience": 0,
    "training.optimizer.learn_rate.warmup_steps": 20,
    "training.optimizer.learn_rate.total_steps": 200,
    "training.optimizer.learn_rate.initial_rate": 0.001,
    "training.logger.progress_bar": "false",
}


def as_train_overrides(settings: dict[str, object]) -> str:
    """Settings as the project var train_overrides takes them: `section.key=value` pairs."""
    return " ".join(f"{key}={value}" for key, value in settings.items())


def as_spacy_flags(settings: dict[str, object]) -> str:
    """Settings as spaCy's own `--section.key value` arguments (spacy train, SPACY_CONFIG_OVERRIDES)."""
    return " ".join(f"--{key} {value}" for key, value in settings.items())


SHORT_SCHEDULE = as_spacy_flags(SHORT_SETTINGS)
GENERATED = ("corpus", "training", "metrics", "packages", "assets", "project.lock", "gpu-check")


@dataclass
class WorkflowRun:
    project: Path
    encoder: Path
    first_output: str
    second_output: str

    @property
    def wheel(self) -> Path:
        return workflow_wheel(self.project)

    @property
    def model_best(self) -> Path:
        return self.project / "training" / "model-best"


def workflow_wheel(project: Path) -> Path:
    return project / "packages" / f"{PACKAGE}-{VERSION}" / "dist" / f"{PACKAGE}-{VERSION}-py3-none-any.whl"


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 900) -> str:
    """Run a command; fail the test with the end of its output if it fails."""
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(map(str, args))} failed:\n{output[-6000:]}"
    return output


def copy_project(destination: Path) -> Path:
    ignore = shutil.ignore_patterns(".venv", ".git", "__pycache__", ".pytest_cache", ".ruff_cache", *GENERATED)
    shutil.copytree(PROJECT_DIR, destination, ignore=ignore)
    return destination


def workflow_command(
    project: Path,
    encoder: Path,
    conll_dir: Path,
    *extra: str,
    gpu_id: int = -1,
    settings: dict[str, object] = SHORT_SETTINGS,
) -> list[str]:
    """`spacy project run all` as a user types it, with a short schedule through the project var train_overrides."""
    return [
        sys.executable,
        "-m",
        "spacy",
        "project",
        "run",
        "all",
        str(project),
        "--vars.model",
        str(encoder),
        "--vars.gpu_id",
        str(gpu_id),
        "--vars.data_dir",
        str(conll_dir),
        "--vars.version",
        VERSION,
        "--vars.train_overrides",
        as_train_overrides(settings),
        *extra,
    ]


def workflow_env() -> dict[str, str]:
    """The user's environment, without SPACY_CONFIG_OVERRIDES: the workflow's settings come through its vars."""
    return {key: value for key, value in os.environ.items() if key != "SPACY_CONFIG_OVERRIDES"}


@pytest.fixture(scope="session")
def workflow(tmp_path_factory, tiny_bert, workflow_conll_dir) -> WorkflowRun:
    """`spacy project run all` twice in a copy of the project, as a user runs it."""
    project = copy_project(tmp_path_factory.mktemp("workflow") / "project")
    encoder = shutil.copytree(tiny_bert, project.parent / "encoder")
    command = workflow_command(project, encoder, workflow_conll_dir)
    first = run(command, project, workflow_env())
    second = run(command, project, workflow_env())
    return WorkflowRun(project, encoder, first, second)


def install_wheel(wheel: Path, target: Path) -> Path:
    """The wheel alone (no dependencies, no index) installed into `target`, a folder to put on the path."""
    target.mkdir(parents=True, exist_ok=True)
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-index",
            "--quiet",
            "--target",
            str(target),
            str(wheel),
        ],
        target,
    )
    return target


@pytest.fixture(scope="session")
def installed_model(workflow: WorkflowRun, tmp_path_factory) -> str:
    """The workflow's wheel installed into a folder on sys.path: spacy.load("en_bert_ner") works in-process."""
    target = install_wheel(workflow.wheel, tmp_path_factory.mktemp("site"))
    sys.path.insert(0, str(target))
    importlib.invalidate_caches()
    return PACKAGE
