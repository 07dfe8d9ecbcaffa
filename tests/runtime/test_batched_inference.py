"""Batched inference: spacy-transformers' inference in encoder calls sorted by length, the same entities."""

from __future__ import annotations

import copy

import numpy
import pytest
import spacy
import torch

from scripts.runtime.batched_inference import BATCH_KEY, BatchPlace, encoder_calls
from tests.runtime.conftest import HARD_TEXTS, TEXTS, encoder, entity_lists, load


@pytest.mark.parametrize("backend", ["torch", "onnx", "onnx-int8"])
def test_batched_inference_finds_the_entities_of_spacy_transformers(saved_ner_pipeline, backend):
    unbatched = load(saved_ner_pipeline, backend, batched_inference=False)
    batched = load(saved_ner_pipeline, backend)
    assert batched.get_pipe("encoder_backend").batched and not unbatched.get_pipe("encoder_backend").batched
    texts = HARD_TEXTS * 3
    expected = entity_lists(unbatched, texts)
    assert sum(map(len, expected)) > 20, "the random NER finds too few entities for the comparison to mean much"
    assert entity_lists(batched, texts) == expected
    assert [entity_lists(batched, [text])[0] for text in HARD_TEXTS] == expected[: len(HARD_TEXTS)]  # nlp(text) too


def test_kept_trf_data_is_spacy_transformers_own(saved_ner_pipeline):
    """keep_trf_data: every Doc's wordpieces, alignment and encoder output as spacy-transformers sets them.

    With the encoder in one call a batch (encoder_batch_wordpieces 0), as spacy-transformers calls it.
    """
    expected = list(load(saved_ner_pipeline, "torch", batched_inference=False).pipe(HARD_TEXTS))
    got = list(load(saved_ner_pipeline, "torch", keep_trf_data=True, encoder_batch_wordpieces=0).pipe(HARD_TEXTS))
    for a, b in zip(expected, got, strict=True):
        x, y = a._.trf_data, b._.trf_data
        assert x.wordpieces.strings == y.wordpieces.strings and x.wordpieces.lengths == y.wordpieces.lengths
        for name in ("input_ids", "attention_mask"):
            assert numpy.array_equal(getattr(x.wordpieces, name), getattr(y.wordpieces, name)), name
        assert numpy.array_equal(x.align.data, y.align.data) and numpy.array_equal(x.align.lengths, y.align.lengths)
        assert list(x.model_output.keys()) == list(y.model_output.keys())
        for name in x.model_output.keys():
            assert numpy.array_equal(x.model_output[name], y.model_output[name]), name


def test_encoder_calls_take_sorted_rows_within_the_budget():
    lengths = [5, 1, 9, 3, 3, 20, 2]
    calls = encoder_calls(lengths, 10)
    assert sorted(int(row) for rows in calls for row in rows) == list(range(len(lengths)))
    in_order = [lengths[row] for rows in calls for row in rows]
    assert in_order == sorted(lengths)
    for rows in calls:  # within the budget, or a row alone that is longer than it
        assert len(rows) == 1 or max(lengths[row] for row in rows) * len(rows) <= 10
    assert [len(rows) for rows in calls] == [3, 2, 1, 1]
    assert encoder_calls([], 10) == []


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_the_encoder_in_calls_gives_the_output_of_one_call(saved_ner_pipeline, backend):
    """Calls of at most 16 padded wordpieces: each Doc's output (its wordpieces' rows) as from one call."""
    one_call = list(load(saved_ner_pipeline, backend, keep_trf_data=True, encoder_batch_wordpieces=0).pipe(HARD_TEXTS))
    nlp = load(saved_ner_pipeline, backend, keep_trf_data=True, encoder_batch_wordpieces=16)
    calls = []
    encoder_module = type(encoder(nlp))
    original = encoder_module.forward
    try:
        encoder_module.forward = lambda self, **inputs: (
            calls.append(inputs["input_ids"].shape) or original(self, **inputs)
        )
        in_calls = list(nlp.pipe(HARD_TEXTS))
    finally:
        encoder_module.forward = original
    assert len(calls) > len(HARD_TEXTS) // 2 and all(rows == 1 or rows * width <= 16 for rows, width in calls)
    for a, b in zip(one_call, in_calls, strict=True):
        x, y = a._.trf_data, b._.trf_data
        assert x.wordpieces.strings == y.wordpieces.strings
        assert list(x.model_output.keys()) == list(y.model_output.keys())
        if not y.model_output:  # a Doc without wordpieces (whitespace only)
            continue
        real = y.wordpieces.attention_mask.astype(bool)
        hidden_x, hidden_y = x.model_output.last_hidden_state, y.model_output.last_hidden_state
        assert hidden_x.shape == hidden_y.shape
        numpy.testing.assert_allclose(hidden_y[real], hidden_x[real], atol=1e-5)
        numpy.testing.assert_allclose(y.model_output.pooler_output, x.model_output.pooler_output, atol=1e-5)
    assert entity_lists(nlp, HARD_TEXTS * 3) == entity_lists(load(saved_ner_pipeline, backend), HARD_TEXTS * 3)


