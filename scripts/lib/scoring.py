"""Entity scoring on gold words: the pipeline over a gold DocBin, seqeval (strict IOB2 and default) and spaCy's scorer.

Primary metric: seqeval in strict mode with the IOB2 scheme, per sentence, as in the
CoNLL-2003 literature; seqeval's default (conlleval-like) mode and spaCy's own scorer
are recorded beside it. The error analysis sorts every gold entity into one kind.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import spacy
from seqeval.metrics import classification_report
from seqeval.scheme import IOB2, Entities
from spacy.language import Language
from spacy.scorer import Scorer
from spacy.tokens import Doc, DocBin
from spacy.training import Example
from spacy.training.iob_utils import biluo_to_iob, doc_to_biluo_tags
from spacy.vocab import Vocab
from tqdm import tqdm

from scripts.lib.labels import label_order

BATCH_SIZE = 64

TOP_STRINGS = 15

# Strict entities of the error analysis, by how a gold entity went wrong (see analyse_errors).
ERROR_KINDS = {
    "correct": "gold entity predicted with the same boundaries and type",
    "wrong_type": "a prediction has the same boundaries but another type",
    "wrong_boundary": "a prediction of the same type overlaps it with other boundaries",
    "wrong_boundary_and_type": "only predictions of another type and other boundaries overlap it",
    "missed": "no prediction overlaps it",
    "spurious": "a prediction that overlaps no gold entity",
}


class EvaluationError(Exception):
    """Bad input: the message names the place and the fix."""


def load_gold_docs(path: Path, vocab: Vocab) -> list[Doc]:
    """The gold Docs of a DocBin; EvaluationError when there is nothing to score against."""
    rebuild = "Build the corpus with `spacy project run corpus`."
    if not path.is_file():
        raise EvaluationError(f"{path}: no such gold DocBin. {rebuild}")
    try:
        docs = list(DocBin().from_disk(path).get_docs(vocab))
    except ValueError as err:
        raise EvaluationError(f"{path}: not a DocBin ({str(err).splitlines()[0]}). {rebuild}") from None
    if not docs:
        raise EvaluationError(f"{path}: the DocBin holds no docs. {rebuild}")
    if not any(doc.ents for doc in docs):
        raise EvaluationError(
            f"{path}: none of its {len(docs)} docs has a gold entity, so there is nothing to score against. "
            f"Pass a DocBin with gold annotation made by scripts.workflow.corpus. {rebuild}"
        )
    return docs


def predict(nlp: Language, gold_docs: Sequence[Doc], batch_size: int = BATCH_SIZE) -> tuple[list[Doc], float]:
    """The pipeline's Docs over the gold words, and the seconds the nlp.pipe pass took.

    The input Docs carry the gold words and spaces, so the tokenizer is skipped and
    every predicted token lines up with a gold one. They carry no sentence starts:
    the pipeline sees what it sees in use, and document-mode Docs are split back
    into gold sentences afterwards (see sentence_iob2_tags).
    """
    inputs = [
        Doc(nlp.vocab, words=[t.text for t in doc], spaces=[bool(t.whitespace_) for t in doc]) for doc in gold_docs
    ]
    # tqdm switches itself off when stderr is not a terminal (CI logs).
    progress = tqdm(total=len(inputs), unit="doc", desc="nlp.pipe", disable=None)
    started = time.perf_counter()
    predicted = []
    for doc in nlp.pipe(inputs, batch_size=batch_size):
        predicted.append(doc)
        progress.update()
    seconds = time.perf_counter() - started
    progress.close()
    for gold, doc in zip(gold_docs, predicted, strict=True):
        if len(doc) != len(gold):
            raise EvaluationError(
                f"The pipeline changed the tokenization ({len(gold)} gold tokens, {len(doc)} predicted) "
                f"in the doc starting {gold[:8].text!r}. Remove components that retokenize "
                "(e.g. merge_entities) before evaluating."
            )
    return predicted, seconds


def sentence_starts(doc: Doc) -> list[int]:
    """Token indices where the doc's sentences start; the whole doc is one sentence when none are set."""
    if len(doc) == 0:
        return []
    if not doc.has_annotation("SENT_START") and not doc.has_annotation("DEP"):
        return [0]
    return [sent.start for sent in doc.sents]


def sentence_iob2_tags(doc: Doc, starts: Sequence[int] | None = None) -> list[list[str]]:
    """IOB2 tags of `doc.ents`, one list per sentence.

    Sentences start at `starts` (token indices), by default the doc's own sentence
    starts. An entity that runs over a sentence start is clipped at it: each part
    becomes an entity of its own in its sentence (the part after the boundary opens
    with B-). Gold entities never cross sentences, so each part is scored like any
    other prediction.
    """
    starts = sentence_starts(doc) if starts is None else list(starts)
    if starts and (starts[0] != 0 or starts != sorted(set(starts)) or starts[-1] >= len(doc)):
        raise ValueError(f"Sentence starts {starts[:10]}... must rise from 0 and stay below {len(doc)}.")
    tags = biluo_to_iob(doc_to_biluo_tags(doc, missing="O"))
    sentences = []
    for start, end in zip(starts, [*starts[1:], len(doc)], strict=True):
        sentence = tags[start:end]
        if sentence[0].startswith("I-"):
            sentence[0] = "B-" + sentence[0][2:]
        sentences.append(sentence)
    return sentences


