"""Loading data or models never runs code from the internet, and revisions can be pinned."""

from __future__ import annotations

import re

import srsly

from tests.conftest import PROJECT_DIR

# Assembled, so that this file does not match its own search.
REMOTE_CODE_FLAG = "trust_" + "remote_code"
CODE_FILES = ("*.py", "*.cfg", "*.yml", "*.toml", "Makefile", ".ci/run")
SKIPPED_FOLDERS = {".venv", ".git", "corpus", "training", "metrics", "packages", "assets"}


def source_files():
    for pattern in CODE_FILES:
        for path in PROJECT_DIR.rglob(pattern):
            if path.is_file() and not SKIPPED_FOLDERS & set(path.relative_to(PROJECT_DIR).parts):
                yield path


def test_source_tree_is_searched():
    names = {path.name for path in source_files()}
    assert {"corpus.py", "train.py", "project.yml", "bert_ner.cfg", "run"} <= names


def test_no_remote_code_anywhere():
    offenders = [str(path) for path in source_files() if REMOTE_CODE_FLAG in path.read_text(encoding="utf-8")]
    assert offenders == []


def test_no_unsafe_deserialisation():
    """pickle runs code while loading; torch.load is only safe with weights_only=True."""
    unsafe = re.compile(r"pickle\.loads?\(|(?<![\w.])torch\.load\((?![^)]*weights_only=True)")
    offenders = [
        f"{path}:{number}"
        for path in source_files()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if unsafe.search(line)
    ]
    assert offenders == []


def test_data_and_model_revisions_are_pinnable_vars():
    project = srsly.read_yaml(PROJECT_DIR / "project.yml")
    assert re.fullmatch(r"[0-9a-f]{40}", project["vars"]["model_revision"]), "pin the default encoder to a commit"
    assert project["vars"]["hf_revision"]
    scripts = {command["name"]: " ".join(command["script"]) for command in project["commands"]}
    assert "--hf-revision ${vars.hf_revision}" in scripts["corpus"]
    assert '--model-revision "${vars.model_revision}"' in scripts["train"]
