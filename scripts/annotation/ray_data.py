"""The Ray Data engine behind `annotate_ray`: the pipeline in an actor pool, rows in, shards out.

Reading JSONL or Parquet with each row numbered, the rows checked as `annotate` checks lines,
an actor pool of EntityPredictor, output staged and published only when complete (with _errors
and _SUCCESS), and the local or remote Ray cluster. The CLI is scripts.tools.annotate_ray.
"""

from __future__ import annotations

import io
import json
import math
import os
import posixpath
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from scripts.annotation.local import (
    AnnotateError,
    InputFormat,
    SkippedLine,
    check_text,
    entity_records,
    line_document,
    numbered_lines,
    split_record,
)
from scripts.lib.machine import available_cpus, use_torch_threads
from scripts.lib.pipeline_loading import PipelineLoadError, load_pipeline, pipeline_location
from scripts.runtime.backends import TORCH

# Output columns. (SOURCE, ROW) identify an input row; an input field of one of these names would be lost.
SOURCE, ROW, TEXT, ENTITIES, REASON = "source", "row", "text", "entities", "reason"
RESERVED_FIELDS = (SOURCE, ROW, TEXT, ENTITIES)
# Columns of the blocks the reader makes: JSONL keeps each raw line, Parquet each row's columns in one struct.
LINE, FIELDS = "line", "fields"
ERRORS_FOLDER = "_errors"
SUCCESS_FILE = "_SUCCESS"
JSONL_EXTENSIONS = ["jsonl", "ndjson", "json", "jsonl.gz", "ndjson.gz", "json.gz", "jsonl.zst", "jsonl.bz2"]
PARQUET_EXTENSIONS = ["parquet"]
ENTITY_TYPE = pa.list_(
    pa.struct(
        [
            ("start", pa.int64()),
            ("end", pa.int64()),
            ("label", pa.string()),
            ("text", pa.string()),
            ("score", pa.float64()),
        ]
    )
)
# spaCy's default nlp.max_length; rows with longer texts go to the errors output.
SPACY_MAX_LENGTH = 1_000_000
# Locally, Ray gets this many logical CPUs beyond the workers' for reading, checking and writing: with all CPUs
# held by the actor pool, Ray Data cannot schedule its read tasks and the run waits for ever.
IO_CPUS = 1


class FileFormat(str, Enum):
    auto = "auto"
    jsonl = "jsonl"
    parquet = "parquet"


@dataclass(frozen=True)
class WorkerOptions:
    """The actor pool: how many actors, what each asks Ray for, how many rows each call gets."""

    workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    batch_size: int = 1024
    max_retries: int = 3

    @property
    def torch_threads(self) -> int:
        return max(1, round(self.cpus_per_worker))


@dataclass
class RunSummary:
    annotated: int
    failed: int
    entities: int
    seconds: float
    output: str

    @property
    def rows(self) -> int:
        return self.annotated + self.failed

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "rows": self.rows, "rows_per_second": self.rows_per_second}


# --- paths and file systems ------------------------------------------------------


def resolve_uri(uri: str) -> tuple[pafs.FileSystem, str]:
    """(file system, path in it) for a local path or a URI (s3://, gs://, hdfs://, file://)."""
    if "://" not in uri:
        return pafs.LocalFileSystem(), os.path.abspath(uri)
    try:
        return pafs.FileSystem.from_uri(uri)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as err:
        raise AnnotateError(
            f"Cannot open {uri}: {err}. Give a local path or a URI that pyarrow knows (s3://, gs://, hdfs://)."
        ) from None


def detect_file_format(fs: pafs.FileSystem, path: str, uri: str) -> FileFormat:
    """JSONL or Parquet from INPUT's extension, or from the extensions of the files in the INPUT folder."""
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise AnnotateError(f"INPUT {uri} does not exist: check the path.")
    if info.type == pafs.FileType.File:
        names = [path]
    else:
        selector = pafs.FileSelector(path, recursive=True)
        names = [
            entry.path
            for entry in fs.get_file_info(selector)
            if entry.type == pafs.FileType.File and not hidden(posixpath.relpath(entry.path, path))
        ]
    formats = {file_format_of(name) for name in names} - {None}
    if len(formats) == 1:
        return formats.pop()
    if not formats:
        raise AnnotateError(
            f"INPUT {uri} holds no .jsonl/.ndjson/.json or .parquet file: give such a file or folder, "
            "or name the format with --input-format."
        )
    raise AnnotateError(f"INPUT {uri} holds both JSONL and Parquet files: choose one with --input-format.")


