from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts.benchmarks.accuracy import compare, markdown
from scripts.lib.training_run import TrainingRunError


def scores(f1: float, raw_text: dict | None = None) -> dict:
    return {"seqeval_strict": {"f1": f1}, "seqeval_default": {"f1": f1 + 0.001}, "raw_text": raw_text or {"f1": f1}}


def aggregated(precision: float, recall: float, f1: float, entities: int) -> dict:
    return {"precision": precision, "recall": recall, "f1": f1, "n_predicted_entities": entities}


# The HF pipeline on raw text, one score per aggregation strategy: "first" the best.
HF_RAW_TEXT = {
    "best_aggregation": "first",
    "f1": 0.77,
    "by_aggregation": {
        "simple": aggregated(0.39, 0.60, 0.47, 8684),
        "first": aggregated(0.73, 0.81, 0.77, 6338),
        "average": aggregated(0.72, 0.80, 0.76, 6300),
        "max": aggregated(0.72, 0.80, 0.758, 6310),
    },
}


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
            "test": scores(0.838, HF_RAW_TEXT),
        },
    )
    log = [
        {"epoch": 0, "step": 100, "words": 90000, "seconds": 200},
        {"epoch": 1, "step": 330, "words": 330000, "seconds": 600},
    ]
    write(tmp_path / "training" / "train_log.jsonl", "\n".join(json.dumps(line) for line in log))
    write(tmp_path / "training" / "train_stats.json", {"seconds": 960.0})
    write(tmp_path / "metrics" / "dev.json", scores(0.876))
    write(tmp_path / "metrics" / "test.json", scores(0.849, {"f1": 0.845}))
    return tmp_path


def test_compare_reads_both_sides(runs: Path):
    result = compare(runs / "hf" / "reference.json", runs / "training", runs / "metrics")
    assert result["test_f1_strict_gain"] == pytest.approx(0.011)
    assert result["train_time_ratio"] == pytest.approx(0.8)
    assert result["spacy"]["train_steps"] == 330 and result["spacy"]["train_epochs_started"] == 2
    assert result["hf_reference"]["test_f1_default"] == pytest.approx(0.839)
    assert result["test_f1_raw_text_gain"] == pytest.approx(0.075)
    assert result["hf_reference"]["raw_text_aggregation"] == "first"
    table = markdown(result)
    assert "| spaCy pipeline (this project) | 87.60 | 84.90 | 85.00 | 84.50 | `nlp.pipe(texts)` | 16.0 | 550 |" in table
    assert (
        '| HF Trainer recipe | 86.00 | 83.80 | 83.90 | 77.00 | `pipeline("ner")`, aggregation `first` | 20.0 | 500 |'
        in table
    )
    assert "+1.10 points on gold words, +7.50 on raw text" in table and "0.80x" in table
    assert "| `simple` | 39.00 | 60.00 | 47.00 | 8,684 |" in table and "| `max` |" in table


@pytest.mark.parametrize("side", ["hf/reference.json", "metrics/test.json"])
def test_scores_written_before_raw_text_was_measured_say_what_to_rerun(runs: Path, side: str):
    path = runs / side
    data = json.loads(path.read_text())
    (data["test"] if "test" in data else data).pop("raw_text")
    write(path, data)
    command = "benchmark-accuracy" if side.startswith("hf") else "evaluate"
    with pytest.raises(TrainingRunError, match=rf"{side}: no raw-text scores .* Rerun `spacy project run {command}`"):
        compare(runs / "hf" / "reference.json", runs / "training", runs / "metrics")


def test_missing_inputs_name_the_command(runs: Path):
    (runs / "training" / "train_stats.json").unlink()
    with pytest.raises(
        TrainingRunError, match="train_stats.json: no such file. It is made by `spacy project run train`"
    ):
        compare(runs / "hf" / "reference.json", runs / "training", runs / "metrics")
    with pytest.raises(TrainingRunError, match="scripts.benchmarks.hf_reference"):
        compare(runs / "nowhere.json", runs / "training", runs / "metrics")


def calibration(ece: float, precision_at_09: float) -> dict:
    at = {t: {"precision": precision_at_09, "coverage": 0.7} for t in ("0.5", "0.9", "0.99")}
    return {"ece": ece, "brier": 0.09, "entities": 5600, "at": at}


def test_entity_scores_of_both_sides_in_one_table(runs: Path):
    test = scores(0.849, {"f1": 0.845, "calibration": calibration(0.035, 0.95)})
    test["calibration"] = calibration(0.031, 0.965)
    write(runs / "metrics" / "test.json", test)
    reference = json.loads((runs / "hf" / "reference.json").read_text())
    reference["test"]["raw_text"]["by_aggregation"]["first"]["calibration"] = calibration(0.09, 0.81)
    write(runs / "hf" / "reference.json", reference)
    result = compare(runs / "hf" / "reference.json", runs / "training", runs / "metrics")
    assert result["spacy"]["calibration"]["ece"] == 0.031
    assert result["hf_reference"]["raw_text_calibration"]["precision_at_0.9"] == 0.81
    table = markdown(result)
    assert "| spaCy pipeline, `ent._.score` | gold words | 5,600 | 0.031 | 0.090 | 96.50 | 70.00 |" in table
    assert "| spaCy pipeline, `ent._.score` | raw text | 5,600 | 0.035 |" in table
    assert '| HF `pipeline("ner")` `score`, `first` | raw text | 5,600 | 0.090 | 0.090 | 81.00 |' in table


def test_no_entity_scores_no_table(runs: Path):
    assert "Entity scores" not in markdown(compare(runs / "hf" / "reference.json", runs / "training", runs / "metrics"))
