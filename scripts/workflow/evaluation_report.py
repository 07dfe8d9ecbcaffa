"""The files `evaluate` writes beside the scores: report.md, per-type chart, error analysis, worst sentences.

Into OUTPUT_DIR:
- `<split>.json`: the scores, speed and error counts;
- `report.md`: Markdown tables for every `<split>.json` in OUTPUT_DIR (dev and test);
- `<split>_per_type.png`: per-type precision, recall and F1 (strict);
- `<split>_errors.md`: error kinds, type confusions, most frequent missed and spurious strings;
- `<split>_worst.html`: displaCy view of the sentences with the most errors, gold beside predicted;
- `<split>_reliability.png`: the reliability diagram of the entity scores, when the pipeline has them.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from spacy import displacy

from scripts.lib.atomic import atomic_target, write_text_atomic
from scripts.lib.conll import SPLITS
from scripts.lib.labels import label_colours
from scripts.lib.reports import md_cell, md_table, percent
from scripts.lib.scoring import ERROR_KINDS, TOP_STRINGS, Evaluation, SentencePair, strict_spans

WORST_SENTENCES = 25

REPORT_NAME = "report.md"


def error_kinds_table(kinds: dict[str, int]) -> str:
    rows = [[kind, f"{kinds[kind]:,}", meaning] for kind, meaning in ERROR_KINDS.items()]
    return md_table(["kind", "count", "meaning"], rows, numeric=[1])


def split_results(output_dir: Path) -> dict[str, dict[str, Any]]:
    """Every `<split>.json` in the folder, in SPLITS order."""
    found = {}
    for split in SPLITS:
        path = output_dir / f"{split}.json"
        if path.is_file():
            found[split] = json.loads(path.read_text(encoding="utf-8"))
    return found


def render_split(split: str, results: dict[str, Any]) -> str:
    strict, default, spacy_scores = results["seqeval_strict"], results["seqeval_default"], results["spacy"]
    overall = md_table(
        ["scorer", "precision", "recall", "F1"],
        [
            ["seqeval strict, IOB2 (primary)", *(percent(strict[key]) for key in ("precision", "recall", "f1"))],
            ["seqeval default (conlleval-like)", *(percent(default[key]) for key in ("precision", "recall", "f1"))],
            ["spaCy scorer (whole docs)", *(percent(spacy_scores[key]) for key in ("ents_p", "ents_r", "ents_f"))],
            *raw_text_rows(results),
        ],
    )
    raw_per_type = results["raw_text"]["per_type"] if "raw_text" in results else {}
    per_type = md_table(
        ["type", "support", "strict P", "strict R", "strict F1", "default P", "default R", "default F1", "raw-text F1"],
        [
            [
                label,
                f"{scores['support']:,}",
                *(percent(scores[key]) for key in ("precision", "recall", "f1")),
                *(percent(default["per_type"][label][key]) for key in ("precision", "recall", "f1")),
                percent(raw_per_type[label]["f1"]) if label in raw_per_type else "n/a",
            ]
            for label, scores in strict["per_type"].items()
        ],
    )
    return "\n\n".join(
        [
            f"## {split}",
            f"`{results['model']}` ({', '.join(results['pipeline'])}) on `{results['gold']}`: "
            f"{results['n_docs']:,} docs, {results['n_sentences']:,} sentences, {results['n_tokens']:,} tokens, "
            f"{results['n_gold_entities']:,} gold entities.",
            "### Overall (micro, %)",
            overall,
            raw_text_note(results),
            "### Per type (%)",
            per_type,
            f"![per-type scores on {split}]({split}_per_type.png)",
            "### Speed",
            f"{results['words_per_second']:,.0f} words per second: {results['n_tokens']:,} tokens in "
            f"{results['seconds']:.1f} s of `nlp.pipe` on {results['device']}, batch size {results['batch_size']}.",
            *calibration_section(split, results),
            "### Errors (strict entities)",
            error_kinds_table(results["errors"]["kinds"]),
            f"Type confusions and the most frequent missed and spurious strings: [{split}_errors.md]"
            f"({split}_errors.md). The sentences with the most errors: [{split}_worst.html]({split}_worst.html).",
        ]
    )


def calibration_section(split: str, results: dict[str, Any]) -> list[str]:
    """The entity scores against the gold (scripts.lib.calibration): summary, thresholds, reliability diagram."""
    calibration = results.get("calibration")
    if calibration is None:
        return []
    summary = (
        f"Each of the {calibration['entities']:,} predicted entities has a score, the probability that it is "
        f"exactly right (span and type); {calibration['correct']:,} are. Expected calibration error "
        f"{calibration['ece']:.3f} (10 equal-width bins), Brier score {calibration['brier']:.3f}, mean score "
        f"{calibration['mean_score']:.3f} against a share right of {calibration['share_right']:.3f}."
    )
    thresholds = md_table(
        ["keep entities scored >=", "kept", "precision", "recall", "coverage"],
        [
            [
                f"{row['threshold']:g}",
                f"{row['kept']:,}",
                *(percent(row[key]) for key in ("precision", "recall", "coverage")),
            ]
            for row in calibration["by_threshold"]
        ],
        numeric=[1, 2, 3, 4],
    )
    return [
        "### Entity scores",
        summary,
        "Precision, recall and coverage (share of the predicted entities kept) by threshold (%), to pick one:",
        thresholds,
        f"![reliability diagram on {split}]({split}_reliability.png)",
    ]


def plot_reliability(split: str, calibration: dict[str, Any], path: Path) -> None:
    """Share right against mean score per score bin, with the diagonal of perfect calibration, saved as PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    bins = [row for row in calibration["bins"] if row["count"]]
    figure = Figure(figsize=(4.8, 4.4), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    axes.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfectly calibrated")
    axes.bar(
        [row["low"] for row in bins],
        [row["accuracy"] for row in bins],
        width=0.1,
        align="edge",
        edgecolor="black",
        alpha=0.6,
        label="share right, per bin",
    )
    axes.plot([row["mean_score"] for row in bins], [row["accuracy"] for row in bins], "o", color="black", markersize=4)
    for row in bins:
        axes.annotate(f"{row['count']:,}", (row["low"] + 0.05, 0.02), ha="center", fontsize=6, rotation=90)
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.02)
    axes.set_xlabel("entity score")
    axes.set_ylabel("share exactly right")
    axes.set_title(f"{split}: ECE {calibration['ece']:.3f}, {calibration['entities']:,} entities", fontsize=9)
    axes.legend(loc="upper left", fontsize=7, frameon=False)
    with atomic_target(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120)


