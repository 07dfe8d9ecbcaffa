"""The packaged model's meta: the hand-written meta plus the measured test scores.

`spacy package` shows meta["performance"] on the model card (scalars only, as
percentages), so the card carries the seqeval test scores of scripts/evaluate.
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
    """spaCy's performance keys, filled with the primary (seqeval strict IOB2) test scores."""
    try:
        strict, default = metrics["seqeval_strict"], metrics["seqeval_default"]
        performance: dict[str, Any] = {
            "ents_p": strict["precision"],
            "ents_r": strict["recall"],
            "ents_f": strict["f1"],
            "ents_f_conlleval_default": default["f1"],
            **{f"ents_f_{label}": scores["f1"] for label, scores in strict["per_type"].items()},
            "ents_per_type": {
                label: {"p": scores["precision"], "r": scores["recall"], "f": scores["f1"]}
                for label, scores in strict["per_type"].items()
            },
            # "speed" is the one key the model card does not show as a percentage.
            "speed": metrics["words_per_second"],
        }
    except (KeyError, TypeError) as err:
        raise MetaError(f"{where}: missing field {err}; rerun `spacy project run evaluate`.") from None
    return performance


def build_package_meta(base_meta_path: Path, metrics_path: Path) -> dict[str, Any]:
    meta = read_json(base_meta_path, "It holds the package description, sources and licence.")
    metrics = read_json(metrics_path, "Run `spacy project run evaluate` first.")
    meta["performance"] = performance_from_metrics(metrics, str(metrics_path))
    meta.setdefault("notes", "")
    meta["notes"] = (
        f"{meta['notes']} Scores: CoNLL-2003 test split, entity level, seqeval strict mode with "
        "the IOB2 scheme (ents_*), and seqeval default mode as conlleval reports it "
        "(ents_f_conlleval_default). Speed in words per second."
    ).strip()
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
