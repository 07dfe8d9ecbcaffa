"""Tokenization and alignment in numpy: spacy-transformers' own, on windows that overlap."""

from __future__ import annotations

import numpy

from scripts.runtime.wordpieces import align_wordpieces, span_texts, tokenize
from tests.runtime.conftest import HARD_TEXTS, load


def test_the_batched_steps_are_spacy_transformers_steps(saved_ner_pipeline):
    """Span texts, tokenization and alignment, against spacy-transformers' own, on windows that overlap."""
    from spacy_transformers.align import get_alignment_via_offset_mapping
    from spacy_transformers.data_classes import WordpieceBatch
    from spacy_transformers.layers.transformer_model import huggingface_tokenize

    nlp = load(saved_ner_pipeline, "torch")
    model = nlp.get_pipe("transformer").model
    docs = [nlp.make_doc(text) for text in HARD_TEXTS]
    spans = [span for doc_spans in model.attrs["get_spans"](docs) for span in doc_spans]
    assert len(spans) > len(docs)  # the long text is cut into overlapping windows
    texts = span_texts(spans)
    assert texts == [span.text for span in spans]
    expected_encoding = huggingface_tokenize(model.tokenizer, texts)
    expected = WordpieceBatch.from_batch_encoding(expected_encoding)
    wordpieces, offsets = tokenize(model.tokenizer, texts)
    assert wordpieces.strings == expected.strings and wordpieces.lengths == expected.lengths
    for name in ("input_ids", "attention_mask", "token_type_ids"):
        a, b = getattr(wordpieces, name), getattr(expected, name)
        assert a.dtype == b.dtype and numpy.array_equal(a, b), name
    assert numpy.array_equal(offsets, expected_encoding["offset_mapping"])
    align = align_wordpieces(spans, offsets)
    reference = get_alignment_via_offset_mapping(spans, expected_encoding["offset_mapping"])
    assert align.data.dtype == reference.data.dtype and numpy.array_equal(align.data, reference.data)
    assert numpy.array_equal(align.lengths, reference.lengths)
