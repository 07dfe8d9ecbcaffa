"""scripts/tools/annotate.py: text and JSONL in, JSONL with entity offsets out, with the packaged en_bert_ner.

The functions are tested in-process on one loaded pipeline; the command line runs as a user runs
it, `python -m scripts.tools.annotate` in the project folder, with the installed wheel on PYTHONPATH.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import spacy
from spacy.language import Language

from scripts.annotation.local import (
    AnnotateError,
    AnnotationCounts,
    InputFormat,
    SkippedLine,
    annotate,
    detect_format,
    numbered_lines,
    write_error,
)
from scripts.lib.pipeline_loading import PipelineLoadError, load_pipeline
from tests.conftest import LABELS, PROJECT_DIR

NEWS_LINES = [
    "EU rejects German call to boycott British lamb .",
    "Peter Blackburn reported from Brussels on Monday .",
    "",
    "Talks between Germany and France resumed in Paris .",
]
CLI_DEADLINE_S = 300


@pytest.fixture(scope="module")
def nlp(installed_model: str) -> Language:
    return spacy.load(installed_model)


@pytest.fixture(scope="module")
def site_dir(installed_model: str) -> Path:
    """The folder the wheel was installed into: PYTHONPATH for the command-line runs."""
    return spacy.util.get_package_path(installed_model).parent


def read_output(path: Path) -> list[dict]:
    # splitlines() also breaks at \x85, \x1c and U+2028: the output must not contain them raw.
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def expected_entities(nlp: Language, text: str) -> list[dict]:
    """The entities spaCy's own nlp(text) finds, in the output's form."""
    return [
        {"start": ent.start_char, "end": ent.end_char, "label": ent.label_, "text": ent.text, "score": ent._.score}
        for ent in nlp(text).ents
    ]


# A batch pads its texts to its longest: an entity's score moves by float rounding with the batch it ran in.
SCORE_TOLERANCE = 1e-4


def assert_same_entities(actual: list[dict], expected: list[dict]) -> None:
    """The same entities (offsets, label, text), with scores equal up to SCORE_TOLERANCE."""
    assert [{k: v for k, v in e.items() if k != "score"} for e in actual] == [
        {k: v for k, v in e.items() if k != "score"} for e in expected
    ]
    for got, wanted in zip(actual, expected, strict=True):
        assert got["score"] == pytest.approx(wanted["score"], abs=SCORE_TOLERANCE), (got, wanted)


def check_records(nlp: Language, records: list[dict]) -> None:
    """Each record's entities are those nlp(text) finds, with offsets that give back their text."""
    for record in records:
        for entity in record["entities"]:
            assert record["text"][entity["start"] : entity["end"]] == entity["text"], record
            assert entity["label"] in LABELS, record
            assert 0.0 <= entity["score"] <= 1.0, record
        assert_same_entities(record["entities"], expected_entities(nlp, record["text"]))


def annotate_collecting(nlp: Language, source: Path, output: Path, **options) -> tuple[AnnotationCounts, list]:
    skipped: list[SkippedLine] = []
    counts = annotate(nlp, str(source), str(output), on_skip=skipped.append, **options)
    return counts, skipped


@pytest.mark.slow
def test_text_input_one_document_per_line(nlp: Language, tmp_path: Path):
    source, output = tmp_path / "news.txt", tmp_path / "news.jsonl"
    source.write_text("\n".join(NEWS_LINES) + "\n", encoding="utf-8")
    counts, skipped = annotate_collecting(nlp, source, output)
    assert (counts.annotated, counts.skipped, skipped) == (len(NEWS_LINES), 0, [])
    records = read_output(output)
    assert [(r["text"], r["line"]) for r in records] == [(text, i) for i, text in enumerate(NEWS_LINES, start=1)]
    assert [set(r) for r in records] == [{"text", "entities", "line"}] * len(NEWS_LINES)
    check_records(nlp, records)
    assert any(r["entities"] for r in records), "the trained model found no entity in its own kind of text"


