"""Round trips on the real CoNLL-2003: its sentences written out in every format the corpus step reads, then
converted with build_corpus/convert, must give the tokens and entities the CoNLL path gives.

To keep each test to seconds, a round trip's folder holds three real pieces: train <- CoNLL's dev split
(3,250 sentences), dev <- its test split (3,453), test <- the first 500 sentences of its train split.
One test (doccano) writes all three splits whole.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from spacy.tokens import Doc

from scripts.lib.conll import SPLITS, DocMode
from scripts.lib.corpus_build import CorpusOptions, build_corpus, convert, is_conll2003
from scripts.lib.corpus_manifest import CorpusManifest, read_manifest
from scripts.lib.span_records import pipeline_tokenizer
from scripts.lib.tag_schemes import Scheme
from tests.conftest import PROJECT_DIR
from tests.corpus_formats import (
    HF_TAG_NAMES,
    OTHER_TAG_NAMES,
    Labelled,
    char_view,
    flatten,
    read_docbin,
    read_labelled,
    relabel,
    token_view,
    write_columns,
    write_docbin,
    write_doccano,
    write_label_studio,
    write_parquet,
    write_spans_jsonl,
)

TOKENIZER_CONFIG = PROJECT_DIR / "configs" / "minilm_cpu.cfg"
SPAN_OPTIONS = CorpusOptions(tokenizer_config=TOKENIZER_CONFIG)
REAL_FILES = {"train": "train.txt", "dev": "valid.txt", "test": "test.txt"}
TRAIN_HEAD = 500
# Sentences whose words the pipeline's tokenizer cuts otherwise than CoNLL did, once joined by spaces
# ("1.2.3" and the like). configs/*.cfg state the 839 of train; dev has 236, test 252, train's first 500 only 5.
RETOKENIZED = {"train": 839, "dev": 236, "test": 252, "train_head": 5}
# The sample's splits: which real split each holds, and its key in RETOKENIZED.
SAMPLE_OF = {"train": "dev", "dev": "test", "test": "train_head"}


@pytest.fixture(scope="module")
def conll(conll2003_dir: Path) -> dict[str, list[list[Labelled]]]:
    """The real splits as documents of sentences with token spans."""
    return {split: read_labelled(conll2003_dir / name) for split, name in REAL_FILES.items()}


@pytest.fixture(scope="module")
def reference(conll2003_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Doc]]:
    """The CoNLL path: convert of the original folder, read back from its DocBins."""
    output = tmp_path_factory.mktemp("reference")
    convert(output, conll2003_dir)
    return {split: read_docbin(output / f"{split}.spacy") for split in SPLITS}


def sample_documents(conll: dict[str, list[list[Labelled]]]) -> dict[str, list[list[Labelled]]]:
    return {"train": conll["dev"], "dev": conll["test"], "test": [flatten(conll["train"])[:TRAIN_HEAD]]}


def sample_reference(reference: dict[str, list[Doc]]) -> dict[str, list[Doc]]:
    return {"train": reference["dev"], "dev": reference["test"], "test": reference["train"][:TRAIN_HEAD]}


def assert_same(got: Sequence[object], expected: Sequence[object], what: str) -> None:
    """Equal lists, and on failure the first sentence that differs rather than two long lists."""
    first = next((i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b), None)
    assert first is None, f"{what}: sentence {first} differs: {got[first]} != {expected[first]}"
    assert len(got) == len(expected), what


def assert_same_tokens_and_entities(built: dict[str, list[Doc]], expected: dict[str, list[Doc]]) -> None:
    for split in SPLITS:
        assert_same([token_view(d) for d in built[split]], [token_view(d) for d in expected[split]], split)


Writer = Callable[[Path, list[list[Labelled]]], object]


def write_sample(folder: Path, extension: str, write: Writer, conll: dict[str, list[list[Labelled]]]) -> Path:
    for split, documents in sample_documents(conll).items():
        write(folder / f"{split}.{extension}", documents)
    return folder


# --- the CoNLL path itself -----------------------------------------------------------------------


def test_the_real_files_are_conll2003_and_the_manifest_says_so(conll2003_dir, tmp_path):
    manifest = convert(tmp_path, conll2003_dir)
    assert read_manifest(tmp_path) == manifest
    assert (manifest.conll2003, manifest.format, manifest.scheme, manifest.split_seed) == (True, "columns", "IOB2", 0)
    assert manifest.labels == ["PER", "ORG", "LOC", "MISC"]  # CoNLL's own order, not sorted
    assert {split: manifest.splits[split].docs for split in SPLITS} == {"train": 14_041, "dev": 3_250, "test": 3_453}
    assert manifest.splits["dev"].entities == {"PER": 1_842, "ORG": 1_341, "LOC": 1_837, "MISC": 922}
    assert manifest.splits["test"].origin == str(conll2003_dir / "test.txt")


def test_is_conll2003_by_content(conll2003_dir, tmp_path):
    copy = {split: tmp_path / name for split, name in REAL_FILES.items()}
    for split, path in copy.items():
        shutil.copyfile(conll2003_dir / REAL_FILES[split], path)
    assert is_conll2003(copy, ["PER", "ORG", "LOC", "MISC"])  # the same bytes anywhere
    # One label renamed in one file: another data set, which must not get CoNLL-2003's licence and sources.
    copy["test"].write_text(copy["test"].read_text(encoding="utf-8").replace("-MISC", "-OTHER"), encoding="utf-8")
    assert not is_conll2003(copy, ["PER", "ORG", "LOC", "MISC", "OTHER"])


def test_a_relabelled_copy_is_any_labels_and_not_conll2003(conll, reference, tmp_path):
    # The same sentences with other labels: any label set trains, and only CoNLL-2003 itself is CoNLL-2003
    # (its research-only licence and sources go into the package).
    names = {"PER": "PERSON", "ORG": "ORGANIZATION", "LOC": "GPE", "MISC": "NORP"}
    write_sample(tmp_path / "data", "txt", lambda path, docs: write_columns(path, relabel(docs, names)), conll)
    manifest = convert(tmp_path / "corpus", tmp_path / "data")
    assert manifest.conll2003 is False
    assert manifest.labels == ["GPE", "NORP", "ORGANIZATION", "PERSON"]  # other labels sort by name
    assert manifest.splits["train"].entities == {"GPE": 1_837, "NORP": 922, "ORGANIZATION": 1_341, "PERSON": 1_842}
    built = {split: read_docbin(tmp_path / "corpus" / f"{split}.spacy") for split in SPLITS}
    expected = sample_reference(reference)
    for split in SPLITS:
        relabelled = [(w, [(a, b, names[label]) for a, b, label in e]) for w, e in map(token_view, expected[split])]
        assert_same([token_view(d) for d in built[split]], relabelled, split)


# --- column files --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scheme", "separator", "columns"),
    [
        (Scheme.iob1, " ", 4),  # CoNLL-2003's original release
        (Scheme.iob2, "\t", 4),
        (Scheme.iobes, " ", 2),
        (Scheme.bilou, "\t", 2),
        (Scheme.iob2, " ", 2),
        (Scheme.iob1, "\t", 2),
    ],
    ids=["iob1-space-4", "iob2-tab-4", "iobes-space-2", "bilou-tab-2", "iob2-space-2", "iob1-tab-2"],
)
def test_column_files_in_every_scheme_and_layout(conll, reference, tmp_path, scheme, separator, columns):
    def write(path: Path, documents: list[list[Labelled]]) -> None:
        write_columns(path, documents, scheme, separator, columns)

    corpus = build_corpus(write_sample(tmp_path, "txt", write, conll))
    # The scheme is detected from the tags alone; IOB1 is told apart by I- tags that open entities.
    assert corpus.manifest.scheme == scheme.value
    assert corpus.manifest.conll2003 is False
    assert_same_tokens_and_entities(corpus.docs, sample_reference(reference))


def test_document_mode_keeps_the_documents_and_their_sentences(conll, reference, tmp_path):
    write_sample(tmp_path / "data", "txt", lambda path, docs: write_columns(path, docs, Scheme.iob1), conll)
    manifest = convert(tmp_path / "corpus", tmp_path / "data", DocMode.document)
    assert manifest.splits["train"].docs == 216  # CoNLL dev's -DOCSTART- documents
    docs = read_docbin(tmp_path / "corpus" / "train.spacy")
    sentences = [
        ([t.text for t in sent], [(e.start - sent.start, e.end - sent.start, e.label_) for e in sent.ents])
        for doc in docs
        for sent in doc.sents
    ]
    assert_same(sentences, [token_view(d) for d in reference["dev"]], "dev in document mode")


# --- DocBins and spaCy/Prodigy JSONL: the same tokens exactly --------------------------------------


def test_docbins_are_read_as_they_are(reference, tmp_path):
    for split, docs in sample_reference(reference).items():
        write_docbin(tmp_path / "data" / f"{split}.spacy", docs)
    corpus = build_corpus(tmp_path / "data")
    assert (corpus.manifest.format, corpus.manifest.scheme) == ("docbin", "")
    assert_same_tokens_and_entities(corpus.docs, sample_reference(reference))


def test_prodigy_jsonl_with_tokens_keeps_conll_tokens(conll, reference, tmp_path):
    write_sample(tmp_path, "jsonl", lambda path, docs: write_spans_jsonl(path, flatten(docs), tokens=True), conll)
    corpus = build_corpus(tmp_path, options=SPAN_OPTIONS)
    assert corpus.manifest.format == "spans"
    assert_same_tokens_and_entities(corpus.docs, sample_reference(reference))


# --- text without tokens: the pipeline's tokenizer cuts it ----------------------------------------


def assert_tokenizer_round_trip(
    built: dict[str, list[Doc]], expected: dict[str, list[Doc]], retokenized: dict[str, int]
) -> None:
    """Same entities by character everywhere; same tokens wherever the pipeline's tokenizer cuts the text as
    CoNLL did, and the tokenizer's own cuts (counted) where it does not."""
    nlp = pipeline_tokenizer(TOKENIZER_CONFIG)
    for split in SPLITS:
        assert_same([char_view(d) for d in built[split]], [char_view(d) for d in expected[split]], split)
        differ = 0
        for doc, gold in zip(built[split], expected[split], strict=True):
            words = [t.text for t in gold]
            cut = [t.text for t in nlp.make_doc(" ".join(words))]
            assert [t.text for t in doc] == cut
            differ += cut != words
        assert differ == retokenized[split], split


