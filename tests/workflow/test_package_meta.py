from __future__ import annotations

import json
from pathlib import Path

import pytest
import spacy
import typer
from spacy.cli.package import generate_readme, get_meta
from typer.testing import CliRunner

from scripts.lib.corpus_manifest import CorpusManifest, SplitSummary, write_manifest
from scripts.workflow.package_meta import MetaError, build_package_meta, main
from tests.conftest import PROJECT_DIR, flat

BASE_META = PROJECT_DIR / "configs" / "meta.json"
CONLL = CorpusManifest(
    "eriktks/conll2003@refs/convert/parquet", "datasets", "IOB2", ["LOC", "MISC", "ORG", "PER"], True, 0, {}
)
DRUGS = CorpusManifest(
    "/home/alice/corpora/drug_labels",
    "columns",
    "BILOU",
    ["DRUG", "DOSE"],
    False,
    0,
    {"test": SplitSummary(10, 120, {"DRUG": 7, "DOSE": 3}, "split off /home/alice/corpora/drug_labels/train.tsv")},
)
# configs/meta.json's words for a model trained on CoNLL-2003, as every release so far has carried them.
CONLL_DESCRIPTION = (
    "English named-entity recognition (PER, ORG, LOC, MISC) trained on CoNLL-2003 with spaCy and spacy-transformers: "
    "a fine-tuned transformer encoder shared with a transition-based NER component. The encoder is bert-base-cased "
    "unless the model card's sources say otherwise."
)
CONLL_LICENSE = (
    "Research use only: trained on CoNLL-2003, whose Reuters (RCV1) text may be used for research only. "
    "bert-base-cased is Apache-2.0."
)


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
    meta = build_package_meta(BASE_META, write_json(tmp_path / "test.json", METRICS), CONLL)
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
        build_package_meta(BASE_META, tmp_path / "test.json", CONLL)


def test_metrics_without_seqeval_scores_are_named(tmp_path):
    with pytest.raises(MetaError, match=r"missing field 'seqeval_strict'"):
        build_package_meta(BASE_META, write_json(tmp_path / "test.json", {"spacy": {}}), CONLL)


def test_metrics_without_raw_text_scores_say_to_evaluate_again(tmp_path):
    metrics = {key: value for key, value in METRICS.items() if key != "raw_text"}
    with pytest.raises(MetaError, match=r"missing field 'raw_text'; rerun `spacy project run evaluate`"):
        build_package_meta(BASE_META, write_json(tmp_path / "test.json", metrics), CONLL)


def test_broken_json_names_the_line(tmp_path):
    (tmp_path / "meta.json").write_text('{\n  "name": \n}', encoding="utf-8")
    with pytest.raises(MetaError, match=r"meta.json:3: not valid JSON"):
        build_package_meta(tmp_path / "meta.json", write_json(tmp_path / "test.json", METRICS), CONLL)


def test_conll2003_keeps_its_description_research_licence_and_source(tmp_path):
    meta = build_package_meta(BASE_META, write_json(tmp_path / "test.json", METRICS), CONLL)
    assert meta["description"] == CONLL_DESCRIPTION and meta["license"] == CONLL_LICENSE
    assert [source["name"] for source in meta["sources"]] == [
        "CoNLL-2003 English NER (Tjong Kim Sang & De Meulder, 2003)",
        "bert-base-cased",
    ]
    assert meta["notes"].startswith("Scores: CoNLL-2003 test split, entity level. On the gold words, as the literature")
    assert "conll2003" not in meta  # configs/meta.json's block is used up, not shipped


def test_other_data_is_described_by_its_labels_and_source_and_claims_no_licence(tmp_path):
    metrics = {**METRICS, "seqeval_strict": {**METRICS["seqeval_strict"], "per_type": {"DRUG": per_type(0.9)}}}
    meta = build_package_meta(BASE_META, write_json(tmp_path / "test.json", metrics), DRUGS)
    assert meta["description"].startswith(
        "English named-entity recognition (DOSE, DRUG) trained with spaCy and spacy-transformers on drug_labels: "
    )
    assert meta["license"] == "Not stated: set the project var package_license to your data's licence."
    assert [source["name"] for source in meta["sources"]] == ["bert-base-cased"]
    assert meta["notes"].startswith("Scores: the test split of drug_labels, entity level. On the gold words: seqeval")
    shipped = json.dumps(meta)
    assert "CoNLL" not in shipped and "Research" not in shipped and "/home/alice" not in shipped
    assert meta["performance"]["ents_f_DRUG"] == 0.9 and set(meta["performance"]["ents_per_type"]) == {"DRUG"}