@pytest.mark.slow
def test_jsonl_input_carries_other_fields(nlp: Language, tmp_path: Path):
    rows = [
        {"id": 1, "text": NEWS_LINES[0], "meta": {"source": "wire", "tags": ["a", "b"]}},
        {"text": NEWS_LINES[1], "id": "x-2", "score": 0.5, "flag": None, "note": "Zürich 東京 🎉"},
    ]
    source, output = tmp_path / "rows.jsonl", tmp_path / "out.jsonl"
    source.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    counts, _ = annotate_collecting(nlp, source, output)
    assert (counts.annotated, counts.skipped) == (2, 0)
    records = read_output(output)
    for number, (row, record) in enumerate(zip(rows, records, strict=True), start=1):
        assert record == {**row, "entities": record["entities"], "line": number}
    check_records(nlp, records)


@pytest.mark.slow
def test_text_field_option(nlp: Language, tmp_path: Path):
    source, output = tmp_path / "rows.jsonl", tmp_path / "out.jsonl"
    source.write_text(json.dumps({"body": NEWS_LINES[1], "id": 9}) + "\n", encoding="utf-8")
    counts, _ = annotate_collecting(nlp, source, output, text_field="body")
    assert counts.annotated == 1
    [record] = read_output(output)
    assert record["text"] == NEWS_LINES[1] and record["id"] == 9 and "body" not in record
    check_records(nlp, [record])


BAD_JSONL_LINES = {
    2: ("{not json", "invalid JSON"),
    3: ('{"id": 3}', 'no "text" field (fields: "id")'),
    4: ('{"text": 5}', '"text" is a JSON number, expected a string'),
    5: ('{"text": null}', '"text" is a JSON null'),
    6: ('["a list"]', "a JSON array, expected an object"),
    7: ("", "empty line"),
    8: ('{"text": NaN}', "NaN is not a JSON value"),
    9: ('{"text": "Germany", "entities": []}', 'field "entities" would be overwritten'),
    10: ('{"text": "bad \\ud800 half"}', "unpaired surrogate (\\ud800)"),
    11: ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    13: ('"just a string"', "a JSON string"),
}


@pytest.mark.slow
def test_bad_lines_are_reported_with_line_numbers_and_counted(nlp: Language, tmp_path: Path):
    good = {1: NEWS_LINES[0], 12: NEWS_LINES[1], 14: NEWS_LINES[3]}
    lines = {
        **{n: json.dumps({"text": text}) for n, text in good.items()},
        **{n: v[0] for n, v in BAD_JSONL_LINES.items()},
    }
    source, output = tmp_path / "mixed.jsonl", tmp_path / "out.jsonl"
    source.write_text("\n".join(lines[n] for n in sorted(lines)) + "\n", encoding="utf-8")
    counts, skipped = annotate_collecting(nlp, source, output)
    assert (counts.annotated, counts.skipped) == (len(good), len(BAD_JSONL_LINES))
    assert [s.line for s in skipped] == sorted(BAD_JSONL_LINES)
    for skip in skipped:
        assert BAD_JSONL_LINES[skip.line][1] in skip.reason, skip
    assert [(r["line"], r["text"]) for r in read_output(output)] == sorted(good.items())


@pytest.mark.slow
def test_non_utf8_lines_are_skipped(nlp: Language, tmp_path: Path):
    source, output = tmp_path / "mixed.txt", tmp_path / "out.jsonl"
    source.write_bytes(b"Germany beat France .\ncaf\xe9 in Paris (latin-1)\n\xff\xfe\x00b\x00\nBrussels\n")
    counts, skipped = annotate_collecting(nlp, source, output)
    assert (counts.annotated, counts.skipped) == (2, 2)
    assert [(s.line, s.reason) for s in skipped] == [
        (2, "not valid UTF-8: byte 0xe9 at byte 4 of the line"),
        (3, "not valid UTF-8: byte 0xff at byte 1 of the line"),
    ]
    assert [(r["line"], r["text"]) for r in read_output(output)] == [(1, "Germany beat France ."), (4, "Brussels")]


