from __future__ import annotations

import io
import json

import spacy

from scripts.training_logger import LOGGER_NAME, log_record


def info(step: int, words: int, seconds: int) -> dict:
    return {
        "epoch": 0,
        "step": step,
        "words": words,
        "seconds": seconds,
        "losses": {"ner": 12.5},
        "other_scores": {"ents_f": 0.5, "ents_p": 0.4, "ents_r": 0.6, "speed": 1000.0},
        "score": 0.5,
        "checkpoints": [],
    }


def test_log_record_keeps_words_seconds_and_the_weighted_scores():
    record = log_record(info(110, 99_000, 180), ["ents_f", "ents_p"])
    assert record == {
        "epoch": 0,
        "step": 110,
        "words": 99_000,
        "seconds": 180,
        "losses": {"ner": 12.5},
        "scores": {"ents_f": 0.5, "ents_p": 0.4},
        "score": 0.5,
    }


def test_writes_one_line_per_evaluation_and_starts_a_new_file(tmp_path):
    output = tmp_path / "logs" / "train_log.jsonl"
    output.parent.mkdir()
    output.write_text('{"step": 999}\n')  # a previous run's log
    nlp = spacy.blank("en")
    nlp.add_pipe("ner")
    logger = spacy.registry.loggers.get(LOGGER_NAME)(progress_bar=False, console_output=False, output_file=str(output))
    log_step, finalize = logger(nlp, io.StringIO(), io.StringIO())
    log_step(info(0, 0, 0))
    log_step(None)  # a step without evaluation
    log_step(info(110, 99_000, 180))
    finalize()
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    assert [(line["step"], line["words"], line["seconds"]) for line in lines] == [(0, 0, 0), (110, 99_000, 180)]