@pytest.mark.parametrize("manifest", [CONLL, DRUGS], ids=["conll2003", "other data"])
def test_a_given_description_and_licence_replace_the_defaults(tmp_path, manifest: CorpusManifest):
    metrics = write_json(tmp_path / "test.json", METRICS)
    meta = build_package_meta(BASE_META, metrics, manifest, "Drug names in leaflets.", "CC-BY-4.0")
    assert (meta["description"], meta["license"]) == ("Drug names in leaflets.", "CC-BY-4.0")


@pytest.mark.parametrize(
    ("source", "shown"),
    [
        ("tner/wnut2017@refs/convert/parquet", "tner/wnut2017@refs/convert/parquet"),
        ("data/drugs", "data/drugs"),
        ("../shared/data/drugs", "drugs"),
        ("/srv/data/drugs", "drugs"),
    ],
)
def test_the_description_names_a_far_path_by_its_folder_only(tmp_path, source: str, shown: str):
    manifest = CorpusManifest(source, "columns", "IOB2", ["DRUG"], False, 0, {})
    meta = build_package_meta(BASE_META, write_json(tmp_path / "test.json", METRICS), manifest)
    assert f"spacy-transformers on {shown}: " in meta["description"]


def test_a_label_named_like_a_score_is_refused(tmp_path):
    metrics = {**METRICS, "seqeval_strict": {**METRICS["seqeval_strict"], "per_type": {"raw_text": per_type(0.5)}}}
    with pytest.raises(MetaError, match=r"the label 'raw_text' gives the per-type score ents_f_raw_text.*rename"):
        build_package_meta(BASE_META, write_json(tmp_path / "test.json", metrics), DRUGS)


def test_a_base_meta_without_its_conll_block_says_so(tmp_path):
    base = json.loads(BASE_META.read_text(encoding="utf-8"))
    del base["conll2003"]["license"]
    with pytest.raises(MetaError, match=r"meta.json: 'conll2003' needs its license"):
        build_package_meta(write_json(tmp_path / "meta.json", base), write_json(tmp_path / "test.json", METRICS), CONLL)


def cli() -> typer.Typer:
    app = typer.Typer()
    app.command()(main)
    return app


def test_cli_reads_the_manifest_and_takes_description_and_licence(tmp_path):
    write_manifest(tmp_path / "corpus", DRUGS)
    metrics, output = write_json(tmp_path / "test.json", METRICS), tmp_path / "package-meta.json"
    args = [str(BASE_META), str(metrics), str(output), "--corpus-dir", str(tmp_path / "corpus")]
    result = CliRunner().invoke(cli(), [*args, "--license", "CC-BY-4.0", "--description", ""])
    assert result.exit_code == 0, result.output
    meta = json.loads(output.read_text(encoding="utf-8"))
    assert meta["license"] == "CC-BY-4.0" and meta["description"].startswith("English named-entity recognition (DOSE")


def test_cli_without_a_manifest_says_to_build_the_corpus(tmp_path):
    metrics = write_json(tmp_path / "test.json", METRICS)
    args = [str(BASE_META), str(metrics), str(tmp_path / "out.json"), "--corpus-dir", str(tmp_path / "corpus")]
    result = CliRunner().invoke(cli(), args)
    assert result.exit_code == 1
    output = flat(result.output)
    assert "corpus/corpus.json: no such file" in output and "Run `spacy project run corpus`" in output
    assert not (tmp_path / "out.json").exists()


def test_the_model_card_lists_the_labels_and_per_type_scores_of_other_data(tmp_path):
    """spaCy's own card: labels from the pipeline, every scalar of meta["performance"] as a percentage."""
    nlp = spacy.blank("en")
    ner = nlp.add_pipe("ner")
    for label in ("DRUG", "DOSE"):
        ner.add_label(label)
    nlp.initialize()
    nlp.to_disk(tmp_path / "model")
    metrics = {**METRICS, "seqeval_strict": {**METRICS["seqeval_strict"], "per_type": {"DRUG": per_type(0.9)}}}
    meta = build_package_meta(BASE_META, write_json(tmp_path / "test.json", metrics), DRUGS)
    card = generate_readme(get_meta(tmp_path / "model", meta))
    assert "| **`ner`** | `DOSE`, `DRUG` |" in card
    assert "| `ENTS_F_DRUG` | 90.00 |" in card and "| `ENTS_F` | 85.00 |" in card
    assert "Not stated" in card and "CoNLL" not in card
