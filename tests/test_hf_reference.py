from __future__ import annotations

import json
import subprocess
import sys

from scripts.corpus import convert
from scripts.hf_reference import IGNORED, TAGS, align_labels, first_subtoken_tags
from tests.conftest import FIXTURE_CONLL_DIR, PROJECT_DIR


def test_every_subtoken_gets_its_words_tag_and_special_tokens_are_ignored():
    # [CLS] Black ##burn said [SEP]: word 0 is split in two sub-tokens
    word_ids = [None, 0, 0, 1, None]
    assert align_labels(word_ids, ["B-PER", "O"]) == [IGNORED, TAGS.index("B-PER"), TAGS.index("B-PER"), 0, IGNORED]


def test_word_tags_come_from_the_first_subtoken():
    word_ids = [None, 0, 0, 1, 2, None]
    predicted = [0, TAGS.index("B-ORG"), TAGS.index("I-ORG"), TAGS.index("I-ORG"), 0, 0]
    assert first_subtoken_tags(word_ids, predicted, 4) == ["B-ORG", "I-ORG", "O", "O"]  # word 3 was truncated


def test_reference_recipe_runs_and_scores_on_a_slice(tmp_path, tiny_bert):
    convert(tmp_path / "corpus", FIXTURE_CONLL_DIR)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "scripts.hf_reference",
            str(tiny_bert),
            str(tmp_path / "corpus"),
            str(tmp_path / "out"),
            "--epochs",
            "1",
            "--max-train-sentences",
            "32",
        ],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    reference = json.loads((tmp_path / "out" / "reference.json").read_text())
    assert reference["train_sentences"] == 32 and reference["recipe"]["learning_rate"] == 2e-5
    for split, sentences in (("dev", 20), ("test", 20)):
        assert reference[split]["n_sentences"] == sentences
        assert set(reference[split]["seqeval_strict"]["per_type"]) == {"PER", "ORG", "LOC", "MISC"}
    assert (tmp_path / "out" / "model" / "config.json").is_file()
