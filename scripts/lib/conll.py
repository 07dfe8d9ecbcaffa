"""CoNLL-2003 read and written as spaCy DocBins: train.spacy, dev.spacy, test.spacy.

Two sources give the same corpus:
- the Hugging Face dataset `eriktks/conll2003`, read from the hub's parquet
  conversion (datasets >= 4 no longer runs loading scripts, and remote code is
  never trusted);
- a folder with the original four-column files (IOB1 or IOB2).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from spacy.tokens import Doc, DocBin, Span
from spacy.vocab import Vocab

from scripts.lib.atomic import atomic_target

LABELS = ("PER", "ORG", "LOC", "MISC")
SPLITS = ("train", "dev", "test")
# The names HF serves first, then those of the original release (eng.testa is dev).
SPLIT_FILE_NAMES = {
    "train": ("train.txt", "eng.train"),
    "dev": ("valid.txt", "eng.testa"),
    "test": ("test.txt", "eng.testb"),
}
HF_SPLIT_NAMES = {"train": "train", "dev": "validation", "test": "test"}
HF_DATASET = "eriktks/conll2003"
# The hub's auto-converted parquet branch. Pass a commit hash of that branch
# (--hf-revision / vars.hf_revision) to pin the exact bytes.
HF_REVISION = "refs/convert/parquet"
# HF rows carry no document boundaries; `spacy convert -n 10` groups the same way.
HF_SENTENCES_PER_DOC = 10
DOCSTART = "-DOCSTART-"
CONLL_COLUMNS = 4


class CorpusError(Exception):
    """Bad input: the message names the place and the fix."""


class DocMode(str, Enum):
    sentence = "sentence"
    document = "document"


@dataclass
class Sentence:
    words: list[str]
    tags: list[str]
    # Where each token came from, for error messages: "train.txt:17" or "train row 4".
    origins: list[str] = field(default_factory=list)


Document = list[Sentence]


def check_tag(tag: str, origin: str) -> None:
    prefix, _, label = tag.partition("-")
    if tag == "O" or (prefix in ("B", "I") and label in LABELS):
        return
    expected = ", ".join(["O"] + [f"{p}-{lab}" for lab in LABELS for p in "BI"])
    raise CorpusError(f"{origin}: unknown NER tag '{tag}'. Expected one of: {expected}.")


def tags_to_spans(tags: Sequence[str], origins: Sequence[str]) -> list[tuple[int, int, str]]:
    """Entity spans (start, end, label) from IOB1 or IOB2 tags.

    `B-X` always opens an entity. `I-X` continues an open X entity, or opens one
    after `O` or at the start (IOB1, where `B-` only separates two adjacent
    entities of one type). `I-X` right after an entity of another type is
    ambiguous and rejected.
    """
    spans: list[tuple[int, int, str]] = []
    start, label = -1, ""
    for i, tag in enumerate(tags):
        check_tag(tag, origins[i])
        prefix, _, tag_label = tag.partition("-")
        if prefix == "I" and label and tag_label != label:
            raise CorpusError(
                f"{origins[i]}: tag '{tag}' would continue the {label} entity "
                f"opened at {origins[start]}. Start a new entity with 'B-{tag_label}', "
                f"or give the token 'I-{label}'."
            )
        if prefix == "I" and label:
            continue
        if label:
            spans.append((start, i, label))
        start, label = (i, tag_label) if prefix in ("B", "I") else (-1, "")
    if label:
        spans.append((start, len(tags), label))
    return spans


def decode_utf8(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise CorpusError(
            f"{path}:{line}: bytes that are not UTF-8 ({data[err.start : err.start + 4]!r}). "
            "Re-encode the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)."
        ) from None


def read_conll(path: Path) -> list[Document]:
    """Documents of sentences from a four-column CoNLL-2003 file."""
    if not path.is_file():
        raise CorpusError(f"{path}: no such file.")
    documents: list[Document] = [[]]
    sentence = Sentence([], [], [])

    def end_sentence() -> None:
        nonlocal sentence
        if sentence.words:
            tags_to_spans(sentence.tags, sentence.origins)  # validate while the lines are known
            documents[-1].append(sentence)
        sentence = Sentence([], [], [])

    for number, line in enumerate(decode_utf8(path).split("\n"), start=1):
        line = line.rstrip("\r")
        if line.startswith(DOCSTART):
            end_sentence()
            documents.append([])
            continue
        if not line.strip():
            end_sentence()
            continue
        columns = line.split()
        origin = f"{path}:{number}"
        if len(columns) != CONLL_COLUMNS:
            raise CorpusError(
                f"{origin}: expected {CONLL_COLUMNS} space-separated columns "
                f"(word POS chunk NER), found {len(columns)}: {line!r}."
            )
        check_tag(columns[-1], origin)
        sentence.words.append(columns[0])
        sentence.tags.append(columns[-1])
        sentence.origins.append(origin)
    end_sentence()
    documents = [doc for doc in documents if doc]
    if not documents:
        raise CorpusError(f"{path}: the file holds no sentences. Point at a CoNLL-2003 file.")
    return documents


def find_split_file(conll_dir: Path, split: str) -> Path:
    for name in SPLIT_FILE_NAMES[split]:
        if (conll_dir / name).is_file():
            return conll_dir / name
    names = " or ".join(SPLIT_FILE_NAMES[split])
    raise CorpusError(f"{conll_dir}: no {split} file: expected {names} in that folder.")


def read_conll_dir(conll_dir: Path) -> dict[str, list[Document]]:
    if not conll_dir.is_dir():
        raise CorpusError(
            f"{conll_dir}: not a folder. Set conll_dir to the folder that holds train.txt, valid.txt and test.txt."
        )
    return {split: read_conll(find_split_file(conll_dir, split)) for split in SPLITS}


def hf_tag_names(dataset: Any, where: str) -> list[str]:
    try:
        names = list(dataset.features["ner_tags"].feature.names)
    except (KeyError, AttributeError):
        raise CorpusError(
            f"{where}: expected a 'ner_tags' column of ClassLabel names (the features "
            "of eriktks/conll2003); this dataset has other features."
        ) from None
    for name in names:
        check_tag(name, f"{where} ner_tags ClassLabel")
    return names


def read_hf_splits(dataset_dict: Any, dataset_name: str = HF_DATASET) -> dict[str, list[Document]]:
    """Sentences from a `datasets.DatasetDict`, labels mapped by ClassLabel name.

    Mirrors order the labels differently, so an index means nothing without its name.
    All sentences of a split form one document: HF rows carry no boundaries.
    """
    splits: dict[str, list[Document]] = {}
    for split, hf_split in HF_SPLIT_NAMES.items():
        if hf_split not in dataset_dict:
            raise CorpusError(f"{dataset_name}: no '{hf_split}' split (found: {', '.join(dataset_dict)}).")
        dataset = dataset_dict[hf_split]
        names = hf_tag_names(dataset, f"{dataset_name} [{hf_split}]")
        sentences = []
        for row_number, row in enumerate(dataset):
            origin = f"{dataset_name} [{hf_split}] row {row_number}"
            words, tags = list(row["tokens"]), [names[i] for i in row["ner_tags"]]
            if len(words) != len(tags):
                raise CorpusError(f"{origin}: {len(words)} tokens but {len(tags)} ner_tags.")
            if words:
                sentences.append(Sentence(words, tags, [origin] * len(words)))
        if not sentences:
            raise CorpusError(f"{dataset_name} [{hf_split}]: the split is empty.")
        splits[split] = [sentences]
    return splits


def load_hf_dataset(name: str, revision: str) -> Any:
    """The DatasetDict from the hub's parquet conversion; a clear stop when unreachable."""
    import datasets
    from huggingface_hub import HfApi, constants

    try:
        if not constants.HF_HUB_OFFLINE:
            # One quick request: load_dataset alone retries for half a minute when offline.
            HfApi().dataset_info(name, revision=revision, timeout=10)
        return datasets.load_dataset(name, revision=revision)
    except Exception as err:  # hub and datasets raise many types for "cannot reach the hub"
        reason = str(err).splitlines()[0][:200] if str(err) else ""
        raise CorpusError(
            f"Could not load {name} (revision {revision}) from the Hugging Face hub: "
            f"{type(err).__name__}: {reason}\n"
            "Offline? Point at local CoNLL-2003 files instead: "
            "`spacy project run corpus . --vars.conll_dir DIR`, where DIR holds "
            "train.txt, valid.txt and test.txt (or eng.train, eng.testa, eng.testb)."
        ) from None


