"""Score an NER pipeline on a gold DocBin made by scripts.workflow.corpus.

Primary metric: seqeval in strict mode with the IOB2 scheme, per sentence, as in the
CoNLL-2003 literature; seqeval's default (conlleval-like) mode and spaCy's own scorer
are recorded beside it. Writes to OUTPUT_DIR:

- `<split>.json`: the scores, speed and error counts;
- `report.md`: Markdown tables for every `<split>.json` in OUTPUT_DIR (dev and test);
- `<split>_per_type.png`: per-type precision, recall and F1 (strict);
- `<split>_errors.md`: error kinds, type confusions, most frequent missed and spurious strings;
- `<split>_worst.html`: displaCy view of the sentences with the most errors, gold beside predicted.
"""

from __future__ import annotations

import html
import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import spacy
import typer
from seqeval.metrics import classification_report
from seqeval.scheme import IOB2, Entities
from spacy import displacy
from spacy.language import Language
from spacy.scorer import Scorer
from spacy.tokens import Doc, DocBin
from spacy.training import Example
from spacy.training.iob_utils import biluo_to_iob, doc_to_biluo_tags
from spacy.vocab import Vocab
from tqdm import tqdm
from wasabi import msg

from scripts.lib.atomic import atomic_target, write_text_atomic
from scripts.workflow.corpus import LABELS, SPLITS
from scripts.components.encoder_backend import TORCH, TORCH_INT8
from scripts.lib.pipeline_loading import Backend, PipelineLoadError, chosen_backend, load_pipeline

BATCH_SIZE = 64
WORST_SENTENCES = 25
TOP_STRINGS = 15
REPORT_NAME = "report.md"
# displaCy has no colours of its own for CoNLL's PER and MISC.
ENTITY_COLORS = {"PER": "#aa9cfc", "ORG": "#7aecec", "LOC": "#ff9561", "MISC": "#e4e7d2"}
# Strict entities of the error analysis, by how a gold entity went wrong (see analyse_errors).
ERROR_KINDS = {
    "correct": "gold entity predicted with the same boundaries and type",
    "wrong_type": "a prediction has the same boundaries but another type",
    "wrong_boundary": "a prediction of the same type overlaps it with other boundaries",
    "wrong_boundary_and_type": "only predictions of another type and other boundaries overlap it",
    "missed": "no prediction overlaps it",
    "spurious": "a prediction that overlaps no gold entity",
}


class EvaluationError(Exception):
    """Bad input: the message names the place and the fix."""


# --- inputs ------------------------------------------------------------------------


def load_gold_docs(path: Path, vocab: Vocab) -> list[Doc]:
    """The gold Docs of a DocBin; EvaluationError when there is nothing to score against."""
    rebuild = "Build the corpus with `spacy project run corpus`."
    if not path.is_file():
        raise EvaluationError(f"{path}: no such gold DocBin. {rebuild}")
    try:
        docs = list(DocBin().from_disk(path).get_docs(vocab))
    except ValueError as err:
        raise EvaluationError(f"{path}: not a DocBin ({str(err).splitlines()[0]}). {rebuild}") from None
    if not docs:
        raise EvaluationError(f"{path}: the DocBin holds no docs. {rebuild}")
    if not any(doc.ents for doc in docs):
        raise EvaluationError(
            f"{path}: none of its {len(docs)} docs has a gold entity, so there is nothing to score against. "
            f"Pass a DocBin with gold annotation made by scripts.workflow.corpus. {rebuild}"
        )
    return docs


# --- prediction --------------------------------------------------------------------


