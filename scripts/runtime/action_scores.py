"""The one link between the encoder backend's greedy NER and the entity_scores component: the NER's score rows.

entity_scores reads each entity's probability from the scores the NER chose its actions from. The
greedy NER (greedy_ner.GreedyEntityRecognizer) can keep those rows on each Doc, so that the NER need
not run again; it does when a reader asks (`request_action_scores`). The rows travel in the Doc's
user_data under ACTION_SCORES_KEY, which only this module spells: a key, not a class, so a pipeline
loaded beside another copy of this code (the project and the installed wheel) still links up.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy
from spacy.tokens import Doc

ACTION_SCORES_KEY = ("en_bert_ner", "ner_action_scores")


@runtime_checkable
class KeepsActionScores(Protocol):
    """An NER that can keep, on each Doc it decodes, the score rows it decoded from (tokens x actions)."""

    keep_action_scores: bool


def request_action_scores(ner: Any) -> bool:
    """Ask `ner` to keep its score rows on each Doc; False if it cannot (then they are computed again)."""
    if isinstance(ner, KeepsActionScores):
        ner.keep_action_scores = True
        return True
    return False


def take_action_scores(doc: Doc) -> numpy.ndarray | None:
    """The score rows the NER kept on `doc`, taken off it; None if it kept none."""
    return doc.user_data.pop(ACTION_SCORES_KEY, None)


def forget_action_scores(doc: Doc) -> None:
    doc.user_data.pop(ACTION_SCORES_KEY, None)


class ActionScoreRecorder:
    """The NER's score rows of one batch, step by step, kept on each Doc for entity_scores.

    Every BILUO action consumes one token, so step t of a Doc scores the actions at its token t.
    doc.user_data[ACTION_SCORES_KEY] gets an array (tokens x actions): the scores the greedy
    decoding chose from, so entity_scores reads the probabilities of the path without running the
    NER again. entity_scores takes the array out of the Doc as it reads it.
    """

    def __init__(self, docs: Sequence[Doc], batch: Sequence[Any], n_moves: int) -> None:
        self.docs = docs
        starts = numpy.cumsum([0] + [len(doc) for doc in docs])
        self.starts = starts[:-1]
        self.start_of = {id(state): int(start) for state, start in zip(batch, self.starts, strict=True)}
        self.rows = numpy.zeros((int(starts[-1]), n_moves), dtype="float32")
        self.step = 0

    def add(self, states: Sequence[Any], scores: Any) -> None:
        targets = numpy.fromiter((self.start_of[id(state)] for state in states), dtype=numpy.int64, count=len(states))
        self.rows[targets + self.step] = scores
        self.step += 1

    def store(self) -> None:
        for doc, start in zip(self.docs, self.starts, strict=True):
            doc.user_data[ACTION_SCORES_KEY] = self.rows[start : start + len(doc)]
