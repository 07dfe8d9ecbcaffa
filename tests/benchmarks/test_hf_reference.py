from __future__ import annotations

import json
import sys
from pathlib import Path

from scripts.benchmarks.hf_reference import IGNORED, TAGS, align_labels, first_subtoken_tags
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
