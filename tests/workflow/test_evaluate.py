"""scripts.workflow.evaluate: known answers worked out by hand, the document-mode split-back, errors, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import spacy
from seqeval.metrics import classification_report, f1_score, precision_score, recall_score
from seqeval.scheme import IOB2
from spacy.tokens import Doc, DocBin, Span
from spacy.vocab import Vocab
from typer.testing import CliRunner

from scripts.lib.conll import DocMode, make_docs, read_conll, tags_to_spans
from scripts.lib.labels import label_colour
from scripts.lib.scoring import (
    ERROR_KINDS,
    EvaluationError,
    SentencePair,
    analyse_errors,
    evaluate,
    load_gold_docs,
    pair_sentences,
    score_iob2,
    sentence_iob2_tags,
)
from scripts.workflow.evaluate import app, run_evaluation
from scripts.workflow.evaluation_report import displacy_html
from tests.conftest import PROJECT_DIR, flat

# Two documents, four sentences, seven gold entities: PER 3, LOC 2, ORG 1, MISC 1.
CONLL = """\
-DOCSTART- -X- -X- O

John NNP B-NP B-PER
Smith NNP I-NP I-PER
visited VBD B-VP O
Bonn NNP B-NP B-LOC
. . O O

Acme NNP B-NP B-ORG
Corp NNP I-NP I-ORG
hired VBD B-VP O
Mary NNP B-NP B-PER
. . O O

-DOCSTART- -X- -X- O

German JJ B-NP B-MISC
fans NNS I-NP O
saw VBD B-VP O
Berlin NNP B-NP B-LOC
. . O O