def make_doc(vocab: Vocab, sentences: Sequence[Sentence]) -> Doc:
    """One Doc from one or more sentences: gold words kept, sentence starts set."""
    words = [word for sentence in sentences for word in sentence.words]
    sent_starts = [i == 0 for sentence in sentences for i in range(len(sentence.words))]
    doc = Doc(vocab, words=words, sent_starts=sent_starts)
    entities, offset = [], 0
    for sentence in sentences:
        for start, end, label in tags_to_spans(sentence.tags, sentence.origins):
            entities.append(Span(doc, offset + start, offset + end, label=label))
        offset += len(sentence.words)
    doc.ents = entities
    return doc


def group_sentences(documents: Iterable[Document], doc_mode: DocMode, sentences_per_doc: int) -> list[list[Sentence]]:
    """The sentences that make up each output Doc."""
    if doc_mode == DocMode.sentence:
        return [[sentence] for document in documents for sentence in document]
    groups = []
    for document in documents:
        step = sentences_per_doc if sentences_per_doc > 0 else len(document)
        groups.extend(document[i : i + step] for i in range(0, len(document), step))
    return groups


def make_docs(vocab: Vocab, documents: Iterable[Document], doc_mode: DocMode, sentences_per_doc: int = 0) -> list[Doc]:
    """`sentences_per_doc` > 0 cuts documents into groups of that many sentences (HF source)."""
    return [make_doc(vocab, group) for group in group_sentences(documents, doc_mode, sentences_per_doc)]


