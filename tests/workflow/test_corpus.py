from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Sequence, Value
from spacy.tokens import Doc, DocBin
from spacy.vocab import Vocab

from scripts.lib.conll import (
    SPLITS,
    CorpusError,
    DocMode,
    make_docs,
    read_conll,
    tags_to_spans,
)
from scripts.lib.corpus_build import convert, find_split_files
from scripts.lib.corpus_manifest import CorpusManifest, read_manifest
from scripts.lib.dataset_source import HF_SPLIT_NAMES
from scripts.lib.scoring import sentence_iob2_tags
from scripts.lib.tag_schemes import Scheme
from tests.conftest import FIXTURE_CONLL_DIR, PROJECT_DIR, flat
from tests.corpus_formats import HF_TAG_NAMES, OTHER_TAG_NAMES

REAL_DOCS = {DocMode.sentence: (14_041, 3_250, 3_453), DocMode.document: (946, 216, 231)}
REAL_ENTITIES = {
    "train": {"PER": 6_600, "LOC": 7_140, "ORG": 6_321, "MISC": 3_438},
    "dev": {"PER": 1_842, "LOC": 1_837, "ORG": 1_341, "MISC": 922},
    "test": {"PER": 1_617, "LOC": 1_668, "ORG": 1_661, "MISC": 702},
}


