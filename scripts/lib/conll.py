"""Column files (CoNLL's format) read into sentences of words and tags, and spaCy Docs made from them.

A column file has one token a line, its columns separated by tabs or by spaces, the token in the
first column and its tag in the last (options name other columns); blank lines end sentences, and
`-DOCSTART-` lines (optional) end documents. CoNLL-2003's four-column files are one such layout:
its hub dataset's constants live here too.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from spacy.tokens import Doc, Span
from spacy.vocab import Vocab

from scripts.lib.tag_schemes import Scheme, TagError
from scripts.lib.tag_schemes import tags_to_spans as scheme_spans

SPLITS = ("train", "dev", "test")
HF_DATASET = "eriktks/conll2003"
# The hub's auto-converted parquet branch. Pass a commit hash of that branch
# (--hf-revision / vars.hf_revision) to pin the exact bytes.
HF_REVISION = "refs/convert/parquet"
# HF rows carry no document boundaries; `spacy convert -n 10` groups the same way.
HF_SENTENCES_PER_DOC = 10
DOCSTART = "-DOCSTART-"


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


def tags_to_spans(
    tags: Sequence[str], origins: Sequence[str], scheme: Scheme = Scheme.iob1
) -> list[tuple[int, int, str]]:
    """Entity spans (start, end, label) of one sentence in `scheme`; IOB1, the default, also reads IOB2."""
    try:
        return scheme_spans(tags, scheme, origins)
    except TagError as err:
        raise CorpusError(str(err)) from None


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


def column_separator(lines: Sequence[str]) -> str | None:
    """Tabs when any token line has one (tokens may then hold spaces), else runs of whitespace (None)."""
    return "\t" if any("\t" in line for line in lines) else None


def read_conll(path: Path, token_column: int = 0, tag_column: int = -1) -> list[Document]:
    """Documents of sentences from a column file; tags are checked against the corpus's scheme later."""
    if not path.is_file():
        raise CorpusError(f"{path}: no such file.")
    documents: list[Document] = [[]]
    sentence = Sentence([], [], [])

    def end_sentence() -> None:
        nonlocal sentence
        if sentence.words:
            documents[-1].append(sentence)
        sentence = Sentence([], [], [])

    lines = [line.rstrip("\r") for line in decode_utf8(path).split("\n")]
    separator = column_separator(lines)
    width, width_line = 0, 0
    for number, line in enumerate(lines, start=1):
        if line.startswith(DOCSTART):
            end_sentence()
            documents.append([])
            continue
        if not line.strip():
            end_sentence()
            continue
        columns = line.split(separator)
        origin = f"{path}:{number}"
        if not width:
            width, width_line = len(columns), number
            if width < 2:
                raise CorpusError(
                    f"{origin}: one column ({line!r}). A column file has the token and its tag on each line, "
                    "separated by a tab or spaces, e.g. 'Paris\tB-LOC'."
                )
        if len(columns) != width:
            separated = "tab" if separator else "space"
            raise CorpusError(
                f"{origin}: {len(columns)} {separated}-separated columns, but line {width_line} has {width}: "
                f"{line!r}. Every token line needs the same columns."
            )
        try:
            word, tag = columns[token_column], columns[tag_column]
        except IndexError:
            raise CorpusError(
                f"{origin}: no column {token_column} (token) or {tag_column} (tag) in {width} columns. "
                "Set token_column / tag_column (counted from 0; -1 is the last)."
            ) from None
        if not word:
            raise CorpusError(f"{origin}: the token column is empty: {line!r}. Every token line needs a token.")
        sentence.words.append(word)
        sentence.tags.append(tag.strip())
        sentence.origins.append(origin)
    end_sentence()
    documents = [doc for doc in documents if doc]
    if not documents:
        raise CorpusError(f"{path}: the file holds no sentences. Point at a column file: a token and its tag a line.")
    check_tag_column(documents, token_column, tag_column)
    return documents


def looks_like_tag(value: str) -> bool:
    return value == "O" or (len(value) > 2 and value[0] in "BIESLU" and value[1] == "-")


def check_tag_column(documents: list[Document], token_column: int, tag_column: int) -> None:
    """Stop early, naming the columns to set, when the tags sit in the token column (MIT Movie puts them first)."""
    sentences = [sentence for document in documents for sentence in document][:200]
    tags = [tag for sentence in sentences for tag in sentence.tags]
    words = [word for sentence in sentences for word in sentence.words]
    tag_share = sum(map(looks_like_tag, tags)) / len(tags)
    if tag_share < 0.5 and sum(map(looks_like_tag, words)) / len(words) > 0.9:
        first = sentences[0]
        raise CorpusError(
            f"{first.origins[0]}: the tags seem to be in the token column ({token_column}: {first.words[0]!r}) "
            f"and the tokens in the tag column ({tag_column}: {first.tags[0]!r}). Swap them: set token_column "
            f"to {tag_column} and tag_column to {token_column} (project vars, or --token-column / --tag-column)."
        )


# Docs made here carry, in memory only (DocBins are written without user data), where each entity came
# from, so that a check on the whole corpus (a label that train lacks) can name the file and line.
ENTITY_ORIGINS = "entity_origins"


def entity_origins(doc: Doc) -> list[str]:
    return doc.user_data.get(ENTITY_ORIGINS) or [f"doc {doc[0].text!r}..."] * len(doc.ents)


def make_doc(vocab: Vocab, sentences: Sequence[Sentence], scheme: Scheme = Scheme.iob1) -> Doc:
    """One Doc from one or more sentences: gold words kept, sentence starts set."""
    words = [word for sentence in sentences for word in sentence.words]
    sent_starts = [i == 0 for sentence in sentences for i in range(len(sentence.words))]
    doc = Doc(vocab, words=words, sent_starts=sent_starts)
    entities, origins, offset = [], [], 0
    for sentence in sentences:
        for start, end, label in tags_to_spans(sentence.tags, sentence.origins, scheme):
            entities.append(Span(doc, offset + start, offset + end, label=label))
            origins.append(sentence.origins[start])
        offset += len(sentence.words)
    doc.ents = entities
    doc.user_data[ENTITY_ORIGINS] = origins
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


def make_docs(
    vocab: Vocab,
    documents: Iterable[Document],
    doc_mode: DocMode,
    sentences_per_doc: int = 0,
    scheme: Scheme = Scheme.iob1,
) -> list[Doc]:
    """`sentences_per_doc` > 0 cuts documents into groups of that many sentences (HF source)."""
    return [make_doc(vocab, group, scheme) for group in group_sentences(documents, doc_mode, sentences_per_doc)]


def entity_counts(docs: Iterable[Doc]) -> Counter[str]:
    return Counter(ent.label_ for doc in docs for ent in doc.ents)
