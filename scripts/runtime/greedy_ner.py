"""The NER's greedy decoding run from Python with the GIL held, keeping the score rows it decoded from."""

from __future__ import annotations

from typing import Any

from spacy.language import Language
from spacy.pipeline import EntityRecognizer
from spacy.tokens import Doc

from . import internals
from .action_scores import ActionScoreRecorder


class GreedyEntityRecognizer(EntityRecognizer):
    """spaCy's EntityRecognizer, whose greedy decoding at inference runs its steps from Python.

    spaCy's own greedy_parse releases the GIL and runs the whole decoding in C. On Python < 3.12,
    spaCy's extensions are compiled with Cython's profiling hooks, and in code that runs without
    the GIL every call of a small state function then takes and releases the GIL twice: the NER
    cost about 12 µs a word, most of it in those locks. Here the same steps run with the GIL held,
    through the parser's own methods (the step model's predict, which the beam search uses, and
    transition_states, which runs the same C transition code): the same scores and the same
    transitions, so the same entities, in 5 µs a word. Training is spaCy's, untouched.
    """

    # Set by a component that reads the action scores (action_scores.request_action_scores): each Doc then gets
    # its steps' score rows.
    keep_action_scores = False

    def predict(self, docs: Any) -> Any:
        from thinc.api import NumpyOps, set_dropout_rate

        if isinstance(docs, Doc):
            docs = [docs]
        if self.cfg["beam_width"] != 1 or not isinstance(self.model.ops, NumpyOps) or not any(len(doc) for doc in docs):
            return super().predict(docs)
        internals.ensure_labels(self, docs)
        set_dropout_rate(self.model, 0.0)
        batch = internals.init_states(self, docs)
        step_model = self.model.predict(docs)
        states = [state for state in batch if not state.is_final()]
        recorder = ActionScoreRecorder(docs, batch, self.moves.n_moves) if self.keep_action_scores else None
        while states:
            scores = step_model.predict(states)
            if recorder is not None:
                recorder.add(states, scores)
            states = internals.step(self, states, scores)
        step_model.clear_memory()
        if recorder is not None:
            recorder.store()
        return batch


# The settings of EntityRecognizer.__init__ that it keeps in its cfg.
ENTITY_RECOGNIZER_SETTINGS = (
    "update_with_oracle_cut_size",
    "beam_width",
    "beam_density",
    "beam_update_prob",
    "multitasks",
    "incorrect_spans_key",
)


def with_greedy_decoding(ner: Any) -> GreedyEntityRecognizer:
    """The same component (vocabulary, model, transition system, settings) as a GreedyEntityRecognizer."""
    settings = {name: ner.cfg[name] for name in ENTITY_RECOGNIZER_SETTINGS if name in ner.cfg}
    greedy = GreedyEntityRecognizer(ner.vocab, ner.model, ner.name, ner.moves, scorer=ner.scorer, **settings)
    greedy.cfg = ner.cfg
    for attribute, value in internals.parser_state(ner).items():
        setattr(greedy, attribute, value)
    return greedy


def install_greedy_decoding(nlp: Language) -> bool:
    """Every NER component of the pipeline (spaCy's EntityRecognizer, greedy) swapped for a GreedyEntityRecognizer.

    The pipeline keeps the same component under the same name, config and weights; only its
    class, a subclass, changes.
    """
    changed = False
    for name, component in internals.pipeline_components(nlp):
        if type(component) is EntityRecognizer and component.cfg.get("beam_width", 1) == 1:
            internals.replace_component(nlp, name, with_greedy_decoding(component))
            changed = True
    return changed