def predict(nlp: Language, gold_docs: Sequence[Doc], batch_size: int = BATCH_SIZE) -> tuple[list[Doc], float]:
    """The pipeline's Docs over the gold words, and the seconds the nlp.pipe pass took.

    The input Docs carry the gold words and spaces, so the tokenizer is skipped and
    every predicted token lines up with a gold one. They carry no sentence starts:
    the pipeline sees what it sees in use, and document-mode Docs are split back
    into gold sentences afterwards (see sentence_iob2_tags).
    """
    inputs = [
        Doc(nlp.vocab, words=[t.text for t in doc], spaces=[bool(t.whitespace_) for t in doc]) for doc in gold_docs
    ]
    # tqdm switches itself off when stderr is not a terminal (CI logs).
    progress = tqdm(total=len(inputs), unit="doc", desc="nlp.pipe", disable=None)
    started = time.perf_counter()
    predicted = []
    for doc in nlp.pipe(inputs, batch_size=batch_size):
        predicted.append(doc)
        progress.update()
    seconds = time.perf_counter() - started
    progress.close()
    for gold, doc in zip(gold_docs, predicted, strict=True):
        if len(doc) != len(gold):
            raise EvaluationError(
                f"The pipeline changed the tokenization ({len(gold)} gold tokens, {len(doc)} predicted) "
                f"in the doc starting {gold[:8].text!r}. Remove components that retokenize "
                "(e.g. merge_entities) before evaluating."
            )
    return predicted, seconds


# --- tags --------------------------------------------------------------------------


def sentence_starts(doc: Doc) -> list[int]:
    """Token indices where the doc's sentences start; the whole doc is one sentence when none are set."""
    if len(doc) == 0:
        return []
    if not doc.has_annotation("SENT_START") and not doc.has_annotation("DEP"):
        return [0]
    return [sent.start for sent in doc.sents]


def sentence_iob2_tags(doc: Doc, starts: Sequence[int] | None = None) -> list[list[str]]:
    """IOB2 tags of `doc.ents`, one list per sentence.

    Sentences start at `starts` (token indices), by default the doc's own sentence
    starts. An entity that runs over a sentence start is clipped at it: each part
    becomes an entity of its own in its sentence (the part after the boundary opens
    with B-). Gold entities never cross sentences, so each part is scored like any
    other prediction.
    """
    starts = sentence_starts(doc) if starts is None else list(starts)
    if starts and (starts[0] != 0 or starts != sorted(set(starts)) or starts[-1] >= len(doc)):
        raise ValueError(f"Sentence starts {starts[:10]}... must rise from 0 and stay below {len(doc)}.")
    tags = biluo_to_iob(doc_to_biluo_tags(doc, missing="O"))
    sentences = []
    for start, end in zip(starts, [*starts[1:], len(doc)], strict=True):
        sentence = tags[start:end]
        if sentence[0].startswith("I-"):
            sentence[0] = "B-" + sentence[0][2:]
        sentences.append(sentence)
    return sentences


@dataclass
class SentencePair:
    """One gold sentence with the gold and the predicted entities as IOB2 tags over its words."""

    words: list[str]
    spaces: list[bool]
    gold: list[str]
    predicted: list[str]

    @property
    def text(self) -> str:
        return self.span_text(0, len(self.words))

    def char_span(self, start: int, end: int) -> tuple[int, int]:
        """Character offsets in `text` of the tokens start..end (end exclusive)."""
        begin = sum(len(word) + space for word, space in zip(self.words[:start], self.spaces[:start], strict=True))
        return begin, begin + len(self.span_text(start, end))

    def span_text(self, start: int, end: int) -> str:
        tokens = zip(self.words[start:end], self.spaces[start:end], strict=True)
        return "".join(word + (" " if space else "") for word, space in tokens).rstrip(" ")


def pair_sentences(gold_docs: Sequence[Doc], predicted_docs: Sequence[Doc]) -> list[SentencePair]:
    """Gold and predicted tags per gold sentence: document-mode Docs are split at the gold sentence starts."""
    pairs = []
    for gold, predicted in zip(gold_docs, predicted_docs, strict=True):
        starts = sentence_starts(gold)
        tags = zip(starts, sentence_iob2_tags(gold, starts), sentence_iob2_tags(predicted, starts), strict=True)
        for start, gold_tags, predicted_tags in tags:
            tokens = gold[start : start + len(gold_tags)]
            words, spaces = [t.text for t in tokens], [bool(t.whitespace_) for t in tokens]
            pairs.append(SentencePair(words, spaces, gold_tags, predicted_tags))
    return pairs


# --- scores ------------------------------------------------------------------------


def label_order(labels: Sequence[str]) -> list[str]:
    """CoNLL's labels in their usual order, then any other label a pipeline predicted."""
    return [label for label in LABELS if label in labels] + sorted(set(labels) - set(LABELS))


