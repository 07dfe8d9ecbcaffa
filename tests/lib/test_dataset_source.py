"""scripts.lib.dataset_source: token-tagged rows read through `datasets`, from a DatasetDict (the hub's path,
offline here) or from local parquet, JSON lines and CSV files."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Sequence, Value

from scripts.lib.conll import CorpusError, Document
from scripts.lib.corpus_build import BuiltCorpus, CorpusOptions, build_corpus, detect_format
from scripts.lib.dataset_source import read_dataset_splits
from tests.corpus_formats import HF_TAG_NAMES, OTHER_TAG_NAMES, failed_convert, token_view, write_files

ROWS = {"tokens": [["EU", "rejects", "German", "lamb"], ["Peter", "Blackburn"]]}
TAGS = [["B-ORG", "O", "B-MISC", "O"], ["B-PER", "I-PER"]]
SPANS = [[(0, 1, "ORG"), (2, 3, "MISC")], [(0, 2, "PER")]]


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`datasets` prepares local files in its cache: this test's folder, not the user's ~/.cache."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")
    return tmp_path / "hf_cache"


def class_label_split(tag_names: list[str], tags: list[list[str]] = TAGS) -> Dataset:
    features = Features({"tokens": Sequence(Value("string")), "ner_tags": Sequence(ClassLabel(names=tag_names))})
    indices = [[tag_names.index(tag) for tag in row] for row in tags]
    return Dataset.from_dict({**ROWS, "ner_tags": indices}, features=features)


def sentences(documents: list[Document]) -> list[tuple[list[str], list[str]]]:
    return [(s.words, s.tags) for document in documents for s in document]


def spans_of(corpus: BuiltCorpus, split: str) -> list[list[tuple[int, int, str]]]:
    return [token_view(doc)[1] for doc in corpus.docs[split]]


# --- a DatasetDict ------------------------------------------------------------------------------------


@pytest.mark.parametrize("tag_names", [HF_TAG_NAMES, OTHER_TAG_NAMES], ids=["hub-order", "other-order"])
def test_class_labels_are_read_by_name(tag_names):
    data = DatasetDict({"train": class_label_split(tag_names)})
    read = read_dataset_splits(data, "mirror", required=("train",))
    assert list(read) == ["train"]  # dev and test may be absent: they are split off
    assert sentences(read["train"]) == list(zip(ROWS["tokens"], TAGS, strict=True))
    assert read["train"][0][1].origins == ["mirror [train] row 1"] * 2  # errors name the row


@pytest.mark.parametrize("dev_name", ["validation", "valid", "dev"])
def test_a_dev_split_under_any_of_its_names(dev_name):
    split = Dataset.from_dict({**ROWS, "ner_tags": TAGS})
    read = read_dataset_splits(DatasetDict({"train": split, dev_name: split, "test": split}), "data")
    assert list(read) == ["train", "dev", "test"]
    assert read["dev"][0][0].origins[0] == f"data [{dev_name}] row 0"


def test_a_required_split_that_is_absent_is_named():
    split = Dataset.from_dict({**ROWS, "ner_tags": TAGS})
    with pytest.raises(CorpusError, match=r"^hub/data: no 'validation' split \(found: train, test\)\.$"):
        read_dataset_splits(DatasetDict({"train": split, "test": split}), "hub/data")


def test_a_split_of_empty_rows_is_named():
    features = Features({"tokens": Sequence(Value("string")), "ner_tags": Sequence(Value("string"))})
    split = Dataset.from_dict({"tokens": [[], []], "ner_tags": [[], []]}, features=features)
    with pytest.raises(CorpusError, match=r"^d \[train\]: the split is empty\.$"):
        read_dataset_splits(DatasetDict({"train": split}), "d", required=("train",))


def test_other_column_names_and_tag_strings_with_blank_rows():
    split = Dataset.from_dict({"words": [["EU", "says"], [], ["Paris"]], "labels": [["B-ORG", " O "], [], ["U-LOC"]]})
    read = read_dataset_splits(DatasetDict({"train": split}), "d", "words", "labels", required=("train",))
    # The empty row is no sentence; tags lose stray whitespace as in column files.
    assert sentences(read["train"]) == [(["EU", "says"], ["B-ORG", "O"]), (["Paris"], ["U-LOC"])]


@pytest.mark.parametrize(
    ("columns", "options", "expected"),
    [
        ({"text": [["EU"]], "ner_tags": [["B-ORG"]]}, {}, "d [train]: no 'tokens' column (columns: text, ner_tags)"),
        ({"tokens": [["EU"]], "tags": [["B-ORG"]]}, {}, "d [train]: no 'ner_tags' column (columns: tokens, tags)"),
        ({"tokens": [["EU", "says"]], "ner_tags": [["B-ORG"]]}, {}, "d [train] row 0: 2 tokens but 1 ner_tags"),
        ({"tokens": [["EU"]], "ner_tags": [[3]]}, {}, "holds numbers without ClassLabel names"),
        ({"tokens": [[], []], "ner_tags": [[], ["O"]]}, {}, "d [train] row 1: 0 tokens but 1 ner_tags"),
        ({"tokens": [["EU"]], "ner_tags": [["B-ORG"]]}, {"tokens_column": "words"}, "(--tokens-column)"),
        ({"tokens": [["EU"]], "ner_tags": [["B-ORG"]]}, {"tags_column": "labels"}, "(--tags-column)"),
    ],
    ids=[
        "no-tokens",
        "no-tags",
        "lengths",
        "numbers",
        "no-tokens-in-a-row",
        "tokens-option",
        "tags-option",
    ],
)
def test_bad_rows_and_columns_are_named(columns, options, expected):
    with pytest.raises(CorpusError) as caught:
        read_dataset_splits(DatasetDict({"train": Dataset.from_dict(columns)}), "d", required=("train",), **options)
    assert expected in str(caught.value)


# --- local files through the corpus step ------------------------------------------------------------------


def test_parquet_with_arrow_large_strings(tmp_path):
    # polars, and pandas with Arrow strings, write large_string columns: tag strings all the same.
    table = pa.table(
        {
            "tokens": pa.array(ROWS["tokens"], type=pa.large_list(pa.large_string())),
            "ner_tags": pa.array(TAGS, type=pa.large_list(pa.large_string())),
        }
    )
    for split in ("train", "dev", "test"):
        pq.write_table(table, tmp_path / f"{split}.parquet")
    corpus = build_corpus(tmp_path)
    assert (corpus.manifest.format, corpus.manifest.scheme) == ("datasets", "IOB2")
    assert spans_of(corpus, "test") == SPANS


def test_json_lines_with_token_lists_are_read_as_datasets(tmp_path):
    rows = [{"tokens": words, "ner_tags": tags} for words, tags in zip(ROWS["tokens"], TAGS, strict=True)]
    data = write_files(tmp_path / "data", {"train.jsonl": rows * 3, "dev.jsonl": rows, "test.jsonl": rows})
    # No "text": token lists, not a span export.
    assert detect_format(data / "train.jsonl", CorpusOptions()) == "datasets"
    corpus = build_corpus(data)
    assert [len(corpus.docs[split]) for split in ("train", "dev", "test")] == [6, 2, 2]
    assert spans_of(corpus, "dev") == SPANS


def test_csv_lists_as_json_or_as_space_separated_strings(tmp_path):
    lines = [
        "tokens,ner_tags",
        '"[""EU"", ""rejects"", ""German"", ""lamb""]","B-ORG O B-MISC O"',
        "Peter Blackburn,B-PER I-PER",
    ]
    data = write_files(
        tmp_path / "data", {name: "\n".join(lines) + "\n" for name in ("train.csv", "dev.csv", "test.csv")}
    )
    corpus = build_corpus(data)
    assert [token_view(doc) for doc in corpus.docs["train"]] == list(zip(ROWS["tokens"], SPANS, strict=True))


def test_tags_columns_are_options(tmp_path):
    table = pa.table({"words": ROWS["tokens"], "labels": TAGS})
    for split in ("train", "dev", "test"):
        pq.write_table(table, tmp_path / f"{split}.parquet")
    corpus = build_corpus(tmp_path, options=CorpusOptions(tokens_column="words", tags_column="labels"))
    assert spans_of(corpus, "train") == SPANS


@pytest.mark.parametrize(
    ("columns", "expected"),
    [
        ({"words": ROWS["tokens"], "ner_tags": TAGS}, "no 'tokens' column (columns: words, ner_tags)"),
        ({"tokens": ROWS["tokens"], "labels": TAGS}, "no 'ner_tags' column (columns: tokens, labels)"),
    ],
    ids=["no-tokens-column", "no-tags-column"],
)
def test_a_file_without_the_columns_writes_nothing(tmp_path, columns, expected):
    pq.write_table(pa.table(columns), write_files(tmp_path / "data", {}) / "train.parquet")
    message = failed_convert(tmp_path / "data", tmp_path / "corpus")
    assert message.startswith(f"{tmp_path / 'data'} [train]: {expected}")


def test_mixed_extensions_and_unreadable_files_write_nothing(tmp_path):
    rows = [{"tokens": ["EU"], "ner_tags": ["B-ORG"]}]
    mixed = write_files(tmp_path / "mixed", {"train.jsonl": rows})
    pq.write_table(pa.table({"tokens": [["EU"]], "ner_tags": [["B-ORG"]]}), mixed / "dev.parquet")
    assert "give every split the same extension" in failed_convert(mixed, tmp_path / "out1")
    broken = write_files(tmp_path / "broken", {"train.parquet": b"PAR1 not really parquet"})
    message = failed_convert(broken, tmp_path / "out2")
    assert "datasets could not read the files as parquet" in message
    assert "Traceback" not in message and "\n" not in message  # one line of reason
