"""Bulk annotation speed: single-process nlp.pipe beside the Ray engine with 1 and 2 local workers.

The CoNLL test sentences, repeated to --sentences rows, are written as JSONL with an id. Each
configuration runs in a fresh process: nlp.pipe over the texts (after loading and one warm-up
batch: the steady speed of one process), then scripts.tools.annotate_ray end to end, from starting Ray
to the published output, with 1 worker of all the cores and with 2 workers of one core each.
Ray's fixed cost, measured on a tiny input of the same kind, is the part of a run that does not
grow with the input (Ray's start, the actors loading the pipeline, the read-check-write passes);
words/s after it is the rate that multiplies with workers on a cluster. Writes the JSON and a
Markdown table beside it.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import typer
from wasabi import msg

from scripts.annotation.local import AnnotateError
from scripts.annotation.ray_data import WorkerOptions, annotate_with_ray, ray_cluster
from scripts.benchmarks import harness
from scripts.lib import cli, pipeline_loading
from scripts.lib.cli import fail
from scripts.lib.machine import use_torch_threads
from scripts.lib.reports import machine_description, md_table, write_json_and_markdown

# (name, workers, CPUs per worker): on 2 cores, one actor with 2 torch threads or two with one each.
RAY_CONFIGURATIONS = (("ray_1_worker", 1, 2.0), ("ray_2_workers", 2, 1.0))
FIXED_COST_ROWS = 64
# What the fresh processes may raise that main reports with its fix.
EXPECTED_ERRORS = (AnnotateError, pipeline_loading.PipelineLoadError)


def repeated_texts(texts: list[str], count: int) -> list[str]:
    return [texts[i % len(texts)] for i in range(count)]


def write_jsonl(path: Path, texts: list[str]) -> None:
    path.write_text("".join(json.dumps({"id": i, "text": text}) + "\n" for i, text in enumerate(texts)), "utf-8")


def measure_pipe(model: str, backend: str, texts: list[str], threads: int) -> dict[str, Any]:
    """Runs in its own process: load, one warm-up batch, then nlp.pipe over every text."""
    use_torch_threads(threads)
    nlp, load_seconds = harness.timed(pipeline_loading.load_pipeline, model, -1, backend)

    def run(batch: list[str]) -> None:
        for _ in nlp.pipe(batch):
            pass

    (seconds,) = harness.timed_passes(run, texts, 1)
    return {"load_seconds": load_seconds, "seconds": seconds, "words_per_second": harness.count_words(texts) / seconds}


def measure_ray(
    model: str, backend: str, source: Path, output: Path, options: WorkerOptions, object_store_mb: int | None
) -> dict[str, Any]:
    """Runs in its own process: Ray started, the whole run, Ray stopped; wall time of all of it."""
    started = time.perf_counter()
    with ray_cluster(None, options, object_store_mb):
        summary = annotate_with_ray(model, str(source), str(output), options=options, backend=backend)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "rows": summary.rows, "entities": summary.entities}


def benchmark(
    model: str,
    texts: list[str],
    threads: int,
    batch_size: int,
    folder: Path,
    object_store_mb: int | None = None,
    backend: str = pipeline_loading.TORCH,
) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    source, tiny = folder / "input.jsonl", folder / "tiny.jsonl"
    write_jsonl(source, texts)
    write_jsonl(tiny, texts[:FIXED_COST_ROWS])
    n_words = harness.count_words(texts)
    msg.info(f"nlp.pipe, one process, {threads} torch threads: {len(texts):,} texts, {n_words:,} words")
    pipe = harness.in_fresh_process("nlp.pipe", measure_pipe, model, backend, texts, threads, expected=EXPECTED_ERRORS)
    msg.text(f"  {pipe['words_per_second']:,.0f} words/s")
    runs: dict[str, Any] = {}
    for name, workers, cpus in RAY_CONFIGURATIONS:
        options = WorkerOptions(workers=workers, cpus_per_worker=cpus, batch_size=batch_size)
        msg.info(f"{name}: fixed cost on {FIXED_COST_ROWS} rows, then {len(texts):,} rows")
        fixed = harness.in_fresh_process(
            f"{name}, fixed cost",
            measure_ray,
            model,
            backend,
            tiny,
            folder / f"{name}_tiny",
            options,
            object_store_mb,
            expected=EXPECTED_ERRORS,
        )
        full = harness.in_fresh_process(
            name, measure_ray, model, backend, source, folder / name, options, object_store_mb, expected=EXPECTED_ERRORS
        )
        if full["rows"] != len(texts):
            raise AnnotateError(f"{name} wrote {full['rows']:,} rows for {len(texts):,} input rows")
        # On an input too small (or a machine too busy) for the difference to be positive there is no steady rate.
        steady_seconds = full["seconds"] - fixed["seconds"]
        steady = n_words / steady_seconds if steady_seconds > 0 else None
        runs[name] = {
            "workers": workers,
            "cpus_per_worker": cpus,
            "fixed_seconds": fixed["seconds"],
            "seconds": full["seconds"],
            "words_per_second": n_words / full["seconds"],
            "words_per_second_after_fixed_cost": steady,
            "words_per_second_per_worker": steady / workers if steady else None,
            "entities": full["entities"],
        }
        msg.text(
            f"  {runs[name]['words_per_second']:,.0f} words/s end to end in {full['seconds']:,.0f} s; "
            f"fixed cost {fixed['seconds']:,.1f} s"
        )
    return {
        "pipe": pipe,
        "runs": runs,
        "n_texts": len(texts),
        "n_words": n_words,
        "threads": threads,
        "batch_size": batch_size,
        "model": model,
        "backend": backend,
        "machine": machine_description(),
        # The 1-minute load average before and after: other work on the machine slows every figure.
        "load_average": [load_before, os.getloadavg()[0]],
    }


def markdown(result: dict[str, Any]) -> str:
    pipe = result["pipe"]
    rows = [
        [
            f"`nlp.pipe`, one process, {result['threads']} torch threads",
            f"{pipe['words_per_second']:,.0f}",
            f"{pipe['load_seconds']:,.1f} (loading)",
            "",
            "",
        ]
    ]
    for name, run in result["runs"].items():
        rows.append(
            [
                f"Ray local, {run['workers']} worker{'s' if run['workers'] > 1 else ''} x "
                f"{run['cpus_per_worker']:g} CPU (`{name}`)",
                f"{run['words_per_second']:,.0f}",
                f"{run['fixed_seconds']:,.1f}",
                number(run["words_per_second_after_fixed_cost"]),
                f"{run['seconds']:,.0f}",
            ]
        )
    header = ["configuration", "words/s end to end", "fixed cost s", "words/s after the fixed cost", "wall s"]
    before, after = result["load_average"]
    text = (
        f"{result['n_texts']:,} CoNLL test sentences ({result['n_words']:,} words) as JSONL, model "
        f"`{result['model']}` (encoder backend `{result['backend']}`), Ray batches of {result['batch_size']} rows; "
        f"{result['machine']}; "
        f"load average {before:.1f} before, {after:.1f} after.\n\n" + md_table(header, rows) + "\n"
    )
    steady_runs = [run for run in result["runs"].values() if run["words_per_second_per_worker"]]
    if not steady_runs:
        return text
    best = max(steady_runs, key=lambda run: run["words_per_second_after_fixed_cost"])
    per_worker = best["words_per_second_per_worker"]
    return text + (
        f"\nPer worker of {best['cpus_per_worker']:g} CPU: {per_worker:,.0f} words/s after the fixed cost. "
        f"A cluster of N such workers: about N x {per_worker:,.0f} words/s plus the fixed cost once, "
        f"e.g. 32 workers: {32 * per_worker:,.0f} words/s, 1 billion words in "
        f"{1e9 / (32 * per_worker) / 3600:,.1f} h.\n"
    )


def number(value: float | None) -> str:
    return f"{value:,.0f}" if value is not None else "n/a"


def main(
    model: str = typer.Argument(..., help="Packaged pipeline (en_bert_ner) or pipeline folder"),
    test_docbin: Path = typer.Argument(..., help="corpus/test.spacy: the texts"),
    output: Path = typer.Argument(..., help="metrics/benchmark_ray.json (and .md beside it)"),
    sentences: int = typer.Option(50_000, min=1, help="Rows: the test sentences repeated to this many"),
    threads: int = typer.Option(2, min=1, help="torch threads of the single process (the cores)"),
    batch_size: int = typer.Option(2048, min=1, help="Rows per Ray actor call (the CPU model's nlp.batch_size)"),
    object_store_mb: int = typer.Option(None, help="Ray's object store in MB (default: Ray's)"),
    backend: cli.Backend = cli.BACKEND_OPTION,
) -> None:
    harness.require_docbin(test_docbin)
    texts = repeated_texts(harness.sentence_texts(test_docbin), sentences)
    try:
        backend = backend.value
        with tempfile.TemporaryDirectory(prefix="benchmark_ray_") as folder:
            result = benchmark(model, texts, threads, batch_size, Path(folder), object_store_mb, backend)
    except EXPECTED_ERRORS as err:
        fail("Benchmark failed", str(err))
    write_json_and_markdown(output, result, markdown(result))
    msg.good(f"Wrote {output} and its .md")


if __name__ == "__main__":
    typer.run(main)