@pytest.mark.slow
def test_only_newline_ends_a_document(nlp: Language, tmp_path: Path):
    """CRLF endings and a byte order mark are not text; \\x85, \\x1c and U+2028 inside a line are."""
    documents = ["Germany\u2028beat France .", "Peter\x85Blackburn \x1c went home .", "Paris"]
    source, output = tmp_path / "windows.txt", tmp_path / "out.jsonl"
    source.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(documents).encode("utf-8") + b"\r\n")
    counts, _ = annotate_collecting(nlp, source, output)
    assert counts.annotated == len(documents)
    records = read_output(output)
    assert [r["text"] for r in records] == documents
    check_records(nlp, records)


@pytest.mark.slow
def test_text_longer_than_max_length_is_skipped(nlp: Language, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(nlp, "max_length", 30)
    source, output = tmp_path / "long.txt", tmp_path / "out.jsonl"
    source.write_text("Germany\n" + "word " * 10 + "\n", encoding="utf-8")
    counts, skipped = annotate_collecting(nlp, source, output)
    assert (counts.annotated, counts.skipped) == (1, 1)
    assert skipped[0].line == 2 and "more than the pipeline's max_length (30)" in skipped[0].reason


def numbered(*lines: bytes) -> Iterator[tuple[int, bytes]]:
    return iter(enumerate(lines, start=1))


@pytest.mark.parametrize(
    ("name", "lines", "expected"),
    [
        ("data.jsonl", [b"plain text"], InputFormat.jsonl),
        ("data.NDJSON", [b"plain text"], InputFormat.jsonl),
        ("data.txt", [b'{"text": "x"}'], InputFormat.text),
        ("data.csv", [b"", b'  {"text": "x"}'], InputFormat.jsonl),
        ("-", [b"\xef\xbb\xbf{}"], InputFormat.jsonl),
        ("data", [b"", b"Germany"], InputFormat.text),
        ("data", [], InputFormat.text),
    ],
)
def test_format_detection(name: str, lines: list[bytes], expected: InputFormat):
    detected, kept = detect_format(name, numbered(*lines))
    assert detected == expected
    assert [line for _, line in kept] == lines, "lines read to decide were lost"


def test_numbered_lines_keep_carriage_returns_inside_a_line(tmp_path: Path):
    source = tmp_path / "lines.txt"
    source.write_bytes(b"a\r\nb\rc\n\nlast without newline")
    with source.open("rb") as stream:
        assert list(numbered_lines(stream)) == [(1, b"a"), (2, b"b\rc"), (3, b""), (4, b"last without newline")]


@pytest.mark.slow
def test_failed_run_leaves_output_as_it_was(nlp: Language, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A crash midway (here: the pipeline raises after two documents) writes nothing and leaves no temporary file."""
    source, output = tmp_path / "news.txt", tmp_path / "out.jsonl"
    source.write_text("\n".join(NEWS_LINES), encoding="utf-8")
    output.write_text("previous run\n", encoding="utf-8")
    real_pipe = nlp.pipe

    def pipe_that_crashes(*args, **kwargs):
        for number, item in enumerate(real_pipe(*args, **kwargs)):
            if number == 2:
                raise RuntimeError("simulated crash")
            yield item

    monkeypatch.setattr(nlp, "pipe", pipe_that_crashes)
    with pytest.raises(RuntimeError, match="simulated crash"):
        annotate(nlp, str(source), str(output))
    assert output.read_text(encoding="utf-8") == "previous run\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["news.txt", "out.jsonl"]


@pytest.mark.parametrize(
    ("error", "fix"),
    [
        (errno.ENOSPC, "is full: free some space there, or choose an OUTPUT on another disk"),
        (errno.EACCES, "Choose an OUTPUT in a folder you can write to"),
        (errno.EROFS, "Choose an OUTPUT in a folder you can write to"),
        (errno.EFBIG, "split INPUT"),
    ],
)
def test_write_errors_name_the_path_and_the_fix(tmp_path: Path, error: int, fix: str):
    path = tmp_path / "out.jsonl"
    message = str(write_error(path, OSError(error, os.strerror(error))))
    assert message.startswith(f"Cannot write {path}: {os.strerror(error)}.")
    assert fix in message and f"{path} was not created" in message


def test_missing_input_and_folder_output(tmp_path: Path):
    blank = spacy.blank("en")  # both stop before any text reaches the pipeline
    with pytest.raises(AnnotateError, match="does not exist"):
        annotate(blank, str(tmp_path / "missing.txt"), str(tmp_path / "out.jsonl"))
    source = tmp_path / "in.txt"
    source.write_text("Germany\n", encoding="utf-8")
    with pytest.raises(AnnotateError, match="is a folder: give a file name"):
        annotate(blank, str(source), str(tmp_path))


@pytest.mark.slow
def test_model_as_installed_package_folder(installed_model: str):
    """The folder pip installed (its pipeline sits in a subfolder) works as MODEL, like the package name."""
    folder = spacy.util.get_package_path(installed_model)
    assert not (folder / "config.cfg").exists()
    assert load_pipeline(str(folder)).pipe_names == ["transformer", "ner", "entity_scores", "encoder_backend"]


def test_unknown_model_names_the_fix():
    with pytest.raises(PipelineLoadError, match="neither a folder nor an installed Python package") as raised:
        load_pipeline("no_such_pipeline_xyz")
    assert "no_such_pipeline_xyz" in str(raised.value)


# --- the command line ----------------------------------------------------------


def run_cli(
    site_dir: Path, *args: object, stdin: bytes = b"", preexec_fn: Callable[[], None] | None = None
) -> subprocess.CompletedProcess:
    """`python -m scripts.tools.annotate ARGS` in the project folder; fails the test if it has not ended in time.

    Its own session, so that a hung run is killed together with the worker processes it spawned.
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site_dir), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "scripts.tools.annotate", *map(str, args)]
    process = subprocess.Popen(
        command,
        cwd=PROJECT_DIR,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=preexec_fn,
    )
    try:
        stdout, stderr = process.communicate(stdin, timeout=CLI_DEADLINE_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(f"{' '.join(command)} did not finish in {CLI_DEADLINE_S}s")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr.decode("utf-8", "replace"))


