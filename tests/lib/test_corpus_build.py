"""scripts.lib.corpus_build, the corpus step on small made-up data: split files, split-off dev and test,
labels, and every kind of bad data, each stopping the whole step with a message and nothing written."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest
from spacy.tokens import Doc

from scripts.lib.conll import SPLITS, CorpusError, DocMode
from scripts.lib.corpus_build import CorpusOptions, Misaligned, build_corpus, convert, find_split_files, is_conll2003
from scripts.lib.corpus_manifest import read_manifest
from tests.conftest import PROJECT_DIR, flat
from tests.corpus_formats import (
    OLD_OUTPUT,
    char_view,
    failed_convert,
    read_docbin,
    snapshot,
    token_view,
    write_docbin,
    write_files,
)

SPAN_OPTIONS = CorpusOptions(tokenizer_config=PROJECT_DIR / "configs" / "minilm_cpu.cfg")


def columns(*sentences: str) -> str:
    """A space-separated column file from sentences written as `word/TAG word/TAG`."""
    blocks = ["\n".join(" ".join(token.rpartition("/")[::2]) for token in s.split()) for s in sentences]
    return "\n\n".join(blocks) + "\n"


def numbered(count: int, label: str = "X", start: int = 0) -> list[str]:
    """`count` distinct one-entity sentences."""
    return [f"Name{i}/B-{label} spoke/O ./O" for i in range(start, start + count)]


IOBES = columns("Peter/B-PER Blackburn/E-PER", "in/O Paris/S-LOC")
BILOU = columns("Peter/B-PER Blackburn/L-PER", "in/O Paris/U-LOC")
GOOD = columns(*numbered(3))


def texts(docs: Iterable[Doc]) -> list[str]:
    return [doc.text for doc in docs]


# --- split files --------------------------------------------------------------------------------------


def test_split_files_by_stem_and_original_names(tmp_path):
    write_files(
        tmp_path / "a",
        {"train.conll": "", "validation.jsonl": "", "test.spacy": "", "trainer.txt": "", "pretrain.txt": ""},
    )
    assert find_split_files(tmp_path / "a") == {
        "train": tmp_path / "a" / "train.conll",
        "dev": tmp_path / "a" / "validation.jsonl",
        "test": tmp_path / "a" / "test.spacy",
    }
    write_files(tmp_path / "b", {"eng.train": "", "eng.testa": "", "eng.testb": ""})
    assert {split: path.name for split, path in find_split_files(tmp_path / "b").items()} == {
        "train": "eng.train",
        "dev": "eng.testa",
        "test": "eng.testb",
    }
    # Without dev and test files, only train is found: they are split off later.
    write_files(tmp_path / "c", {"train.txt": "", "notes.md": ""})
    assert list(find_split_files(tmp_path / "c")) == ["train"]


def test_split_files_by_name(tmp_path):
    data = write_files(tmp_path / "data", {"people.tsv": columns(*numbered(20)), "people.test.tsv": GOOD})
    options = CorpusOptions(split_files={"train": "people.tsv", "test": "people.test.tsv"})
    manifest = convert(tmp_path / "corpus", data, options=options)
    assert [manifest.splits[split].docs for split in SPLITS] == [18, 2, 3]  # dev split off, test given
    assert manifest.splits["test"].origin == str(data / "people.test.tsv")
    missing = CorpusOptions(split_files={"train": "people.tsv", "dev": "people.dev.tsv"})
    message = failed_convert(data, tmp_path / "other", options=missing)
    assert message == f"{data / 'people.dev.tsv'}: no such file (the dev file). Check data_dir and dev_file."
    no_train = CorpusOptions(split_files={"test": "people.test.tsv"})
    assert "given without train_file" in failed_convert(data, tmp_path / "third", options=no_train)


def test_is_conll2003_needs_conll_files(tmp_path):
    files = write_files(tmp_path, {"train.txt": columns(*numbered(3)), "valid.txt": "", "test.txt": ""})
    # CoNLL's file names alone do not make CoNLL-2003: its licence follows its bytes.
    names = dict(zip(SPLITS, ("train.txt", "valid.txt", "test.txt"), strict=True))
    assert not is_conll2003({split: files / name for split, name in names.items()}, ["PER", "ORG", "LOC", "MISC"])
    # The original release's names count only with CoNLL's labels: a relabelled copy under them is other data.
    original_names = ("eng.train", "eng.testa", "eng.testb")
    originals = write_files(tmp_path / "eng", {name: columns(*numbered(3)) for name in original_names})
    eng = dict(zip(SPLITS, (originals / name for name in original_names), strict=True))
    assert is_conll2003(eng, ["PER", "ORG", "LOC", "MISC"]) and not is_conll2003(eng, ["PERSON", "PLACE"])


# --- split off ----------------------------------------------------------------------------------------


@pytest.fixture
def train_only(tmp_path: Path) -> Path:
    return write_files(tmp_path / "data", {"train.txt": columns(*numbered(50))})


def test_dev_and_test_are_split_off_train_alone(train_only, tmp_path):
    manifest = convert(tmp_path / "corpus", train_only)
    assert {split: manifest.splits[split].docs for split in SPLITS} == {"train": 40, "dev": 5, "test": 5}
    origin = f"split off {train_only / 'train.txt'} (seed 0)"
    assert [manifest.splits[split].origin for split in SPLITS] == [str(train_only / "train.txt"), origin, origin]
    assert (manifest.split_seed, manifest.labels, manifest.format, manifest.scheme) == (0, ["X"], "columns", "IOB2")
    assert read_manifest(tmp_path / "corpus") == manifest
    docs = {split: texts(read_docbin(tmp_path / "corpus" / f"{split}.spacy")) for split in SPLITS}
    # Every sentence lands in exactly one split, and each split keeps the file's order.
    assert sorted(docs["train"] + docs["dev"] + docs["test"]) == sorted(f"Name{i} spoke . " for i in range(50))
    assert all(docs[split] == sorted(docs[split], key=lambda t: int(t.split()[0][4:])) for split in SPLITS)


def test_fractions_set_the_sizes(train_only):
    options = CorpusOptions(dev_fraction=0.2, test_fraction=0.3)
    assert [len(build_corpus(train_only, options=options).docs[split]) for split in SPLITS] == [25, 10, 15]


def test_the_seed_decides_the_split(train_only):
    def split_with(seed: int) -> dict[str, list[str]]:
        return {
            split: texts(docs)
            for split, docs in build_corpus(train_only, options=CorpusOptions(split_seed=seed)).docs.items()
        }

    assert split_with(0) == split_with(0)
    assert split_with(0)["dev"] != split_with(1)["dev"]
    assert build_corpus(train_only, options=CorpusOptions(split_seed=1)).manifest.split_seed == 1


def test_with_train_and_dev_only_test_is_split_off(tmp_path):
    data = write_files(tmp_path, {"train.txt": columns(*numbered(20)), "dev.txt": columns(*numbered(3, start=100))})
    corpus = build_corpus(data)
    assert [len(corpus.docs[split]) for split in SPLITS] == [18, 3, 2]
    assert texts(corpus.docs["dev"]) == ["Name100 spoke . ", "Name101 spoke . ", "Name102 spoke . "]
    assert corpus.manifest.splits["test"].origin == f"split off {data / 'train.txt'} (seed 0)"


def test_documents_are_split_off_whole_in_document_mode(tmp_path):
    documents = "".join(f"-DOCSTART- -X- -X- O\n\n{columns(*numbered(3, start=3 * d))}\n" for d in range(30))
    corpus = build_corpus(write_files(tmp_path, {"train.txt": documents}), DocMode.document)
    assert [len(corpus.docs[split]) for split in SPLITS] == [24, 3, 3]
    assert all(len(list(doc.sents)) == 3 for docs in corpus.docs.values() for doc in docs)


@pytest.mark.parametrize(
    ("count", "options", "expected"),
    [
        (2, CorpusOptions(), "the training data has 2 documents: too few to split off dev, test."),
        (10, CorpusOptions(dev_fraction=0), "dev_fraction must lie between 0 and 1 (got 0)."),
        (10, CorpusOptions(test_fraction=1.0), "test_fraction must lie between 0 and 1 (got 1.0)."),
    ],
)
def test_too_little_to_split_is_an_error(tmp_path, count, options, expected):
    data = write_files(tmp_path / "data", {"train.txt": columns(*numbered(count))})
    assert expected in failed_convert(data, tmp_path / "corpus", options=options)


def test_a_label_only_in_the_split_off_part_names_the_seed(tmp_path):
    # One RARE sentence among 20: some seeds put it in dev or test, where train lacks its label.
    data = write_files(tmp_path, {"train.txt": columns(*numbered(20), "Acme/B-RARE ./O")})
    outcomes = {}
    for seed in range(20):
        try:
            outcomes[seed] = build_corpus(data, options=CorpusOptions(split_seed=seed)).manifest.labels
        except CorpusError as err:
            outcomes[seed] = str(err)
    failures = [message for message in outcomes.values() if isinstance(message, str)]
    assert failures and len(failures) < len(outcomes)
    assert all("the label 'RARE'" in message and "another split_seed" in message for message in failures)
    assert ["RARE", "X"] in outcomes.values()


# --- labels ---------------------------------------------------------------------------------------------


def test_any_labels_are_learnt_from_train(tmp_path):
    data = write_files(
        tmp_path,
        {
            "train.txt": columns(
                "Aspirin/B-Drug-Name 500/B-DOSE mg/I-DOSE ./O", "Ärzte/B-Ärzte ./O", "Ibuprofen/B-Drug-Name"
            ),
            "dev.txt": columns("Aspirin/B-Drug-Name ./O"),
            "test.txt": columns("20/B-DOSE mg/I-DOSE"),
        },
    )
    manifest = convert(tmp_path / "corpus", data)
    assert manifest.labels == ["DOSE", "Drug-Name", "Ärzte"]
    assert manifest.splits["train"].entities == {"DOSE": 1, "Drug-Name": 2, "Ärzte": 1}
    assert manifest.splits["dev"].entities == {"DOSE": 0, "Drug-Name": 1, "Ärzte": 0}
    assert [token_view(d) for d in read_docbin(tmp_path / "corpus" / "test.spacy")] == [
        (["20", "mg"], [(0, 2, "DOSE")])
    ]


def test_a_dev_label_train_lacks_names_label_file_and_line(tmp_path):
    data = write_files(
        tmp_path / "data",
        {
            "train.txt": columns(*numbered(3)),
            "dev.txt": columns("Name1/B-X ./O", "Acme/B-ORG Corp/I-ORG"),
            "test.txt": columns(*numbered(1)),
        },
    )
    message = failed_convert(data, tmp_path / "corpus")
    assert message.startswith(f"{data / 'dev.txt'}:4: the label 'ORG' (dev, {data / 'dev.txt'}) is not in the training")
    assert f"({data / 'train.txt'}: X)" in message and "relabel it, or add training examples of it" in message


def test_a_test_label_train_lacks_names_the_record_of_a_span_file(tmp_path):
    records = [{"text": "Acme rose", "label": [[0, 4, "ORG"]]}, {"text": "Paris fell", "label": [[0, 5, "LOC"]]}]
    data = write_files(
        tmp_path / "data", {"train.jsonl": records[:1] * 3, "dev.jsonl": records[:1], "test.jsonl": records}
    )
    message = failed_convert(data, tmp_path / "corpus", options=SPAN_OPTIONS)
    assert message.startswith(f"{data / 'test.jsonl'}:2: the label 'LOC' (test, {data / 'test.jsonl'})")


def test_training_data_without_entities_is_an_error(tmp_path):
    data = write_files(tmp_path / "data", {"train.txt": columns("Nothing/O here/O", "Nor/O here/O", "x/O")})
    assert failed_convert(data, tmp_path / "corpus") == (
        f"{data / 'train.txt'}: the training data has no entities. Annotate some, or check the tags."
    )


# --- bad data: a message, and nothing written -------------------------------------------------------------
# Span formats' messages are worded in span_records (its own tests check them); here: the place and the facts.


BAD_DATA = {
    "overlapping-spans": (
        {
            "train.jsonl": [
                {
                    "text": "Acme Corp in Paris",
                    "spans": [{"start": 0, "end": 9, "label": "ORG"}, {"start": 5, "end": 18, "label": "LOC"}],
                }
            ]
        },
        ["train.jsonl:1: the spans 'Acme Corp' [0:9] ORG and 'Corp in Paris' [5:18] LOC overlap"],
    ),
    "span-cuts-a-token": (
        {"train.jsonl": [{"text": "Acme Corporation rose", "label": [[0, 6, "ORG"]]}]},
        ["train.jsonl:1: span 'Acme C' [0:6] ORG cuts the tokens 'Corporation' [5:16]", 'set misaligned to "expand"'],
    ),
    "tag-breaks-the-detected-scheme": (
        {"train.txt": columns("Peter/B-PER Blackburn/E-PER", "in/O Paris/I-LOC")},
        ["train.txt:5: the tag 'I-LOC' breaks the IOBES scheme: I-LOC must follow B-LOC or I-LOC", "set the scheme"],
    ),
    "empty-tag-label": ({"train.txt": "EU B-\nrejects O\n"}, ["train.txt:1: the tag 'B-' has an empty label"]),
    "whitespace-tag-label": (
        {"train.txt": "EU\tB- ORG\nrejects\tO\n"},
        ["train.txt:1: the label of the tag 'B- ORG' starts or ends with whitespace. Remove it."],
    ),
    "empty-span-label": (
        {"train.jsonl": [{"text": "Acme rose", "spans": [{"start": 0, "end": 4, "label": ""}]}]},
        ["train.jsonl:1: span 'Acme' [0:4] has the label ''", "non-empty string"],
    ),
    "whitespace-span-label": (
        {"train.jsonl": [{"text": "Acme rose", "label": [[0, 4, "ORG "]]}]},
        ["train.jsonl:1: span 'Acme' [0:4] has the label 'ORG '", "Rename it 'ORG'"],
    ),
    "record-without-text": (
        {"train.jsonl": [{"text": "Acme rose", "label": []}, {"text": "  ", "label": []}]},
        ["train.jsonl:2: the record has no text (\"text\" is '  ')"],
    ),
    "mixed-schemes": (
        {"train.txt": IOBES, "dev.txt": BILOU},
        ["the splits use different tagging schemes (", "train.txt: IOBES", "dev.txt: BILOU)", "Convert them to one"],
    ),
    "bad-column-count": (
        {"train.txt": "EU NNP B-ORG\nrejects O\n"},
        ["train.txt:2: 2 space-separated columns, but line 1 has 3: 'rejects O'. Every token line needs the same"],
    ),
    "one-column": ({"train.txt": "EU\nrejects\n"}, ["train.txt:1: one column ('EU')"]),
    "two-train-files": (
        {"train.txt": GOOD, "train.jsonl": "{}"},
        ["more than one train file (train.jsonl, train.txt)"],
    ),
    "two-dev-files": (
        {"train.txt": GOOD, "dev.txt": GOOD, "valid.txt": GOOD},
        ["more than one dev file (dev.txt, valid.txt)"],
    ),
    "no-train-file": ({"dev.txt": GOOD, "test.txt": GOOD}, ["no training file: expected train.<ext>"]),
    "not-utf8": ({"train.txt": "Br\xfcssel B-LOC\n".encode("latin-1")}, ["train.txt:1: bytes that are not UTF-8"]),
    "all-records-rejected": (
        {"train.jsonl": [{"text": "Acme rose", "spans": [], "answer": "reject"}]},
        ["train.jsonl: no annotated records"],
    ),
    "empty-docbin": ({"train.spacy": b""}, ["train.spacy: not a readable spaCy DocBin"]),
}


@pytest.mark.parametrize(("files", "expected"), list(BAD_DATA.values()), ids=list(BAD_DATA))
def test_bad_data_stops_the_step_with_nothing_written(tmp_path, files, expected):
    data = write_files(tmp_path / "data", files)
    message = failed_convert(data, tmp_path / "corpus", options=SPAN_OPTIONS)
    for part in expected:
        assert part in message


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (CorpusOptions(scheme="BIOLU"), "unknown tagging scheme 'BIOLU'"),
        (CorpusOptions(scheme="IOBES"), "train.txt:1: the tag 'I-X' breaks the IOBES scheme"),
        (CorpusOptions(tag_column=5), "train.txt:1: no column 0 (token) or 5 (tag) in 2 columns"),
    ],
    ids=["unknown-scheme", "forced-scheme", "no-such-column"],
)
def test_bad_options_stop_the_step_with_nothing_written(tmp_path, options, expected):
    data = write_files(tmp_path / "data", {"train.txt": "Name0 I-X\n\n" + columns(*numbered(5))})
    assert expected in failed_convert(data, tmp_path / "corpus", options=options)


def test_text_with_spans_needs_the_tokenizer_config(tmp_path):
    data = write_files(tmp_path / "data", {"train.jsonl": [{"text": "Acme rose", "label": [[0, 4, "ORG"]]}]})
    assert "needs the pipeline's tokenizer: pass the training config" in failed_convert(data, tmp_path / "corpus")


def test_a_docbin_entity_without_label_is_an_error(tmp_path):
    import spacy

    nlp = spacy.blank("en")
    doc = nlp("Acme rose")
    doc.ents = [doc.char_span(0, 4, label=" ")]
    data = tmp_path / "data"
    write_docbin(data / "train.spacy", [doc] * 3)
    message = failed_convert(data, tmp_path / "corpus")
    assert message == f"{data / 'train.spacy'} doc 0: the entity 'Acme' has the label ' '. Give it a label."


@pytest.mark.parametrize(("mode", "entity"), [("expand", (0, 16, "ORG")), ("contract", (0, 4, "ORG"))])
def test_misaligned_spans_snap_to_tokens_when_asked_and_are_counted(tmp_path, mode, entity):
    records = [
        {"text": "Acme Corporation rose", "label": [[0, 6, "ORG"]]},
        {"text": "Paris fell", "label": [[0, 5, "LOC"]]},
    ]
    data = write_files(tmp_path, {f"{split}.jsonl": records for split in SPLITS})
    options = CorpusOptions(tokenizer_config=SPAN_OPTIONS.tokenizer_config, misaligned=Misaligned(mode))
    corpus = build_corpus(data, options=options)
    assert corpus.moved == 3  # one span a split; the aligned one is not counted
    assert [char_view(doc) for doc in corpus.docs["train"]] == [[entity], [(0, 5, "LOC")]]


# --- the command line ---------------------------------------------------------------------------------------


def run_cli(output: Path, data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "scripts.workflow.corpus", str(output), "--data-dir", str(data), *args]
    return subprocess.run(command, cwd=PROJECT_DIR, capture_output=True, text=True, timeout=300)


def test_cli_bad_data_exits_1_without_traceback_and_leaves_the_output(tmp_path):
    data = write_files(tmp_path / "data", {"train.txt": GOOD, "dev.txt": columns("Acme/B-ORG")})
    output = write_files(tmp_path / "corpus", OLD_OUTPUT)
    result = run_cli(output, data)
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    assert f"{data / 'dev.txt'}:1: the label 'ORG' (dev," in flat(result.stdout)
    assert snapshot(output) == OLD_OUTPUT


def test_cli_reports_snapped_spans_and_the_split(tmp_path):
    records = [{"text": f"Acme{i} Corporation rose", "label": [[0, 6 + len(str(i)), "ORG"]]} for i in range(10)]
    data = write_files(tmp_path / "data", {"train.jsonl": records})
    config = str(SPAN_OPTIONS.tokenizer_config)
    result = run_cli(tmp_path / "corpus", data, "--tokenizer-config", config, "--misaligned", "expand")
    output = flat(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "10 character spans expanded to token bounds (misaligned=expand)" in output
    assert f"Split off dev, test from {data / 'train.jsonl'} (seed 0): train 8, dev 1, test 1" in output
    manifest = json.loads((tmp_path / "corpus" / "corpus.json").read_text(encoding="utf-8"))
    assert (manifest["format"], manifest["labels"], manifest["conll2003"]) == ("doccano", ["ORG"], False)
    entities = [
        e.text for split in SPLITS for doc in read_docbin(tmp_path / "corpus" / f"{split}.spacy") for e in doc.ents
    ]
    assert sorted(entities) == [f"Acme{i} Corporation" for i in range(10)]


def test_tags_in_the_first_column_are_named_with_the_columns_to_set(tmp_path):
    """MIT Movie's layout, `B-ACTOR<TAB>steve`: the step says which columns to swap, and reads it once told."""
    movie = "B-ACTOR\tsteve\nI-ACTOR\tmcqueen\nO\tprovided\n\nB-ACTOR\tsandra\nO\tfilms\n"
    data = write_files(tmp_path / "data", {"train.bio": movie, "dev.bio": movie, "test.bio": movie})
    message = failed_convert(data, tmp_path / "out")
    assert message.startswith(f"{data / 'train.bio'}:1: the tags seem to be in the token column (0: 'B-ACTOR')")
    assert "set token_column to -1 and tag_column to 0" in message
    manifest = convert(tmp_path / "out", data, options=CorpusOptions(token_column=1, tag_column=0))
    assert manifest.labels == ["ACTOR"] and manifest.splits["train"].entities == {"ACTOR": 2}
