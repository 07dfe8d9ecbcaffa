from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts.benchmarks.accuracy import compare, markdown
from scripts.lib.training_run import TrainingRunError


def scores(f1: float) -> dict:
    return {"seqeval_strict": {"f1": f1}, "seqeval_default": {"f1": f1 + 0.001}}


def write(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    write(
        tmp_path / "hf" / "reference.json",
        {
            "encoder": "enc",
            "train_seconds": 1200.0,
            "train_words_per_second": 500.0,
            "recipe": {"epochs": 3.0},
            "dev": scores(0.86),
            "test": scores(0.838),
        },
    )
    log = [
        {"epoch": 0, "step": 100, "words": 90000, "seconds": 200},
        {"epoch": 1, "step": 330, "words": 330000, "seconds": 600},
    ]
    write(tmp_path / "training" / "train_log.jsonl", "\n".join(json.dumps(line) for line in log))
    write(tmp_path / "training" / "train_stats.json", {"seconds": 960.0})
    write(tmp_path / "metrics" / "dev.json", scores(0.876))
    write(tmp_path / "metrics" / "test.json", scores(0.849))
    return tmp_path


def test_compare_reads_both_sides(runs: Path):
    result = compare(runs / "hf" / "reference.json", runs / "training", runs / "metrics")
    assert result["test_f1_strict_gain"] == pytest.approx(0.011)
    assert result["train_time_ratio"] == pytest.approx(0.8)
    assert result["spacy"]["train_steps"] == 330 and result["spacy"]["train_epochs_started"] == 2
    assert result["hf_reference"]["test_f1_default"] == pytest.approx(0.839)
    table = markdown(result)
    assert "| spaCy pipeline (this project) | 87.60 | 84.90 | 85.00 | 16.0 | 550 |" in table
    assert "| HF Trainer recipe | 86.00 | 83.80 | 83.90 | 20.0 | 500 |" in table
    assert "+1.10 points" in table and "0.80x" in table


def test_missing_inputs_name_the_command(runs: Path):
    (runs / "training" / "train_stats.json").unlink()
    with pytest.raises(
        TrainingRunError, match="train_stats.json: no such file. It is made by `spacy project run train`"
    ):
        compare(runs / "hf" / "reference.json", runs / "training", runs / "metrics")
    with pytest.raises(TrainingRunError, match="scripts.benchmarks.hf_reference"):
        compare(runs / "nowhere.json", runs / "training", runs / "metrics")
