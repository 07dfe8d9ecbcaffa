"""Writers of every format the corpus step reads, for tests: labelled sentences out, so that reading them back
through scripts.lib.corpus_build can be compared with the CoNLL path.

A sentence is its words and its entities as token spans; span formats get the words joined by single
spaces as their text, with the entities' character offsets in that text. At the end: `failed_convert`,
which checks that a failed corpus step wrote nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from spacy.tokens import Doc, DocBin

from scripts.lib.conll import DOCSTART, CorpusError, read_conll
from scripts.lib.corpus_build import convert
from scripts.lib.tag_schemes import Scheme, spans_to_tags, tags_to_spans

TokenSpan = tuple[int, int, str]
CharSpan = tuple[int, int, str]
# The hub's ClassLabel order, and the order of another mirror (tner/conll2003): an index means nothing without its name.
HF_TAG_NAMES = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
OTHER_TAG_NAMES = ["O", "B-ORG", "B-MISC", "B-PER", "I-PER", "B-LOC", "I-ORG", "I-MISC", "I-LOC"]


@dataclass
class Labelled:
    words: list[str]
    spans: list[TokenSpan]

    @property
    def text(self) -> str:
        return " ".join(self.words)

    def char_spans(self) -> list[CharSpan]:
        starts = [0]
        for word in self.words:
            starts.append(starts[-1] + len(word) + 1)
        return [(starts[start], starts[end] - 1, label) for start, end, label in self.spans]


def read_labelled(path: Path, scheme: Scheme = Scheme.iob2) -> list[list[Labelled]]:
    """Documents of sentences of a column file in `scheme`."""
    return [
        [Labelled(s.words, tags_to_spans(s.tags, scheme, s.origins)) for s in document] for document in read_conll(path)
    ]


def flatten(documents: Iterable[Sequence[Labelled]]) -> list[Labelled]:
    return [sentence for document in documents for sentence in document]


def relabel(documents: list[list[Labelled]], names: dict[str, str]) -> list[list[Labelled]]:
    return [[Labelled(s.words, [(a, b, names[label]) for a, b, label in s.spans]) for s in d] for d in documents]


def write_columns(
    path: Path,
    documents: Sequence[Sequence[Labelled]],
    scheme: Scheme = Scheme.iob2,
    separator: str = " ",
    columns: int = 4,
    docstart: bool = True,
) -> Path:
    """A column file: token, (columns - 2) placeholder columns, tag; a -DOCSTART- line before each document."""
    filler = ["_"] * (columns - 2)
    lines: list[str] = []
    for document in documents:
        if docstart:
            lines += [separator.join([DOCSTART, *filler, "O"]), ""]
        for sentence in document:
            tags = spans_to_tags(sentence.spans, len(sentence.words), scheme)
            lines += [separator.join([word, *filler, tag]) for word, tag in zip(sentence.words, tags, strict=True)]
            lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def write_docbin(path: Path, docs: Sequence[Doc]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    DocBin(docs=docs).to_disk(path)
    return path


def write_jsonl(path: Path, records: Iterable[object]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records), encoding="utf-8")
    return path


def prodigy_tokens(words: Sequence[str]) -> list[dict[str, object]]:
    tokens, start = [], 0
    for i, word in enumerate(words):
        tokens.append({"text": word, "start": start, "end": start + len(word), "id": i, "ws": i < len(words) - 1})
        start += len(word) + 1
    return tokens


def write_spans_jsonl(path: Path, sentences: Sequence[Labelled], tokens: bool = True) -> Path:
    """spaCy/Prodigy JSONL: {"text", "spans"}, with Prodigy's "tokens" when `tokens`."""

    def record(sentence: Labelled) -> dict[str, object]:
        spans = [
            {"start": start, "end": end, "label": label, "token_start": ts, "token_end": te - 1}
            for (start, end, label), (ts, te, _) in zip(sentence.char_spans(), sentence.spans, strict=True)
        ]
        extra = {"tokens": prodigy_tokens(sentence.words)} if tokens else {}
        return {"text": sentence.text, **extra, "spans": spans, "answer": "accept"}

    return write_jsonl(path, map(record, sentences))


