from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from spacy.tokens import Doc, DocBin, Span
from spacy.vocab import Vocab

from scripts.benchmarks.hf_reference import (
    AGGREGATIONS,
    IGNORED,
    RecipeError,
    align_labels,
    corpus_labels,
    first_subtoken_tags,
    hf_char_spans,
    read_gold_texts,
    read_sentences,
    tag_set,
)
from scripts.lib.corpus_build import convert
from tests.conftest import FIXTURE_CONLL_DIR, PROJECT_DIR, run

CONLL_TAGS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
TAG_IDS = {tag: i for i, tag in enumerate(CONLL_TAGS)}


def test_every_subtoken_gets_its_words_tag_and_special_tokens_are_ignored():
    # [CLS] Black ##burn said [SEP]: word 0 is split in two sub-tokens
    word_ids = [None, 0, 0, 1, None]
    assert align_labels(word_ids, ["B-PER", "O"], TAG_IDS) == [IGNORED, 1, 1, 0, IGNORED]


def test_word_tags_come_from_the_first_subtoken():
    word_ids = [None, 0, 0, 1, 2, None]
    predicted = [0, TAG_IDS["B-ORG"], TAG_IDS["I-ORG"], TAG_IDS["I-ORG"], 0, 0]
    assert first_subtoken_tags(word_ids, predicted, 4, CONLL_TAGS) == ["B-ORG", "I-ORG", "O", "O"]  # word 3 cut off


def test_conll_keeps_the_recipes_tag_ids_whatever_order_its_labels_come_in():
    assert tag_set(["MISC", "LOC", "ORG", "PER"]) == CONLL_TAGS
    assert corpus_labels([["B-LOC", "O", "B-MISC"]], [["B-PER", "I-PER"], ["B-ORG"]]) == ["PER", "ORG", "LOC", "MISC"]


def test_a_corpus_of_other_labels_gets_its_own_tags(tmp_path):
    doc = Doc(
        Vocab(), words=["Take", "aspirin", "twice", "daily", "orally"], sent_starts=[True, False, False, False, False]
    )
    doc.ents = [Span(doc, 1, 2, "DRUG"), Span(doc, 2, 4, "DOSE"), Span(doc, 4, 5, "Route of admin")]
    DocBin(docs=[doc]).to_disk(tmp_path / "train.spacy")
    words, sentence_tags = read_sentences(tmp_path / "train.spacy")
    assert sentence_tags == [["O", "B-DRUG", "B-DOSE", "I-DOSE", "B-Route of admin"]]
    # A label only dev holds still gets tags: its gold must be encoded and scored.
    labels = corpus_labels(sentence_tags, [["B-PER", "O"]])
    tags = tag_set(labels)
    assert labels == ["PER", "DOSE", "DRUG", "Route of admin"]
    assert tags == ["O", "B-PER", "I-PER", "B-DOSE", "I-DOSE", "B-DRUG", "I-DRUG", "B-Route of admin",
                    "I-Route of admin"]  # fmt: skip
    tag_ids = {tag: i for i, tag in enumerate(tags)}
    word_ids = [None, 0, 1, 1, 2, 3, 4, None]  # "aspirin" in two sub-tokens
    ids = align_labels(word_ids, sentence_tags[0], tag_ids)
    assert ids == [IGNORED, 0, 5, 5, 3, 4, 7, IGNORED]
    assert first_subtoken_tags(word_ids, [0, *ids[1:-1], 0], len(words[0]), tags) == sentence_tags[0]


def test_aggregated_entities_become_character_spans():
    # What pipeline("ner", aggregation_strategy="first") returns for "John Smith visited AL-AIN ."
    entities = [
        {"entity_group": "PER", "score": 0.99, "word": "john smith", "start": 0, "end": 10},
        {"entity_group": "LOC", "score": 0.8, "word": "al - ain", "start": 19, "end": 25},
    ]
    assert hf_char_spans(entities) == {(0, 10, "PER"), (19, 25, "LOC")}
    assert hf_char_spans([]) == set()


def test_gold_texts_of_a_docbin_keep_each_sentences_own_text(tmp_path):
    doc = Doc(Vocab(), words=["Reuters", "in", "New York", "Hi", "\n"], sent_starts=[True, False, False, True, False])
    doc.ents = [doc.char_span(11, 19, label="LOC")]
    DocBin(docs=[doc]).to_disk(tmp_path / "test.spacy")
    first, second = read_gold_texts(tmp_path / "test.spacy")
    assert (first.text, first.entities) == ("Reuters in New York", {(11, 19, "LOC")})
    assert second.text == "Hi \n"
    with pytest.raises(RecipeError, match="no such DocBin"):
        read_gold_texts(tmp_path / "nope.spacy")


def train_reference_on_fixture(encoder: Path, corpus_dir: Path, output_dir: Path, sentences: int) -> dict:
    """One epoch of the recipe on the first sentences of the fixture corpus, through its CLI."""
    convert(corpus_dir, FIXTURE_CONLL_DIR)
    run(
        [sys.executable, "-m", "scripts.benchmarks.hf_reference", str(encoder), str(corpus_dir), str(output_dir),
         "--epochs", "1", "--max-train-sentences", str(sentences)],
        PROJECT_DIR,
    )  # fmt: skip
    return json.loads((output_dir / "reference.json").read_text())


def test_reference_recipe_runs_and_scores_on_a_slice(tmp_path, tiny_bert):
    reference = train_reference_on_fixture(tiny_bert, tmp_path / "corpus", tmp_path / "out", 32)
    assert reference["train_sentences"] == 32 and reference["recipe"]["learning_rate"] == 2e-5
    for split, sentences in (("dev", 20), ("test", 20)):
        assert reference[split]["n_sentences"] == sentences
        assert set(reference[split]["seqeval_strict"]["per_type"]) == {"PER", "ORG", "LOC", "MISC"}
    assert (tmp_path / "out" / "model" / "config.json").is_file()
    raw_text = reference["test"]["raw_text"]
    assert set(raw_text["by_aggregation"]) == set(AGGREGATIONS) == {"simple", "first", "average", "max"}
    best = raw_text["best_aggregation"]
    assert raw_text["f1"] == max(scores["f1"] for scores in raw_text["by_aggregation"].values())
    assert raw_text["by_aggregation"][best]["f1"] == raw_text["f1"]
    for scores in raw_text["by_aggregation"].values():
        assert scores["n_texts"] == 20 and scores["support"] == reference["test"]["seqeval_strict"]["support"]
        assert 0.0 <= scores["f1"] <= 1.0 and set(scores["errors"]) == {"false_negatives", "false_positives"}
