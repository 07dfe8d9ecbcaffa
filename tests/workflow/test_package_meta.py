from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts.workflow.package_meta import MetaError, build_package_meta
from tests.conftest import PROJECT_DIR

BASE_META = PROJECT_DIR / "configs" / "meta.json"


def per_type(f1: float) -> dict[str, float]:
    return {"precision": f1, "recall": f1, "f1": f1, "support": 10}


METRICS = {
    "seqeval_strict": {
        "precision": 0.9,
        "recall": 0.8,
        "f1": 0.85,
        "per_type": {"PER": per_type(0.95), "ORG": per_type(0.8), "LOC": per_type(0.9), "MISC": per_type(0.7)},
    },
    "seqeval_default": {"precision": 0.91, "recall": 0.81, "f1": 0.86, "per_type": {}},
    "spacy": {"ents_p": 0.9, "ents_r": 0.8, "ents_f": 0.85},
    "raw_text": {"precision": 0.88, "recall": 0.79, "f1": 0.83, "per_type": {}},
    "words_per_second": 1234.5,
    "n_sentences": 3453,
}


def write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_test_scores_become_the_performance_the_model_card_shows(tmp_path):
    meta = build_package_meta(BASE_META, write_json(tmp_path / "test.json", METRICS))
    performance = meta["performance"]
    assert (performance["ents_p"], performance["ents_r"], performance["ents_f"]) == (0.9, 0.8, 0.85)
    assert performance["ents_f_conlleval_default"] == 0.86
    raw = (performance["ents_p_raw_text"], performance["ents_r_raw_text"], performance["ents_f_raw_text"])
    assert raw == (0.88, 0.79, 0.83) and "raw text" in meta["notes"]
    assert performance["ents_f_PER"] == 0.95 and performance["ents_per_type"]["MISC"] == {"p": 0.7, "r": 0.7, "f": 0.7}
    assert performance["speed"] == 1234.5
    assert meta["sources"][0]["name"].startswith("CoNLL-2003") and "seqeval strict" in meta["notes"]


def test_missing_metrics_say_to_evaluate_first(tmp_path):
    with pytest.raises(MetaError, match=r"test.json: no such file. Run `spacy project run evaluate` first"):
        build_package_meta(BASE_META, tmp_path / "test.json")


def test_metrics_without_seqeval_scores_are_named(tmp_path):
    with pytest.raises(MetaError, match=r"missing field 'seqeval_strict'"):
        build_package_meta(BASE_META, write_json(tmp_path / "test.json", {"spacy": {}}))


def test_metrics_without_raw_text_scores_say_to_evaluate_again(tmp_path):
    metrics = {key: value for key, value in METRICS.items() if key != "raw_text"}
    with pytest.raises(MetaError, match=r"missing field 'raw_text'; rerun `spacy project run evaluate`"):
        build_package_meta(BASE_META, write_json(tmp_path / "test.json", metrics))


def test_broken_json_names_the_line(tmp_path):
    (tmp_path / "meta.json").write_text('{\n  "name": \n}', encoding="utf-8")
    with pytest.raises(MetaError, match=r"meta.json:3: not valid JSON"):
        build_package_meta(tmp_path / "meta.json", write_json(tmp_path / "test.json", METRICS))