def test_a_doc_holding_its_batch_place_serializes_without_it(saved_ner_pipeline):
    """Before encoder_backend releases it (here: disabled), the place travels as None in bytes, pickles and DocBins."""
    from spacy.tokens import Doc, DocBin

    nlp = load(saved_ner_pipeline, "torch")
    doc = next(nlp.pipe(TEXTS[:1], disable=["encoder_backend"]))
    place = doc.user_data[BATCH_KEY]
    assert isinstance(place, BatchPlace)
    assert doc.copy().user_data[BATCH_KEY] is place  # a copy shares the batch
    assert copy.deepcopy(doc).user_data[BATCH_KEY] is None  # deepcopy pickles the Doc
    again = Doc(nlp.vocab).from_bytes(doc.to_bytes())
    assert again.user_data[BATCH_KEY] is None
    docbin = DocBin(store_user_data=True, docs=[doc])
    (loaded,) = DocBin().from_bytes(docbin.to_bytes()).get_docs(nlp.vocab)
    assert loaded.user_data[BATCH_KEY] is None
    # Without its batch, the NER reads doc._.trf_data, as spacy-transformers does (none here: zero vectors).
    assert nlp.get_pipe("ner")(again) is again


def test_training_goes_through_spacy_transformers(saved_ner_pipeline):
    """The batched steps are inference only: an update of a loaded pipeline learns as before."""
    from spacy.training import Example

    batched, unbatched = load(saved_ner_pipeline, "torch"), load(saved_ner_pipeline, "torch", batched_inference=False)
    losses = []
    for nlp in (batched, unbatched):
        doc = nlp.make_doc("Angela Merkel met Emmanuel Macron in Paris .")
        example = Example.from_dict(doc, {"entities": [(0, 13, "PER"), (18, 33, "PER"), (37, 42, "LOC")]})
        torch.manual_seed(0)
        losses.append(nlp.update([example], sgd=None, drop=0.0))
    assert losses[0]["ner"] == pytest.approx(losses[1]["ner"]) and losses[0]["ner"] > 0


def test_a_pipeline_saved_after_batched_inference_is_spacy_transformers_own(saved_ner_pipeline, tmp_path):
    """The batched steps live in the loaded objects only: what to_disk writes loads and runs unbatched, unchanged."""
    nlp = load(saved_ner_pipeline, "torch")
    expected = entity_lists(nlp, HARD_TEXTS)
    nlp.to_disk(tmp_path / "again")
    again = spacy.load(tmp_path / "again", config={"components.encoder_backend.batched_inference": False})
    assert type(again.get_pipe("ner")) is spacy.pipeline.EntityRecognizer
    assert entity_lists(again, HARD_TEXTS) == expected
