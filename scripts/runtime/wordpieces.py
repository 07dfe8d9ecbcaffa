"""spacy-transformers' tokenization and alignment of a whole batch at once, in numpy: the same arrays, fewer objects.

At inference spacy-transformers makes a Token object for every token at several steps (span
texts, alignment) and converts every tokenizer output to Python lists; here the same wordpieces and
alignment come from the Rust tokenizer's encodings and the Docs' arrays directly.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from typing import Any

import numpy


def span_texts(spans: Sequence[Any]) -> list[str]:
    """Each span's text, as Span.text gives it, cut from its Doc's text (Span.text makes a Token per token)."""
    texts: list[str] = []
    doc_texts: dict[int, str] = {}
    for span in spans:
        if not len(span):
            texts.append("")
            continue
        doc = span.doc
        text = doc_texts.get(id(doc))
        if text is None:
            text = doc_texts[id(doc)] = doc.text
        texts.append(text[span.start_char : span.end_char])
    return texts


def tokenize(tokenizer: Any, texts: list[str]) -> tuple[Any, numpy.ndarray]:
    """What spacy-transformers' huggingface_tokenize and WordpieceBatch.from_batch_encoding make, and the offsets.

    The same arrays as transformers makes them for that call (padding to the longest text, no
    truncation), but the Rust tokenizer encodes without padding and its encodings are read into
    arrays directly: transformers converts each padded encoding to Python lists and dicts, which cost
    more than the tokenization itself.
    """
    from spacy_transformers.data_classes import WordpieceBatch
    from transformers.tokenization_utils_base import TruncationStrategy
    from transformers.utils import PaddingStrategy

    tokenizer.set_truncation_and_padding(
        PaddingStrategy.DO_NOT_PAD, TruncationStrategy.DO_NOT_TRUNCATE, None, 0, None, None
    )
    encodings = tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=True, is_pretokenized=False)
    if not encodings:
        return WordpieceBatch.empty(), numpy.zeros((0, 0, 2), dtype=numpy.int64)
    rows = len(encodings)
    sizes = numpy.fromiter((len(encoding) for encoding in encodings), dtype=numpy.int64, count=rows)
    width, total = int(sizes.max()), int(sizes.sum())
    real = numpy.arange(width) < sizes[:, None]  # row-major, as the encodings' wordpieces follow one another
    chain = itertools.chain.from_iterable

    def padded(values: Iterable[int], pad: int) -> numpy.ndarray:
        array = numpy.full((rows, width), pad, dtype=numpy.int64)
        array[real] = numpy.fromiter(values, dtype=numpy.int64, count=total)
        return array

    input_ids = padded(chain(encoding.ids for encoding in encodings), tokenizer.pad_token_id)
    offsets = numpy.zeros((rows, width, 2), dtype=numpy.int64)
    flat_offsets = chain(chain(encoding.offsets for encoding in encodings))
    offsets[real] = numpy.fromiter(flat_offsets, dtype=numpy.int64, count=2 * total).reshape(-1, 2)
    token_type_ids = None
    if "token_type_ids" in tokenizer.model_input_names:
        token_type_ids = padded(chain(encoding.type_ids for encoding in encodings), tokenizer.pad_token_type_id)
    pad_token = tokenizer.pad_token
    wordpieces = WordpieceBatch(
        strings=[encoding.tokens + [pad_token] * (width - len(encoding)) for encoding in encodings],
        input_ids=input_ids,
        attention_mask=real.astype(numpy.float32),
        lengths=(input_ids != tokenizer.pad_token_id).sum(axis=1).tolist(),
        token_type_ids=token_type_ids,
    )
    return wordpieces, offsets


def expand_ranges(starts: numpy.ndarray, lengths: numpy.ndarray) -> numpy.ndarray:
    """[starts[0], starts[0] + 1, ..., starts[0] + lengths[0] - 1, starts[1], ...] (the ranges one after another)."""
    total = int(lengths.sum())
    ends = numpy.cumsum(lengths)
    return numpy.arange(total, dtype=numpy.int64) + numpy.repeat(starts - (ends - lengths), lengths)


def align_wordpieces(spans: Sequence[Any], offsets: numpy.ndarray) -> Any:
    """spacy-transformers' get_alignment_via_offset_mapping, for the whole batch at once.

    As there, tokens are numbered Doc after Doc (each Doc's tokens, all of them, in the order of
    its first span); a token aligns to every wordpiece whose characters include one of its own or
    the one character after it (the following token's own characters win); wordpieces are numbered
    over the padded rows; each token's wordpieces are listed once, in order.
    """
    from spacy.attrs import IDX, LENGTH
    from thinc.types import Ragged

    n_rows, row_length = offsets.shape[:2]
    first_token: dict[int, int] = {}  # id(doc) -> number of its first token
    first_char: dict[int, int] = {}  # id(doc) -> its first character in the batch's characters
    token_starts, token_lengths = [], []
    n_tokens = n_chars = 0
    span_start = numpy.zeros(n_rows, dtype=numpy.int64)  # first and one-past-last character of each span
    span_end = numpy.zeros(n_rows, dtype=numpy.int64)
    span_last_token = numpy.zeros(n_rows, dtype=numpy.int64)
    for row, span in enumerate(spans):
        doc = span.doc
        key = id(doc)
        if key not in first_token:
            first_token[key], first_char[key] = n_tokens, n_chars
            extents = doc.to_array([IDX, LENGTH]).astype(numpy.int64).reshape(-1, 2)
            token_starts.append(extents[:, 0] + n_chars)
            token_lengths.append(extents[:, 1])
            n_tokens += len(doc)
            n_chars += int(extents[-1].sum()) + 1 if len(doc) else 0
        if len(span):
            span_start[row] = first_char[key] + span.start_char
            span_end[row] = first_char[key] + span.end_char
            span_last_token[row] = first_token[key] + span.end - 1
    token_of_char = numpy.full(n_chars + 1, -1, dtype=numpy.int64)
    if token_starts:
        starts, lengths = numpy.concatenate(token_starts), numpy.concatenate(token_lengths)
        tokens = numpy.arange(n_tokens, dtype=numpy.int64)
        token_of_char[starts + lengths] = tokens  # the character after each token ...
        token_of_char[expand_ranges(starts, lengths)] = numpy.repeat(tokens, lengths)  # ... unless a token's own
    # Each wordpiece's characters, as characters of the batch.
    wordpiece_starts = offsets[:, :, 0] + span_start[:, None]
    wordpiece_lengths = numpy.maximum(offsets[:, :, 1] - offsets[:, :, 0], 0)
    wordpiece_lengths[span_end == span_start] = 0  # empty spans align to nothing
    chars = expand_ranges(wordpiece_starts.ravel(), wordpiece_lengths.ravel())
    wordpiece_of_char = numpy.repeat(numpy.arange(n_rows * row_length, dtype=numpy.int64), wordpiece_lengths.ravel())
    row_of_char = wordpiece_of_char // max(row_length, 1)
    inside = chars <= span_end[row_of_char]  # a span's text and the one character after it, as in the original
    chars, wordpiece_of_char, row_of_char = chars[inside], wordpiece_of_char[inside], row_of_char[inside]
    token_of = token_of_char[chars]
    # The character after a span is its last token's, whatever follows it in the Doc.
    after = chars == span_end[row_of_char]
    token_of[after] = span_last_token[row_of_char[after]]
    aligned = token_of >= 0
    pairs = numpy.unique(token_of[aligned] * (n_rows * row_length) + wordpiece_of_char[aligned])
    data = (pairs % max(n_rows * row_length, 1)).astype(numpy.int32)
    lengths = numpy.bincount(pairs // max(n_rows * row_length, 1), minlength=n_tokens).astype(numpy.int32)
    return Ragged(data, lengths)
