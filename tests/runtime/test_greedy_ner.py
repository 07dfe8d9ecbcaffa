"""The greedy NER: spaCy's EntityRecognizer with its decoding steps run from Python, the same entities."""

from __future__ import annotations

import spacy

from scripts.runtime.greedy_ner import GreedyEntityRecognizer, install_greedy_decoding, with_greedy_decoding
from tests.runtime.conftest import HARD_TEXTS, entity_lists, load


def test_the_batched_pipeline_decodes_with_the_greedy_ner(saved_ner_pipeline):
    assert type(load(saved_ner_pipeline, "torch").get_pipe("ner")) is GreedyEntityRecognizer
    assert (
        type(load(saved_ner_pipeline, "torch", batched_inference=False).get_pipe("ner"))
        is spacy.pipeline.EntityRecognizer
    )


def test_the_greedy_ner_finds_spacys_entities_with_spacys_settings(saved_ner_pipeline):
    nlp = load(saved_ner_pipeline, "torch", batched_inference=False)
    ner = nlp.get_pipe("ner")
    expected = entity_lists(nlp, HARD_TEXTS * 2)
    greedy = with_greedy_decoding(ner)
    assert greedy.cfg == ner.cfg and greedy.model is ner.model and greedy.moves is ner.moves
    assert install_greedy_decoding(nlp)
    assert nlp.get_pipe("ner") is not ner and type(nlp.get_pipe("ner")) is GreedyEntityRecognizer
    assert nlp.pipe_names == ["transformer", "ner", "encoder_backend"]
    assert entity_lists(nlp, HARD_TEXTS * 2) == expected
    assert not install_greedy_decoding(nlp), "a greedy NER was swapped again"


def test_a_beam_ner_keeps_spacys_class(saved_ner_pipeline):
    nlp = load(saved_ner_pipeline, "torch", batched_inference=False)
    nlp.get_pipe("ner").cfg["beam_width"] = 4
    assert not install_greedy_decoding(nlp)
    assert type(nlp.get_pipe("ner")) is spacy.pipeline.EntityRecognizer
