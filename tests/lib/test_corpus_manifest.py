from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts.lib.corpus_manifest import (
    MANIFEST_NAME,
    CorpusManifest,
    ManifestError,
    SplitSummary,
    read_manifest,
    write_manifest,
)


def conll_manifest() -> CorpusManifest:
    return CorpusManifest(
        source="eriktks/conll2003",
        format="columns",
        scheme="IOB2",
        labels=["LOC", "MISC", "ORG", "PER"],
        conll2003=True,
        split_seed=0,
        splits={
            "train": SplitSummary(14041, 203621, {"PER": 6600, "ORG": 6321, "LOC": 7140, "MISC": 3438}, "given"),
            "dev": SplitSummary(3250, 51362, {"PER": 1842, "ORG": 1341, "LOC": 1837, "MISC": 922}, "given"),
        },
    )


def test_a_written_manifest_reads_back_as_written(tmp_path: Path):
    manifest = conll_manifest()
    path = write_manifest(tmp_path / "corpus", manifest)
    assert path == tmp_path / "corpus" / MANIFEST_NAME
    assert read_manifest(tmp_path / "corpus") == manifest
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["labels"] == ["LOC", "MISC", "ORG", "PER"] and data["splits"]["train"]["entities"]["PER"] == 6600
    assert [p.name for p in path.parent.iterdir()] == [MANIFEST_NAME]  # no temporary file left beside it


def test_labels_outside_conll_and_no_seed_read_back(tmp_path: Path):
    manifest = CorpusManifest("data/drugs", "jsonl", "BILOU", ["DRUG", "Dosis ü"], False, None, {})
    write_manifest(tmp_path, manifest)
    assert read_manifest(tmp_path) == manifest


def test_fields_the_reader_does_not_know_are_ignored(tmp_path: Path):
    path = write_manifest(tmp_path, conll_manifest())
    data = json.loads(path.read_text(encoding="utf-8"))
    data["written_by"] = "a newer corpus step"
    data["splits"]["dev"]["sentences"] = 3250
    path.write_text(json.dumps(data), encoding="utf-8")
    assert read_manifest(tmp_path) == conll_manifest()


def test_a_missing_manifest_says_to_run_the_corpus_step(tmp_path: Path):
    with pytest.raises(ManifestError, match=r"corpus.json: no such file.*Run `spacy project run corpus`"):
        read_manifest(tmp_path)


def edited(tmp_path: Path, change) -> Path:
    path = write_manifest(tmp_path, conll_manifest())
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(json.dumps(data), encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("labels"), r"corpus.json: missing field 'labels'"),
        (lambda d: d.update(labels=[]), r"'labels' must be a non-empty list"),
        (lambda d: d.update(labels=["PER", 3]), r"'labels' must be a non-empty list of non-empty strings"),
        (lambda d: d.update(labels=["PER", "PER"]), r"'labels' names a label twice"),
        (lambda d: d.update(conll2003="yes"), r"field 'conll2003' must be of type bool, not str"),
        (lambda d: d.update(split_seed=True), r"'split_seed' must be an integer or null"),
        (lambda d: d["splits"]["dev"].pop("tokens"), r"corpus.json: splits.dev: missing field 'tokens'"),
        (lambda d: d["splits"]["dev"].update(docs=True), r"splits.dev: field 'docs' must be of type int, not bool"),
        (lambda d: d["splits"].update(test=[]), r"splits.test must be a JSON object, not list"),
        (lambda d: d["splits"]["train"]["entities"].update(PER="6600"), r"splits.train: field 'entities' must map"),
    ],
)
def test_a_malformed_field_is_named_with_the_fix(tmp_path: Path, change, message: str):
    with pytest.raises(ManifestError, match=message) as caught:
        read_manifest(edited(tmp_path, change))
    assert "spacy project run corpus" in str(caught.value)


def test_broken_json_and_a_non_object_are_named(tmp_path: Path):
    (tmp_path / MANIFEST_NAME).write_text('{\n  "labels": \n}', encoding="utf-8")
    with pytest.raises(ManifestError, match=r"corpus.json:3: not valid JSON"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text("[]", encoding="utf-8")
    with pytest.raises(ManifestError, match=r"corpus.json: must hold a JSON object, not list"):
        read_manifest(tmp_path)
