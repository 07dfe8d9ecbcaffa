"""A training schedule sized in epochs of the corpus at hand, as the config settings `spacy train` takes.

The configs' schedules are sized for CoNLL-2003 (330 steps of 1,100 words is 1.6 of its epochs on the
CPU): on a corpus ten times smaller the same steps are 16 epochs, on one ten times larger a sixth of
one. Given epochs, the steps follow from the training words and the words a step takes
([training.batcher] size); warmup stays a tenth of the run, as in the configs, the linear decay ends
with it, and dev is scored three times.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from spacy.tokens import DocBin
from spacy.vocab import Vocab

WARMUP_SHARE = 0.1
EVALUATIONS = 3


def corpus_words(path: Path) -> int:
    """Tokens in a DocBin: what the word batcher counts."""
    return sum(len(doc) for doc in DocBin().from_disk(path).get_docs(Vocab()))


def epoch_schedule(epochs: float, train_words: int, words_per_step: int) -> dict[str, Any]:
    """Config settings for `epochs` passes over `train_words` in steps of `words_per_step` words."""
    if epochs <= 0 or train_words <= 0 or words_per_step <= 0:
        raise ValueError(f"epochs, words and words a step must be positive: {epochs}, {train_words}, {words_per_step}")
    steps = max(10, math.ceil(epochs * train_words / words_per_step))
    return {
        "training.max_steps": steps,
        "training.max_epochs": 0,
        "training.patience": steps,
        "training.eval_frequency": max(1, math.ceil(steps / EVALUATIONS)),
        "training.optimizer.learn_rate.warmup_steps": max(1, round(steps * WARMUP_SHARE)),
        "training.optimizer.learn_rate.total_steps": steps,
    }


def epochs_of(steps: int, train_words: int, words_per_step: int) -> float:
    """How many passes over the training words `steps` steps make."""
    return steps * words_per_step / train_words if train_words else 0.0
