"""Shared fixtures: where the CoNLL-2003 files are, and a tiny BERT to train on.

The real files are research-licensed and never copied into the project: tests
read them from $CONLL2003_DIR (default ../shared/data/conll2003). Locally a
missing folder skips the real-data tests; in CI (CI=true) it fails them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.tiny_bert import build_tiny_bert

PROJECT_DIR = Path(__file__).resolve().parent.parent
FIXTURE_CONLL_DIR = Path(__file__).resolve().parent / "fixtures" / "conll_small"
REAL_SPLIT_FILES = ("train.txt", "valid.txt", "test.txt")


def real_conll_dir() -> Path | None:
    folder = Path(os.environ.get("CONLL2003_DIR", PROJECT_DIR.parent / "shared" / "data" / "conll2003"))
    return folder if all((folder / name).is_file() for name in REAL_SPLIT_FILES) else None


def missing_real_data(reason: str) -> None:
    message = f"CoNLL-2003 files not found (set CONLL2003_DIR to the folder with {', '.join(REAL_SPLIT_FILES)}): {reason}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


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


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory, workflow_conll_dir: Path) -> Path:
    words = [
        line.split(" ")[0]
        for line in (workflow_conll_dir / "train.txt").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("-DOCSTART-")
    ]
    texts = [" ".join(words[i : i + 200]) for i in range(0, len(words), 200)]
    return build_tiny_bert(tmp_path_factory.mktemp("tiny_bert"), texts)
