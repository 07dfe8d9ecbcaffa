"""scripts.lib.schedule: a training schedule sized in epochs of the corpus (train's --epochs / vars.train_epochs)."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import pytest
from spacy.tokens import Doc, DocBin
from spacy.util import load_config
from spacy.vocab import Vocab

from scripts.lib.schedule import corpus_words, epoch_schedule, epochs_of
from tests.conftest import PROJECT_DIR

STEPS = "training.max_steps"
WARMUP = "training.optimizer.learn_rate.warmup_steps"
TOTAL = "training.optimizer.learn_rate.total_steps"
EVAL = "training.eval_frequency"


def config_value(config: Any, dotted: str) -> Any:
    for key in dotted.split("."):
        config = config[key]
    return config


def test_an_epoch_of_steps_with_warmup_a_tenth_and_three_evaluations():
    # 2 epochs of 165,000 words at 1,100 words a step: 300 steps.
    assert epoch_schedule(2, 165_000, 1_100) == {
        STEPS: 300,
        "training.max_epochs": 0,  # the steps decide, not spaCy's epoch count
        "training.patience": 300,  # no early stop before the schedule ends
        EVAL: 100,
        WARMUP: 30,
        TOTAL: 300,  # the linear decay ends with the run
    }


@pytest.mark.parametrize(
    ("epochs", "words", "per_step", "steps", "warmup", "evaluate_every"),
    [
        (1, 1_101, 100, 12, 1, 4),  # 11.01 steps round up: the last partial step still runs
        (0.5, 7_400, 100, 37, 4, 13),  # warmup round(3.7), dev every ceil(37 / 3)
        (1, 100, 1_100, 10, 1, 4),  # a corpus smaller than one step still trains 10 steps
        (1e-6, 10, 10, 10, 1, 4),
        (3, 203_621, 1_100, 556, 56, 186),  # three epochs of CoNLL-2003's training words
    ],
)
def test_steps_warmup_and_evaluation_round_sensibly(epochs, words, per_step, steps, warmup, evaluate_every):
    schedule = epoch_schedule(epochs, words, per_step)
    assert (schedule[STEPS], schedule[WARMUP], schedule[EVAL]) == (steps, warmup, evaluate_every)
    assert schedule[TOTAL] == schedule["training.patience"] == steps


def test_the_cpu_configs_own_schedule_has_the_same_shape():
    # minilm_cpu.cfg: 330 steps, warmup 33, dev every 110. An epoch schedule of 330 steps must be that one.
    config = load_config(PROJECT_DIR / "configs" / "minilm_cpu.cfg")
    schedule = epoch_schedule(3, 121_000, 1_100)
    assert schedule[STEPS] == 330
    for key in (STEPS, WARMUP, TOTAL, EVAL):
        assert schedule[key] == config_value(config, key), key


@pytest.mark.parametrize("config", ["minilm_cpu.cfg", "bert_ner.cfg"])
def test_every_setting_names_a_config_value(config):
    # Each key is a `spacy train` override: it must exist in the configs, or spaCy rejects it.
    loaded = load_config(PROJECT_DIR / "configs" / config)
    for key in epoch_schedule(1, 10_000, 1_000):
        config_value(loaded, key)


def test_random_schedules_keep_their_invariants():
    rng = random.Random(11)
    for _ in range(2_000):
        epochs, words, per_step = rng.uniform(0.05, 20), rng.randint(1, 2_000_000), rng.randint(1, 5_000)
        schedule = epoch_schedule(epochs, words, per_step)
        steps = schedule[STEPS]
        assert steps == max(10, math.ceil(epochs * words / per_step))
        # Warmup a tenth, to the nearest step (at least 10 steps, so at least one).
        assert abs(schedule[WARMUP] - steps / 10) <= 0.5
        # Dev scored three times: the third evaluation falls at or just after the last step.
        assert steps <= 3 * schedule[EVAL] < steps + 3
        if steps > 10:
            # Enough steps for the epochs asked, and less than one step more.
            made = epochs_of(steps, words, per_step)
            assert epochs <= made + 1e-9 and made - epochs < per_step / words


@pytest.mark.parametrize(("epochs", "words", "per_step"), [(0, 100, 10), (-1, 100, 10), (1, 0, 10), (1, 100, 0)])
def test_nothing_to_schedule_is_an_error(epochs, words, per_step):
    with pytest.raises(ValueError, match=f"must be positive: {epochs}, {words}, {per_step}"):
        epoch_schedule(epochs, words, per_step)


def test_epochs_of_a_number_of_steps():
    assert epochs_of(330, 203_621, 1_100) == pytest.approx(1.7827, abs=1e-4)
    assert epochs_of(200, 110_000, 1_100) == 2.0
    assert epochs_of(10, 0, 1_100) == 0.0  # no words: no epochs, not a division by zero


def test_corpus_words_counts_tokens_not_docs(tmp_path: Path):
    vocab = Vocab()
    sentences = [["EU", "rejects", "German", "call", "."], ["Peter", "Blackburn"], ["BRUSSELS", "1996-08-22"]]
    DocBin(docs=[Doc(vocab, words=words) for words in sentences]).to_disk(tmp_path / "train.spacy")
    assert corpus_words(tmp_path / "train.spacy") == 5 + 2 + 2
