"""The NER's score rows kept on each Doc for entity_scores: asked for, recorded step by step, taken once."""

from __future__ import annotations

import numpy
import spacy

from scripts.runtime.action_scores import (
    ACTION_SCORES_KEY,
    ActionScoreRecorder,
    request_action_scores,
    take_action_scores,
)
from tests.runtime.conftest import TEXTS, load


class State:
    """A parser state: the recorder knows states only by identity."""


def test_rows_are_recorded_at_each_docs_token_and_taken_once():
    nlp = spacy.blank("en")
    docs = [nlp.make_doc("a b c"), nlp.make_doc("d")]
    states = [State(), State()]
    recorder = ActionScoreRecorder(docs, states, n_moves=2)
    recorder.add(states, numpy.array([[1.0, 2.0], [3.0, 4.0]]))
    recorder.add(states[:1], numpy.array([[5.0, 6.0]]))  # the second Doc's state is final after one step
    recorder.add(states[:1], numpy.array([[7.0, 8.0]]))
    recorder.store()
    assert take_action_scores(docs[0]).tolist() == [[1.0, 2.0], [5.0, 6.0], [7.0, 8.0]]
    assert take_action_scores(docs[1]).tolist() == [[3.0, 4.0]]
    assert take_action_scores(docs[0]) is None and ACTION_SCORES_KEY not in docs[1].user_data


def test_only_an_ner_that_can_keep_rows_is_asked(saved_ner_pipeline):
    greedy = load(saved_ner_pipeline, "torch").get_pipe("ner")
    assert not greedy.keep_action_scores
    assert request_action_scores(greedy) and greedy.keep_action_scores
    assert all(ACTION_SCORES_KEY in doc.user_data for doc in greedy.pipe(greedy_docs(saved_ner_pipeline)))
    spacys = load(saved_ner_pipeline, "torch", batched_inference=False).get_pipe("ner")
    assert not request_action_scores(spacys)


def greedy_docs(path) -> list:
    """Docs with the transformer's output on them, for an NER to decode on its own."""
    nlp = load(path, "torch", batched_inference=False)
    return list(nlp.pipe(TEXTS, disable=["ner"]))
