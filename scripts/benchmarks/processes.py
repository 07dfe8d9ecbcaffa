"""Throughput with worker processes: `nlp.pipe(n_process=N)` and `annotate --n-process N`.

On the CoNLL test sentences, for N = 1 and 2: `nlp.pipe` with fork (Linux's default start
method, made safe by the fork handlers in scripts/runtime/fork_safety.py), `nlp.pipe` with spawn (what
annotate used before, each worker a new interpreter that unpickles the pipeline) and the annotate
function that the CLI runs. Each configuration runs in a fresh process with the same thread
budget; a run's wall time includes starting and stopping its workers, and the workers' start-up
is also measured on its own (the wall time of the same call over one empty text per worker), so
that `steady words/s` (words / (wall - start-up)) and the per-process figure
(steady / N) are what a user can multiply by their core count.
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import typer
from spacy.language import Language
from wasabi import msg

from scripts.annotation.local import annotate
from scripts.benchmarks import harness
from scripts.lib.cli import BACKEND_OPTION, Backend, fail
from scripts.lib.machine import use_torch_threads
from scripts.lib.pipeline_loading import TORCH, PipelineLoadError, load_pipeline
from scripts.lib.reports import machine_description, md_table, write_json_and_markdown


class Configuration(NamedTuple):
    runs: str  # what it runs: nlp.pipe or annotate
    n_process: int  # worker processes
    start_method: str
    label: str  # its row in the Markdown table


CONFIGURATIONS: dict[str, Configuration] = {
    "pipe_1": Configuration("nlp.pipe", 1, "fork", "`nlp.pipe`, 1 process"),
    "pipe_2_fork": Configuration("nlp.pipe", 2, "fork", "`nlp.pipe(n_process=2)`, fork (default)"),
    "pipe_2_spawn": Configuration("nlp.pipe", 2, "spawn", "`nlp.pipe(n_process=2)`, spawn"),
    "annotate_1": Configuration("annotate", 1, "fork", "`annotate --n-process 1`"),
    "annotate_2": Configuration("annotate", 2, "fork", "`annotate --n-process 2`"),
}


def pipe_through(nlp: Language, n_process: int, batch_size: int) -> Callable[[list[str]], None]:
    def run(texts: list[str]) -> None:
        for _ in nlp.pipe(texts, n_process=n_process, batch_size=batch_size):
            pass

    return run


def annotate_through(nlp: Language, n_process: int, batch_size: int, folder: Path) -> Callable[[list[str]], None]:
    """The annotate function as the CLI calls it, reading a text file and writing JSONL."""

    def run(texts: list[str]) -> None:
        source = folder / f"input_{len(texts)}.txt"
        if not source.exists():
            source.write_text("".join(text + "\n" for text in texts), encoding="utf-8")
        annotate(nlp, str(source), str(folder / "output.jsonl"), batch_size=batch_size, n_process=n_process)

    return run


def use_spawn(threads_per_worker: int) -> None:
    """spawn workers are new interpreters: their torch reads its thread count from OMP_NUM_THREADS."""
    os.environ["OMP_NUM_THREADS"] = str(threads_per_worker)


def measure(
    name: str, model: str, backend: str, texts: list[str], repetitions: int, threads: int, batch_size: int
) -> dict:
    """Runs in its own process: load, start-up alone, one warm-up pass, the timed passes."""
    what, n_process, start_method, _ = CONFIGURATIONS[name]
    use_torch_threads(threads)
    # This process was spawned, and a spawned process inherits its parent's start method: name it here.
    multiprocessing.set_start_method(start_method, force=True)
    if start_method == "spawn":
        use_spawn(max(1, threads // n_process))
    nlp, load_seconds = harness.timed(load_pipeline, model, -1, backend)
    with tempfile.TemporaryDirectory() as folder:
        if what == "annotate":
            run = annotate_through(nlp, n_process, batch_size, Path(folder))
        else:
            run = pipe_through(nlp, n_process, batch_size)
        _, startup_seconds = harness.timed(run, [""] * n_process)
        seconds = harness.timed_passes(run, texts, repetitions)
    words = harness.count_words(texts)
    wall = statistics.median(seconds)
    steady = words / max(wall - startup_seconds, 1e-9)
    return {
        "runs": what,
        "n_process": n_process,
        "start_method": start_method,
        "start_method_used": multiprocessing.get_start_method(),
        "words_per_second": words / wall,
        "steady_words_per_second": steady,
        "per_process_words_per_second": steady / n_process,
        "startup_seconds": startup_seconds,
        "load_seconds": load_seconds,
        "seconds": seconds,
        "peak_rss_mb": harness.peak_rss_mb(),
    }


def benchmark(
    model: str, texts: list[str], repetitions: int, threads: int, batch_size: int, backend: str = TORCH
) -> dict[str, Any]:
    runs = {}
    for name, (what, n_process, start_method, _) in CONFIGURATIONS.items():
        msg.info(f"{name}: {what}, {n_process} process(es), {start_method}: {len(texts):,} texts x {repetitions}")
        runs[name] = harness.in_fresh_process(
            name, measure, name, model, backend, texts, repetitions, threads, batch_size
        )
        run = runs[name]
        msg.text(f"  {run['words_per_second']:,.0f} words/s, start-up {run['startup_seconds']:.1f} s")
    return {
        "speedup_pipe_2_fork": runs["pipe_2_fork"]["words_per_second"] / runs["pipe_1"]["words_per_second"],
        "speedup_annotate_2": runs["annotate_2"]["words_per_second"] / runs["annotate_1"]["words_per_second"],
        "runs": runs,
        "n_texts": len(texts),
        "n_words": harness.count_words(texts),
        "threads": threads,
        "batch_size": batch_size,
        "repetitions": repetitions,
        "backend": backend,
        "machine": machine_description(),
        "model": model,
    }


def markdown(result: dict[str, Any]) -> str:
    rows = [
        [
            CONFIGURATIONS[name].label,
            f"{run['words_per_second']:,.0f}",
            f"{run['startup_seconds']:.1f}",
            f"{run['steady_words_per_second']:,.0f}",
            f"{run['per_process_words_per_second']:,.0f}",
            f"{run['peak_rss_mb']:,.0f}",
        ]
        for name, run in result["runs"].items()
    ]
    header = ["configuration", "words/s", "worker start-up s", "steady words/s", "words/s per process", "peak RSS MB"]
    return (
        f"{result['n_texts']:,} CoNLL test sentences ({result['n_words']:,} words), encoder backend "
        f"`{result['backend']}`, batch size "
        f"{result['batch_size']}, {result['threads']} threads in all (one per worker with 2 workers), median of "
        f"{result['repetitions']} passes after a warm-up; {result['machine']}. Peak RSS is the measuring "
        "process's own (workers not included).\n\n" + md_table(header, rows, numeric=[1, 2, 3, 4, 5]) + "\n\n"
        f"Two processes against one: `nlp.pipe` {result['speedup_pipe_2_fork']:.2f}x, "
        f"annotate {result['speedup_annotate_2']:.2f}x.\n"
    )


def main(
    model: str = typer.Argument(..., help="Trained spaCy pipeline (folder or package)"),
    test_docbin: Path = typer.Argument(..., help="corpus/test.spacy"),
    output: Path = typer.Argument(..., help="metrics/benchmark_processes.json"),
    repetitions: int = typer.Option(3, help="Timed passes per configuration (median reported)"),
    threads: int = typer.Option(2, help="Threads in all: one process gets them all, two processes one each"),
    batch_size: int = typer.Option(64, help="nlp.pipe batch size (annotate's default)"),
    limit: int = typer.Option(0, help="Only the first N test sentences (0: all)"),
    backend: Backend = BACKEND_OPTION,
) -> None:
    harness.require_docbin(test_docbin)
    try:
        backend = backend.value
        load_pipeline(model, backend=backend)  # fails fast, with the fix, before any process starts
    except PipelineLoadError as err:
        fail("Cannot load the spaCy pipeline", str(err))
    texts = harness.sentence_texts(test_docbin, limit)
    results = benchmark(model, texts, repetitions, threads, batch_size, backend)
    write_json_and_markdown(output, results, markdown(results))
    msg.good(
        f"Wrote {output} and its .md: 2 processes {results['speedup_pipe_2_fork']:.2f}x one with nlp.pipe, "
        f"{results['speedup_annotate_2']:.2f}x with annotate"
    )


if __name__ == "__main__":
    typer.run(main)
