"""Accuracy and training cost side by side: our spaCy pipeline and the HF Trainer recipe.

Reads what the workflow and scripts/hf_reference wrote (same encoder, same DocBins):
the reference's reference.json, our metrics/{dev,test}.json and training/train_log.jsonl.
Writes metrics/benchmark_accuracy.json and a Markdown table beside it. Two kinds of test F1:
seqeval on the gold words (as the literature reports), and raw text, what users get (each test
sentence passed as a string: our pipeline through its tokenizer, the recipe's model through HF's
`pipeline("ner")` with its best aggregation strategy; entities by exact character span).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from wasabi import msg

from scripts.lib.cli import fail
from scripts.lib.reports import machine_description, md_table, percent, write_json_and_markdown
from scripts.lib.training_run import TrainingRunError, f1_by_split, read_json, spacy_side


def raw_text_f1(scores: dict[str, Any], where: Path, made_by: str) -> float:
    try:
        return float(scores["raw_text"]["f1"])
    except KeyError:
        raise TrainingRunError(
            f"{where}: no raw-text scores (written before they were measured). Rerun `{made_by}`."
        ) from None


def summary_of_scores(calibration: dict[str, Any] | None) -> dict[str, Any] | None:
    """The calibration figures the table shows (scripts.lib.calibration), or None where no scores were measured."""
    if calibration is None:
        return None
    return {
        "ece": calibration["ece"],
        "brier": calibration["brier"],
        "entities": calibration["entities"],
        **{
            f"{figure}_at_{threshold}": calibration["at"][threshold][figure]
            for threshold in ("0.5", "0.9", "0.99")
            for figure in ("precision", "coverage")
        },
    }


def reference_side(reference: dict[str, Any], where: Path) -> dict[str, Any]:
    test_f1_raw_text = raw_text_f1(reference["test"], where, "spacy project run benchmark-accuracy")
    raw = reference["test"]["raw_text"]
    return {
        **f1_by_split(reference),
        "test_f1_raw_text": test_f1_raw_text,
        "raw_text_aggregation": raw["best_aggregation"],
        "raw_text_by_aggregation": {
            strategy: {key: scores[key] for key in ("precision", "recall", "f1", "n_predicted_entities")}
            for strategy, scores in raw["by_aggregation"].items()
        },
        "raw_text_calibration": summary_of_scores(raw["by_aggregation"][raw["best_aggregation"]].get("calibration")),
        "train_seconds": reference["train_seconds"],
        "train_words_per_second": reference["train_words_per_second"],
        "train_epochs": reference["recipe"]["epochs"],
    }


def compare(reference_path: Path, training_dir: Path, metrics_dir: Path) -> dict[str, Any]:
    reference = read_json(
        reference_path, "python -m scripts.benchmarks.hf_reference ENCODER corpus training/hf_reference"
    )
    ours, theirs = spacy_side(training_dir, metrics_dir), reference_side(reference, reference_path)
    test_path, evaluate = metrics_dir / "test.json", "spacy project run evaluate"
    test_metrics = read_json(test_path, evaluate)
    ours["test_f1_raw_text"] = raw_text_f1(test_metrics, test_path, evaluate)
    ours["calibration"] = summary_of_scores(test_metrics.get("calibration"))
    ours["raw_text_calibration"] = summary_of_scores(test_metrics["raw_text"].get("calibration"))
    return {
        "spacy": ours,
        "hf_reference": theirs,
        "encoder": reference["encoder"],
        "test_f1_strict_gain": ours["test_f1_strict"] - theirs["test_f1_strict"],
        "test_f1_raw_text_gain": ours["test_f1_raw_text"] - theirs["test_f1_raw_text"],
        "train_time_ratio": ours["train_seconds"] / theirs["train_seconds"],
        "machine": machine_description(),
    }


def entity_scores_markdown(result: dict[str, Any]) -> str:
    """Our entity scores beside the HF pipeline's `score`, against the gold of the same test sentences."""
    theirs = result["hf_reference"]
    sides = [
        ("spaCy pipeline, `ent._.score`", "gold words", result["spacy"]["calibration"]),
        ("spaCy pipeline, `ent._.score`", "raw text", result["spacy"].get("raw_text_calibration")),
        (
            f'HF `pipeline("ner")` `score`, `{theirs["raw_text_aggregation"]}`',
            "raw text",
            theirs["raw_text_calibration"],
        ),
    ]
    rows = [
        [
            name,
            through,
            f"{figures['entities']:,}",
            f"{figures['ece']:.3f}",
            f"{figures['brier']:.3f}",
            *(
                percent(figures[f"{figure}_at_{t}"])
                for t in ("0.5", "0.9", "0.99")
                for figure in ("precision", "coverage")
            ),
        ]
        for name, through, figures in sides
        if figures is not None
    ]
    header = [
        "entity scores", "input", "entities", "ECE", "Brier", "P >= 0.5", "kept >= 0.5", "P >= 0.9", "kept >= 0.9",
        "P >= 0.99", "kept >= 0.99",
    ]  # fmt: skip
    return (
        "Entity scores on the test sentences: how often an entity scored s is exactly right (span and type). "
        "ECE: expected calibration error over 10 equal-width bins (0 is perfect); P >= t: precision of the "
        "entities scored at or above t; kept: their share of the predicted entities (%).\n\n"
        + md_table(header, rows)
        + "\n"
    )