def hidden(relative_path: str) -> bool:
    """Ray Data, Spark and pyarrow skip files and folders whose names start with '.' or '_'."""
    return any(part.startswith((".", "_")) for part in relative_path.split("/"))


def file_format_of(name: str) -> FileFormat | None:
    lowered = name.lower()
    if any(lowered.endswith("." + extension) for extension in PARQUET_EXTENSIONS):
        return FileFormat.parquet
    if any(lowered.endswith("." + extension) for extension in JSONL_EXTENSIONS):
        return FileFormat.jsonl
    return None


def temporary_sibling(path: str) -> str:
    """A hidden folder beside OUTPUT: same file system and bucket, so the final rename stays cheap."""
    parent, name = posixpath.split(path.rstrip("/"))
    return posixpath.join(parent, f".{name}.tmp-{uuid.uuid4().hex[:12]}")


def publish(fs: Any, temporary: str, final: str) -> None:
    """Move the finished TEMPORARY folder to FINAL: one rename where the file system can rename a folder.

    S3 and GCS cannot (pyarrow raises): there the files are moved one by one, _SUCCESS last, so a
    reader who waits for _SUCCESS never sees a partial folder.
    """
    try:
        fs.move(temporary, final)
        return
    except (NotImplementedError, pa.ArrowNotImplementedError, OSError):
        pass
    entries = fs.get_file_info(pafs.FileSelector(temporary, recursive=True))
    files = sorted(
        (entry.path for entry in entries if entry.type == pafs.FileType.File),
        key=lambda name: posixpath.basename(name) == SUCCESS_FILE,
    )
    for name in files:
        target = posixpath.join(final, posixpath.relpath(name, temporary))
        fs.create_dir(posixpath.dirname(target), recursive=True)
        fs.move(name, target)
    fs.delete_dir(temporary)


def check_paths(input_uri: str, output_uri: str, input_format: FileFormat) -> None:
    input_fs, input_path = resolve_uri(input_uri)
    if input_format == FileFormat.auto:
        detect_file_format(input_fs, input_path, input_uri)
    elif input_fs.get_file_info(input_path).type == pafs.FileType.NotFound:
        raise AnnotateError(f"INPUT {input_uri} does not exist: check the path.")
    output_fs, output_path = resolve_uri(output_uri)
    if output_fs.get_file_info(output_path).type != pafs.FileType.NotFound:
        raise AnnotateError(output_exists(output_uri))


def check_model_here(model: str) -> None:
    """For a run on this machine: the model is a pipeline folder or an installed package, known in a second.

    On a cluster the model must be on the workers, not necessarily here, so this is not checked there.
    """
    try:
        pipeline_location(model)
    except PipelineLoadError as err:
        raise AnnotateError(str(err)) from None