@pytest.mark.slow
def test_cli_stdin_to_stdout(site_dir: Path, nlp: Language):
    result = run_cli(site_dir, "en_bert_ner", "-", "-", stdin=b"Germany beat France .\n\xff\nPeter Blackburn\n")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.decode("utf-8").splitlines()]
    assert [(r["line"], r["text"]) for r in records] == [(1, "Germany beat France ."), (3, "Peter Blackburn")]
    check_records(nlp, records)
    assert "<stdin>:2: skipped: not valid UTF-8" in result.stderr
    assert "annotated 2, skipped 1" in result.stderr


@pytest.mark.slow
def test_cli_two_processes_match_one(site_dir: Path, nlp: Language, tmp_path: Path):
    """--n-process 2 (forked workers) finishes and writes exactly what one process writes."""
    source = tmp_path / "news.jsonl"
    rows = [{"text": NEWS_LINES[i % len(NEWS_LINES)] + f" ({i})", "id": i} for i in range(300)]
    source.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    # The same batches in both runs: padding a batch can move a score in its last digits.
    annotate(nlp, str(source), str(tmp_path / "one.jsonl"), batch_size=16)
    result = run_cli(site_dir, "en_bert_ner", source, tmp_path / "two.jsonl", "--n-process", 2, "--batch-size", 16)
    assert result.returncode == 0, result.stderr
    assert "annotated 300, skipped 0" in result.stderr
    assert (tmp_path / "two.jsonl").read_bytes() == (tmp_path / "one.jsonl").read_bytes()


