"""Annotate JSONL or Parquet at any scale: the packaged model in a Ray Data actor pool.

    python -m scripts.tools.annotate_ray en_bert_ner articles.jsonl entities/ --workers 2
    python -m scripts.tools.annotate_ray en_bert_ner s3://bucket/crawl/ s3://bucket/entities/ --address auto \
        --workers 16

INPUT is a JSONL or Parquet file or a folder of them, a local path or any URI that pyarrow's
file systems take (s3://, gs://, hdfs://). Ray Data reads it, a pool of actors (each loads the
pipeline once) runs nlp.pipe over batches of rows, and Ray Data writes OUTPUT, a new folder:

    OUTPUT/*.parquet (or *.json)   one row per annotated input row: source, row, the input's other
                                   fields, text, entities [{start, end, label, text}]; JSON: one per line
    OUTPUT/_errors/*.json          one line per input row that could not be annotated: source, row, reason
    OUTPUT/_SUCCESS                the run's summary (JSON), written last

(source, row) is each row's id: the file's path relative to INPUT and the line (JSONL) or row
(Parquet) number in it, from 1; join the output back to the input on it. The rows are checked
as scripts.tools.annotate checks lines (the same reasons). Without --address or RAY_ADDRESS, Ray starts
on this machine and stops at the end; with either, the run joins that cluster.

Exactly once: Ray retries the batch of an actor that dies (--max-retries) and writes each shard
under a name fixed by its write task, so a retry replaces its own shard. Nothing is written to
OUTPUT until the run has succeeded: Ray writes into a hidden folder beside it, which is renamed
to OUTPUT at the end (on object stores, which cannot rename a folder, its files are moved one by
one and _SUCCESS last); a failed run deletes it.
"""

from __future__ import annotations

import os
import posixpath

import typer

from scripts.annotation.local import AnnotateError
from scripts.annotation.ray_data import (
    ERRORS_FOLDER,
    SPACY_MAX_LENGTH,
    FileFormat,
    RunSummary,
    WorkerOptions,
    annotate_with_ray,
    check_model_here,
    check_paths,
    failure_message,
    ray_cluster,
)
from scripts.lib.cli import BACKEND_OPTION, Backend, fail_to_stderr
from scripts.lib.pipeline_loading import PipelineLoadError


def format_summary(summary: RunSummary) -> str:
    return (
        f"annotated {summary.annotated:,}, failed {summary.failed:,}: {summary.entities:,} entities in "
        f"{summary.seconds:,.1f} s wall ({summary.rows_per_second:,.1f} rows/s) -> {summary.output}"
    )


def main(
    model: str = typer.Argument(..., help="Installed pipeline package (en_bert_ner) or pipeline folder"),
    input_uri: str = typer.Argument(..., metavar="INPUT", help="JSONL or Parquet file or folder; path or URI"),
    output_uri: str = typer.Argument(..., metavar="OUTPUT", help="New folder for the shards; path or URI"),
    input_format: FileFormat = typer.Option(FileFormat.auto, help="auto: from the file extensions"),
    output_format: FileFormat = typer.Option(FileFormat.parquet, help="parquet or jsonl"),
    text_field: str = typer.Option("text", help="The field (JSONL) or column (Parquet) that holds the text"),
    workers: int = typer.Option(1, min=1, help="Actors, each with its own copy of the pipeline"),
    cpus_per_worker: float = typer.Option(1.0, min=0.1, help="CPUs per actor (also its torch threads)"),
    gpus_per_worker: float = typer.Option(0.0, min=0.0, help="GPUs per actor (1: one GPU each)"),
    batch_size: int = typer.Option(1024, min=1, help="Rows per actor call (nlp.pipe sorts them by length)"),
    max_retries: int = typer.Option(3, min=0, help="Restarts of a dead actor, and retries of its batch"),
    max_length: int = typer.Option(SPACY_MAX_LENGTH, min=1, help="Longer texts go to the errors output"),
    backend: Backend = BACKEND_OPTION,
    address: str = typer.Option(None, help="Ray cluster to join (also $RAY_ADDRESS); none: start Ray here"),
    object_store_mb: int = typer.Option(None, help="Local Ray only: object store size in MB (default: Ray's)"),
) -> None:
    options = WorkerOptions(workers, cpus_per_worker, gpus_per_worker, batch_size, max_retries)
    try:
        check_paths(input_uri, output_uri, input_format)  # in seconds, before Ray starts
        if not (address or os.environ.get("RAY_ADDRESS")):
            check_model_here(model)
        with ray_cluster(address, options, object_store_mb):
            summary = annotate_with_ray(
                model,
                input_uri,
                output_uri,
                input_format=input_format,
                output_format=output_format,
                text_field=text_field,
                options=options,
                backend=backend.value,
                max_length=max_length,
            )
    except (AnnotateError, PipelineLoadError) as err:
        fail_to_stderr("annotate_ray", err)
    except KeyboardInterrupt:
        typer.echo(f"annotate_ray: interrupted: {output_uri} was not created.", err=True)
        raise typer.Exit(130) from None
    except Exception as err:  # a failed Ray run: its log above has the details, the traceback adds nothing
        fail_to_stderr("annotate_ray", f"the run failed: {failure_message(err)}. {output_uri} was not created.")
    typer.echo(format_summary(summary), err=True)
    if summary.failed:
        typer.echo(f"  the failed rows and why: {posixpath.join(output_uri, ERRORS_FOLDER)}/", err=True)
    if summary.annotated == 0 and summary.failed > 0:
        typer.echo("annotate_ray: warning: no row could be annotated: check --text-field.", err=True)


if __name__ == "__main__":
    typer.run(main)