RAW_TEXT_SCORER = "raw text, exact character spans (what a user gets)"


def raw_text_rows(results: dict[str, Any]) -> list[list[str]]:
    """The raw-text row of the overall table; none for metrics written before raw text was scored."""
    if "raw_text" not in results:
        return []
    raw = results["raw_text"]
    return [[RAW_TEXT_SCORER, *(percent(raw[key]) for key in ("precision", "recall", "f1"))]]


def raw_text_note(results: dict[str, Any]) -> str:
    if "raw_text" not in results:
        return "No raw-text scores in this file: rerun `spacy project run evaluate`."
    raw = results["raw_text"]
    return (
        f"Raw text: each gold text rebuilt from its tokens, joined by single spaces, and passed as a string; "
        f"the pipeline's tokenizer cut {raw['retokenized_texts']:,} of the {raw['n_texts']:,} texts into other "
        f"tokens than the gold words. {raw['n_predicted_entities']:,} entities predicted; gold-words F1 minus "
        f"raw-text F1: {100 * (results['seqeval_strict']['f1'] - raw['f1']):+.2f} points."
    )


def render_report(all_results: dict[str, dict[str, Any]]) -> str:
    """report.md over the results of every split evaluated into the folder."""
    summary = md_table(
        ["split", "sentences", "strict F1", "default F1", "spaCy F", "raw-text F1", "words/s"],
        [
            [
                split,
                f"{r['n_sentences']:,}",
                percent(r["seqeval_strict"]["f1"]),
                percent(r["seqeval_default"]["f1"]),
                percent(r["spacy"]["ents_f"]),
                percent(r["raw_text"]["f1"]) if "raw_text" in r else "n/a",
                f"{r['words_per_second']:,.0f}",
            ]
            for split, r in all_results.items()
        ],
    )
    intro = (
        "# NER evaluation\n\n"
        "Entities scored per gold sentence with seqeval: strict mode with the IOB2 scheme (primary; an entity "
        "must open with B-) and the default, conlleval-like mode. Predictions made from `doc.ents` are always "
        "valid IOB2, so the two modes agree on them. spaCy's scorer counts the same predictions over whole Docs. "
        "Document-mode Docs are split back into their gold sentences; a predicted entity running over a "
        "sentence start counts as one entity per sentence. All of these hand the pipeline the gold words. "
        "The raw-text score hands it text instead, as a user does: each gold Doc's tokens joined by single "
        "spaces, cut by the pipeline's own tokenizer, entities compared with the gold by exact character "
        "span and type (strict); a document-mode Doc is one text."
    )
    return "\n\n".join([intro, summary, *(render_split(split, r) for split, r in all_results.items())]) + "\n"


