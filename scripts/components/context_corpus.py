"""Document context for training: chunks of whole sentences, and batches of a fixed number of words.

`en_bert_ner.ContextCorpus.v1` reads a DocBin of documents (`doc_mode=document`) and cuts each
document on its sentence boundaries into chunks of at most `max_tokens` tokens, so that the
transformer sees the neighbouring sentences of every sentence it learns from, and no document is
dropped however long it is. `context_tokens` > 0 adds that many tokens on each side of a chunk as
context only: the transformer sees them, the ner is neither trained nor scored on them (their
entity annotation is marked missing). That is the FLERT set-up (Schweter and Akbik, 2020) when
`max_tokens` is 0: one sentence per example, with its neighbours as context. On a DocBin of
sentences (`doc_mode=sentence`) every example is one sentence, as with `spacy.Corpus.v1`.
`gold_preproc`, as in `spacy.Corpus.v1`, chooses the tokens the model learns on: the gold words
(true), or the pipeline tokenizer's cuts of each example's text with the gold entities aligned to
them by characters (false), which is what `nlp(text)` sees.

`en_bert_ner.batch_by_words_sorted.v1` gives every step about `size` words whatever the mode:
sentences of 14 words and chunks of 120 alike. It sorts a buffer by length, as
`spacy.batch_by_padded.v1` does, so that a batch carries little padding, but it counts words, not
padded positions, so that both modes take steps of the same number of words.

Both are registered where they are defined and named by spaCy entry points (pyproject.toml), so
`spacy train` and `spacy debug config` find them without `--code`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from spacy.language import Language
from spacy.tokens import Doc, DocBin, Span
from spacy.training import Example
from spacy.util import minibatch, registry

READER_NAME = "en_bert_ner.ContextCorpus.v1"
BATCHER_NAME = "en_bert_ner.batch_by_words_sorted.v1"
Chunk = tuple[int, int]  # token start and end in the document


class ContextCorpusError(Exception):
    """A setting or input the reader cannot use: the message names it and the fix."""


def sentence_bounds(doc: Doc) -> list[Chunk]:
    """(start, end) of each sentence; a Doc without sentence starts is one sentence."""
    if not doc.has_annotation("SENT_START"):
        return [(0, len(doc))] if len(doc) else []
    return [(sent.start, sent.end) for sent in doc.sents]


def chunk_sentences(sentences: Sequence[Chunk], max_tokens: int) -> list[Chunk]:
    """Consecutive sentences joined into chunks of at most `max_tokens` tokens.

    A sentence longer than `max_tokens` is a chunk by itself, never cut. With `max_tokens` 0
    every sentence is a chunk.
    """
    chunks: list[Chunk] = []
    for start, end in sentences:
        if chunks and end - chunks[-1][0] <= max_tokens:
            chunks[-1] = (chunks[-1][0], end)
        else:
            chunks.append((start, end))
    return chunks


def chunk_example(doc: Doc, chunk: Chunk, context_tokens: int, make_doc: Callable[[str], Doc] | None = None) -> Example:
    """The chunk with up to `context_tokens` tokens on each side whose entities are missing.

    The chunk's text is its words joined by single spaces. Without `make_doc` the predicted side
    holds the gold words, as the gold-words evaluation feeds them; with it (the pipeline's
    tokenizer), the tokens a user's text gets, aligned to the gold by characters.
    """
    start, end = chunk
    first, last = max(0, start - context_tokens), min(len(doc), end + context_tokens)
    words = [token.text for token in doc[first:last]]
    spaces = [bool(token.whitespace_) for token in doc[first:last]]
    spaces[-1] = False  # the text ends with its last word, as a user's does
    starts = [token.is_sent_start is True for token in doc[first:last]]
    starts[0] = True
    reference = Doc(doc.vocab, words=words, spaces=spaces, sent_starts=starts)
    entities = [
        Span(reference, ent.start - first, ent.end - first, label=ent.label_)
        for ent in doc.ents
        if start <= ent.start and ent.end <= end
    ]
    context = [Span(reference, 0, start - first), Span(reference, end - first, last - first)]
    reference.set_ents(entities, missing=[span for span in context if len(span)])
    predicted = Doc(doc.vocab, words=words, spaces=spaces) if make_doc is None else make_doc(reference.text)
    return Example(predicted, reference)


def document_examples(
    doc: Doc, max_tokens: int, context_tokens: int, make_doc: Callable[[str], Doc] | None = None
) -> list[Example]:
    chunks = chunk_sentences(sentence_bounds(doc), max_tokens)
    return [chunk_example(doc, chunk, context_tokens, make_doc) for chunk in chunks]


class ContextCorpus:
    """Examples of chunked documents from a DocBin, read anew at each call (once per epoch)."""

    def __init__(
        self, path: Path, max_tokens: int, context_tokens: int, limit: int = 0, gold_preproc: bool = False
    ) -> None:
        if max_tokens < 0 or context_tokens < 0:
            raise ContextCorpusError(
                f"max_tokens ({max_tokens}) and context_tokens ({context_tokens}) must be 0 or more: "
                "set them in the config's [corpora.train] block."
            )
        self.path, self.max_tokens, self.context_tokens, self.limit = Path(path), max_tokens, context_tokens, limit
        self.gold_preproc = gold_preproc

    def __call__(self, nlp: Language) -> Iterator[Example]:
        if not self.path.is_file():
            raise ContextCorpusError(
                f"{self.path}: no such DocBin. Make it with `spacy project run corpus`, or set paths.train."
            )
        docs = DocBin().from_disk(self.path).get_docs(nlp.vocab)
        # Read when the examples are made: the tokenizer is the one initialisation left on nlp.
        make_doc = None if self.gold_preproc else nlp.make_doc
        for count, doc in enumerate(docs, start=1):
            yield from document_examples(doc, self.max_tokens, self.context_tokens, make_doc)
            if count == self.limit:
                return


@registry.readers(READER_NAME)
def create_context_corpus(
    path: Path, max_tokens: int = 128, context_tokens: int = 0, limit: int = 0, gold_preproc: bool = False
) -> Callable[[Language], Iterable[Example]]:
    """The config's `@readers = "en_bert_ner.ContextCorpus.v1"`.

    gold_preproc as in spacy.Corpus.v1: false (the default) trains on the pipeline's tokenization of
    each chunk's text, what inference sees; true on the gold words.
    """
    return ContextCorpus(path, max_tokens, context_tokens, limit, gold_preproc)


Batcher = Callable[[Iterable[Example]], Iterator[list[Example]]]


def batch_by_words_sorted(items: Iterable[Example], size: int, buffer: int) -> Iterator[list[Example]]:
    """Batches of up to `size` words (an item longer than that alone), length-sorted within each buffer.

    Each buffer's batches come in random order: short and long ones mix over the run.
    """
    for window in minibatch(items, size=buffer):
        batches: list[list[Example]] = []
        words = 0
        for item in sorted(window, key=len):
            if batches and words + len(item) <= size:
                batches[-1].append(item)
                words += len(item)
            else:
                batches.append([item])
                words = len(item)
        random.shuffle(batches)
        yield from batches


@registry.batchers(BATCHER_NAME)
def create_batch_by_words_sorted(size: int, buffer: int = 256) -> Batcher:
    """The config's `@batchers = "en_bert_ner.batch_by_words_sorted.v1"`."""
    if size < 1 or buffer < 1:
        raise ContextCorpusError(
            f"batch_by_words_sorted needs size ({size}) and buffer ({buffer}) of 1 or more: "
            "set them in the config's [training.batcher] block."
        )

    def batch(items: Iterable[Example]) -> Iterator[list[Example]]:
        return batch_by_words_sorted(items, size, buffer)

    return batch
