"""Entity scoring on raw text: what a user gets who passes strings to the pipeline.

Each gold text is the gold Doc's own text (CoNLL keeps no whitespace, so there the tokens are joined
by single spaces), read by the pipeline's own tokenizer through `nlp.pipe`, and its entities are
compared with the gold by exact character span and type. A gold-words score (scripts.lib.scoring)
hands the pipeline CoNLL's tokens; this one lets the tokenizer cut the text, so it counts every
entity lost where the tokenizer's tokens differ from the ones the model learnt on.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from spacy.language import Language
from spacy.tokens import Doc, Span

from scripts.lib.calibration import scored_char_spans, span_calibration
from scripts.lib.scoring import (
    BATCH_SIZE,
    TOP_STRINGS,
    LabelledSpan,
    score_span_sets,
    sentence_starts,
)


@dataclass
class GoldText:
    """A gold text as a user would pass it, with its entities as (start_char, end_char, type)."""

    text: str
    entities: set[LabelledSpan]
    words: list[str]


def gold_text(tokens: Doc | Span) -> GoldText:
    """The tokens' own text, each gold entity's character span from its tokens' offsets.

    Docs made from tokens alone (column files, dataset rows) join them by single spaces; Docs cut from
    text with character spans keep that text, newlines and double spaces included.
    """
    span = tokens[:] if isinstance(tokens, Doc) else tokens
    base = span.start_char
    entities = {(ent.start_char - base, ent.end_char - base, ent.label_) for ent in span.ents}
    return GoldText(span.text, entities, [token.text for token in span])


def gold_texts(gold_docs: Sequence[Doc], per_sentence: bool = False) -> list[GoldText]:
    """One text per gold Doc (a sentence, or a whole document in document mode), or per gold sentence."""
    texts = []
    for doc in gold_docs:
        if not per_sentence:
            texts.append(gold_text(doc))
            continue
        starts = sentence_starts(doc)
        texts.extend(gold_text(doc[start:end]) for start, end in zip(starts, [*starts[1:], len(doc)], strict=True))
    return texts


def char_spans(doc: Doc) -> set[LabelledSpan]:
    return {(ent.start_char, ent.end_char, ent.label_) for ent in doc.ents}


@dataclass
class RawTextErrors:
    """(text, type) of the gold entities not predicted exactly, and of the predictions not in the gold."""

    false_negatives: Counter[tuple[str, str]]
    false_positives: Counter[tuple[str, str]]

    def to_json(self, top: int = TOP_STRINGS) -> dict[str, Any]:
        def strings(counter: Counter[tuple[str, str]]) -> list[dict[str, Any]]:
            return [{"text": text, "label": label, "count": n} for (text, label), n in counter.most_common(top)]

        return {"false_negatives": strings(self.false_negatives), "false_positives": strings(self.false_positives)}


def raw_text_errors(
    texts: Sequence[str], gold: Sequence[set[LabelledSpan]], predicted: Sequence[set[LabelledSpan]]
) -> RawTextErrors:
    errors = RawTextErrors(Counter(), Counter())
    for text, gold_spans, predicted_spans in zip(texts, gold, predicted, strict=True):
        errors.false_negatives.update((text[s:e], label) for s, e, label in gold_spans - predicted_spans)
        errors.false_positives.update((text[s:e], label) for s, e, label in predicted_spans - gold_spans)
    return errors


def score_texts(
    texts: Sequence[str], gold: Sequence[set[LabelledSpan]], predicted: Sequence[set[LabelledSpan]]
) -> dict[str, Any]:
    """Strict character-span scores, overall and per type, with the most frequent wrong strings."""
    scores = score_span_sets(gold, predicted)
    scores["n_texts"] = len(texts)
    scores["n_predicted_entities"] = sum(len(spans) for spans in predicted)
    scores["errors"] = raw_text_errors(texts, gold, predicted).to_json()
    return scores


def evaluate_raw_text(nlp: Language, golds: Sequence[GoldText], batch_size: int = BATCH_SIZE) -> dict[str, Any]:
    """The pipeline over the gold texts (see gold_texts), scored by character spans (the `raw_text` results).

    `retokenized_texts` counts the texts whose tokenizer tokens differ from the gold words: the
    texts on which the pipeline sees other tokens than the gold-words evaluation gives it.
    """
    started = time.perf_counter()
    predicted_docs = list(nlp.pipe((gold.text for gold in golds), batch_size=batch_size))
    seconds = time.perf_counter() - started
    scores = score_texts([g.text for g in golds], [g.entities for g in golds], [char_spans(d) for d in predicted_docs])
    n_tokens = sum(len(doc) for doc in predicted_docs)
    retokenized = sum([t.text for t in doc] != gold.words for gold, doc in zip(golds, predicted_docs, strict=True))
    if any(ent._.score is not None for doc in predicted_docs for ent in doc.ents):
        scores["calibration"] = span_calibration(
            [g.entities for g in golds], [scored_char_spans(d) for d in predicted_docs]
        )
    return {
        **scores,
        "retokenized_texts": retokenized,
        "n_tokens": n_tokens,
        "seconds": seconds,
        "words_per_second": n_tokens / seconds if seconds > 0 else 0.0,
    }