def markdown(result: dict[str, Any]) -> str:
    rows = []
    theirs = result["hf_reference"]
    sides = (
        ("spaCy pipeline (this project)", "`nlp.pipe(texts)`", result["spacy"]),
        ("HF Trainer recipe", f'`pipeline("ner")`, aggregation `{theirs["raw_text_aggregation"]}`', theirs),
    )
    for name, raw_text_by, side in sides:
        words_per_second = side.get("train_words_per_second")
        rows.append(
            [
                name,
                *(percent(side[key]) for key in ("dev_f1_strict", "test_f1_strict", "test_f1_default")),
                percent(side["test_f1_raw_text"]),
                raw_text_by,
                f"{side['train_seconds'] / 60:.1f}",
                f"{words_per_second:,.0f}" if words_per_second else "n/a",
            ]
        )
    header = [
        "system", "dev F1 strict", "test F1 strict", "test F1 default", "test F1 raw text", "raw text through",
        "training min", "training words/s",
    ]  # fmt: skip
    aggregations = md_table(
        ["aggregation", "precision", "recall", "F1", "entities predicted"],
        [
            [
                f"`{strategy}`",
                *(percent(scores[key]) for key in ("precision", "recall", "f1")),
                f"{scores['n_predicted_entities']:,}",
            ]
            for strategy, scores in theirs["raw_text_by_aggregation"].items()
        ],
    )
    return (
        f"Encoder `{result['encoder']}`, {result['machine']}. F1: entity level. Gold words: seqeval on the "
        "CoNLL tokens (strict IOB2; default mode as conlleval). Raw text: each test sentence passed as a "
        "string (its tokens joined by spaces), entities compared with the gold by exact character span "
        "and type.\n\n" + md_table(header, rows) + "\n\n"
        f"Test F1 gain of the spaCy pipeline: {100 * result['test_f1_strict_gain']:+.2f} points on gold words, "
        f"{100 * result['test_f1_raw_text_gain']:+.2f} on raw text; "
        f"its training time is {result['train_time_ratio']:.2f}x the recipe's.\n\n"
        "The recipe's model in HF's `pipeline(\"ner\")` on the raw test texts, by aggregation strategy "
        "(`none` returns sub-token tags, which `simple` joins into entities; the best is chosen on the test "
        "texts themselves, which favours the recipe):\n\n" + aggregations + "\n"
    ) + ("\n" + entity_scores_markdown(result) if result["spacy"].get("calibration") else "")


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
