"""The packaged model's meta: the hand-written meta, made to fit the corpus, plus the measured test scores.

`spacy package` shows meta["performance"] on the model card (scalars only, as
percentages), so the card carries the test scores of scripts.workflow.evaluate: seqeval on
the gold words, the raw-text score (text in, entities by character span) beside them, and how
well calibrated the entity scores are. Per type the card shows F1 (ents_f_<label>); spaCy lists
the labels itself, from the pipeline.

What the package says about its data follows the corpus manifest (corpus/corpus.json): trained on
CoNLL-2003, it carries that data's research-only licence and names it as a source, as configs/meta.json's
`conll2003` block words them; trained on other data, neither, but a description from the data's own
labels and source and a licence that says it was not stated. --description and --license replace
either.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from wasabi import msg

from scripts.lib.atomic import write_text_atomic
from scripts.lib.cli import fail
from scripts.lib.corpus_manifest import CorpusManifest, ManifestError, read_manifest
from scripts.lib.labels import label_order

# The block of configs/meta.json that replaces description, licence and adds sources for CoNLL-2003 itself.
CONLL2003_BLOCK = "conll2003"


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
        overall = {
            "ents_p": strict["precision"],
            "ents_r": strict["recall"],
            "ents_f": strict["f1"],
            "ents_p_raw_text": raw["precision"],
            "ents_r_raw_text": raw["recall"],
            "ents_f_raw_text": raw["f1"],
            "ents_f_conlleval_default": default["f1"],
        }
        per_type = {f"ents_f_{label}": scores["f1"] for label, scores in strict["per_type"].items()}
        # A label named like a score ("raw_text") would overwrite that score on the card without a word.
        clashes = sorted(set(overall) & set(per_type))
        if clashes:
            raise MetaError(
                f"{where}: the label '{clashes[0].removeprefix('ents_f_')}' gives the per-type score {clashes[0]}, "
                "the name of another score on the model card: rename the label in the training data."
            )
        performance: dict[str, Any] = {
            **overall,
            **per_type,
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


def shown_source(source: str) -> str:
    """The manifest's source as the description names it: a hub name as it is, a far local path by its last part.

    The description ships in the wheel, where a path on the build machine means nothing to its users
    and may say more about that machine than its owner meant to.
    """
    path = Path(source)
    if path.is_absolute() or source.startswith("~") or ".." in path.parts:
        return path.name or source
    return source


def describe_data(base_meta: dict[str, Any], manifest: CorpusManifest, where: str) -> dict[str, Any]:
    """Description, licence and sources for the manifest's data: CoNLL-2003's own block, or the general ones."""
    meta = dict(base_meta)
    conll2003 = meta.pop(CONLL2003_BLOCK, None)
    if manifest.conll2003:
        if not isinstance(conll2003, dict):
            raise MetaError(
                f"{where}: no '{CONLL2003_BLOCK}' block, with the description, licence and sources of a model "
                "trained on CoNLL-2003: restore it from the repository."
            )
        for key, kind in (("description", str), ("license", str), ("sources", list)):
            if not isinstance(conll2003.get(key), kind):
                raise MetaError(f"{where}: '{CONLL2003_BLOCK}' needs its {key} ({kind.__name__}): restore it.")
        meta["description"], meta["license"] = conll2003["description"], conll2003["license"]
        meta["sources"] = [*conll2003["sources"], *meta.get("sources", [])]
        return meta
    # str.replace, not str.format: a brace in a hand-written description is text, not a field.
    labels = ", ".join(label_order(manifest.labels))
    template = str(meta.get("description", ""))
    meta["description"] = template.replace("{labels}", labels).replace("{source}", shown_source(manifest.source))
    return meta


def build_package_meta(
    base_meta_path: Path, metrics_path: Path, manifest: CorpusManifest, description: str = "", license_text: str = ""
) -> dict[str, Any]:
    """The package's meta.json for a pipeline trained on the manifest's corpus; description and licence when given."""
    base = read_json(base_meta_path, "It holds the package description, sources and licence.")
    metrics = read_json(metrics_path, "Run `spacy project run evaluate` first.")
    meta = describe_data(base, manifest, str(base_meta_path))
    if description:
        meta["description"] = description
    if license_text:
        meta["license"] = license_text
    meta["performance"] = performance_from_metrics(metrics, str(metrics_path))
    meta.setdefault("notes", "")
    if manifest.conll2003:
        scores = "Scores: CoNLL-2003 test split, entity level. On the gold words, as the literature reports:"
    else:
        scores = f"Scores: the test split of {shown_source(manifest.source)}, entity level. On the gold words:"
    meta["notes"] = (
        f"{meta['notes']} {scores} seqeval strict mode with the IOB2 scheme (ents_p, ents_r, ents_f, per type), "
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
    corpus_dir: Path = typer.Option(
        Path("corpus"), help="Folder of the corpus the pipeline was trained on (corpus.json)"
    ),
    description: str = typer.Option(
        "", help="The package's description; empty: CoNLL-2003's own, or one from the corpus's labels and source"
    ),
    license_text: str = typer.Option(
        "", "--license", help="The package's licence; empty: CoNLL-2003's research-only one, or 'Not stated'"
    ),
) -> None:
    try:
        meta = build_package_meta(base_meta, metrics, read_manifest(corpus_dir), description, license_text)
    except (MetaError, ManifestError) as err:
        fail("Cannot build the package meta", str(err))
    write_text_atomic(output, json.dumps(meta, indent=2) + "\n")
    msg.good(f"Wrote {output} (test F1 {meta['performance']['ents_f']:.4f})")


if __name__ == "__main__":
    typer.run(main)