def score_iob2(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]], strict: bool) -> dict[str, Any]:
    """Micro precision, recall and F1 of entities, and the same per type with its gold support.

    strict: seqeval's strict mode with the IOB2 scheme, where an entity must open
    with B- (a leading I- is no entity). Otherwise seqeval's default mode, which
    reads tags like conlleval (an I- after O or another type opens an entity).
    A type never predicted has precision 0, not a warning.
    """
    options: dict[str, Any] = {"mode": "strict", "scheme": IOB2} if strict else {}
    report = classification_report(
        [list(tags) for tags in gold], [list(tags) for tags in predicted], output_dict=True, zero_division=0, **options
    )
    micro = report["micro avg"]
    per_type = {
        label: {
            "precision": float(report[label]["precision"]),
            "recall": float(report[label]["recall"]),
            "f1": float(report[label]["f1-score"]),
            "support": int(report[label]["support"]),
        }
        for label in label_order([key for key in report if not key.endswith(" avg")])
    }
    return {
        "precision": float(micro["precision"]),
        "recall": float(micro["recall"]),
        "f1": float(micro["f1-score"]),
        "support": int(micro["support"]),
        "per_type": per_type,
    }


def score_spacy(gold_docs: Sequence[Doc], predicted_docs: Sequence[Doc]) -> dict[str, float]:
    """spaCy's entity scores (what `spacy evaluate` reports) over whole Docs, not split into sentences."""
    examples = [Example(predicted, gold) for gold, predicted in zip(gold_docs, predicted_docs, strict=True)]
    scores = Scorer.score_spans(examples, "ents")
    return {key: float(scores[key] or 0.0) for key in ("ents_p", "ents_r", "ents_f")}


# --- errors ------------------------------------------------------------------------


@dataclass
class ErrorSummary:
    """Strict IOB2 entities compared sentence by sentence."""

    kinds: Counter[str] = field(default_factory=Counter)
    # (gold type, predicted type) of predictions with the gold boundaries but another type
    confusions: Counter[tuple[str, str]] = field(default_factory=Counter)
    # (text, type) of gold entities not predicted exactly, and of predictions not in the gold
    false_negatives: Counter[tuple[str, str]] = field(default_factory=Counter)
    false_positives: Counter[tuple[str, str]] = field(default_factory=Counter)
    # false negatives + false positives of each sentence, in sentence order
    errors_per_sentence: list[int] = field(default_factory=list)

    def to_json(self, top: int = TOP_STRINGS) -> dict[str, Any]:
        def strings(counter: Counter[tuple[str, str]]) -> list[dict[str, Any]]:
            return [{"text": text, "label": label, "count": n} for (text, label), n in counter.most_common(top)]

        return {
            "kinds": {kind: self.kinds[kind] for kind in ERROR_KINDS},
            "confusions": [
                {"gold": gold, "predicted": predicted, "count": n}
                for (gold, predicted), n in self.confusions.most_common()
            ],
            "false_negatives": strings(self.false_negatives),
            "false_positives": strings(self.false_positives),
        }


def strict_spans(sentences: Sequence[Sequence[str]]) -> list[set[tuple[int, int, str]]]:
    """(start, end, type) of each sentence's entities, as seqeval's strict IOB2 mode reads them."""
    return [{(e.start, e.end, e.tag) for e in entities} for entities in Entities(sentences, IOB2).entities]


def analyse_errors(sentences: Sequence[SentencePair]) -> ErrorSummary:
    """Sort every gold entity into one ERROR_KINDS kind and count spurious predictions.

    A gold entity that is not predicted exactly is a false negative whatever its
    kind, and a prediction that is not in the gold a false positive, so the two
    string lists match the counts behind strict precision and recall.
    """
    summary = ErrorSummary()
    gold_spans = strict_spans([s.gold for s in sentences])
    predicted_spans = strict_spans([s.predicted for s in sentences])
    for sentence, gold, predicted in zip(sentences, gold_spans, predicted_spans, strict=True):
        for start, end, label in sorted(gold):
            if (start, end, label) in predicted:
                summary.kinds["correct"] += 1
                continue
            summary.false_negatives[(sentence.span_text(start, end), label)] += 1
            overlapping = [(s, e, lab) for s, e, lab in predicted if s < end and start < e]
            same_boundaries = [lab for s, e, lab in overlapping if (s, e) == (start, end)]
            if same_boundaries:
                summary.kinds["wrong_type"] += 1
                summary.confusions[(label, same_boundaries[0])] += 1
            elif any(lab == label for _, _, lab in overlapping):
                summary.kinds["wrong_boundary"] += 1
            elif overlapping:
                summary.kinds["wrong_boundary_and_type"] += 1
            else:
                summary.kinds["missed"] += 1
        for start, end, label in sorted(predicted - gold):
            summary.false_positives[(sentence.span_text(start, end), label)] += 1
            if not any(s < end and start < e for s, e, _ in gold):
                summary.kinds["spurious"] += 1
        summary.errors_per_sentence.append(len(gold ^ predicted))
    return summary


