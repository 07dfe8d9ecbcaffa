"""scripts/tools/annotate_ray.py: the packaged en_bert_ner in a Ray Data actor pool, JSONL or Parquet in, shards out.

The end-to-end tests share one local Ray (2 CPUs, a small object store) and the workflow's packaged
model; each checks the output against single-process scripts.tools.annotate. The helpers are tested
without Ray.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import spacy

from scripts.annotation.local import AnnotateError, annotate
from scripts.annotation.ray_data import (
    ERRORS_FOLDER,
    SUCCESS_FILE,
    EntityPredictor,
    FileFormat,
    WorkerOptions,
    annotate_with_ray,
    check_model_here,
    check_rows,
    detect_file_format,
    failure_message,
    numbered_block,
    publish,
    staged_output,
)
from tests.conftest import PROJECT_DIR, flat
from tests.tools.test_annotate import NEWS_LINES, assert_same_entities, expected_entities

RAY_CPUS = 2
OBJECT_STORE_MB = 300
# Two actors of half a CPU each leave one of the two CPUs to Ray Data's read and write tasks.
TWO_WORKERS = WorkerOptions(workers=2, cpus_per_worker=0.5, batch_size=64, max_retries=2)
CLI_DEADLINE_S = 600


# --- without Ray ------------------------------------------------------------------


def jsonl_block(*lines: bytes) -> pa.Table:
    return numbered_block("in.jsonl", 1, "line", pa.array(lines, pa.binary()))


def test_check_rows_reasons_and_carried_fields():
    batch = jsonl_block(
        json.dumps({"id": 1, "text": "Germany", "meta": {"a": 1}}).encode(),
        b"{not json",
        json.dumps({"id": 3}).encode(),
        json.dumps({"id": 4, "text": 5}).encode(),
        json.dumps({"id": 5, "text": "x" * 40}).encode(),
        json.dumps({"id": 6, "text": "Paris", "row": 1}).encode(),
        b"\xff",
    )
    checked = check_rows(batch, "text", max_length=30)
    assert checked.column_names == ["source", "row", "reason", "id", "meta", "text"]
    rows = checked.to_pylist()
    assert rows[0] == {"source": "in.jsonl", "row": 1, "reason": None, "id": 1, "meta": {"a": 1}, "text": "Germany"}
    reasons = {row["row"]: row["reason"] for row in rows[1:]}
    assert reasons[2].startswith("invalid JSON")
    assert reasons[3].startswith('no "text" field (fields: "id")')
    assert reasons[4] == '"text" is a JSON number, expected a string'
    assert "more than the pipeline's max_length (30)" in reasons[5]
    assert 'field "row" would be overwritten' in reasons[6]
    assert reasons[7] == "not valid UTF-8: byte 0xff at byte 1 of the line"


def test_check_rows_of_parquet_structs():
    fields = pa.StructArray.from_arrays([pa.array(["Germany", None]), pa.array([7, 8])], names=["body", "id"])
    checked = check_rows(numbered_block("part.parquet", 10, "fields", fields), "body", max_length=100)
    assert checked.to_pylist() == [
        {"source": "part.parquet", "row": 10, "reason": None, "id": 7, "text": "Germany"},
        {"source": "part.parquet", "row": 11, "reason": '"body" is a JSON null, expected a string', "id": None,
         "text": None},
    ]  # fmt: skip


def test_a_field_of_mixed_types_names_the_rows_and_the_fix():
    batch = jsonl_block(b'{"text": "a", "id": 1}', b'{"text": "b", "id": "two"}')
    with pytest.raises(AnnotateError, match=r'in.jsonl rows 1-2: field "id" holds values of different types'):
        check_rows(batch, "text", 100)


def test_input_format_from_extensions(tmp_path: Path):
    fs = pafs.LocalFileSystem()
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.jsonl").write_text("{}\n")
    (tmp_path / "a" / "_errors").mkdir()
    (tmp_path / "a" / "_errors" / "e.parquet").write_text("")  # hidden: as Ray Data skips it
    assert detect_file_format(fs, str(tmp_path / "a"), "a") == FileFormat.jsonl
    (tmp_path / "a" / "y.parquet").write_text("")
    with pytest.raises(AnnotateError, match="both JSONL and Parquet files: choose one with --input-format"):
        detect_file_format(fs, str(tmp_path / "a"), "a")
    with pytest.raises(AnnotateError, match="does not exist"):
        detect_file_format(fs, str(tmp_path / "missing"), "missing")


class NoFolderRenames:
    """A local file system that, like S3 and GCS in pyarrow, cannot move a folder."""

    def __init__(self) -> None:
        self.local = pafs.LocalFileSystem()
        self.moved: list[str] = []

    def move(self, source: str, target: str) -> None:
        if self.local.get_file_info(source).type == pafs.FileType.Directory:
            raise pa.ArrowNotImplementedError("cannot move a directory")
        self.moved.append(os.path.basename(target))
        self.local.move(source, target)

    def __getattr__(self, name: str):
        return getattr(self.local, name)


def test_publish_without_folder_renames_moves_success_last(tmp_path: Path):
    staged = tmp_path / ".out.tmp"
    (staged / "_errors").mkdir(parents=True)
    for name in ("a.parquet", SUCCESS_FILE, "b.parquet", "_errors/e.json"):
        (staged / name).write_text(name)
    fs = NoFolderRenames()
    publish(fs, str(staged), str(tmp_path / "out"))
    assert fs.moved[-1] == SUCCESS_FILE and len(fs.moved) == 4
    assert (tmp_path / "out" / "_errors" / "e.json").read_text() == "_errors/e.json"
    assert not staged.exists()


def test_a_failed_run_leaves_no_output_and_an_existing_output_is_refused(tmp_path: Path):
    fs, output = pafs.LocalFileSystem(), str(tmp_path / "out")
    with pytest.raises(RuntimeError, match="midway"), staged_output(fs, output, output) as temporary:
        Path(temporary, "part.parquet").write_text("half")
        raise RuntimeError("midway")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "out").mkdir()
    with pytest.raises(AnnotateError, match="exists already: remove it or choose a new folder"):
        with staged_output(fs, output, output):
            pass


# --- on a local Ray, with the packaged model ---------------------------------------


@pytest.fixture(scope="module")
def site_dir(installed_model: str) -> Path:
    return spacy.util.get_package_path(installed_model).parent


@pytest.fixture(scope="module")
def local_ray(site_dir: Path) -> Iterator[None]:
    """Ray on this machine, small; its workers import the project and the installed wheel as this process does."""
    import ray

    previous = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_DIR), str(site_dir), previous]))
    ray.init(num_cpus=RAY_CPUS, object_store_memory=OBJECT_STORE_MB << 20, include_dashboard=False)
    try:
        yield
    finally:
        ray.shutdown()
        if previous is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = previous


@pytest.fixture(scope="module")
def nlp(installed_model: str):
    return spacy.load(installed_model)


def write_news_jsonl(path: Path, count: int) -> list[dict]:
    rows = [{"id": f"doc-{i}", "text": NEWS_LINES[i % len(NEWS_LINES)] + f" ({i})"} for i in range(count)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return rows


def read_shards(folder: Path) -> list[dict]:
    return pads.dataset(folder, format="parquet").to_table().to_pylist()


def assert_same_rows(actual: dict[int, list[dict]], expected: dict[int, list[dict]]) -> None:
    assert sorted(actual) == sorted(expected)
    for row, entities in expected.items():
        assert_same_entities(actual[row], entities)


def single_process_entities(nlp, source: Path, tmp_path: Path) -> dict[int, list[dict]]:
    """Line number -> entities, from scripts.tools.annotate in this process."""
    output = tmp_path / "single.jsonl"
    annotate(nlp, str(source), str(output), batch_size=64)
    records = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    return {record["line"]: record["entities"] for record in records}


@pytest.mark.slow
def test_two_workers_annotate_every_row_once_as_one_process_does(local_ray, nlp, tmp_path: Path):
    source, output = tmp_path / "news.jsonl", tmp_path / "entities"
    rows = write_news_jsonl(source, 3_200)
    summary = annotate_with_ray("en_bert_ner", str(source), str(output), options=TWO_WORKERS)
    shards = read_shards(output)
    assert (summary.annotated, summary.failed, len(shards)) == (len(rows), 0, len(rows))
    assert len({(shard["source"], shard["row"]) for shard in shards}) == len(rows), "duplicate ids"
    assert sorted(shard["id"] for shard in shards) == sorted(row["id"] for row in rows)
    expected = single_process_entities(nlp, source, tmp_path)
    assert_same_rows({shard["row"]: shard["entities"] for shard in shards}, expected)
    assert summary.entities == sum(len(entities) for entities in expected.values()) > 0
    assert json.loads((output / SUCCESS_FILE).read_text())["annotated"] == len(rows)
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".")] == [], "temporary folder left"


def crash_once_predictor(marker: Path) -> type[EntityPredictor]:
    """An actor class whose process dies in its first batch, once for the whole run (the marker file says when)."""

    class CrashOnFirstBatch(EntityPredictor):
        def __call__(self, batch: pa.Table) -> pa.Table:
            try:
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                return super().__call__(batch)
            os._exit(1)  # as a killed or out-of-memory worker ends: no exception, no cleanup

    return CrashOnFirstBatch


@pytest.mark.slow
def test_a_worker_that_dies_is_retried_without_losing_or_duplicating_rows(local_ray, nlp, tmp_path: Path):
    source, output, marker = tmp_path / "news.jsonl", tmp_path / "entities", tmp_path / "crashed"
    rows = write_news_jsonl(source, 600)
    summary = annotate_with_ray(
        "en_bert_ner", str(source), str(output), options=TWO_WORKERS, predictor_class=crash_once_predictor(marker)
    )
    assert marker.exists(), "no worker crashed: the test tested nothing"
    shards = read_shards(output)
    assert summary.annotated == len(shards) == len(rows)
    assert sorted(shard["row"] for shard in shards) == list(range(1, len(rows) + 1))
    expected = single_process_entities(nlp, source, tmp_path)
    assert_same_rows({shard["row"]: shard["entities"] for shard in shards}, expected)


class AlwaysFails(EntityPredictor):
    def __init__(self, **_: object) -> None:
        pass  # no model: this actor only fails

    def __call__(self, batch: pa.Table) -> pa.Table:
        raise RuntimeError("the pipeline broke")


@pytest.mark.slow
def test_a_failed_run_leaves_no_output_folder(local_ray, tmp_path: Path):
    source, output = tmp_path / "news.jsonl", tmp_path / "entities"
    write_news_jsonl(source, 50)
    with pytest.raises(Exception, match="the pipeline broke"):
        annotate_with_ray("en_bert_ner", str(source), str(output), options=TWO_WORKERS, predictor_class=AlwaysFails)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["news.jsonl"]


@pytest.mark.slow
def test_bad_parquet_rows_land_in_the_errors_output(local_ray, nlp, tmp_path: Path):
    texts = [NEWS_LINES[0], None, "word " * 20, NEWS_LINES[1], NEWS_LINES[3]]
    folder = tmp_path / "crawl"
    (folder / "day=1").mkdir(parents=True)
    pq.write_table(pa.table({"body": texts[:3], "id": [1, 2, 3]}), folder / "day=1" / "part-0.parquet")
    pq.write_table(pa.table({"body": texts[3:], "id": [4, 5]}), folder / "part-1.parquet")
    output = tmp_path / "entities"
    summary = annotate_with_ray(
        "en_bert_ner", str(folder), str(output), output_format=FileFormat.jsonl, text_field="body",
        options=TWO_WORKERS, max_length=80,
    )  # fmt: skip
    assert (summary.annotated, summary.failed) == (3, 2)
    errors = sorted(
        (json.loads(line) for path in (output / ERRORS_FOLDER).iterdir() for line in path.read_text().splitlines()),
        key=lambda error: error["row"],
    )
    assert [(e["source"], e["row"]) for e in errors] == [("day=1/part-0.parquet", 2), ("day=1/part-0.parquet", 3)]
    assert errors[0]["reason"] == '"body" is a JSON null, expected a string'
    assert "more than the pipeline's max_length (80)" in errors[1]["reason"]
    annotated = [json.loads(line) for path in output.glob("*.json") for line in path.read_text().splitlines()]
    by_id = {record["id"]: record for record in annotated}
    assert sorted(by_id) == [1, 4, 5]
    for record in annotated:
        assert_same_entities(record["entities"], expected_entities(nlp, record["text"]))


@pytest.mark.slow
def test_cli_reports_counts_and_bad_rows(site_dir: Path, tmp_path: Path):
    """`python -m scripts.tools.annotate_ray` as a user runs it: its own local Ray, the summary line, errors named."""
    source, output = tmp_path / "news.jsonl", tmp_path / "entities"
    lines = [json.dumps({"text": NEWS_LINES[0]}), '{"id": 2}', json.dumps({"text": 3}), json.dumps({"text": "Paris"})]
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site_dir), os.environ.get("PYTHONPATH", "")])}
    env.pop("RAY_ADDRESS", None)
    command = [sys.executable, "-m", "scripts.tools.annotate_ray", "en_bert_ner", str(source), str(output),
               "--output-format", "jsonl", "--object-store-mb", str(OBJECT_STORE_MB)]  # fmt: skip
    result = subprocess.run(command, cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=CLI_DEADLINE_S)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "annotated 2, failed 2:" in result.stderr
    assert (output / SUCCESS_FILE).is_file()
    again = subprocess.run(command, cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=CLI_DEADLINE_S)
    assert again.returncode == 1
    assert f"annotate_ray: error: OUTPUT {output} exists already" in flat(again.stderr)
    assert "Traceback" not in again.stderr


def test_a_missing_model_is_named_before_ray_starts(tmp_path: Path):
    with pytest.raises(AnnotateError, match="Can't find the pipeline 'no_such_pipeline_xyz'"):
        check_model_here("no_such_pipeline_xyz")
    with pytest.raises(AnnotateError, match="is a folder but not a spaCy pipeline"):
        check_model_here(str(tmp_path))


def test_failure_message_is_the_last_line_of_the_first_cause():
    class WrappedByRay(Exception):
        def __init__(self, cause: BaseException) -> None:
            super().__init__("Traceback (most recent call last):\n  File ...\nwrapped")
            self.cause = cause

    root = AnnotateError('in.jsonl rows 1-2: field "id" holds values of different types')
    assert failure_message(WrappedByRay(root)) == str(root)
    assert failure_message(RuntimeError("one\n\n  two  \n")) == "two"