@dataclass
class SentencePair:
    """One gold sentence with the gold and the predicted entities as IOB2 tags over its words."""

    words: list[str]
    spaces: list[bool]
    gold: list[str]
    predicted: list[str]

    @property
    def text(self) -> str:
        return self.span_text(0, len(self.words))

    def char_span(self, start: int, end: int) -> tuple[int, int]:
        """Character offsets in `text` of the tokens start..end (end exclusive)."""
        begin = sum(len(word) + space for word, space in zip(self.words[:start], self.spaces[:start], strict=True))
        return begin, begin + len(self.span_text(start, end))

    def span_text(self, start: int, end: int) -> str:
        tokens = zip(self.words[start:end], self.spaces[start:end], strict=True)
        return "".join(word + (" " if space else "") for word, space in tokens).rstrip(" ")


def pair_sentences(gold_docs: Sequence[Doc], predicted_docs: Sequence[Doc]) -> list[SentencePair]:
    """Gold and predicted tags per gold sentence: document-mode Docs are split at the gold sentence starts."""
    pairs = []
    for gold, predicted in zip(gold_docs, predicted_docs, strict=True):
        starts = sentence_starts(gold)
        tags = zip(starts, sentence_iob2_tags(gold, starts), sentence_iob2_tags(predicted, starts), strict=True)
        for start, gold_tags, predicted_tags in tags:
            tokens = gold[start : start + len(gold_tags)]
            words, spaces = [t.text for t in tokens], [bool(t.whitespace_) for t in tokens]
            pairs.append(SentencePair(words, spaces, gold_tags, predicted_tags))
    return pairs


def score_iob2(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]], strict: bool) -> dict[str, Any]:
    """Micro precision, recall and F1 of entities, and the same per type with its gold support.

    strict: seqeval's strict mode with the IOB2 scheme, where an entity must open
    with B- (a leading I- is no entity). Otherwise seqeval's default mode, which
    reads tags like conlleval (an I- after O or another type opens an entity).
    A type never predicted has precision 0, not a warning.
    """
    options: dict[str, Any] = {"mode": "strict", "scheme": IOB2} if strict else {}
    report = classification_report(
        [list(tags) for tags in gold], [list(tags) for tags in predicted], output_dict=True, zero_division=0, **options
    )
    micro = report["micro avg"]
    per_type = {
        label: {
            "precision": float(report[label]["precision"]),
            "recall": float(report[label]["recall"]),
            "f1": float(report[label]["f1-score"]),
            "support": int(report[label]["support"]),
        }
        for label in label_order([key for key in report if not key.endswith(" avg")])
    }
    return {
        "precision": float(micro["precision"]),
        "recall": float(micro["recall"]),
        "f1": float(micro["f1-score"]),
        "support": int(micro["support"]),
        "per_type": per_type,
    }


LabelledSpan = tuple[int, int, str]  # start, end (exclusive), type: token indices or character offsets


def precision_recall_f1(correct: int, predicted: int, gold: int) -> dict[str, float]:
    """Zero, not a warning, where a denominator is zero (as score_iob2)."""
    precision = correct / predicted if predicted else 0.0
    recall = correct / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def score_span_sets(gold: Sequence[set[LabelledSpan]], predicted: Sequence[set[LabelledSpan]]) -> dict[str, Any]:
    """Exact-match entity scores over one set of spans per unit (sentence or text), shaped as score_iob2's.

    A prediction counts when a gold span of its unit has the same start, end and type: on the
    spans of strict_spans this is seqeval's strict IOB2 mode; on character offsets it scores text.
    """
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold units against {len(predicted)} predicted ones: pair them one to one.")
    counts: dict[str, Counter[str]] = {"correct": Counter(), "predicted": Counter(), "gold": Counter()}
    for gold_spans, predicted_spans in zip(gold, predicted, strict=True):
        counts["correct"].update(label for _, _, label in gold_spans & predicted_spans)
        counts["predicted"].update(label for _, _, label in predicted_spans)
        counts["gold"].update(label for _, _, label in gold_spans)
    labels = label_order(list(counts["gold"] | counts["predicted"]))
    per_type = {
        label: {
            **precision_recall_f1(counts["correct"][label], counts["predicted"][label], counts["gold"][label]),
            "support": counts["gold"][label],
        }
        for label in labels
    }
    totals = {name: sum(counter.values()) for name, counter in counts.items()}
    return {
        **precision_recall_f1(totals["correct"], totals["predicted"], totals["gold"]),
        "support": totals["gold"],
        "per_type": per_type,
    }


def score_spacy(gold_docs: Sequence[Doc], predicted_docs: Sequence[Doc]) -> dict[str, float]:
    """spaCy's entity scores (what `spacy evaluate` reports) over whole Docs, not split into sentences."""
    examples = [Example(predicted, gold) for gold, predicted in zip(gold_docs, predicted_docs, strict=True)]
    scores = Scorer.score_spans(examples, "ents")
    return {key: float(scores[key] or 0.0) for key in ("ents_p", "ents_r", "ents_f")}


