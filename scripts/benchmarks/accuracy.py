"""Accuracy and training cost side by side: our spaCy pipeline and the HF Trainer recipe.

Reads what the workflow and scripts/hf_reference wrote (same encoder, same DocBins):
the reference's reference.json, our metrics/{dev,test}.json and training/train_log.jsonl.
Writes metrics/benchmark_accuracy.json and a Markdown table beside it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from wasabi import msg

from scripts.lib.cli import fail
from scripts.lib.reports import machine_description, md_table, percent, write_json_and_markdown
from scripts.lib.training_run import TrainingRunError, f1_by_split, read_json, spacy_side


def reference_side(reference: dict[str, Any]) -> dict[str, Any]:
    return {
        **f1_by_split(reference),
        "train_seconds": reference["train_seconds"],
        "train_words_per_second": reference["train_words_per_second"],
        "train_epochs": reference["recipe"]["epochs"],
    }


def compare(reference_path: Path, training_dir: Path, metrics_dir: Path) -> dict[str, Any]:
    reference = read_json(
        reference_path, "python -m scripts.benchmarks.hf_reference ENCODER corpus training/hf_reference"
    )
    ours, theirs = spacy_side(training_dir, metrics_dir), reference_side(reference)
    return {
        "spacy": ours,
        "hf_reference": theirs,
        "encoder": reference["encoder"],
        "test_f1_strict_gain": ours["test_f1_strict"] - theirs["test_f1_strict"],
        "train_time_ratio": ours["train_seconds"] / theirs["train_seconds"],
        "machine": machine_description(),
    }


def markdown(result: dict[str, Any]) -> str:
    rows = []
    sides = (("spaCy pipeline (this project)", result["spacy"]), ("HF Trainer recipe", result["hf_reference"]))
    for name, side in sides:
        words_per_second = side.get("train_words_per_second")
        rows.append(
            [
                name,
                *(percent(side[key]) for key in ("dev_f1_strict", "test_f1_strict", "test_f1_default")),
                f"{side['train_seconds'] / 60:.1f}",
                f"{words_per_second:,.0f}" if words_per_second else "n/a",
            ]
        )
    header = ["system", "dev F1 strict", "test F1 strict", "test F1 default", "training min", "training words/s"]
    return (
        f"Encoder `{result['encoder']}`, {result['machine']}. F1: seqeval, entity level.\n\n"
        + md_table(header, rows)
        + "\n\n"
        f"Test F1 gain of the spaCy pipeline: {100 * result['test_f1_strict_gain']:+.2f} points; "
        f"its training time is {result['train_time_ratio']:.2f}x the recipe's.\n"
    )


def main(
    reference: Path = typer.Argument(..., help="reference.json from scripts.benchmarks.hf_reference"),
    training_dir: Path = typer.Argument(..., help="The spaCy training folder (train_log.jsonl)"),
    metrics_dir: Path = typer.Argument(..., help="The folder with dev.json and test.json"),
    output: Path = typer.Argument(..., help="metrics/benchmark_accuracy.json; the .md goes beside it"),
) -> None:
    try:
        result = compare(reference, training_dir, metrics_dir)
    except TrainingRunError as err:
        fail("Cannot compare", str(err))
    write_json_and_markdown(output, result, markdown(result))
    msg.good(f"Wrote {output}: test F1 {100 * result['test_f1_strict_gain']:+.2f} points vs the HF recipe")


if __name__ == "__main__":
    typer.run(main)