# --- evaluation --------------------------------------------------------------------


@dataclass
class Evaluation:
    sentences: list[SentencePair]
    errors: ErrorSummary
    # The <split>.json payload.
    results: dict[str, Any]


def evaluate(nlp: Language, gold_docs: Sequence[Doc], batch_size: int = BATCH_SIZE) -> Evaluation:
    """Run the pipeline over the gold words and score its entities every way this script reports."""
    predicted_docs, seconds = predict(nlp, gold_docs, batch_size)
    sentences = pair_sentences(gold_docs, predicted_docs)
    gold_tags, predicted_tags = [s.gold for s in sentences], [s.predicted for s in sentences]
    errors = analyse_errors(sentences)
    n_tokens = sum(len(doc) for doc in gold_docs)
    results = {
        "seqeval_strict": score_iob2(gold_tags, predicted_tags, strict=True),
        "seqeval_default": score_iob2(gold_tags, predicted_tags, strict=False),
        "spacy": score_spacy(gold_docs, predicted_docs),
        "words_per_second": n_tokens / seconds if seconds > 0 else 0.0,
        "seconds": seconds,
        "n_docs": len(gold_docs),
        "n_sentences": len(sentences),
        "n_tokens": n_tokens,
        "n_gold_entities": sum(len(doc.ents) for doc in gold_docs),
        "batch_size": batch_size,
        "pipeline": nlp.pipe_names,
        "spacy_version": spacy.__version__,
        "errors": errors.to_json(),
    }
    return Evaluation(sentences, errors, results)


# --- outputs -----------------------------------------------------------------------


def percent(fraction: float) -> str:
    return f"{100 * fraction:.2f}"


def md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("`", "\\`")