@dataclass
class ErrorSummary:
    """Strict IOB2 entities compared sentence by sentence."""

    kinds: Counter[str] = field(default_factory=Counter)
    # (gold type, predicted type) of predictions with the gold boundaries but another type
    confusions: Counter[tuple[str, str]] = field(default_factory=Counter)
    # (text, type) of gold entities not predicted exactly, and of predictions not in the gold
    false_negatives: Counter[tuple[str, str]] = field(default_factory=Counter)
    false_positives: Counter[tuple[str, str]] = field(default_factory=Counter)
    # false negatives + false positives of each sentence, in sentence order
    errors_per_sentence: list[int] = field(default_factory=list)

    def to_json(self, top: int = TOP_STRINGS) -> dict[str, Any]:
        def strings(counter: Counter[tuple[str, str]]) -> list[dict[str, Any]]:
            return [{"text": text, "label": label, "count": n} for (text, label), n in counter.most_common(top)]

        return {
            "kinds": {kind: self.kinds[kind] for kind in ERROR_KINDS},
            "confusions": [
                {"gold": gold, "predicted": predicted, "count": n}
                for (gold, predicted), n in self.confusions.most_common()
            ],
            "false_negatives": strings(self.false_negatives),
            "false_positives": strings(self.false_positives),
        }


def strict_spans(sentences: Sequence[Sequence[str]]) -> list[set[tuple[int, int, str]]]:
    """(start, end, type) of each sentence's entities, as seqeval's strict IOB2 mode reads them."""
    return [{(e.start, e.end, e.tag) for e in entities} for entities in Entities(sentences, IOB2).entities]


def analyse_errors(sentences: Sequence[SentencePair]) -> ErrorSummary:
    """Sort every gold entity into one ERROR_KINDS kind and count spurious predictions.

    A gold entity that is not predicted exactly is a false negative whatever its
    kind, and a prediction that is not in the gold a false positive, so the two
    string lists match the counts behind strict precision and recall.
    """
    summary = ErrorSummary()
    gold_spans = strict_spans([s.gold for s in sentences])
    predicted_spans = strict_spans([s.predicted for s in sentences])
    for sentence, gold, predicted in zip(sentences, gold_spans, predicted_spans, strict=True):
        for start, end, label in sorted(gold):
            if (start, end, label) in predicted:
                summary.kinds["correct"] += 1
                continue
            summary.false_negatives[(sentence.span_text(start, end), label)] += 1
            overlapping = [(s, e, lab) for s, e, lab in predicted if s < end and start < e]
            same_boundaries = [lab for s, e, lab in overlapping if (s, e) == (start, end)]
            if same_boundaries:
                summary.kinds["wrong_type"] += 1
                summary.confusions[(label, same_boundaries[0])] += 1
            elif any(lab == label for _, _, lab in overlapping):
                summary.kinds["wrong_boundary"] += 1
            elif overlapping:
                summary.kinds["wrong_boundary_and_type"] += 1
            else:
                summary.kinds["missed"] += 1
        for start, end, label in sorted(predicted - gold):
            summary.false_positives[(sentence.span_text(start, end), label)] += 1
            if not any(s < end and start < e for s, e, _ in gold):
                summary.kinds["spurious"] += 1
        summary.errors_per_sentence.append(len(gold ^ predicted))
    return summary


@dataclass
class Evaluation:
    sentences: list[SentencePair]
    errors: ErrorSummary
    # The <split>.json payload.
    results: dict[str, Any]
    # The pipeline's Docs over the gold words, one per gold doc (their entities carry any scores).
    predicted_docs: list[Doc] = field(default_factory=list)


def evaluate(nlp: Language, gold_docs: Sequence[Doc], batch_size: int = BATCH_SIZE) -> Evaluation:
    """Run the pipeline over the gold words and score its entities every way this script reports."""
    predicted_docs, seconds = predict(nlp, gold_docs, batch_size)
    sentences = pair_sentences(gold_docs, predicted_docs)
    gold_tags, predicted_tags = [s.gold for s in sentences], [s.predicted for s in sentences]
    errors = analyse_errors(sentences)
    n_tokens = sum(len(doc) for doc in gold_docs)
    results = {
        "seqeval_strict": score_iob2(gold_tags, predicted_tags, strict=True),
        "seqeval_default": score_iob2(gold_tags, predicted_tags, strict=False),
        "spacy": score_spacy(gold_docs, predicted_docs),
        "words_per_second": n_tokens / seconds if seconds > 0 else 0.0,
        "seconds": seconds,
        "n_docs": len(gold_docs),
        "n_sentences": len(sentences),
        "n_tokens": n_tokens,
        "n_gold_entities": sum(len(doc.ents) for doc in gold_docs),
        "batch_size": batch_size,
        "pipeline": nlp.pipe_names,
        "spacy_version": spacy.__version__,
        "errors": errors.to_json(),
    }
    return Evaluation(sentences, errors, results, predicted_docs)