Smith NNP B-NP B-PER
left VBD B-VP O
. . O O
"""
GOLD_TAGS = [
    ["B-PER", "I-PER", "O", "B-LOC", "O"],
    ["B-ORG", "I-ORG", "O", "B-PER", "O"],
    ["B-MISC", "O", "O", "B-LOC", "O"],
    ["B-PER", "O", "O"],
]
# The fixed "model": an entity_ruler. Against the gold: John Smith, Mary and Berlin right;
# Bonn the wrong type; Acme and German fans the wrong boundaries; Smith (sentence 4) missed;
# visited and left spurious. 8 predicted, 7 gold, 3 correct.
RULER_PATTERNS = [
    ("PER", "John Smith"),
    ("MISC", "visited"),
    ("ORG", "Bonn"),
    ("ORG", "Acme"),
    ("PER", "Mary"),
    ("MISC", "German fans"),
    ("LOC", "Berlin"),
    ("LOC", "left"),
]
RULER_TAGS = [
    ["B-PER", "I-PER", "B-MISC", "B-ORG", "O"],
    ["B-ORG", "O", "O", "B-PER", "O"],
    ["B-MISC", "I-MISC", "O", "B-LOC", "O"],
    ["O", "B-LOC", "O"],
]
OUTPUT_FILES = ("{split}.json", "{split}_per_type.png", "{split}_errors.md", "{split}_worst.html", "report.md")


@pytest.fixture
def conll_file(tmp_path: Path) -> Path:
    path = tmp_path / "small.txt"
    path.write_text(CONLL, encoding="utf-8")
    return path


def gold_docs(conll_file: Path, mode: DocMode, vocab: Vocab | None = None) -> list[Doc]:
    return make_docs(vocab or Vocab(), read_conll(conll_file), mode)


def write_docbin(docs: list[Doc], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    DocBin(docs=docs).to_disk(path)


def ruler_pipeline() -> spacy.language.Language:
    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns([{"label": label, "pattern": pattern} for label, pattern in RULER_PATTERNS])
    return nlp


@pytest.fixture
def ruler_model(tmp_path: Path) -> Path:
    path = tmp_path / "ruler_model"
    ruler_pipeline().to_disk(path)
    return path


@pytest.fixture
def corpus_dir(tmp_path: Path, conll_file: Path) -> Path:
    """dev.spacy in sentence mode, test.spacy in document mode: the same four sentences."""
    folder = tmp_path / "corpus"
    write_docbin(gold_docs(conll_file, DocMode.sentence), folder / "dev.spacy")
    write_docbin(gold_docs(conll_file, DocMode.document), folder / "test.spacy")
    return folder


# --- scoring tag lists ------------------------------------------------------------


def test_boundary_and_type_errors_by_hand():
    gold = [["B-PER", "I-PER", "O", "B-LOC", "O"], ["B-ORG", "I-ORG", "O", "B-MISC"]]
    # PER right, LOC predicted as ORG, ORG cut short, MISC right: 2 of 4 predictions, 2 of 4 gold.
    predicted = [["B-PER", "I-PER", "O", "B-ORG", "O"], ["B-ORG", "O", "O", "B-MISC"]]
    for strict in (True, False):  # valid IOB2 on both sides: the modes agree
        scores = score_iob2(gold, predicted, strict=strict)
        assert (scores["precision"], scores["recall"], scores["f1"], scores["support"]) == (0.5, 0.5, 0.5, 4)
        assert list(scores["per_type"]) == ["PER", "ORG", "LOC", "MISC"]
        assert scores["per_type"]["PER"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}
        assert scores["per_type"]["ORG"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
        assert scores["per_type"]["LOC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
        assert scores["per_type"]["MISC"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}


def test_leading_i_tag_is_dropped_in_strict_mode_and_counted_in_default_mode():
    gold = [["B-PER", "I-PER", "O", "B-LOC"]]
    predicted = [["I-PER", "I-PER", "O", "B-LOC"]]
    strict = score_iob2(gold, predicted, strict=True)
    assert (strict["precision"], strict["recall"]) == (1.0, 0.5)
    assert strict["f1"] == pytest.approx(2 / 3)
    assert strict["per_type"]["PER"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    default = score_iob2(gold, predicted, strict=False)
    assert (default["precision"], default["recall"], default["f1"]) == (1.0, 1.0, 1.0)
    assert default["per_type"]["PER"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}


def test_i_tag_after_another_type_differs_between_modes():
    gold = [["B-PER", "B-ORG", "O"]]
    predicted = [["B-PER", "I-ORG", "O"]]
    # conlleval opens a new ORG at I-ORG; strict IOB2 has no ORG there.
    assert score_iob2(gold, predicted, strict=False)["recall"] == 1.0
    assert score_iob2(gold, predicted, strict=True)["recall"] == 0.5


def test_a_predicted_label_outside_conll_is_reported_after_the_conll_labels():
    scores = score_iob2([["B-PER", "O"]], [["B-PER", "B-DATE"]], strict=True)
    assert list(scores["per_type"]) == ["PER", "DATE"]
    assert scores["per_type"]["DATE"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert scores["precision"] == 0.5


def test_a_corpus_of_other_labels_scores_each_of_them_in_name_order():
    gold = [["B-DRUG", "I-DRUG", "O", "B-DOSE"], ["B-Drug route", "O"]]
    predicted = [["B-DRUG", "I-DRUG", "O", "O"], ["B-Drug route", "O"]]
    for strict in (True, False):
        scores = score_iob2(gold, predicted, strict=strict)
        assert list(scores["per_type"]) == ["DOSE", "DRUG", "Drug route"]
        assert scores["per_type"]["DOSE"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
        assert (scores["precision"], scores["recall"]) == (1.0, pytest.approx(2 / 3))


def test_the_worst_sentences_page_colours_every_label():
    sentence = SentencePair(["Take", "aspirin", "orally", "in", "Bonn"], [True] * 4 + [False], [], [])
    page = displacy_html(sentence, ["O", "B-DRUG", "B-Route", "O", "B-LOC"])
    for label in ("DRUG", "Route", "LOC"):
        assert f"background: {label_colour(label)}" in page
    assert "background: #ddd" not in page  # displaCy's grey for a label it has no colour for


# --- tags per sentence ------------------------------------------------------------


def test_sentence_iob2_tags_clips_an_entity_at_the_sentence_start():
    doc = Doc(Vocab(), words=["Peace", "in", "New", "York", "City", "today"], sent_starts=[1, 0, 0, 0, 1, 0])
    doc.ents = [Span(doc, 2, 5, label="LOC")]
    assert sentence_iob2_tags(doc) == [["O", "O", "B-LOC", "I-LOC"], ["B-LOC", "O"]]
    assert sentence_iob2_tags(doc, starts=[0]) == [["O", "O", "B-LOC", "I-LOC", "I-LOC", "O"]]
    with pytest.raises(ValueError, match="must rise from 0"):
        sentence_iob2_tags(doc, starts=[1, 4])


def test_a_doc_without_sentence_starts_is_one_sentence():
    doc = Doc(Vocab(), words=["Acme", "Corp", "hired", "Mary"])
    doc.ents = [Span(doc, 0, 2, label="ORG"), Span(doc, 3, 4, label="PER")]
    assert sentence_iob2_tags(doc) == [["B-ORG", "I-ORG", "O", "B-PER"]]


def test_gold_tags_survive_the_corpus_in_both_modes(conll_file: Path):
    for mode in DocMode:
        docs = gold_docs(conll_file, mode)
        assert [tags for doc in docs for tags in sentence_iob2_tags(doc)] == GOLD_TAGS


def test_document_mode_splits_predictions_at_gold_sentence_starts(conll_file: Path):
    gold = gold_docs(conll_file, DocMode.document)
    assert len(gold) == 2
    predicted = Doc(gold[0].vocab, words=[t.text for t in gold[0]])  # no sentence starts of its own
    # "Bonn . Acme Corp" runs over the start of sentence 2: one LOC piece in each sentence.
    predicted.ents = [Span(predicted, 3, 7, label="LOC")]
    pairs = pair_sentences(gold[:1], [predicted])
    assert [pair.words for pair in pairs] == [
        ["John", "Smith", "visited", "Bonn", "."],
        ["Acme", "Corp", "hired", "Mary", "."],
    ]
    assert [pair.predicted for pair in pairs] == [["O", "O", "O", "B-LOC", "I-LOC"], ["B-LOC", "I-LOC", "O", "O", "O"]]
    assert [pair.gold for pair in pairs] == GOLD_TAGS[:2]


# --- error analysis ---------------------------------------------------------------


def test_every_error_kind_by_hand():
    words = ["John", "Smith", "of", "Acme", "Corp", "met", "Ann", "in", "Paris", "and", "Rome", "today"]
    gold = ["B-PER", "I-PER", "O", "B-ORG", "I-ORG", "O", "B-PER", "O", "B-LOC", "O", "B-LOC", "O"]
    predicted = ["B-PER", "I-PER", "O", "B-ORG", "O", "B-LOC", "I-LOC", "O", "B-ORG", "O", "O", "B-MISC"]
    clean = SentencePair(["Rome", "won"], [True, False], ["B-LOC", "O"], ["B-LOC", "O"])
    summary = analyse_errors([SentencePair(words, [True] * len(words), gold, predicted), clean])
    assert dict(summary.kinds) == {kind: 1 for kind in ERROR_KINDS} | {"correct": 2}
    assert dict(summary.confusions) == {("LOC", "ORG"): 1}
    assert dict(summary.false_negatives) == {
        ("Acme Corp", "ORG"): 1,
        ("Ann", "PER"): 1,
        ("Paris", "LOC"): 1,
        ("Rome", "LOC"): 1,
    }
    assert dict(summary.false_positives) == {
        ("Acme", "ORG"): 1,
        ("met Ann", "LOC"): 1,
        ("Paris", "ORG"): 1,
        ("today", "MISC"): 1,
    }
    assert summary.errors_per_sentence == [8, 0]


# --- whole evaluation -------------------------------------------------------------


@pytest.mark.parametrize("mode", list(DocMode))
def test_ruler_pipeline_scores_by_hand(conll_file: Path, mode: DocMode):
    nlp = ruler_pipeline()
    evaluation = evaluate(nlp, gold_docs(conll_file, mode, nlp.vocab))
    results = evaluation.results
    assert results["n_sentences"] == 4
    assert results["n_docs"] == (4 if mode == DocMode.sentence else 2)
    assert [pair.predicted for pair in evaluation.sentences] == RULER_TAGS
    for key in ("seqeval_strict", "seqeval_default"):
        scores = results[key]
        assert scores["precision"] == pytest.approx(3 / 8)
        assert scores["recall"] == pytest.approx(3 / 7)
        assert scores["f1"] == pytest.approx(0.4)
        assert {label: s["support"] for label, s in scores["per_type"].items()} == {
            "PER": 3,
            "ORG": 1,
            "LOC": 2,
            "MISC": 1,
        }
        assert scores["per_type"]["PER"] == pytest.approx({"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3})
        assert scores["per_type"]["LOC"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert results["spacy"] == pytest.approx({"ents_p": 3 / 8, "ents_r": 3 / 7, "ents_f": 0.4})
    assert results["errors"]["kinds"] == {
        "correct": 3,
        "wrong_type": 1,
        "wrong_boundary": 2,
        "wrong_boundary_and_type": 0,
        "missed": 1,
        "spurious": 2,
    }
    assert results["words_per_second"] > 0
    assert results["n_tokens"] == 18


def test_json_reproduces_seqeval_on_the_same_predictions(tmp_path: Path, ruler_model: Path, corpus_dir: Path):
    run_evaluation(str(ruler_model), corpus_dir / "dev.spacy", tmp_path / "metrics", split="dev")
    results = json.loads((tmp_path / "metrics" / "dev.json").read_text(encoding="utf-8"))
    for key, options in (("seqeval_strict", {"mode": "strict", "scheme": IOB2}), ("seqeval_default", {})):
        assert results[key]["precision"] == precision_score(GOLD_TAGS, RULER_TAGS, **options)
        assert results[key]["recall"] == recall_score(GOLD_TAGS, RULER_TAGS, **options)
        assert results[key]["f1"] == f1_score(GOLD_TAGS, RULER_TAGS, **options)
        report = classification_report(GOLD_TAGS, RULER_TAGS, output_dict=True, zero_division=0, **options)
        for label, scores in results[key]["per_type"].items():
            expected = report[label]
            assert scores == {
                "precision": expected["precision"],
                "recall": expected["recall"],
                "f1": expected["f1-score"],
                "support": expected["support"],
            }


def test_document_mode_gives_the_sentence_mode_results_on_the_real_test_split(conll2003_dir: Path):
    documents = read_conll(conll2003_dir / "test.txt")
    sentences = [sentence for document in documents for sentence in document]
    expected_tags = []
    for sentence in sentences:  # IOB2 straight from the file's tags, whether the file is IOB1 or IOB2
        tags = ["O"] * len(sentence.words)
        for start, end, label in tags_to_spans(sentence.tags, sentence.origins):
            tags[start:end] = [f"B-{label}"] + [f"I-{label}"] * (end - start - 1)
        expected_tags.append(tags)
    # Single-token patterns cannot cross a sentence start, so both modes must predict alike.
    nlp = spacy.blank("en")
    nlp.add_pipe("entity_ruler").add_patterns(
        [{"label": "LOC", "pattern": name} for name in ("Germany", "Japan", "China", "U.S.", "Britain")]
        + [{"label": "ORG", "pattern": name} for name in ("Reuters", "EU", "NATO")]
    )
    results = {}
    for mode in DocMode:
        evaluation = evaluate(nlp, make_docs(nlp.vocab, documents, mode))
        assert [pair.gold for pair in evaluation.sentences] == expected_tags
        results[mode] = evaluation.results
    sentence_mode, document_mode = results[DocMode.sentence], results[DocMode.document]
    assert sentence_mode["n_sentences"] == document_mode["n_sentences"] == len(sentences)
    assert document_mode["n_docs"] == len(documents) < len(sentences)
    for key in ("seqeval_strict", "seqeval_default", "spacy", "errors"):
        assert sentence_mode[key] == document_mode[key]
    assert sentence_mode["seqeval_strict"]["precision"] > 0.5  # the patterns do find gold entities


# --- clear errors -----------------------------------------------------------------


def test_a_missing_gold_docbin_says_to_build_the_corpus(tmp_path: Path):
    with pytest.raises(EvaluationError) as err:
        load_gold_docs(tmp_path / "corpus" / "test.spacy", Vocab())
    assert f"{tmp_path / 'corpus' / 'test.spacy'}: no such gold DocBin" in str(err.value)
    assert "spacy project run corpus" in str(err.value)


def test_a_docbin_without_gold_entities(tmp_path: Path):
    vocab = Vocab()
    path = tmp_path / "raw.spacy"
    write_docbin([Doc(vocab, words=["No", "entities", "here"]), Doc(vocab, words=["Nor", "here"])], path)
    with pytest.raises(EvaluationError, match="none of its 2 docs has a gold entity"):
        load_gold_docs(path, vocab)


def test_an_empty_docbin(tmp_path: Path):
    path = tmp_path / "test.spacy"
    DocBin().to_disk(path)
    with pytest.raises(EvaluationError, match="holds no docs"):
        load_gold_docs(path, Vocab())


def test_a_file_that_is_not_a_docbin(tmp_path: Path):
    path = tmp_path / "test.spacy"
    path.write_text("word O\n", encoding="utf-8")
    with pytest.raises(EvaluationError, match="not a DocBin"):
        load_gold_docs(path, Vocab())


def test_an_unknown_split_name(tmp_path: Path, ruler_model: Path, corpus_dir: Path):
    with pytest.raises(EvaluationError, match="Unknown split 'valid'"):
        run_evaluation(str(ruler_model), corpus_dir / "dev.spacy", tmp_path, split="valid")


# --- files and CLI ----------------------------------------------------------------


def test_cli_writes_every_output_and_a_report_over_both_splits(tmp_path: Path, ruler_model: Path, corpus_dir: Path):
    output_dir = tmp_path / "metrics"
    runner = CliRunner()
    for split in ("dev", "test"):
        result = runner.invoke(
            app,
            [str(ruler_model), str(corpus_dir / f"{split}.spacy"), str(output_dir), "--split", split, "--worst", "2"],
        )
        assert result.exit_code == 0, result.output
        assert "seqeval strict" in result.output and "37.50" in result.output  # the summary table: P = 3/8
    expected = {name.format(split=split) for split in ("dev", "test") for name in OUTPUT_FILES}
    assert {path.name for path in output_dir.iterdir()} == expected  # and no temp files left behind

    results = json.loads((output_dir / "test.json").read_text(encoding="utf-8"))
    assert {"seqeval_strict", "seqeval_default", "spacy", "words_per_second", "n_sentences"} <= set(results)
    assert (results["model"], results["split"], results["n_sentences"]) == (str(ruler_model), "test", 4)
    for key in ("seqeval_strict", "seqeval_default"):
        assert set(results[key]) >= {"precision", "recall", "f1", "per_type"}
        assert set(results[key]["per_type"]["ORG"]) == {"precision", "recall", "f1", "support"}
    assert set(results["spacy"]) == {"ents_p", "ents_r", "ents_f"}
    # The fixture's text is cut by the tokenizer into its gold words, so raw text scores as the gold words do,
    # in document mode (test) as in sentence mode (dev).
    for split in ("dev", "test"):
        split_results = json.loads((output_dir / f"{split}.json").read_text(encoding="utf-8"))
        raw, strict = split_results["raw_text"], split_results["seqeval_strict"]
        assert (raw["precision"], raw["recall"], raw["f1"]) == (strict["precision"], strict["recall"], strict["f1"])
        assert raw["retokenized_texts"] == 0 and raw["n_predicted_entities"] == 8
    assert results["raw_text"]["n_texts"] == 2  # document mode: one text per document

    report = (output_dir / "report.md").read_text(encoding="utf-8")
    assert "| raw text, exact character spans (what a user gets) | 37.50 | 42.86 | 40.00 |" in report
    assert "| test | 4 | 40.00 | 40.00 | 40.00 | 40.00 |" in report
    assert "## dev" in report and "## test" in report
    assert report.index("## dev") < report.index("## test")
    assert "| seqeval strict, IOB2 (primary) | 37.50 | 42.86 | 40.00 |" in report
    assert "| PER | 3 | 100.00 | 66.67 | 80.00 | 100.00 | 66.67 | 80.00 | 80.00 |" in report
    assert (output_dir / "test_per_type.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")

    errors = (output_dir / "test_errors.md").read_text(encoding="utf-8")
    assert "| LOC | ORG | 1 |" in errors  # Bonn
    assert "| Acme Corp | ORG | 1 |" in errors and "| German fans | MISC | 1 |" in errors
    raw_text_errors = errors.split("## Raw text")[1]
    assert "| Acme Corp | ORG | 1 |" in raw_text_errors and "| visited | MISC | 1 |" in raw_text_errors

    worst = (output_dir / "test_worst.html").read_text(encoding="utf-8")
    # --worst 2: sentence 1 has 3 errors (Bonn twice, visited), then the first of the 2-error ones.
    assert worst.count("errors</td>") == 2
    assert "<td>1<br>3 errors</td>" in worst and "<td>2<br>2 errors</td>" in worst
    assert "visited" in worst and "Smith left" not in worst


def test_cli_missing_model_fails_in_one_paragraph(tmp_path: Path, corpus_dir: Path):
    result = CliRunner().invoke(
        app, [str(tmp_path / "model-best"), str(corpus_dir / "dev.spacy"), str(tmp_path / "out")]
    )
    assert result.exit_code == 1
    assert "Evaluation failed" in result.output
    assert f"No pipeline at {tmp_path / 'model-best'}" in flat(result.output)
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_module_entry_point_reports_a_missing_gold_docbin(tmp_path: Path, ruler_model: Path):
    gold = tmp_path / "corpus" / "test.spacy"
    result = subprocess.run(
        [sys.executable, "-m", "scripts.workflow.evaluate", str(ruler_model), str(gold), str(tmp_path / "out")],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(PROJECT_DIR)},
        timeout=120,
    )
    assert result.returncode == 1
    assert f"{gold}: no such gold DocBin" in flat(result.stdout)
    assert "spacy project run corpus" in flat(result.stdout)
    assert "Traceback" not in result.stderr


def test_gold_cut_from_text_is_scored_on_that_text(tmp_path: Path, ruler_model: Path):
    """Annotation tools' gold (newlines, double spaces: whitespace tokens) is passed as the text it was cut from."""
    text = "Talks in\n\nParis  resumed ."
    doc = spacy.blank("en").make_doc(text)
    doc.ents = [doc.char_span(10, 15, label="LOC")]
    write_docbin([doc], tmp_path / "test.spacy")
    result = CliRunner().invoke(app, [str(ruler_model), str(tmp_path / "test.spacy"), str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    raw_text = json.loads((tmp_path / "out" / "test.json").read_text())["raw_text"]
    assert raw_text["per_type"]["LOC"]["support"] == 1


def test_gold_docbin_round_trip_keeps_the_gold(corpus_dir: Path):
    vocab = Vocab()
    for name in ("dev.spacy", "test.spacy"):
        docs = load_gold_docs(corpus_dir / name, vocab)
        assert [tags for doc in docs for tags in sentence_iob2_tags(doc)] == GOLD_TAGS