def write_docbin(docs: Sequence[Doc], path: Path) -> None:
    """Write through a temp file and rename, so a killed run leaves no partial DocBin."""
    try:
        with atomic_target(path) as tmp:
            DocBin(docs=docs, store_user_data=False).to_disk(tmp)
    except OSError as err:
        raise CorpusError(
            f"{path}: could not write the DocBin ({err.strerror or err}). "
            "Free some disk space, or point the output at a writable folder."
        ) from None


def summarize(docs: Sequence[Doc]) -> dict[str, int]:
    labels = Counter(ent.label_ for doc in docs for ent in doc.ents)
    return {"docs": len(docs), "tokens": sum(len(doc) for doc in docs), **{label: labels[label] for label in LABELS}}


def convert(
    output_dir: Path,
    conll_dir: Path | None = None,
    doc_mode: DocMode = DocMode.sentence,
    hf_dataset: str = HF_DATASET,
    hf_revision: str = HF_REVISION,
    hf_sentences_per_doc: int = HF_SENTENCES_PER_DOC,
    dataset_dict: Any = None,
) -> dict[str, dict[str, int]]:
    """Read every split, then write all DocBins; returns the per-split summary.

    `dataset_dict` stands in for the hub download (tests, or a dataset already in memory).
    """
    doc_mode = DocMode(doc_mode)
    if conll_dir is not None:
        splits, per_doc = read_conll_dir(conll_dir), 0
    else:
        if dataset_dict is None:
            dataset_dict = load_hf_dataset(hf_dataset, hf_revision)
        splits, per_doc = read_hf_splits(dataset_dict, hf_dataset), hf_sentences_per_doc
    vocab = Vocab()
    docs = {split: make_docs(vocab, documents, doc_mode, per_doc) for split, documents in splits.items()}
    for split, split_docs in docs.items():
        write_docbin(split_docs, output_dir / f"{split}.spacy")
    return {split: summarize(split_docs) for split, split_docs in docs.items()}
