"""Fitting the entity scores' calibration on the dev split, as users run the pipeline: on raw text.

The pipeline reads each dev text (the gold tokens joined by spaces, scripts.lib.raw_text) with its
own tokenizer; each predicted entity's raw score is held against whether the gold has exactly its
character span and type. Users pass text, not gold words: fitted this way, the scores match what
they get (docs/entity-scores.md has the measurement that chose it).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import spacy
from spacy.language import Language
from spacy.tokens import Doc

from scripts.lib.atomic import write_text_atomic
from scripts.lib.calibration import CalibrationError, scored_char_spans, scorer_name, scorer_of
from scripts.lib.raw_text import gold_texts
from scripts.lib.scoring import BATCH_SIZE, EvaluationError, load_gold_docs
from scripts.runtime.entity_scores import CALIBRATION_FILE, LogisticCalibration


def fit_calibration(
    nlp: Language, gold_docs: Sequence[Doc], source: str, batch_size: int = BATCH_SIZE
) -> LogisticCalibration:
    """Fit NLP's entity scorer on GOLD_DOCS (dev only) read as raw text; SOURCE names them in messages."""
    scorer = scorer_of(nlp)
    golds = gold_texts(gold_docs)
    settings = scorer.calibration, scorer.threshold, scorer.require_calibration
    scorer.calibration, scorer.threshold, scorer.require_calibration = None, 0.0, False
    raw_scores, correct = [], []
    try:
        for gold, doc in zip(golds, nlp.pipe((gold.text for gold in golds), batch_size=batch_size), strict=True):
            for start, end, label, score in scored_char_spans(doc):
                raw_scores.append(score)
                correct.append((start, end, label) in gold.entities)
    finally:
        scorer.calibration, scorer.threshold, scorer.require_calibration = settings
    if not raw_scores:
        raise CalibrationError(
            f"{source}: the pipeline predicted no entity in it, so there is nothing to calibrate on."
        )
    scorer.calibration = LogisticCalibration.fit(raw_scores, correct)
    return scorer.calibration


def calibrate_pipeline(model_dir: Path, dev_path: Path, batch_size: int = BATCH_SIZE) -> LogisticCalibration | None:
    """Fit the entity scorer of the pipeline folder MODEL_DIR on DEV_PATH and save it there; None without a scorer.

    Only the component's calibration file is written (atomically): the rest of the folder stays as trained.
    """
    nlp = spacy.load(model_dir)
    name = scorer_name(nlp)
    if name is None:
        return None
    try:
        gold_docs = load_gold_docs(dev_path, nlp.vocab)
    except EvaluationError as err:
        raise CalibrationError(str(err)) from None
    calibration = fit_calibration(nlp, gold_docs, str(dev_path), batch_size)
    write_text_atomic(model_dir / name / CALIBRATION_FILE, json.dumps(calibration.to_dict()) + "\n")
    return calibration
