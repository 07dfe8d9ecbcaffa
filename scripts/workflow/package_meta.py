"""The packaged model's meta: the hand-written meta plus the measured test scores.

`spacy package` shows meta["performance"] on the model card (scalars only, as
percentages), so the card carries the test scores of scripts.workflow.evaluate: seqeval on
the gold words, the raw-text score (text in, entities by character span) beside them, and how
well calibrated the entity scores are.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from wasabi import msg

from scripts.lib.atomic import write_text_atomic
from scripts.lib.cli import fail


class MetaError(Exception):
    """A missing or malformed input: the message names the file and the fix."""


def read_json(path: Path, hint: str) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MetaError(f"{path}: no such file. {hint}") from None
    except json.JSONDecodeError as err:
        raise MetaError(f"{path}:{err.lineno}: not valid JSON ({err.msg}).") from None


def performance_from_metrics(metrics: dict[str, Any], where: str) -> dict[str, Any]:
    """spaCy's performance keys, filled with the primary (seqeval strict IOB2) test scores; raw text beside."""
    try:
        strict, default, raw = metrics["seqeval_strict"], metrics["seqeval_default"], metrics["raw_text"]
        performance: dict[str, Any] = {
            "ents_p": strict["precision"],
            "ents_r": strict["recall"],
            "ents_f": strict["f1"],
            "ents_p_raw_text": raw["precision"],
            "ents_r_raw_text": raw["recall"],
            "ents_f_raw_text": raw["f1"],
            "ents_f_conlleval_default": default["f1"],
            **{f"ents_f_{label}": scores["f1"] for label, scores in strict["per_type"].items()},
            "ents_per_type": {
                label: {"p": scores["precision"], "r": scores["recall"], "f": scores["f1"]}
                for label, scores in strict["per_type"].items()
            },
            # "speed" is the one key the model card does not show as a percentage.
            "speed": metrics["words_per_second"],
        }
        calibration = metrics.get("calibration")
        if calibration is not None:
            performance["ents_score_ece"] = calibration["ece"]
            performance["ents_score_brier"] = calibration["brier"]
            for threshold, row in calibration["at"].items():
                performance[f"ents_p_score_{threshold}"] = row["precision"]
                performance[f"ents_coverage_score_{threshold}"] = row["coverage"]
    except (KeyError, TypeError) as err:
        raise MetaError(f"{where}: missing field {err}; rerun `spacy project run evaluate`.") from None
    return performance


def build_package_meta(base_meta_path: Path, metrics_path: Path) -> dict[str, Any]:
    meta = read_json(base_meta_path, "It holds the package description, sources and licence.")
    metrics = read_json(metrics_path, "Run `spacy project run evaluate` first.")
    meta["performance"] = performance_from_metrics(metrics, str(metrics_path))
    meta.setdefault("notes", "")
    meta["notes"] = (
        f"{meta['notes']} Scores: CoNLL-2003 test split, entity level. On the gold words, as the "
        "literature reports: seqeval strict mode with the IOB2 scheme (ents_p, ents_r, ents_f, per type), "
        "and seqeval default mode as conlleval reports it (ents_f_conlleval_default). On raw text, what "
        "`nlp(text)` gives you (ents_*_raw_text): each test sentence passed as a string (its tokens joined "
        "by spaces), entities compared with the gold by exact character span and type. Speed in words per second."
    ).strip()
    if "ents_score_ece" in meta["performance"]:
        meta["notes"] += (
            " Each entity has a score (ent._.score), the probability that it is exactly right, calibrated on dev: "
            "its expected calibration error on test (ents_score_ece, 10 bins) and Brier score, and the precision and "
            "coverage (share of the entities kept) of the entities scored at or above 0.5, 0.9 and 0.99."
        )
    return meta


def main(
    base_meta: Path = typer.Argument(..., help="Hand-written meta (configs/meta.json)"),
    metrics: Path = typer.Argument(..., help="Test metrics from scripts/evaluate (metrics/test.json)"),
    output: Path = typer.Argument(..., help="Where the merged meta.json goes"),
) -> None:
    try:
        meta = build_package_meta(base_meta, metrics)
    except MetaError as err:
        fail("Cannot build the package meta", str(err))
    write_text_atomic(output, json.dumps(meta, indent=2) + "\n")
    msg.good(f"Wrote {output} (test F1 {meta['performance']['ents_f']:.4f})")


if __name__ == "__main__":
    typer.run(main)