def failure_message(err: BaseException) -> str:
    """The last line of what went wrong first: Ray wraps a worker's exception, with its traceback, in its own."""
    while (cause := getattr(err, "cause", None) or err.__cause__) is not None and cause is not err:
        err = cause
    lines = [line for line in str(err).splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(err).__name__


def output_exists(uri: str) -> str:
    return f"OUTPUT {uri} exists already: remove it or choose a new folder (nothing was written)."


@contextmanager
def staged_output(fs: pafs.FileSystem, path: str, uri: str) -> Iterator[str]:
    """A temporary folder to write into, published as OUTPUT when the block succeeds and deleted when it fails."""
    if fs.get_file_info(path).type != pafs.FileType.NotFound:
        raise AnnotateError(output_exists(uri))
    temporary = temporary_sibling(path)
    try:
        fs.create_dir(temporary, recursive=True)
    except OSError as err:
        raise AnnotateError(
            f"Cannot create {temporary} (the temporary folder beside OUTPUT {uri}): {err}. "
            "Choose an OUTPUT where you can write."
        ) from None
    try:
        yield temporary
        publish(fs, temporary, path)
    except BaseException:
        with suppress(OSError):  # the run failed already: that error is the one to report
            fs.delete_dir(temporary)
        raise


# --- reading and checking rows ---------------------------------------------------


def relative_source(path: str, base: str) -> str:
    return posixpath.relpath(path, base) if path.startswith(base.rstrip("/") + "/") else path


def numbered_rows_datasource(paths: str, fs: pafs.FileSystem, file_format: FileFormat, base: str, block_rows: int):
    """A Ray datasource whose rows are (source, row, payload): the payload is a raw JSONL line or a Parquet row.

    Ray's own readers give no line or row numbers, which the stable ids need; reading JSONL as raw
    lines also lets a bad line become an error row instead of failing the whole read.
    """
    from ray.data.datasource import FileBasedDatasource

    class NumberedRows(FileBasedDatasource):
        def _open_input_source(self, filesystem, path, **open_args):
            if file_format == FileFormat.parquet:
                return filesystem.open_input_file(path)  # Parquet needs random access
            return super()._open_input_source(filesystem, path, **open_args)

        def _read_stream(self, f: pa.NativeFile, path: str) -> Iterator[pa.Table]:
            source = relative_source(path, base)
            if file_format == FileFormat.parquet:
                first_row = 1
                for batch in pq.ParquetFile(f).iter_batches(batch_size=block_rows):
                    fields = pa.StructArray.from_arrays(batch.columns, names=batch.schema.names)
                    yield numbered_block(source, first_row, FIELDS, fields)
                    first_row += batch.num_rows
                return
            lines: list[bytes] = []
            first_row = 1
            for number, raw in numbered_lines(io.BufferedReader(f)):
                lines.append(raw)
                if len(lines) == block_rows:
                    yield numbered_block(source, first_row, LINE, pa.array(lines, pa.binary()))
                    lines, first_row = [], number + 1
            if lines:
                yield numbered_block(source, first_row, LINE, pa.array(lines, pa.binary()))

    extensions = PARQUET_EXTENSIONS if file_format == FileFormat.parquet else JSONL_EXTENSIONS
    return NumberedRows(paths, filesystem=fs, file_extensions=extensions)


def numbered_block(source: str, first_row: int, payload_name: str, payload: pa.Array) -> pa.Table:
    rows = pa.array(range(first_row, first_row + len(payload)), pa.int64())
    return pa.table({SOURCE: pa.array([source] * len(payload), pa.string()), ROW: rows, payload_name: payload})


def row_document(payload: bytes | dict[str, Any], row: int, text_field: str, max_length: int):
    """(text, carried fields) of one input row, or why it cannot be annotated: scripts.tools.annotate's checks."""
    if isinstance(payload, bytes):
        return line_document(payload, row, InputFormat.jsonl, text_field, max_length, RESERVED_FIELDS)
    document = split_record(payload, row, text_field, RESERVED_FIELDS)
    if isinstance(document, SkippedLine):
        return document
    return check_text(document[0], row, max_length) or document


def check_rows(batch: pa.Table, text_field: str, max_length: int) -> pa.Table:
    """Each row as source, row, reason (null when it can be annotated), text and its carried fields."""
    payload_name = LINE if LINE in batch.column_names else FIELDS
    records: list[dict[str, Any]] = []
    for source, row, payload in zip(
        batch[SOURCE].to_pylist(), batch[ROW].to_pylist(), batch[payload_name].to_pylist(), strict=True
    ):
        document = row_document(payload, row, text_field, max_length)
        if isinstance(document, SkippedLine):
            records.append({SOURCE: source, ROW: row, REASON: document.reason})
        else:
            text, carried = document
            records.append({SOURCE: source, ROW: row, REASON: None, **carried, TEXT: text})
    return table_from_records(records, first_row=batch[ROW][0].as_py() if batch.num_rows else 0)


def table_from_records(records: list[dict[str, Any]], first_row: int) -> pa.Table:
    """An Arrow table with the union of the records' keys (a key a record lacks is null there)."""
    fixed = {SOURCE: pa.string(), ROW: pa.int64(), REASON: pa.string(), TEXT: pa.string()}
    # source, row, reason, the carried fields in their input order, then text.
    names = list(
        dict.fromkeys([SOURCE, ROW, REASON, *(key for record in records for key in record if key != TEXT), TEXT])
    )
    columns = {}
    for name in names:
        values = [record.get(name) for record in records]
        try:
            columns[name] = pa.array(values, fixed.get(name))
        except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
            source = records[0][SOURCE]
            raise AnnotateError(
                f'{source} rows {first_row}-{first_row + len(records) - 1}: field "{name}" holds values of different '
                f"types ({err}); an output column has one type: make the field one type in INPUT."
            ) from None
    return pa.table(columns)


def annotatable_rows(batch: pa.Table) -> pa.Table:
    return batch.filter(pc.is_null(batch[REASON])).drop_columns([REASON])


def failed_rows(batch: pa.Table) -> pa.Table:
    return batch.filter(pc.is_valid(batch[REASON])).select([SOURCE, ROW, REASON])


# --- the actors -------------------------------------------------------------------


class EntityPredictor:
    """One per actor: loads the pipeline once, then adds the entities of each batch of rows."""

    def __init__(self, model: str, backend: str, gpu_id: int, torch_threads: int, max_length: int) -> None:
        use_torch_threads(torch_threads)
        self.nlp = load_pipeline(model, gpu_id, backend, needs=["ner"])
        self.nlp.max_length = max_length  # the length the rows were checked against

    def __call__(self, batch: pa.Table) -> pa.Table:
        texts = batch[TEXT].to_pylist()
        entities = [entity_records(doc) for doc in self.nlp.pipe(texts)]
        return batch.append_column(ENTITIES, pa.array(entities, ENTITY_TYPE))


# --- the run ----------------------------------------------------------------------


def annotate_with_ray(
    model: str,
    input_uri: str,
    output_uri: str,
    *,
    input_format: FileFormat = FileFormat.auto,
    output_format: FileFormat = FileFormat.parquet,
    text_field: str = "text",
    options: WorkerOptions = WorkerOptions(),
    backend: str = TORCH,
    max_length: int = SPACY_MAX_LENGTH,
    predictor_class: type[EntityPredictor] = EntityPredictor,
) -> RunSummary:
    """Annotate INPUT into the new folder OUTPUT on the Ray cluster this process is connected to (or a local one).

    predictor_class: the actor class; tests pass a subclass that crashes to check the retries.
    """
    import ray

    if output_format == FileFormat.auto:
        raise AnnotateError("--output-format is parquet or jsonl.")
    if backend != TORCH and options.gpus_per_worker > 0:
        raise AnnotateError(f"--backend {backend} is CPU-only: use --backend {TORCH} or drop --gpus-per-worker.")
    started = time.perf_counter()
    input_fs, input_path = resolve_uri(input_uri)
    if input_format == FileFormat.auto:
        input_format = detect_file_format(input_fs, input_path, input_uri)
    is_file = input_fs.get_file_info(input_path).type == pafs.FileType.File
    base = posixpath.dirname(input_path) if is_file else input_path
    output_fs, output_path = resolve_uri(output_uri)
    datasource = numbered_rows_datasource(input_path, input_fs, input_format, base, options.batch_size)

    def checked_rows():
        return ray.data.read_datasource(datasource).map_batches(
            check_rows, fn_kwargs={"text_field": text_field, "max_length": max_length}, batch_format="pyarrow"
        )

    with staged_output(output_fs, output_path, output_uri) as temporary:
        # The errors first: a cheap pass without the model, which also shows a wrong --text-field in seconds.
        checked_rows().map_batches(failed_rows, batch_format="pyarrow").write_json(
            posixpath.join(temporary, ERRORS_FOLDER), filesystem=output_fs, force_ascii=False
        )
        annotated = (
            checked_rows()
            .map_batches(annotatable_rows, batch_format="pyarrow")
            .map_batches(
                predictor_class,
                fn_constructor_kwargs={
                    "model": model,
                    "backend": backend,
                    "gpu_id": 0 if options.gpus_per_worker > 0 else -1,  # Ray shows each actor only its own GPUs
                    "torch_threads": options.torch_threads,
                    "max_length": max_length,
                },
                batch_size=options.batch_size,
                batch_format="pyarrow",
                compute=ray.data.ActorPoolStrategy(size=options.workers),
                num_cpus=options.cpus_per_worker,
                num_gpus=options.gpus_per_worker,
                # A dead actor is restarted and its batch run again, at most this often (Ray Data's default is
                # for ever, which turns a crash on every batch into a run that never ends). Ray 2.60 takes these
                # only as ray_remote_args, which it marks deprecated for 2.64: revisit when moving the pin.
                max_restarts=options.max_retries,
                max_task_retries=options.max_retries,
            )
        )
        if output_format == FileFormat.parquet:
            annotated.write_parquet(temporary, filesystem=output_fs)
        else:
            annotated.write_json(temporary, filesystem=output_fs, force_ascii=False)
        rows, entities = count_output(output_fs, temporary, output_format)
        failed = count_errors(output_fs, posixpath.join(temporary, ERRORS_FOLDER))
        summary = RunSummary(rows, failed, entities, time.perf_counter() - started, output_uri)
        with output_fs.open_output_stream(posixpath.join(temporary, SUCCESS_FILE)) as stream:
            stream.write((json.dumps(summary.to_json(), indent=2) + "\n").encode("utf-8"))
    return summary


def output_files(fs: pafs.FileSystem, folder: str, extension: str) -> list[str]:
    if fs.get_file_info(folder).type != pafs.FileType.Directory:
        return []
    entries = fs.get_file_info(pafs.FileSelector(folder, recursive=False))
    return sorted(entry.path for entry in entries if entry.path.endswith(extension) and entry.size)


def count_output(fs: pafs.FileSystem, folder: str, output_format: FileFormat) -> tuple[int, int]:
    """(rows, entities) in the written shards, read back from them: what a reader of OUTPUT will see."""
    import ray

    extension = ".parquet" if output_format == FileFormat.parquet else ".json"
    files = output_files(fs, folder, extension)
    if not files:
        return 0, 0
    if output_format == FileFormat.parquet:
        entities = ray.data.read_parquet(files, filesystem=fs).select_columns([ENTITIES])
        counts = entities.map_batches(count_entities, batch_format="pyarrow")
    else:
        counts = ray.data.read_text(files, filesystem=fs).map_batches(count_json_entities, batch_format="pyarrow")
    totals = counts.sum(["rows", "entities"])
    return int(totals["sum(rows)"]), int(totals["sum(entities)"])


def count_entities(batch: pa.Table) -> pa.Table:
    entities = pc.sum(pc.list_value_length(batch[ENTITIES])).as_py() or 0
    return pa.table({"rows": [batch.num_rows], "entities": [entities]})


def count_json_entities(batch: pa.Table) -> pa.Table:
    entities = sum(len(json.loads(line)[ENTITIES]) for line in batch["text"].to_pylist())
    return pa.table({"rows": [batch.num_rows], "entities": [entities]})


def count_errors(fs: pafs.FileSystem, folder: str) -> int:
    total = 0
    for name in output_files(fs, folder, ".json"):
        with fs.open_input_stream(name) as stream:
            total += stream.read().count(b"\n")
    return total


@contextmanager
def ray_cluster(address: str | None, options: WorkerOptions, object_store_mb: int | None = None) -> Iterator[None]:
    """Connected to Ray for the block: the cluster at ADDRESS or $RAY_ADDRESS, else a new one on this machine."""
    import ray

    joining = bool(address or os.environ.get("RAY_ADDRESS"))
    if joining:
        ray.init(address=address or None)
    else:
        workers_cpus = math.ceil(options.workers * options.cpus_per_worker)
        ray.init(
            num_cpus=max(available_cpus(), workers_cpus + IO_CPUS),
            num_gpus=math.ceil(options.workers * options.gpus_per_worker) or None,
            object_store_memory=object_store_mb * 1024 * 1024 if object_store_mb else None,
            include_dashboard=False,
        )
    try:
        yield
    finally:
        ray.shutdown()
