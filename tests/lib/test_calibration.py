"""Calibration figures on hand-made scores, and the scorer found (or missed) in a pipeline."""

from __future__ import annotations

import pytest
import spacy
from spacy.tokens import Doc, Span, SpanGroup

from scripts.lib.calibration import (
    CalibrationError,
    calibration_metrics,
    expected_calibration_error,
    reliability_bins,
    scored_entities,
    scorer_of,
)
from scripts.runtime.entity_scores import SCORED_KEY


def test_expected_calibration_error_weights_each_bin_by_its_entities():
    scores = [0.95, 0.95, 0.95, 0.95, 0.55, 0.55]
    correct = [True, True, True, False, True, False]
    bins = reliability_bins(scores, correct)
    top, middle = bins[9], bins[5]
    assert (top["count"], top["accuracy"], top["mean_score"]) == (4, 0.75, pytest.approx(0.95))
    assert (middle["count"], middle["accuracy"]) == (2, 0.5)
    # 4/6 * |0.75 - 0.95| + 2/6 * |0.5 - 0.55|
    assert expected_calibration_error(bins) == pytest.approx(4 / 6 * 0.2 + 2 / 6 * 0.05)


def test_a_score_of_one_falls_in_the_last_bin():
    bins = reliability_bins([1.0, 0.0], [True, False])
    assert bins[9]["count"] == 1 and bins[0]["count"] == 1


def test_threshold_figures_count_what_is_kept():
    metrics = calibration_metrics([0.2, 0.6, 0.95, 0.995], [False, True, True, True], n_gold=5)
    at_09 = metrics["at"]["0.9"]
    assert (at_09["kept"], at_09["precision"], at_09["recall"], at_09["coverage"]) == (2, 1.0, 0.4, 0.5)
    assert metrics["at"]["0.99"]["kept"] == 1
    assert metrics["brier"] == pytest.approx((0.2**2 + 0.4**2 + 0.05**2 + 0.005**2) / 4)
    assert [row["threshold"] for row in metrics["by_threshold"]][0] == 0.0
    assert metrics["by_threshold"][0]["coverage"] == 1.0


def scored_doc(vocab, words, ents, scores) -> Doc:
    doc = Doc(vocab, words=words)
    spans = [Span(doc, start, end, label=label) for start, end, label in ents]
    doc.ents = spans
    doc.spans[SCORED_KEY] = SpanGroup(doc, name=SCORED_KEY, spans=spans, attrs={"scores": scores})
    return doc


def test_scored_entities_marks_exact_matches_only():
    vocab = spacy.blank("en").vocab
    words = ["Angela", "Merkel", "visited", "New", "York"]
    gold = Doc(vocab, words=words, ents=["B-PER", "I-PER", "O", "B-LOC", "I-LOC"])
    predicted = scored_doc(vocab, words, [(0, 2, "PER"), (3, 4, "LOC")], [0.9, 0.4])
    assert scored_entities([gold], [predicted]) == ([0.9, 0.4], [True, False])


def test_an_entity_without_a_score_names_the_missing_component():
    vocab = spacy.blank("en").vocab
    doc = Doc(vocab, words=["Paris"], ents=["B-LOC"])
    with pytest.raises(CalibrationError, match="no `entity_scores` component"):
        scored_entities([doc], [doc])


def test_a_pipeline_without_the_scorer_is_named():
    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    with pytest.raises(CalibrationError, match="it has sentencizer"):
        scorer_of(nlp)