def write_doccano(path: Path, sentences: Sequence[Labelled]) -> Path:
    """doccano's sequence-labelling export: {"text", "label": [[start, end, label], ...]}."""
    records = (
        {"id": i, "text": s.text, "label": [list(span) for span in s.char_spans()]} for i, s in enumerate(sentences)
    )
    return write_jsonl(path, records)


def write_label_studio(path: Path, sentences: Sequence[Labelled]) -> Path:
    """Label Studio's JSON export: one task a sentence, its annotation's "labels" results."""

    def result(text: str, start: int, end: int, label: str) -> dict[str, object]:
        value = {"start": start, "end": end, "text": text[start:end], "labels": [label]}
        return {"value": value, "from_name": "label", "to_name": "text", "type": "labels"}

    tasks = [
        {
            "id": i + 1,
            "data": {"text": s.text},
            "annotations": [{"id": i + 1, "result": [result(s.text, *span) for span in s.char_spans()]}],
            "predictions": [],
        }
        for i, s in enumerate(sentences)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(tasks, ensure_ascii=False), encoding="utf-8")
    return path


def write_parquet(
    path: Path,
    sentences: Sequence[Labelled],
    tag_names: Sequence[str] | None = None,
    scheme: Scheme = Scheme.iob2,
) -> Path:
    """A parquet file as `datasets` writes it: tokens and ner_tags, as ClassLabel indices into `tag_names`
    (the features are kept in the file's metadata) or, without tag_names, as tag strings."""
    from datasets import ClassLabel, Dataset, Features, Sequence, Value

    tags = [spans_to_tags(s.spans, len(s.words), scheme) for s in sentences]
    tag_feature = Value("string") if tag_names is None else ClassLabel(names=list(tag_names))
    features = Features({"tokens": Sequence(Value("string")), "ner_tags": Sequence(tag_feature)})
    columns = {
        "tokens": [s.words for s in sentences],
        "ner_tags": tags if tag_names is None else [[list(tag_names).index(t) for t in row] for row in tags],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    Dataset.from_dict(columns, features=features).to_parquet(str(path))
    return path


def read_docbin(path: Path) -> list[Doc]:
    from spacy.vocab import Vocab

    return list(DocBin().from_disk(path).get_docs(Vocab()))


def token_view(doc: Doc) -> tuple[list[str], list[TokenSpan]]:
    """A Doc's words and entities by token: what must survive a round trip exactly."""
    return [t.text for t in doc], [(e.start, e.end, e.label_) for e in doc.ents]


def char_view(doc: Doc) -> list[CharSpan]:
    """A Doc's entities by character: what survives a round trip through text cut by another tokenizer."""
    return [(e.start_char, e.end_char, e.label_) for e in doc.ents]


# --- the corpus step on bad data -----------------------------------------------------------------------

# What a previous run left in the output folder: a failed run must leave it byte for byte.
OLD_OUTPUT = {"train.spacy": b"old train", "dev.spacy": b"old dev", "test.spacy": b"old test", "corpus.json": b"{}"}


def write_files(folder: Path, files: dict[str, str | bytes | list[object]]) -> Path:
    """Files by name: text, bytes, or records for a JSONL file."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        if isinstance(content, list):
            write_jsonl(folder / name, content)
        else:
            (folder / name).write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return folder


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def failed_convert(data_dir: Path, output: Path, **kwargs: Any) -> str:
    """The message of a failed convert, checked to leave an absent output folder absent and an old one as it was."""
    with pytest.raises(CorpusError) as first:
        convert(output, data_dir, **kwargs)
    assert not output.exists()
    write_files(output, OLD_OUTPUT)
    with pytest.raises(CorpusError) as second:
        convert(output, data_dir, **kwargs)
    assert snapshot(output) == OLD_OUTPUT
    assert str(first.value) == str(second.value)
    return str(first.value)
