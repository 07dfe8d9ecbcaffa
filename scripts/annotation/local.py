"""The annotation engine behind `annotate`: lines of text or JSONL in, JSONL with entity offsets out.

Reading (numbered lines, text or JSONL records, checks with the line number), the output written
atomically, and `annotate`, which streams INPUT through `nlp.pipe` into OUTPUT. The CLI
(scripts.tools.annotate) and the Ray engine (scripts.annotation.ray_data) share it.
"""

from __future__ import annotations

import errno
import itertools
import json
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, BinaryIO

from spacy.language import Language
from spacy.tokens import Doc
from tqdm import tqdm

from scripts.lib.atomic import atomic_stream, temporary_path
from scripts.lib.text_entities import entity_records, text_problem

STDIO = "-"
JSONL_SUFFIXES = {".jsonl", ".ndjson", ".json"}
TEXT_SUFFIXES = {".txt"}
# Keys that every output object gets from the annotation: a carried input field of the same name would be lost.
ANNOTATION_KEYS = ("text", "entities", "line")


class InputFormat(str, Enum):
    auto = "auto"
    text = "text"
    jsonl = "jsonl"


class AnnotateError(Exception):
    """A problem the user can fix: the message names the path and the fix."""


@dataclass(frozen=True)
class SkippedLine:
    line: int
    reason: str


@dataclass
class AnnotationCounts:
    annotated: int = 0
    skipped: int = 0


# (line number, carried fields): travels with each text through nlp.pipe(as_tuples=True).
LineContext = tuple[int, dict[str, Any]]


# --- reading ------------------------------------------------------------------


def numbered_lines(stream: BinaryIO) -> Iterator[tuple[int, bytes]]:
    """(line number from 1, line without its line ending), one at a time.

    The stream is binary and split on b"\\n" only: bytes that are not UTF-8 then stay confined to
    their line, and characters that str.splitlines() would also break on (\\x1c, \\x85, U+2028) stay
    inside the document.
    """
    for number, raw in enumerate(stream, start=1):
        if raw.endswith(b"\n"):
            raw = raw[:-1]
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        yield number, raw


def count_lines(path: Path) -> int:
    """The number of lines numbered_lines() yields, for the progress bar, reading 1 MiB at a time."""
    count, last_byte = 0, b"\n"
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            count += chunk.count(b"\n")
            last_byte = chunk[-1:]
    return count + (last_byte != b"\n")


def decode_line(raw: bytes, line: int) -> str | SkippedLine:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return SkippedLine(line, f"not valid UTF-8: byte 0x{raw[err.start]:02x} at byte {err.start + 1} of the line")
    # Windows tools often start UTF-8 files with a byte order mark; it is not part of the first document.
    return text.removeprefix("\ufeff") if line == 1 else text


