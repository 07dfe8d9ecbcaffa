"""Score an NER pipeline on a gold DocBin made by scripts.workflow.corpus; write the metrics and the report.

The scoring is scripts.lib.scoring (seqeval strict IOB2 as the primary metric, seqeval's default
mode and spaCy's scorer beside it), on the gold words; scripts.lib.raw_text scores the same gold
passed as text (what a user gets). The files written to OUTPUT_DIR are described in
scripts.workflow.evaluation_report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from wasabi import msg

from scripts.lib import cli, pipeline_loading
from scripts.lib.calibration import evaluate_calibration, scorer_name
from scripts.lib.cli import fail
from scripts.lib.conll import SPLITS
from scripts.lib.raw_text import evaluate_raw_text, gold_texts
from scripts.lib.reports import percent
from scripts.lib.scoring import BATCH_SIZE, Evaluation, EvaluationError, evaluate, load_gold_docs
from scripts.runtime.backends import TORCH
from scripts.workflow.evaluation_report import WORST_SENTENCES, write_outputs


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
    nlp = pipeline_loading.load_pipeline(model, gpu_id, backend)
    gold_docs = load_gold_docs(gold_path, nlp.vocab)
    msg.info(f"Evaluating {model} on {gold_path}: {len(gold_docs):,} docs")
    # What a user gets: the same gold passed as text, through the pipeline's own tokenizer.
    golds = gold_texts(gold_docs)
    evaluation = evaluate(nlp, gold_docs, batch_size)
    if scorer_name(nlp) is not None:
        evaluation.results["calibration"] = evaluate_calibration(gold_docs, evaluation.predicted_docs)
    evaluation.results["raw_text"] = evaluate_raw_text(nlp, golds, batch_size)
    device = "the CPU" if gpu_id < 0 else f"GPU {gpu_id}"
    context = {"model": model, "split": split, "gold": str(gold_path), "device": device, "backend": backend}
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
            ("raw text, char spans", results["raw_text"], ("precision", "recall", "f1")),
        )
    ]
    msg.table(rows, header=[split, "P", "R", "F1"], aligns=["l", "r", "r", "r"], divider=True)
    if "calibration" in results:
        calibration, confident = results["calibration"], results["calibration"]["at"]["0.9"]
        msg.info(
            f"Entity scores: ECE {calibration['ece']:.3f}, Brier {calibration['brier']:.3f}; scored >= 0.9: "
            f"precision {percent(confident['precision'])}, {percent(confident['coverage'])} of the entities"
        )
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
    backend: cli.Backend = cli.BACKEND_OPTION,
) -> None:
    """Score MODEL's entities on GOLD_PATH; write metrics, report and error analysis to OUTPUT_DIR."""
    try:
        backend = backend.value
        evaluation = run_evaluation(model, gold_path, output_dir, split, gpu_id, worst, batch_size, backend)
    except (EvaluationError, pipeline_loading.PipelineLoadError) as err:
        fail("Evaluation failed", str(err))
    print_summary(split, evaluation.results)
    msg.good(f"Wrote {split}.json, report.md and the error analysis to {output_dir}")


if __name__ == "__main__":
    app()
