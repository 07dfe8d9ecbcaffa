"""Hyphenated words kept whole by the tokenizer, as CoNLL-2003 (and the Penn Treebank) keep them.

spaCy's English tokenizer cuts a hyphen between letters or digits into a token of its own:
"AL-AIN" becomes "AL", "-", "AIN" and "6-4" becomes "6", "-", "4". CoNLL-2003 keeps each as one
token, so a model trained on its words meets tokens at inference that it never learnt on.
`en_bert_ner.conll_tokenizer.v1`, set as the config's `[initialize] before_init`, stops those two
infix rules from cutting at "-" (other dashes still cut) before training starts, so the training
examples, the dev evaluation and every text the trained pipeline reads are cut the same way.

No code is needed at load time: spaCy saves the tokenizer's rules with the pipeline (the `tokenizer`
file of model-best and of the wheel), and `spacy.load` reads them back. The callback is registered
here and named by a spaCy entry point (pyproject.toml), so `spacy train` finds it without `--code`.
"""

from __future__ import annotations

from collections.abc import Callable

from spacy.lang.char_classes import ALPHA, HYPHENS, LIST_HYPHENS
from spacy.language import Language
from spacy.util import compile_infix_regex, registry

CALLBACK_NAME = "en_bert_ner.conll_tokenizer.v1"

# spaCy's English infix rules (spacy/lang/en/punctuation.py) that cut at "-", and what replaces each:
# between digits "+", "*" and "^" still split, "-" no longer ("6-4" stays whole); between letters
# dashes still split ("say—and"), "-" no longer ("AL-AIN" stays whole).
DASHES = "|".join(hyphen for hyphen in LIST_HYPHENS if hyphen != "-")
LETTER_HYPHEN = r"(?<=[{a}0-9])(?:{h})(?=[{a}])"  # spaCy's own rule, with the dashes it cuts at as h
HYPHEN_INFIXES = {
    r"(?<=[0-9])[+\-\*^](?=[0-9-])": r"(?<=[0-9])[+\*^](?=[0-9-])",
    LETTER_HYPHEN.format(a=ALPHA, h=HYPHENS): LETTER_HYPHEN.format(a=ALPHA, h=DASHES),
}


class ConllTokenizerError(Exception):
    """The language's infix rules are not the ones this callback was written against."""


def conll_infixes(infixes: list[str]) -> list[str]:
    """The infix rules with HYPHEN_INFIXES replaced; the rest as they are, in their order."""
    missing = [pattern for pattern in HYPHEN_INFIXES if pattern not in infixes]
    if missing:
        raise ConllTokenizerError(
            f"{CALLBACK_NAME}: the tokenizer's infix rules lack {len(missing)} of the hyphen rules of spaCy's "
            "English tokenizer that it replaces (another language, or another spaCy version than the pinned one). "
            "Remove `[initialize] before_init` from the config, or pin the spaCy version of pyproject.toml."
        )
    return [HYPHEN_INFIXES.get(pattern, pattern) for pattern in infixes]


def keep_hyphenated_words(nlp: Language) -> Language:
    """Set the tokenizer's infix rules to `conll_infixes` of the language's defaults."""
    infixes = conll_infixes(list(nlp.Defaults.infixes or []))
    nlp.tokenizer.infix_finditer = compile_infix_regex(infixes).finditer
    return nlp


@registry.callbacks(CALLBACK_NAME)
def create_conll_tokenizer() -> Callable[[Language], Language]:
    """The config's `[initialize.before_init]` block: `@callbacks = "en_bert_ner.conll_tokenizer.v1"`."""
    return keep_hyphenated_words