def reject_non_standard_number(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def parse_json_record(
    line_text: str, line: int, text_field: str, reserved: tuple[str, ...] = ANNOTATION_KEYS
) -> tuple[str, dict[str, Any]] | SkippedLine:
    """(document text, fields to carry through) from one JSONL line."""
    if not line_text.strip():
        return SkippedLine(line, "empty line: expected a JSON object")
    try:
        record = json.loads(line_text, parse_constant=reject_non_standard_number)
    except json.JSONDecodeError as err:
        return SkippedLine(line, f"invalid JSON: {err.msg} at column {err.colno}")
    except ValueError as err:
        return SkippedLine(line, f"invalid JSON: {err}")
    except RecursionError:
        return SkippedLine(line, "invalid JSON: nested too deeply to parse")
    if not isinstance(record, dict):
        return SkippedLine(line, f'a JSON {json_type(record)}, expected an object with a "{text_field}" field')
    return split_record(record, line, text_field, reserved)


def split_record(
    record: dict[str, Any], line: int, text_field: str, reserved: tuple[str, ...] = ANNOTATION_KEYS
) -> tuple[str, dict[str, Any]] | SkippedLine:
    """(document text, the other fields) of one input record; `reserved` are the keys the output sets itself."""
    record = dict(record)
    if text_field not in record:
        fields = ", ".join(f'"{key}"' for key in list(record)[:8]) or "none"
        return SkippedLine(line, f'no "{text_field}" field (fields: {fields}); choose the field with --text-field')
    text = record.pop(text_field)
    if not isinstance(text, str):
        return SkippedLine(line, f'"{text_field}" is a JSON {json_type(text)}, expected a string')
    clashes = [key for key in reserved if key in record]
    if clashes:
        names = ", ".join(f'"{key}"' for key in clashes)
        return SkippedLine(line, f"field {names} would be overwritten by the annotation: rename it in INPUT")
    return text, record


def json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def check_text(text: str, line: int, max_length: int) -> SkippedLine | None:
    """Why the pipeline would fail on this text, if it would, with its line number."""
    problem = text_problem(text, max_length)
    return None if problem is None else SkippedLine(line, problem)


def read_documents(
    lines: Iterable[tuple[int, bytes]],
    input_format: InputFormat,
    text_field: str,
    max_length: int,
    skip: Callable[[SkippedLine], None],
) -> Iterator[tuple[str, LineContext]]:
    """(text, (line number, carried fields)) for nlp.pipe(as_tuples=True); every other line goes to `skip`."""
    for line, raw in lines:
        document = line_document(raw, line, input_format, text_field, max_length)
        if isinstance(document, SkippedLine):
            skip(document)
            continue
        text, carried = document
        yield text, (line, carried)


def line_document(
    raw: bytes,
    line: int,
    input_format: InputFormat,
    text_field: str,
    max_length: int,
    reserved: tuple[str, ...] = ANNOTATION_KEYS,
) -> tuple[str, dict[str, Any]] | SkippedLine:
    """(text, carried fields) of one input line, or why the pipeline cannot annotate it."""
    decoded = decode_line(raw, line)
    if isinstance(decoded, SkippedLine):
        return decoded
    if input_format == InputFormat.jsonl:
        parsed = parse_json_record(decoded, line, text_field, reserved)
        if isinstance(parsed, SkippedLine):
            return parsed
        text, carried = parsed
    else:
        text, carried = decoded, {}
    return check_text(text, line, max_length) or (text, carried)


def detect_format(
    input_path: str, lines: Iterator[tuple[int, bytes]]
) -> tuple[InputFormat, Iterator[tuple[int, bytes]]]:
    """The format from the file name (.jsonl/.ndjson/.json or .txt), else from the first non-blank line.

    Returns the lines unchanged: those read to decide are put back in front.
    """
    suffix = Path(input_path).suffix.lower() if input_path != STDIO else ""
    if suffix in JSONL_SUFFIXES:
        return InputFormat.jsonl, lines
    if suffix in TEXT_SUFFIXES:
        return InputFormat.text, lines
    read: list[tuple[int, bytes]] = []
    for item in lines:
        read.append(item)
        if item[1].strip():
            looks_like_json = item[1].lstrip().removeprefix(b"\xef\xbb\xbf").startswith(b"{")
            return (InputFormat.jsonl if looks_like_json else InputFormat.text), itertools.chain(read, lines)
    return InputFormat.text, iter(read)


@contextmanager
def open_input(input_path: str) -> Iterator[BinaryIO]:
    if input_path == STDIO:
        yield sys.stdin.buffer
        return
    path = Path(input_path)
    try:
        stream = path.open("rb")
    except FileNotFoundError:
        raise AnnotateError(f"INPUT {path} does not exist: check the path.") from None
    except IsADirectoryError:
        raise AnnotateError(f"INPUT {path} is a folder: give the file to annotate.") from None
    except OSError as err:
        raise AnnotateError(f"Cannot read INPUT {path}: {err.strerror or err}.") from None
    with stream:
        yield stream


# --- writing ------------------------------------------------------------------


def write_error(path: Path, err: OSError) -> AnnotateError:
    folder = path.absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent  # the folder to fix is the one that exists: OUTPUT's own may not yet
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = f"Choose an OUTPUT in a folder you can write to, or get write permission on {folder}."
    elif err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        fix = f"The disk holding {folder} is full: free some space there, or choose an OUTPUT on another disk."
    elif err.errno == errno.EFBIG:
        fix = "The file outgrew the largest file allowed here (ulimit -f or the file system's limit): split INPUT."
    elif err.errno == errno.ENOTDIR:
        fix = f"Part of {folder} is a file, not a folder: choose another OUTPUT."
    else:
        fix = f"Check {folder}: that it exists, that you can write to it, and that its disk has space."
    outcome = f"{path} keeps its previous content." if path.exists() else f"{path} was not created."
    return AnnotateError(f"Cannot write {path}: {err.strerror or err}. {fix} Nothing was written: {outcome}")


class OutputFile:
    """Lines of OUTPUT; an OSError while writing becomes an AnnotateError that names the path and the fix."""

    def __init__(self, stream: BinaryIO, path: Path | None) -> None:
        self.stream = stream
        self.path = path  # None: stdout

    def write(self, data: bytes) -> None:
        try:
            self.stream.write(data)
        except BrokenPipeError:
            raise  # stdout's reader went away (`| head`): main() ends quietly
        except OSError as err:
            raise self.error(err) from None

    def flush(self) -> None:
        try:
            self.stream.flush()
        except BrokenPipeError:
            raise
        except OSError as err:
            raise self.error(err) from None

    def error(self, err: OSError) -> AnnotateError:
        if self.path is None:
            return AnnotateError(f"Cannot write to stdout: {err.strerror or err}.")
        return write_error(self.path, err)


def check_output_writable(output_path: str) -> None:
    """Stop before the model loads (seconds to minutes) when OUTPUT cannot be written."""
    if output_path == STDIO:
        return
    path = checked_output_path(output_path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary_path(path).open("wb").close()
        temporary_path(path).unlink()
    except OSError as err:
        raise write_error(path, err) from None


def checked_output_path(output_path: str) -> Path:
    path = Path(output_path)
    if path.is_dir():
        raise AnnotateError(f"OUTPUT {path} is a folder: give a file name, e.g. {path / 'entities.jsonl'}.")
    return path


@contextmanager
def atomic_output(output_path: str) -> Iterator[OutputFile]:
    """OUTPUT written through scripts.lib.atomic: renamed over OUTPUT only once everything is written.

    A failed or interrupted run removes the temporary file and leaves OUTPUT as it was. An OSError of
    the file itself becomes an AnnotateError that names the path and the fix; one from the block is
    the block's own and goes through as it is.
    """
    if output_path == STDIO:
        stdout = OutputFile(sys.stdout.buffer, None)
        yield stdout
        stdout.flush()
        return
    path = checked_output_path(output_path)
    block_failed = False
    try:
        with atomic_stream(path) as stream:
            try:
                yield OutputFile(stream, path)
            except BaseException:
                block_failed = True
                raise
    except OSError as err:
        if block_failed:
            raise
        raise write_error(path, err) from None


# Valid inside a JSON string, but line breaks to str.splitlines() and other line readers: written escaped,
# so that every output object stays on one line for any reader. json.dumps escapes \x00-\x1f itself.
LINE_BREAKS_JSON_KEEPS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def output_line(doc: Doc, line: int, carried: dict[str, Any]) -> bytes:
    record = {"text": doc.text, "entities": entity_records(doc), **carried, "line": line}
    try:
        return (json.dumps(record, ensure_ascii=False).translate(LINE_BREAKS_JSON_KEEPS) + "\n").encode("utf-8")
    except UnicodeEncodeError:
        # A carried field holds an unpaired surrogate (JSON allows "\ud800"): ASCII output keeps the same escape.
        return (json.dumps(record) + "\n").encode("ascii")


def annotate(
    nlp: Language,
    input_path: str,
    output_path: str,
    input_format: InputFormat = InputFormat.auto,
    text_field: str = "text",
    batch_size: int = 64,
    n_process: int = 1,
    on_skip: Callable[[SkippedLine], None] | None = None,
) -> AnnotationCounts:
    """Annotate INPUT into OUTPUT, streaming; returns how many lines were annotated and skipped.

    Skipped lines go to `on_skip`, by default printed to stderr as "INPUT:LINE: skipped: reason".
    """
    if batch_size < 1 or n_process < 1:
        raise AnnotateError(f"--batch-size and --n-process must be 1 or more (got {batch_size} and {n_process}).")
    input_name = "<stdin>" if input_path == STDIO else input_path
    counts = AnnotationCounts()
    with open_input(input_path) as stream:
        # A regular file is counted first (a fast byte scan) so the progress bar can show the time left.
        total = count_lines(Path(input_path)) if input_path != STDIO and Path(input_path).is_file() else None
        lines: Iterator[tuple[int, bytes]] = numbered_lines(stream)
        if input_format == InputFormat.auto:
            input_format, lines = detect_format(input_path, lines)
            print(f"Reading {input_name} as {input_format.value}", file=sys.stderr)
        with (
            atomic_output(output_path) as output,
            tqdm(total=total, unit=" lines", file=sys.stderr, dynamic_ncols=True, mininterval=0.5) as progress,
        ):

            def skip(skipped: SkippedLine) -> None:
                counts.skipped += 1
                progress.update(1)
                if on_skip is not None:
                    on_skip(skipped)
                else:
                    progress.write(f"{input_name}:{skipped.line}: skipped: {skipped.reason}", file=sys.stderr)

            documents = read_documents(lines, input_format, text_field, nlp.max_length, skip)
            for doc, (line, carried) in nlp.pipe(documents, as_tuples=True, batch_size=batch_size, n_process=n_process):
                output.write(output_line(doc, line, carried))
                counts.annotated += 1
                progress.update(1)
    return counts
