"""The CoNLL tokenizer callback: hyphenated words whole, everything else as spaCy cuts it, saved with the pipeline."""

from __future__ import annotations

from pathlib import Path

import pytest
import spacy
from spacy.util import load_config, registry

from scripts.components.conll_tokenizer import (
    CALLBACK_NAME,
    HYPHEN_INFIXES,
    ConllTokenizerError,
    conll_infixes,
    keep_hyphenated_words,
)

TEXT = 'AL-AIN beat Hewlett-Packard 6-4 on 1996-08-28 ( U.S.-based ) ; 2+2=4 , "Hi" , don\'t stop—go ... 3*4 .'
SPACY_TOKENS = (
    'AL - AIN beat Hewlett - Packard 6 - 4 on 1996 - 08 - 28 ( U.S.-based ) ; 2 + 2=4 , " Hi " , '
    "do n't stop — go ... 3 * 4 ."
).split()
# Only the four words with "-" differ; the em dash still cuts.
CONLL_TOKENS = (
    'AL-AIN beat Hewlett-Packard 6-4 on 1996-08-28 ( U.S.-based ) ; 2 + 2=4 , " Hi " , do n\'t stop — go ... 3 * 4 .'
).split()


def tokens(nlp: spacy.language.Language, text: str = TEXT) -> list[str]:
    return [token.text for token in nlp.make_doc(text)]


def test_hyphenated_words_and_numbers_stay_whole_and_nothing_else_changes():
    nlp = spacy.blank("en")
    assert tokens(nlp) == SPACY_TOKENS
    assert tokens(keep_hyphenated_words(nlp)) == CONLL_TOKENS


def test_the_config_names_it_as_a_before_init_callback():
    nlp = spacy.blank("en")
    callback = registry.resolve({"before_init": {"@callbacks": CALLBACK_NAME}})["before_init"]
    assert tokens(callback(nlp)) == CONLL_TOKENS


@pytest.mark.parametrize("config_name", ["minilm_cpu", "bert_ner"])
def test_both_configs_set_it_before_initialisation(config_name):
    config = load_config(Path(__file__).resolve().parents[2] / "configs" / f"{config_name}.cfg")
    callback = registry.resolve({"before_init": config["initialize"]["before_init"]})["before_init"]
    assert tokens(callback(spacy.blank("en"))) == CONLL_TOKENS


def test_the_saved_pipeline_keeps_the_rules_and_loads_without_the_callback(tmp_path):
    nlp = spacy.blank("en")
    nlp.config["initialize"]["before_init"] = {"@callbacks": CALLBACK_NAME}
    nlp.initialize()
    nlp.to_disk(tmp_path / "pipeline")
    loaded = spacy.load(tmp_path / "pipeline")
    assert tokens(loaded) == CONLL_TOKENS
    # The rules live in the tokenizer file itself: a plain English tokenizer that reads it cuts the same way.
    plain = spacy.blank("en")
    plain.tokenizer.from_disk(tmp_path / "pipeline" / "tokenizer")
    assert tokens(plain) == CONLL_TOKENS


def test_rules_of_another_tokenizer_are_refused_with_the_fix():
    with pytest.raises(ConllTokenizerError, match=r"lack 2 of the hyphen rules.*Remove `\[initialize\] before_init`"):
        conll_infixes([r"\.\.+"])
    english = list(spacy.blank("en").Defaults.infixes)
    conll = conll_infixes(english)
    assert len(conll) == len(english) and sum(a != b for a, b in zip(english, conll, strict=True)) == len(
        HYPHEN_INFIXES
    )