def md_table(header: Sequence[str], rows: Sequence[Sequence[Any]], numeric: Sequence[int] | None = None) -> str:
    """A Markdown table; `numeric` columns (by default all but the first) are right-aligned."""
    numeric = range(1, len(header)) if numeric is None else numeric
    aligns = ["--:" if i in numeric else "---" for i in range(len(header))]
    lines = [header, aligns, *rows]
    return "\n".join("| " + " | ".join(str(cell) for cell in line) + " |" for line in lines)


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
        ],
    )
    per_type = md_table(
        ["type", "support", "strict P", "strict R", "strict F1", "default P", "default R", "default F1"],
        [
            [
                label,
                f"{scores['support']:,}",
                *(percent(scores[key]) for key in ("precision", "recall", "f1")),
                *(percent(default["per_type"][label][key]) for key in ("precision", "recall", "f1")),
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
            "### Per type (%)",
            per_type,
            f"![per-type scores on {split}]({split}_per_type.png)",
            "### Speed",
            f"{results['words_per_second']:,.0f} words per second: {results['n_tokens']:,} tokens in "
            f"{results['seconds']:.1f} s of `nlp.pipe` on {results['device']}, batch size {results['batch_size']}.",
            "### Errors (strict entities)",
            error_kinds_table(results["errors"]["kinds"]),
            f"Type confusions and the most frequent missed and spurious strings: [{split}_errors.md]"
            f"({split}_errors.md). The sentences with the most errors: [{split}_worst.html]({split}_worst.html).",
        ]
    )


def render_report(all_results: dict[str, dict[str, Any]]) -> str:
    """report.md over the results of every split evaluated into the folder."""
    summary = md_table(
        ["split", "sentences", "strict F1", "default F1", "spaCy F", "words/s"],
        [
            [
                split,
                f"{r['n_sentences']:,}",
                percent(r["seqeval_strict"]["f1"]),
                percent(r["seqeval_default"]["f1"]),
                percent(r["spacy"]["ents_f"]),
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
        "sentence start counts as one entity per sentence."
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
            ]
        )
        + "\n"
    )


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
        options={"colors": ENTITY_COLORS},
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
    write_text_atomic(paths["report"], render_report(split_results(output_dir)))
    return list(paths.values())


def run_evaluation(
    model: str,
    gold_path: Path,
    output_dir: Path,
    split: str = "test",
    gpu_id: int = -1,
    worst: int = WORST_SENTENCES,
    batch_size: int = BATCH_SIZE,
    backend: str = TORCH,
) -> Evaluation:
    """Load the pipeline and the gold, evaluate, and write every output file."""
    if split not in SPLITS:
        raise EvaluationError(f"Unknown split '{split}': use one of {', '.join(SPLITS)}.")
    nlp = load_pipeline(model, gpu_id, backend)
    gold_docs = load_gold_docs(gold_path, nlp.vocab)
    msg.info(f"Evaluating {model} on {gold_path}: {len(gold_docs):,} docs")
    evaluation = evaluate(nlp, gold_docs, batch_size)
    device = "the CPU" if gpu_id < 0 else f"GPU {gpu_id}"
    # "int8" as before the backend option: whether the encoder ran in int8.
    context = {"model": model, "split": split, "gold": str(gold_path), "device": device, "backend": backend}
    context["int8"] = backend.endswith("int8")
    evaluation.results = {**context, **evaluation.results}
    write_outputs(output_dir, split, evaluation, worst)
    return evaluation


def print_summary(split: str, results: dict[str, Any]) -> None:
    rows = [
        [name, *(percent(scores[key]) for key in keys)]
        for name, scores, keys in (
            ("seqeval strict", results["seqeval_strict"], ("precision", "recall", "f1")),
            ("seqeval default", results["seqeval_default"], ("precision", "recall", "f1")),
            ("spaCy", results["spacy"], ("ents_p", "ents_r", "ents_f")),
        )
    ]
    msg.table(rows, header=[split, "P", "R", "F1"], aligns=["l", "r", "r", "r"], divider=True)
    msg.info(
        f"{results['n_sentences']:,} sentences, {results['n_tokens']:,} tokens, "
        f"{results['words_per_second']:,.0f} words/s ({results['seconds']:.1f} s)"
    )


app = typer.Typer(add_completion=False)


@app.command()
def main(
    model: str = typer.Argument(..., help="Pipeline folder (e.g. training/model-best) or installed package name"),
    gold_path: Path = typer.Argument(..., help="Gold DocBin made by scripts.workflow.corpus, e.g. corpus/test.spacy"),
    output_dir: Path = typer.Argument(..., help="Folder for <split>.json, report.md and the error analysis"),
    split: str = typer.Option("test", help=f"Split name for the output files: {', '.join(SPLITS)}"),
    gpu_id: int = typer.Option(-1, help="GPU to run on; -1 for the CPU"),
    worst: int = typer.Option(WORST_SENTENCES, min=0, help="Sentences in <split>_worst.html"),
    batch_size: int = typer.Option(BATCH_SIZE, min=1, help="Docs per nlp.pipe batch"),
    backend: Backend = typer.Option(TORCH, help="What runs the encoder; all but torch are CPU-only"),
    int8: bool = typer.Option(False, "--int8", help=f"The same as --backend {TORCH_INT8}"),
) -> None:
    """Score MODEL's entities on GOLD_PATH; write metrics, report and error analysis to OUTPUT_DIR."""
    try:
        backend = chosen_backend(backend, int8)
        evaluation = run_evaluation(model, gold_path, output_dir, split, gpu_id, worst, batch_size, backend)
    except (EvaluationError, PipelineLoadError) as err:
        msg.fail("Evaluation failed", str(err))
        raise typer.Exit(1) from None
    print_summary(split, evaluation.results)
    msg.good(f"Wrote {split}.json, report.md and the error analysis to {output_dir}")


if __name__ == "__main__":
    app()