@pytest.mark.parametrize(
    ("extension", "write", "data_format"),
    [
        ("jsonl", lambda path, docs: write_doccano(path, flatten(docs)), "doccano"),
        ("json", lambda path, docs: write_label_studio(path, flatten(docs)), "label-studio"),
        ("jsonl", lambda path, docs: write_spans_jsonl(path, flatten(docs), tokens=False), "spans"),
    ],
    ids=["doccano", "label-studio", "spans-without-tokens"],
)
def test_text_formats_give_the_same_entities(conll, reference, tmp_path, extension, write, data_format):
    corpus = build_corpus(write_sample(tmp_path, extension, write, conll), options=SPAN_OPTIONS)
    assert (corpus.manifest.format, corpus.moved) == (data_format, 0)
    retokenized = {split: RETOKENIZED[of] for split, of in SAMPLE_OF.items()}
    assert_tokenizer_round_trip(corpus.docs, sample_reference(reference), retokenized)


def test_doccano_all_three_splits(conll, reference, tmp_path):
    for split, documents in conll.items():
        write_doccano(tmp_path / "data" / f"{split}.jsonl", flatten(documents))
    manifest = convert(tmp_path / "corpus", tmp_path / "data", options=SPAN_OPTIONS)
    built = {split: read_docbin(tmp_path / "corpus" / f"{split}.spacy") for split in SPLITS}
    assert_tokenizer_round_trip(built, reference, RETOKENIZED)
    assert manifest.splits["train"].entities == {"PER": 6_600, "ORG": 6_321, "LOC": 7_140, "MISC": 3_438}
    # Same data, other format: the manifest says CoNLL-2003 only of CoNLL's own files.
    assert manifest.conll2003 is False


