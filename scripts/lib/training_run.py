"""The reader of a training run: its log and stats (written by scripts.workflow.train) and its evaluation's scores."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# One JSON line per evaluation: step, epoch, words, seconds, losses, scores (scripts/components/training_logger.py).
TRAIN_LOG_NAME = "train_log.jsonl"

# Wall time of the whole run (initialisation and evaluations included).
TRAIN_STATS_NAME = "train_stats.json"


class TrainingRunError(Exception):
    """A missing input: the message names it and the command that makes it."""


def read_json(path: Path, made_by: str) -> Any:
    if not path.is_file():
        raise TrainingRunError(f"{path}: no such file. It is made by `{made_by}`.")
    return json.loads(path.read_text(encoding="utf-8"))


def f1_by_split(scores: dict[str, Any]) -> dict[str, float]:
    """dev/test F1 in both seqeval modes, from results keyed by split (metrics JSON or reference.json)."""
    return {
        f"{split}_f1_{mode}": scores[split][f"seqeval_{mode}"]["f1"]
        for split in ("dev", "test")
        for mode in ("strict", "default")
    }


def spacy_side(training_dir: Path, metrics_dir: Path) -> dict[str, Any]:
    stats = read_json(training_dir / TRAIN_STATS_NAME, "spacy project run train")
    log_path = training_dir / TRAIN_LOG_NAME
    if not log_path.is_file():
        raise TrainingRunError(f"{log_path}: no such file. It is made by `spacy project run train`.")
    last = read_train_log(log_path)[-1]
    scores = {
        split: read_json(metrics_dir / f"{split}.json", "spacy project run evaluate") for split in ("dev", "test")
    }
    return {
        **f1_by_split(scores),
        # Initialisation and dev evaluations included: the recipe's figure has neither.
        "train_seconds": stats["seconds"],
        # Words seen over the seconds of the training loop (spaCy's clock starts after initialisation).
        "train_words_per_second": last["words"] / last["seconds"] if last["seconds"] else None,
        "train_steps": last["step"],
        "train_words": last["words"],
        "train_epochs_started": last["epoch"] + 1,
    }


def read_train_log(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
