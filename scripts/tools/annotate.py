"""Annotate a text or JSONL file with a spaCy NER pipeline, such as the packaged en_bert_ner.

    python -m scripts.tools.annotate en_bert_ner news.txt news.entities.jsonl
    python -m scripts.tools.annotate training/model-best records.jsonl out.jsonl --text-field body --n-process 2
    cat news.txt | python -m scripts.tools.annotate en_bert_ner - - > news.entities.jsonl

INPUT is plain text (one document per line) or JSONL (one object per line; its text field,
--text-field, is the document and its other fields are carried through). OUTPUT is JSONL, one
object per annotated line:

    {"text": "...", "entities": [{"start": 0, "end": 7, "label": "LOC", "text": "Germany"}], ..., "line": 1}

`start` and `end` are character offsets into `text` (Python string indices, i.e. Unicode code
points) and `line` is the line number in INPUT. Lines that cannot be annotated (invalid JSON, a
missing or non-string text field, bytes that are not UTF-8, ...) are named with their line number
on stderr and skipped, and the run ends with "annotated N, skipped M". OUTPUT is written to a
temporary file in its folder and renamed at the end: it is either complete or left as it was.
`-` reads stdin or writes stdout.
"""

from __future__ import annotations

import os
import sys

import typer

from scripts.annotation.local import (
    STDIO,
    AnnotateError,
    InputFormat,
    annotate,
    check_output_writable,
    open_input,
)
from scripts.lib.cli import BACKEND_OPTION, Backend, fail_to_stderr
from scripts.lib.pipeline_loading import PipelineLoadError, load_pipeline


def main(
    model: str = typer.Argument(..., help="Installed pipeline package (en_bert_ner) or pipeline folder"),
    input_path: str = typer.Argument(..., metavar="INPUT", help="Text (one document per line) or JSONL; - for stdin"),
    output_path: str = typer.Argument(..., metavar="OUTPUT", help="JSONL to write; - for stdout"),
    input_format: InputFormat = typer.Option(
        InputFormat.auto, "--format", help="auto: by extension (.jsonl/.ndjson/.json, .txt), else by the first line"
    ),
    text_field: str = typer.Option("text", help="JSONL: the field that holds the text"),
    batch_size: int = typer.Option(64, min=1, help="Texts per nlp.pipe batch"),
    n_process: int = typer.Option(1, min=1, help="Worker processes (forked, one torch thread each: use one per core)"),
    backend: Backend = BACKEND_OPTION,
) -> None:
    try:
        # Check both files first: loading the model takes seconds to minutes.
        with open_input(input_path):
            pass
        check_output_writable(output_path)
        nlp = load_pipeline(model, backend=backend.value, needs=["ner"])
        counts = annotate(nlp, input_path, output_path, input_format, text_field, batch_size, n_process)
    except (AnnotateError, PipelineLoadError) as err:
        fail_to_stderr("annotate", err)
    except BrokenPipeError:
        # The reader of stdout stopped early; point stdout at devnull so the exit flush cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        left = "" if output_path == STDIO else f": {output_path} was left as it was"
        typer.echo(f"annotate: interrupted{left}.", err=True)
        raise typer.Exit(130) from None
    destination = "stdout" if output_path == STDIO else output_path
    typer.echo(f"annotated {counts.annotated}, skipped {counts.skipped} -> {destination}", err=True)
    if counts.annotated == 0 and counts.skipped > 0:
        typer.echo("annotate: warning: no line could be annotated: check --format and --text-field.", err=True)


if __name__ == "__main__":
    typer.run(main)