# --- datasets: local parquet ---------------------------------------------------------------------


@pytest.fixture
def datasets_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`datasets` prepares local files in its cache: this test's folder, not the user's ~/.cache."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")
    return tmp_path / "hf_cache"


@pytest.mark.parametrize(
    ("tag_names", "scheme"),
    [(HF_TAG_NAMES, Scheme.iob2), (OTHER_TAG_NAMES, Scheme.iob2), (None, Scheme.iob2), (None, Scheme.bilou)],
    ids=["classlabel-hub-order", "classlabel-other-order", "strings-iob2", "strings-bilou"],
)
def test_parquet_read_through_datasets(conll, reference, tmp_path, datasets_cache, tag_names, scheme):
    def write(path: Path, documents: list[list[Labelled]]) -> None:
        write_parquet(path, flatten(documents), tag_names, scheme)

    corpus = build_corpus(write_sample(tmp_path / "data", "parquet", write, conll))
    assert (corpus.manifest.format, corpus.manifest.scheme) == ("datasets", scheme.value)
    assert_same_tokens_and_entities(corpus.docs, sample_reference(reference))
    shutil.rmtree(datasets_cache, ignore_errors=True)


def test_the_manifest_of_a_round_trip_matches_the_conll_path(conll, reference, tmp_path):
    manifest: CorpusManifest = convert(
        tmp_path / "corpus", write_sample(tmp_path / "data", "txt", write_columns, conll)
    )
    expected = sample_reference(reference)
    for split in SPLITS:
        summary = manifest.splits[split]
        assert summary.docs == len(expected[split])
        assert summary.tokens == sum(len(doc) for doc in expected[split])
        assert summary.origin == str(tmp_path / "data" / f"{split}.txt")