def render_errors(split: str, results: dict[str, Any]) -> str:
    errors = results["errors"]
    confusions = md_table(
        ["gold type", "predicted type", "count"],
        [[c["gold"], c["predicted"], f"{c['count']:,}"] for c in errors["confusions"]],
        numeric=[2],
    )

    def strings(entries: list[dict[str, Any]]) -> str:
        return md_table(
            ["text", "type", "count"], [[md_cell(e["text"]), e["label"], f"{e['count']:,}"] for e in entries], [2]
        )

    return (
        "\n\n".join(
            [
                f"# Errors on {split}",
                f"Strict IOB2 entities of `{results['model']}` against `{results['gold']}`, sentence by sentence.",
                "## Error kinds",
                error_kinds_table(errors["kinds"]),
                "## Type confusions (same boundaries, other type)",
                confusions if errors["confusions"] else "None.",
                f"## Most frequent missed strings (false negatives, top {TOP_STRINGS})",
                "Every gold entity not predicted exactly: missed ones and those with a wrong type or boundary.",
                strings(errors["false_negatives"]) if errors["false_negatives"] else "None.",
                f"## Most frequent spurious strings (false positives, top {TOP_STRINGS})",
                "Every prediction not in the gold.",
                strings(errors["false_positives"]) if errors["false_positives"] else "None.",
                *raw_text_error_sections(results, strings),
            ]
        )
        + "\n"
    )


def raw_text_error_sections(results: dict[str, Any], strings: Callable[[list[dict[str, Any]]], str]) -> list[str]:
    if "raw_text" not in results:
        return []
    errors = results["raw_text"]["errors"]
    return [
        f"## Raw text: most frequent missed and spurious strings (top {TOP_STRINGS} each)",
        "The same gold passed as text through the pipeline's tokenizer, entities compared by character span.",
        strings(errors["false_negatives"]) if errors["false_negatives"] else "None missed.",
        strings(errors["false_positives"]) if errors["false_positives"] else "None spurious.",
    ]


def displacy_html(sentence: SentencePair, tags: Sequence[str]) -> str:
    spans = strict_spans([list(tags)])[0]
    ents = []
    for start, end, label in sorted(spans):
        begin, finish = sentence.char_span(start, end)
        ents.append({"start": begin, "end": finish, "label": label})
    return displacy.render(
        {"text": sentence.text, "ents": ents, "title": None},
        style="ent",
        manual=True,
        page=False,
        jupyter=False,
        # displaCy has no colours of its own for CoNLL's PER and MISC, nor for most labels of other data.
        options={"colors": label_colours({ent["label"] for ent in ents})},
    )