def write_conll(folder: Path, name: str, text: str | bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def conll_lines(*sentences: list[tuple[str, str]]) -> str:
    return "\n\n".join("\n".join(f"{word} NNP B-NP {tag}" for word, tag in sentence) for sentence in sentences)


def read_split_files(folder: Path) -> dict[str, list]:
    return {split: read_conll(path) for split, path in find_split_files(folder).items()}


def read_docbin(path: Path) -> list[Doc]:
    return list(DocBin().from_disk(path).get_docs(Vocab()))


def entities(doc: Doc) -> list[tuple[str, str]]:
    return [(ent.text, ent.label_) for ent in doc.ents]


# --- tag schemes -------------------------------------------------------------


@pytest.mark.parametrize(
    ("tags", "spans"),
    [
        # IOB2: every entity opens with B-
        (["B-PER", "I-PER", "O", "B-LOC", "B-LOC"], [(0, 2, "PER"), (3, 4, "LOC"), (4, 5, "LOC")]),
        # IOB1: I- opens an entity; B- only splits two adjacent ones of one type
        (["I-PER", "I-PER", "O", "I-LOC", "B-LOC"], [(0, 2, "PER"), (3, 4, "LOC"), (4, 5, "LOC")]),
        (["O", "I-MISC", "I-MISC"], [(1, 3, "MISC")]),
        (["B-ORG", "I-ORG", "I-ORG"], [(0, 3, "ORG")]),
        (["O", "O"], []),
    ],
)
def test_tags_to_spans_reads_iob1_and_iob2(tags, spans):
    assert tags_to_spans(tags, [f"f:{i}" for i in range(len(tags))]) == spans


def test_iob1_and_iob2_files_give_the_same_entities(tmp_path):
    iob1 = conll_lines([("Peter", "I-PER"), ("Blackburn", "I-PER"), ("in", "O"), ("Paris", "I-LOC"), ("Lyon", "B-LOC")])
    iob2 = conll_lines([("Peter", "B-PER"), ("Blackburn", "I-PER"), ("in", "O"), ("Paris", "B-LOC"), ("Lyon", "B-LOC")])
    docs = [
        make_docs(Vocab(), read_conll(write_conll(tmp_path, name, text)), DocMode.sentence)[0]
        for name, text in (("a.txt", iob1), ("b.txt", iob2))
    ]
    expected = [("Peter Blackburn", "PER"), ("Paris", "LOC"), ("Lyon", "LOC")]
    assert entities(docs[0]) == entities(docs[1]) == expected


# --- document modes ----------------------------------------------------------


def test_sentence_and_document_modes_on_the_fixture():
    documents = read_split_files(FIXTURE_CONLL_DIR)
    sentence_docs = make_docs(Vocab(), documents["train"], DocMode.sentence)
    document_docs = make_docs(Vocab(), documents["train"], DocMode.document)
    assert (len(sentence_docs), len(document_docs)) == (40, 4)
    assert all(len(list(doc.sents)) == 10 for doc in document_docs)
    assert [ent.text for doc in sentence_docs for ent in doc.ents] == [
        ent.text for doc in document_docs for ent in doc.ents
    ]
    assert sum(len(doc) for doc in sentence_docs) == sum(len(doc) for doc in document_docs)


def test_documents_keep_gold_tokenization_and_sentence_starts(tmp_path):
    text = "-DOCSTART- -X- -X- O\n\n" + conll_lines(
        [("U.S.", "B-LOC"), ("won't", "O"), ("sign", "O")], [("Fed", "B-ORG"), ("waits", "O")]
    )
    (doc,) = make_docs(Vocab(), read_conll(write_conll(tmp_path, "t.txt", text)), DocMode.document)
    assert [t.text for t in doc] == ["U.S.", "won't", "sign", "Fed", "waits"]
    assert [t.is_sent_start for t in doc] == [True, False, False, True, False]
    assert entities(doc) == [("U.S.", "LOC"), ("Fed", "ORG")]


# --- bad input ---------------------------------------------------------------


def test_any_number_of_columns_and_any_label_is_read(tmp_path):
    # Column files need not have CoNLL's four columns, and labels are whatever the data holds.
    three = "EU NNP B-ORG\nrejects VBZ B-VERB\n"
    (doc,) = make_docs(Vocab(), read_conll(write_conll(tmp_path, "t.txt", three)), DocMode.sentence)
    assert entities(doc) == [("EU", "ORG"), ("rejects", "VERB")]


@pytest.mark.parametrize(
    ("content", "scheme", "expected"),
    [
        ("EU NNP B-NP B-ORG\nrejects VBZ O\n", Scheme.iob1, ["t.txt:2", "3 space-separated columns", "line 1 has 4"]),
        (
            "EU NNP B-NP B-ORG\nrejects VBZ B-VP X-VERB\n",
            Scheme.iob1,
            ["t.txt:2", "'X-VERB' is not an NER tag", "B-PER"],
        ),
        (
            "EU NNP B-NP B-ORG\nUnion NNP I-NP I-LOC\n",
            Scheme.iob2,
            ["t.txt:2", "'I-LOC'", "IOB2", "ORG entity", "t.txt:1", "B-LOC"],
        ),
        ("EU NNP B-NP B-ORG\n\nBr\xfcssel NNP B-NP B-LOC\n".encode("latin-1"), Scheme.iob1, ["t.txt:3", "not UTF-8"]),
        ("", Scheme.iob1, ["t.txt", "no sentences"]),
        ("-DOCSTART- -X- -X- O\n\n", Scheme.iob1, ["t.txt", "no sentences"]),
    ],
)
def test_bad_input_names_file_line_and_fix(tmp_path, content, scheme, expected):
    with pytest.raises(CorpusError) as error:
        make_docs(Vocab(), read_conll(write_conll(tmp_path, "t.txt", content)), DocMode.sentence, scheme=scheme)
    for part in expected:
        assert part in str(error.value)


def test_a_missing_dev_file_is_split_off_and_a_missing_train_file_is_named(tmp_path):
    sentences = [[(f"Name{i}", "B-ORG"), ("says", "O")] for i in range(20)]
    write_conll(tmp_path / "data", "train.txt", conll_lines(*sentences))
    write_conll(tmp_path / "data", "test.txt", conll_lines([("EU", "B-ORG")]))
    manifest = convert(tmp_path / "corpus", tmp_path / "data")
    assert [manifest.splits[split].docs for split in SPLITS] == [18, 2, 1]
    assert manifest.splits["dev"].origin == f"split off {tmp_path / 'data' / 'train.txt'} (seed 0)"
    (tmp_path / "data" / "train.txt").unlink()
    with pytest.raises(CorpusError, match=r"no training file: expected train.<ext>"):
        convert(tmp_path / "other", tmp_path / "data")


def test_original_release_file_names_are_accepted(tmp_path):
    for name in ("eng.train", "eng.testa", "eng.testb"):
        write_conll(tmp_path / "data", name, conll_lines([("EU", "I-ORG"), ("says", "O")]))
    manifest = convert(tmp_path / "corpus", tmp_path / "data")
    assert {split: manifest.splits[split].docs for split in SPLITS} == {"train": 1, "dev": 1, "test": 1}
    assert manifest.splits["dev"].origin == str(tmp_path / "data" / "eng.testa")
    assert manifest.scheme == "IOB1"  # the original release's scheme: I- opens entities


def test_the_same_input_gives_byte_identical_output(tmp_path):
    # The step's outputs are deterministic, so `spacy project run` reruns change nothing downstream.
    for name in ("a", "b"):
        convert(tmp_path / name, FIXTURE_CONLL_DIR)
    files = sorted(path.name for path in (tmp_path / "a").iterdir())
    assert files == ["corpus.json", "dev.spacy", "test.spacy", "train.spacy"]
    assert all((tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes() for name in files)


def test_a_test_label_train_lacks_leaves_no_docbin_behind(tmp_path):
    source, output = tmp_path / "conll", tmp_path / "corpus"
    write_conll(source, "train.txt", conll_lines([("EU", "B-ORG")]))
    write_conll(source, "valid.txt", conll_lines([("EU", "B-ORG")]))
    write_conll(source, "test.txt", "EU NNP B-NP B-XYZ\n")
    with pytest.raises(CorpusError, match="test.txt:1"):
        convert(output, source)
    assert not output.exists() or not any(output.iterdir())


def test_cli_reports_errors_without_traceback(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "scripts.workflow.corpus",
            str(tmp_path / "out"),
            "--data-dir",
            str(tmp_path / "nowhere"),
        ],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "not a folder" in flat(result.stdout) and "Set data_dir" in flat(result.stdout)
    assert "Traceback" not in result.stdout + result.stderr


def test_cli_without_hub_says_how_to_use_local_files(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    result = subprocess.run(
        [sys.executable, "-m", "scripts.workflow.corpus", str(tmp_path / "out")],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 1
    assert "--vars.data_dir" in flat(result.stdout)
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "out").exists()


# --- the Hugging Face path, offline ------------------------------------------


def hf_dataset_dict(conll_dir: Path, tag_names: list[str]) -> DatasetDict:
    """A DatasetDict with the hub's features, built from CoNLL files."""
    features = Features(
        {
            "id": Value("string"),
            "tokens": Sequence(Value("string")),
            "ner_tags": Sequence(ClassLabel(names=tag_names)),
        }
    )
    splits = {}
    for split, documents in read_split_files(conll_dir).items():
        sentences = [sentence for document in documents for sentence in document]
        splits[HF_SPLIT_NAMES[split]] = Dataset.from_dict(
            {
                "id": [str(i) for i in range(len(sentences))],
                "tokens": [s.words for s in sentences],
                "ner_tags": [[tag_names.index(tag) for tag in s.tags] for s in sentences],
            },
            features=features,
        )
    return DatasetDict(splits)


@pytest.mark.parametrize("tag_names", [HF_TAG_NAMES, OTHER_TAG_NAMES], ids=["hf-order", "other-order"])
def test_hf_source_maps_labels_by_name(tmp_path, tag_names):
    hub = convert(tmp_path / "hf", dataset_dict=hf_dataset_dict(FIXTURE_CONLL_DIR, tag_names))
    local = convert(tmp_path / "local", FIXTURE_CONLL_DIR)
    assert (hub.source, hub.format, hub.conll2003) == ("eriktks/conll2003@refs/convert/parquet", "datasets", True)
    assert (local.format, local.conll2003) == ("columns", False)  # the fixture is not CoNLL-2003's bytes
    assert (hub.labels, hub.scheme) == (local.labels, local.scheme) == (["PER", "ORG", "LOC", "MISC"], "IOB2")
    for split in SPLITS:
        hub_split, local_split = hub.splits[split], local.splits[split]
        assert (hub_split.docs, hub_split.tokens, hub_split.entities) == (
            local_split.docs,
            local_split.tokens,
            local_split.entities,
        )
        assert hub_split.origin == f"eriktks/conll2003@refs/convert/parquet [{split}]"
    for split in SPLITS:
        hf_docs, local_docs = (
            read_docbin(tmp_path / "hf" / f"{split}.spacy"),
            read_docbin(tmp_path / "local" / f"{split}.spacy"),
        )
        assert [entities(d) for d in hf_docs] == [entities(d) for d in local_docs]


def test_hf_document_mode_groups_fixed_numbers_of_sentences(tmp_path):
    manifest = convert(
        tmp_path,
        doc_mode=DocMode.document,
        hf_sentences_per_doc=7,
        dataset_dict=hf_dataset_dict(FIXTURE_CONLL_DIR, HF_TAG_NAMES),
    )
    assert [manifest.splits[split].docs for split in SPLITS] == [6, 3, 3]  # ceil(40/7), ceil(20/7), ceil(20/7)
    assert [len(list(doc.sents)) for doc in read_docbin(tmp_path / "dev.spacy")] == [7, 7, 6]


def test_hf_tag_strings_are_read_and_numbers_need_class_labels(tmp_path):
    strings = Dataset.from_dict({"tokens": [["EU", "rejects"]], "ner_tags": [["B-ORG", "O"]]})
    manifest = convert(
        tmp_path / "a", dataset_dict=DatasetDict({"train": strings, "validation": strings, "test": strings})
    )
    assert manifest.splits["test"].entities == {"ORG": 1}
    numbers = Dataset.from_dict({"tokens": [["EU", "rejects"]], "ner_tags": [[3, 0]]})
    with pytest.raises(CorpusError, match="holds numbers without ClassLabel names"):
        convert(tmp_path / "b", dataset_dict=DatasetDict({"train": numbers, "validation": numbers, "test": numbers}))
    assert not (tmp_path / "b").exists()


# --- real data ---------------------------------------------------------------


@pytest.fixture(scope="module", params=list(DocMode), ids=[m.value for m in DocMode])
def real_corpus(
    request: pytest.FixtureRequest, conll2003_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[DocMode, Path, CorpusManifest]:
    output = tmp_path_factory.mktemp(f"corpus_{request.param.value}")
    manifest = convert(output, conll2003_dir, request.param)
    return request.param, output, manifest


def test_real_corpus_counts(real_corpus):
    mode, output, manifest = real_corpus
    assert tuple(manifest.splits[split].docs for split in SPLITS) == REAL_DOCS[mode]
    for split in SPLITS:
        assert manifest.splits[split].entities == REAL_ENTITIES[split]
    assert manifest.splits["train"].tokens == 203_621  # the same tokens in either mode
    assert (manifest.conll2003, manifest.scheme, manifest.labels) == (True, "IOB2", ["PER", "ORG", "LOC", "MISC"])
    assert read_manifest(output) == manifest


def test_real_first_train_doc(real_corpus):
    _, output, _ = real_corpus
    first = read_docbin(output / "train.spacy")[0]
    first_sentence = next(iter(first.sents))
    assert first_sentence.text == "EU rejects German call to boycott British lamb ."
    assert [(e.text, e.label_) for e in first.ents if e.end <= first_sentence.end] == [
        ("EU", "ORG"),
        ("German", "MISC"),
        ("British", "MISC"),
    ]


def test_real_round_trip_every_word_and_tag(real_corpus, conll2003_dir):
    _, output, _ = real_corpus
    for split, name in zip(SPLITS, ("train.txt", "valid.txt", "test.txt"), strict=True):
        source = [(s.words, s.tags) for document in read_conll(conll2003_dir / name) for s in document]
        docs = read_docbin(output / f"{split}.spacy")
        round_trip = [
            ([t.text for t in sent], tags)
            for doc in docs
            for sent, tags in zip(doc.sents, sentence_iob2_tags(doc), strict=True)
        ]
        assert round_trip == source


# --- failures while writing ----------------------------------------------------


def test_unwritable_output_folder_is_reported(tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the output folder should be")
    with pytest.raises(CorpusError, match=r"not_a_folder: could not write the corpus .*writable folder"):
        convert(blocker, FIXTURE_CONLL_DIR)


def test_full_disk_is_reported_and_replaces_no_file_of_the_set(tmp_path, monkeypatch):
    """The disk fills while dev.spacy is written: train.spacy, already whole, must not replace the old one either."""
    convert(tmp_path / "corpus", FIXTURE_CONLL_DIR)
    before = {path.name: path.read_bytes() for path in (tmp_path / "corpus").iterdir()}
    real_to_disk = DocBin.to_disk

    def disk_full_on_dev(self, path):
        if ".dev.spacy" in str(path):
            Path(path).write_bytes(b"half a DocBin")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_to_disk(self, path)

    monkeypatch.setattr(DocBin, "to_disk", disk_full_on_dev)
    with pytest.raises(CorpusError, match=r"the corpus \(No space left on device\); nothing was replaced"):
        convert(tmp_path / "corpus", FIXTURE_CONLL_DIR, DocMode.document)  # other DocBins than before
    assert {path.name: path.read_bytes() for path in (tmp_path / "corpus").iterdir()} == before


def test_cli_rejects_an_unknown_doc_mode_before_reading(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "scripts.workflow.corpus", str(tmp_path / "out"), "--doc-mode", "paragraph"],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "'paragraph' is not one of 'sentence', 'document'" in flat(result.stderr)
    assert not (tmp_path / "out").exists()