@pytest.mark.slow
def test_cli_torch_int8_backend_in_one_and_two_processes(site_dir: Path, tmp_path: Path):
    """Forked workers share the parent's quantized encoder: nothing to pickle, the same entities."""
    source = tmp_path / "news.txt"
    source.write_text("".join(line + "\n" for line in NEWS_LINES * 20), encoding="utf-8")
    result = run_cli(
        site_dir, "en_bert_ner", source, tmp_path / "int8.jsonl", "--backend", "torch-int8", "--batch-size", 16
    )
    assert result.returncode == 0, result.stderr
    assert f"annotated {len(NEWS_LINES) * 20}, skipped 0" in result.stderr
    two = run_cli(
        site_dir,
        "en_bert_ner",
        source,
        tmp_path / "two.jsonl",
        "--backend",
        "torch-int8",
        "--n-process",
        2,
        "--batch-size",
        16,
    )
    assert two.returncode == 0, two.stderr
    assert [record["entities"] for record in read_output(tmp_path / "two.jsonl")] == [
        record["entities"] for record in read_output(tmp_path / "int8.jsonl")
    ]


@pytest.fixture
def unwritable_folder(tmp_path: Path) -> Iterator[Path]:
    """A folder in which this user cannot create a file."""
    if os.geteuid() == 0:
        # root ignores permission bits; sysfs refuses new files even to root.
        folder = Path("/sys")
    else:
        folder = tmp_path / "read_only"
        folder.mkdir()
        folder.chmod(0o500)
    probe = folder / "annotate_probe"
    try:
        probe.open("wb").close()
    except OSError:
        pass
    else:
        probe.unlink()
        pytest.skip(f"cannot make a folder unwritable here ({folder} accepts new files)")
    yield folder
    if folder != Path("/sys"):
        folder.chmod(0o700)


@pytest.mark.slow
def test_cli_unwritable_output_folder(site_dir: Path, tmp_path: Path, unwritable_folder: Path):
    source = tmp_path / "news.txt"
    source.write_text("Germany\n", encoding="utf-8")
    output = unwritable_folder / "entities.jsonl"
    result = run_cli(site_dir, "en_bert_ner", source, output)
    assert result.returncode == 1
    assert f"annotate: error: Cannot write {output}: Permission denied." in result.stderr
    assert "Choose an OUTPUT in a folder you can write to" in result.stderr
    assert "Traceback" not in result.stderr
    assert not output.exists()


@pytest.mark.slow
def test_cli_write_failure_midway_leaves_no_partial_file(site_dir: Path, tmp_path: Path):
    """The system refuses OUTPUT past 4 MiB (ulimit -f: what a full disk looks like to the process).

    Loading the model writes its encoder to a temporary folder first, so the limit sits above
    that; lines of one 100,000-character word make the output pass it in a few seconds.
    """
    source, output = tmp_path / "long_words.txt", tmp_path / "out.jsonl"
    source.write_text("\n".join(["Germany " + "x" * 100_000] * 60), encoding="utf-8")
    output.write_text("previous run\n", encoding="utf-8")

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (4 << 20, 4 << 20))

    result = run_cli(site_dir, "en_bert_ner", source, output, preexec_fn=limit_file_size)
    assert result.returncode == 1, result.stderr
    assert f"annotate: error: Cannot write {output}: File too large." in result.stderr
    assert f"{output} keeps its previous content" in result.stderr
    assert "Traceback" not in result.stderr
    assert output.read_text(encoding="utf-8") == "previous run\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long_words.txt", "out.jsonl"]
