"""Entity scores against the gold: how well calibrated they are (the fit is scripts.lib.calibration_fit).

The scores come from the pipeline's `entity_scores` component (scripts/runtime/entity_scores.py).
Every figure here is over the predicted entities, each right (1) when a gold entity has exactly its
span and label, wrong (0) otherwise:
- expected calibration error (ECE): 10 equal-width score bins, the mean |accuracy - mean score| of
  the bins weighted by their share of the entities;
- Brier score: the mean squared difference between score and outcome;
- at a threshold t: precision of the entities scored >= t, and coverage (their share of the
  predicted entities) and recall (correct ones kept over the gold entities).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from spacy.language import Language
from spacy.tokens import Doc

from scripts.lib.scoring import LabelledSpan
from scripts.runtime.entity_scores import FACTORY

ECE_BINS = 10
REPORTED_THRESHOLDS = (0.5, 0.9, 0.99)
THRESHOLD_TABLE = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


class CalibrationError(Exception):
    """A pipeline or split that cannot be calibrated: the message names it and the fix."""


def scored_entities(gold_docs: Sequence[Doc], predicted_docs: Sequence[Doc]) -> tuple[list[float], list[bool]]:
    """Each predicted entity's score and whether it is exactly right; the docs share their tokens."""
    scores, correct = [], []
    for gold, predicted in zip(gold_docs, predicted_docs, strict=True):
        gold_spans = {(ent.start, ent.end, ent.label_) for ent in gold.ents}
        for ent in predicted.ents:
            if ent._.score is None:
                raise CalibrationError(
                    f"An entity ({ent.text!r}) has no score: the pipeline has no `{FACTORY}` component "
                    "after its ner. Train with a config of configs/ (they all have it)."
                )
            scores.append(ent._.score)
            correct.append((ent.start, ent.end, ent.label_) in gold_spans)
    return scores, correct


def scorer_name(nlp: Language) -> str | None:
    """The name of the pipeline's entity_scores component, None when it has none."""
    names = [name for name in nlp.component_names if nlp.get_pipe_meta(name).factory == FACTORY]
    return names[0] if names else None


def scorer_of(nlp: Language) -> Any:
    name = scorer_name(nlp)
    if name is None:
        raise CalibrationError(
            f"The pipeline has no `{FACTORY}` component (it has {', '.join(nlp.component_names)}): "
            f"add it after the ner, as the configs in configs/ do."
        )
    return nlp.get_pipe(name)


def reliability_bins(scores: Sequence[float], correct: Sequence[bool], bins: int = ECE_BINS) -> list[dict[str, Any]]:
    """Per equal-width score bin: its range, entity count, mean score and accuracy (None when empty)."""
    rows = []
    for index in range(bins):
        low, high = index / bins, (index + 1) / bins
        members = [
            (score, right)
            for score, right in zip(scores, correct, strict=True)
            if low <= score < high or (index == bins - 1 and score == 1.0)
        ]
        count = len(members)
        rows.append(
            {
                "low": low,
                "high": high,
                "count": count,
                "mean_score": sum(s for s, _ in members) / count if count else None,
                "accuracy": sum(r for _, r in members) / count if count else None,
            }
        )
    return rows


def expected_calibration_error(bins: Sequence[dict[str, Any]]) -> float:
    total = sum(row["count"] for row in bins)
    if not total:
        return 0.0
    return sum(row["count"] / total * abs(row["accuracy"] - row["mean_score"]) for row in bins if row["count"])


def at_threshold(scores: Sequence[float], correct: Sequence[bool], n_gold: int, threshold: float) -> dict[str, Any]:
    kept = [right for score, right in zip(scores, correct, strict=True) if score >= threshold]
    right = sum(kept)
    return {
        "threshold": threshold,
        "kept": len(kept),
        "precision": right / len(kept) if kept else 0.0,
        "recall": right / n_gold if n_gold else 0.0,
        "coverage": len(kept) / len(scores) if scores else 0.0,
    }


def calibration_metrics(scores: Sequence[float], correct: Sequence[bool], n_gold: int) -> dict[str, Any]:
    """The calibration figures `evaluate` writes: ECE, Brier, the reliability bins, and the threshold tables."""
    bins = reliability_bins(scores, correct)
    n = len(scores)
    return {
        "entities": n,
        "correct": sum(correct),
        "gold_entities": n_gold,
        "ece": expected_calibration_error(bins),
        "brier": sum((score - right) ** 2 for score, right in zip(scores, correct, strict=True)) / n if n else 0.0,
        "mean_score": sum(scores) / n if n else 0.0,
        "share_right": sum(correct) / n if n else 0.0,
        "at": {f"{t:g}": at_threshold(scores, correct, n_gold, t) for t in REPORTED_THRESHOLDS},
        "by_threshold": [at_threshold(scores, correct, n_gold, t) for t in THRESHOLD_TABLE],
        "bins": bins,
    }


ScoredSpan = tuple[int, int, str, float]  # start, end, type, score: token indices or character offsets


def span_calibration(gold: Sequence[set[LabelledSpan]], predicted: Sequence[Sequence[ScoredSpan]]) -> dict[str, Any]:
    """calibration_metrics of scored spans against the gold spans of each text, right when exactly in the gold."""
    scores, correct = [], []
    for gold_spans, scored_spans in zip(gold, predicted, strict=True):
        for start, end, label, score in scored_spans:
            scores.append(float(score))
            correct.append((start, end, label) in gold_spans)
    return calibration_metrics(scores, correct, sum(len(spans) for spans in gold))


def scored_char_spans(doc: Doc) -> list[ScoredSpan]:
    """The doc's entities by character offsets, with their scores (scored_entities says when one has none)."""
    return [(ent.start_char, ent.end_char, ent.label_, ent._.score) for ent in doc.ents if ent._.score is not None]


def evaluate_calibration(gold_docs: Sequence[Doc], predicted_docs: Sequence[Doc]) -> dict[str, Any]:
    scores, correct = scored_entities(gold_docs, predicted_docs)
    return calibration_metrics(scores, correct, sum(len(doc.ents) for doc in gold_docs))
