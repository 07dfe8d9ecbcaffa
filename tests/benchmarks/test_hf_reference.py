from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from spacy.tokens import Doc, DocBin
from spacy.vocab import Vocab

from scripts.benchmarks.hf_reference import (
    AGGREGATIONS,
    IGNORED,
    TAGS,
    RecipeError,
    align_labels,
    first_subtoken_tags,
    hf_char_spans,
    read_gold_texts,
)
from scripts.lib.conll import convert
from tests.conftest import FIXTURE_CONLL_DIR, PROJECT_DIR, run


def test_every_subtoken_gets_its_words_tag_and_special_tokens_are_ignored():
    # [CLS] Black ##burn said [SEP]: word 0 is split in two sub-tokens
    word_ids = [None, 0, 0, 1, None]
    assert align_labels(word_ids, ["B-PER", "O"]) == [IGNORED, TAGS.index("B-PER"), TAGS.index("B-PER"), 0, IGNORED]


def test_word_tags_come_from_the_first_subtoken():
    word_ids = [None, 0, 0, 1, 2, None]
    predicted = [0, TAGS.index("B-ORG"), TAGS.index("I-ORG"), TAGS.index("I-ORG"), 0, 0]
    assert first_subtoken_tags(word_ids, predicted, 4) == ["B-ORG", "I-ORG", "O", "O"]  # word 3 was truncated


def test_aggregated_entities_become_character_spans():
    # What pipeline("ner", aggregation_strategy="first") returns for "John Smith visited AL-AIN ."
    entities = [
        {"entity_group": "PER", "score": 0.99, "word": "john smith", "start": 0, "end": 10},
        {"entity_group": "LOC", "score": 0.8, "word": "al - ain", "start": 19, "end": 25},
    ]
    assert hf_char_spans(entities) == {(0, 10, "PER"), (19, 25, "LOC")}
    assert hf_char_spans([]) == set()


def test_gold_texts_of_a_docbin_and_a_token_that_cannot_be_text(tmp_path):
    doc = Doc(Vocab(), words=["Reuters", "in", "New York"], sent_starts=[True, False, False])
    DocBin(docs=[doc]).to_disk(tmp_path / "test.spacy")
    with pytest.raises(RecipeError, match=r"test.spacy: doc 1, sentence 1, token 3 is 'New York'"):
        read_gold_texts(tmp_path / "test.spacy")
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