def render_worst(split: str, model: str, evaluation: Evaluation, count: int) -> str:
    """An HTML page of the `count` sentences with the most errors, gold beside predicted."""
    errors = evaluation.errors.errors_per_sentence
    worst = sorted((i for i, n in enumerate(errors) if n > 0), key=lambda i: -errors[i])[:count]
    rows = "\n".join(
        f"<tr><td>{i + 1}<br>{errors[i]} errors</td>"
        f"<td>{displacy_html(evaluation.sentences[i], evaluation.sentences[i].gold)}</td>"
        f"<td>{displacy_html(evaluation.sentences[i], evaluation.sentences[i].predicted)}</td></tr>"
        for i in worst
    )
    title = html.escape(f"{split}: the {len(worst)} sentences with the most errors ({model})")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 1em; }}
table {{ border-collapse: collapse; width: 100%; }}
th, td {{ border-top: 1px solid #ccc; padding: 0.5em; text-align: left; vertical-align: top; }}
td:nth-child(2), td:nth-child(3) {{ width: 48%; }}
</style>
</head>
<body>
<h1>{title}</h1>
<p>Errors: gold entities not predicted exactly plus predictions not in the gold (strict IOB2).
Sentence numbers count from 1 over the split.</p>
<table>
<tr><th>sentence</th><th>gold</th><th>predicted</th></tr>
{rows}
</table>
</body>
</html>
"""


def plot_per_type(split: str, results: dict[str, Any], path: Path) -> None:
    """Grouped bars of strict precision, recall and F1 per type, saved as PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    per_type = results["seqeval_strict"]["per_type"]
    labels = list(per_type)
    metrics = ("precision", "recall", "f1")
    width = 0.8 / len(metrics)
    figure = Figure(figsize=(1.6 * len(labels) + 2, 4), layout="constrained")
    FigureCanvasAgg(figure)  # no pyplot: no global state, no display needed
    axes = figure.subplots()
    for offset, metric in enumerate(metrics):
        xs = [i + (offset - 1) * width for i in range(len(labels))]
        bars = axes.bar(xs, [100 * per_type[label][metric] for label in labels], width, label=metric)
        axes.bar_label(bars, fmt="%.1f", fontsize=7)
    axes.set_xticks(range(len(labels)), [f"{label}\n({per_type[label]['support']:,})" for label in labels])
    axes.set_ylim(0, 115)  # headroom for the legend above 100 %
    axes.set_ylabel("%")
    axes.set_title(f"{split}: seqeval strict IOB2 by type, gold support in brackets ({results['model']})", fontsize=9)
    axes.legend(loc="upper center", ncols=len(metrics), fontsize=8, frameon=False)
    with atomic_target(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120)


def write_outputs(output_dir: Path, split: str, evaluation: Evaluation, worst: int = WORST_SENTENCES) -> list[Path]:
    """Write the split's files, then report.md over every split in the folder; returns the paths written."""
    results = evaluation.results
    paths = {
        "json": output_dir / f"{split}.json",
        "chart": output_dir / f"{split}_per_type.png",
        "errors": output_dir / f"{split}_errors.md",
        "worst": output_dir / f"{split}_worst.html",
        "report": output_dir / REPORT_NAME,
    }
    write_text_atomic(paths["json"], json.dumps(results, indent=2) + "\n")
    plot_per_type(split, results, paths["chart"])
    write_text_atomic(paths["errors"], render_errors(split, results))
    write_text_atomic(paths["worst"], render_worst(split, results["model"], evaluation, worst))
    if "calibration" in results:
        paths["reliability"] = output_dir / f"{split}_reliability.png"
        plot_reliability(split, results["calibration"], paths["reliability"])
    write_text_atomic(paths["report"], render_report(split_results(output_dir)))
    return list(paths.values())
