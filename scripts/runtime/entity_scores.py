"""Entity confidence: every entity of the greedy `ner` with a calibrated probability that it is exactly right.

spaCy's transition-based NER decodes greedily and keeps no scores. This component walks the same
trained `ner` along the path it took (the BILUO actions behind `doc.ents`) and reads, at each token,
the probability of the action taken: a softmax over the actions valid there. An entity's raw score
is the product over its tokens (its B, I..., L or its U). Raw scores rank entities well but are
overconfident, so a calibration fitted on the dev split, read as raw text as users pass it (Platt
scaling), maps them to probabilities (scripts.lib.calibration_fit, run by scripts.workflow.train
after training). It is saved in the pipeline folder, and so in the wheel, beside the component.

The ner need not run twice: encoder_backend's greedy NER (on a CPU) keeps the score rows it decoded
from on each Doc when this component asks it to (action_scores.py, the one link between the two), and
those rows along its own path are the ones wanted. Where they are missing (another NER class, a GPU,
or doc.ents changed after the ner) the ner runs again along doc.ents' path (replayed_rows).

Beam search was measured too (docs/entity-scores.md): its summed parse probabilities give most entities
exactly 1.0, as a width-16 beam keeps variants of the last decisions and none of the first ones.

What a user reads, the spaCy way:
- `ent._.score` for each entity of `doc.ents` (None on a doc the component did not score);
- `doc.spans["scored_ents"]`: the entities of `doc.ents` with `attrs["scores"]`, as spancat writes them.
`doc.ents` stay the greedy entities, so F1 does not change; `threshold` (a load option) drops those
scored below it, precision first.

As the pipeline loads, the component checks the spaCy internals it steps the ner with (internals.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy
import srsly
from spacy.attrs import IS_SPACE, SENT_START
from spacy.language import Language
from spacy.tokens import Doc, Span, SpanGroup
from spacy.util import ensure_path, minibatch

from . import internals
from .action_scores import request_action_scores, take_action_scores
from .registration import register_factory

FACTORY = "entity_scores"
SCORED_KEY = "scored_ents"
CALIBRATION_FILE = "calibration.json"
# Raw scores are clipped this far from 0 and 1 before their logit: a product of action probabilities can round to 1.
RAW_SCORE_FLOOR = 1e-9
CALIBRATION_L2 = 1e-4


class EntityScoresError(ValueError):
    """A setting of the component that cannot work: the message names it and the fix."""


def logit(probability: numpy.ndarray) -> numpy.ndarray:
    clipped = numpy.clip(probability, RAW_SCORE_FLOOR, 1 - RAW_SCORE_FLOOR)
    return numpy.log(clipped / (1 - clipped))


class LogisticCalibration:
    """Platt scaling: probability = sigmoid(slope * logit(raw score) + intercept), two numbers fitted on dev.

    Chosen over an isotonic map by measurement (docs/entity-scores.md): on the CPU workflow's model
    both rank alike, and the smooth map transferred from dev to test with the lower calibration error.
    """

    def __init__(self, slope: float, intercept: float) -> None:
        self.slope = float(slope)
        self.intercept = float(intercept)

    @classmethod
    def fit(cls, raw_scores: Sequence[float], correct: Sequence[bool]) -> LogisticCalibration:
        if len(raw_scores) != len(correct) or not len(raw_scores):
            raise EntityScoresError(
                f"Cannot fit a calibration on {len(raw_scores)} scores and {len(correct)} outcomes: "
                "score a dev split that has predicted entities."
            )
        features = numpy.stack([logit(numpy.asarray(raw_scores, dtype="float64")), numpy.ones(len(raw_scores))], 1)
        right = numpy.asarray(correct, dtype=bool)
        # Platt's targets, (N+ + 1) / (N+ + 2) for a right entity and 1 / (N- + 2) for a wrong one, not 1 and 0: on a
        # small dev split that the raw scores happen to separate, 0/1 targets drive the slope to thousands and
        # every score to 0 or 1; with thousands of entities (CoNLL) the targets are within 0.002 of 1 and 0.
        positives, negatives = int(right.sum()), int((~right).sum())
        outcomes = numpy.where(right, (positives + 1) / (positives + 2), 1 / (negatives + 2))
        weights = numpy.array([1.0, 0.0])

        def loss(w: numpy.ndarray) -> float:
            margins = features @ w
            cross_entropy = outcomes * numpy.logaddexp(0, -margins) + (1 - outcomes) * numpy.logaddexp(0, margins)
            return float(cross_entropy.mean() + CALIBRATION_L2 / 2 * w @ w)

        # Newton's method on the log loss, with a little L2 so that a split all right (or all wrong) still converges,
        # and the step halved until the loss falls: a full step from far away overshoots.
        for _ in range(100):
            predicted = 1 / (1 + numpy.exp(-features @ weights))
            gradient = features.T @ (predicted - outcomes) / len(outcomes) + CALIBRATION_L2 * weights
            hessian = (features.T * (predicted * (1 - predicted))) @ features / len(outcomes)
            step = numpy.linalg.solve(hessian + CALIBRATION_L2 * numpy.eye(2), gradient)
            before, scale = loss(weights), 1.0
            while loss(weights - scale * step) > before and scale > 1e-6:
                scale /= 2
            weights = weights - scale * step
            if numpy.abs(scale * step).max() < 1e-10:
                break
        return cls(weights[0], weights[1])

    def __call__(self, raw_scores: Sequence[float]) -> numpy.ndarray:
        raw = numpy.asarray(raw_scores, dtype="float64")
        return 1 / (1 + numpy.exp(-(self.slope * logit(raw) + self.intercept)))

    def to_dict(self) -> dict[str, Any]:
        return {"method": "logistic", "slope": self.slope, "intercept": self.intercept}

    @classmethod
    def from_dict(cls, data: Any, origin: str) -> LogisticCalibration:
        try:
            if data["method"] != "logistic":
                raise ValueError(f"unknown method {data['method']!r}")
            return cls(float(data["slope"]), float(data["intercept"]))
        except (KeyError, TypeError, ValueError) as err:
            raise EntityScoresError(
                f"{origin} is not a calibration written by this component ({err}): fit it again with "
                "scripts.lib.calibration_fit.fit_calibration (`python -m scripts.workflow.train` does after training)."
            ) from None


def score_of(span: Span) -> float | None:
    """`span._.score`: the span's calibrated score, from the doc's scored entities."""
    group = span.doc.spans.get(SCORED_KEY)
    if group is None:
        return None
    for scored, score in zip(group, group.attrs.get("scores", ()), strict=False):
        if (scored.start, scored.end, scored.label) == (span.start, span.end, span.label):
            return float(score)
    return None


if not Span.has_extension("score"):
    Span.set_extension("score", getter=score_of)


class ActionTable:
    """The ner's action columns by kind and label, to mask the actions that are not valid at a token."""

    def __init__(self, ner: Any) -> None:
        names = [ner.moves.get_class_name(i) for i in range(ner.moves.n_moves)]
        self.n_classes = len(names)
        self.index = {name: i for i, name in enumerate(names)}
        self.labels = sorted({name[2:] for name in names if name[:2] in ("B-", "I-", "L-", "U-") and name[2:]})
        self.label_index = {label: i for i, label in enumerate(self.labels)}
        self.begin = numpy.array([self.index[f"B-{label}"] for label in self.labels])
        self.inside = numpy.array([self.index[f"I-{label}"] for label in self.labels])
        self.last = numpy.array([self.index[f"L-{label}"] for label in self.labels])
        self.unit = numpy.array([self.index[f"U-{label}"] for label in self.labels])
        self.outside = self.index["O"]

    def valid(self, open_label: numpy.ndarray, is_space: numpy.ndarray, may_continue: numpy.ndarray) -> numpy.ndarray:
        """Rows of the actions spaCy's BILUO system allows (no preset entities, as at inference).

        open_label: per row, the label index of the entity open before the token, -1 for none.
        """
        rows = numpy.arange(len(open_label))
        mask = numpy.zeros((len(open_label), self.n_classes), dtype=bool)
        inside = open_label >= 0
        mask[rows[inside], self.last[open_label[inside]]] = True
        mask[rows[inside], self.inside[open_label[inside]]] = may_continue[inside]
        outside = ~inside
        mask[outside, self.outside] = True
        mask[numpy.ix_(outside & ~is_space, self.unit)] = True
        mask[numpy.ix_(outside & ~is_space & may_continue, self.begin)] = True
        return mask


def path_arrays(doc: Doc, table: ActionTable) -> tuple[numpy.ndarray, ...]:
    """Per token: the action taken (doc.ents in BILUO), the label left open after it, whitespace, may-continue.

    Read from doc.ents and one to_array call: no Token objects, which cost more than the rest of the component.
    """
    taken = numpy.full(len(doc), table.outside, dtype=numpy.int64)
    open_after = numpy.full(len(doc), -1, dtype=numpy.int64)
    for ent in doc.ents:
        label = table.label_index[ent.label_]
        if len(ent) == 1:
            taken[ent.start] = table.unit[label]
            continue
        taken[ent.start] = table.begin[label]
        taken[ent.start + 1 : ent.end - 1] = table.inside[label]
        taken[ent.end - 1] = table.last[label]
        open_after[ent.start : ent.end - 1] = label
    flags = doc.to_array([IS_SPACE, SENT_START]).reshape(-1, 2)
    is_space = flags[:, 0].astype(bool)
    # An entity may go on past a token when another token follows in the same sentence.
    may_continue = numpy.zeros(len(doc), dtype=bool)
    may_continue[:-1] = flags[1:, 1] != 1
    return taken, open_after, is_space, may_continue


def path_probabilities(
    rows: numpy.ndarray, path: tuple[numpy.ndarray, ...], table: ActionTable, greedy: bool = False
) -> numpy.ndarray | None:
    """Per token of `rows` (the ner's scores, token by token): the probability of the action behind
    `doc.ents` among the actions valid there (a softmax of the scores over them).

    greedy: the rows are the ner's own decoding, which took the best valid action at each token;
    None if at some token that is not the action behind doc.ents (changed after the ner).
    """
    taken, open_after, is_space, may_continue = (values[: len(rows)] for values in path)
    open_label = numpy.concatenate([[-1], open_after[:-1]]).astype(numpy.int64)
    masked = numpy.where(table.valid(open_label, is_space, may_continue), rows, -numpy.inf)
    if greedy and not numpy.array_equal(masked.argmax(axis=1), taken):
        return None
    masked -= masked.max(axis=1, keepdims=True)
    exp = numpy.exp(masked)
    return exp[numpy.arange(len(rows)), taken] / exp.sum(axis=1)


def replayed_rows(
    ner: Any, docs: Sequence[Doc], taken: Sequence[numpy.ndarray], table: ActionTable, ends: Sequence[int]
) -> list[numpy.ndarray]:
    """Per doc: the ner's score rows along the path of `doc.ents` (actions `taken`), token by token up to `ends`.

    The ner runs again on the docs and takes, at each token, the action doc.ents took (a one-hot
    score row per state through spaCy's own transition_states), so the states are those of that path.
    """
    rows = [numpy.zeros((end, table.n_classes), dtype="float32") for end in ends]
    states = internals.init_states(ner, docs)
    model = ner.model.predict(list(docs))
    active = [i for i in range(len(docs)) if ends[i] > 0]
    position = 0
    while active:
        scores = model.predict([states[i] for i in active])
        for row, i in enumerate(active):
            rows[i][position] = scores[row]
        one_hot = numpy.zeros(scores.shape, dtype="float32")
        one_hot[numpy.arange(len(active)), [taken[i][position] for i in active]] = 1.0
        internals.step(ner, [states[i] for i in active], one_hot)
        position += 1
        active = [i for i in active if position < ends[i]]
    model.clear_memory()
    return rows


class EntityScorer:
    """Scores the entities the greedy `ner` set, by its own action probabilities along its path."""

    def __init__(self, nlp: Language, name: str, ner: str, threshold: float, require_calibration: bool) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise EntityScoresError(
                f"components.{name}.threshold is {threshold}: it is a probability, so set it between 0 and 1 "
                "(0 keeps every entity; 0.9 keeps those right about 9 times in 10)."
            )
        self.nlp = nlp
        self.name = name
        self.ner = ner
        self.threshold = threshold
        self.require_calibration = require_calibration
        self.calibration: LogisticCalibration | None = None
        self._table: ActionTable | None = None
        internals.check_internals(name, nlp)

    def check_calibrated(self) -> None:
        if self.calibration is None and (self.require_calibration or self.threshold > 0):
            asked = "threshold" if self.threshold > 0 else "require_calibration"
            raise EntityScoresError(
                f"components.{self.name}.{asked} asks for calibrated scores, but the pipeline's {self.name} "
                "component has no fitted calibration. Use a pipeline trained by `python -m scripts.workflow.train` "
                "(it fits one on dev), fit one with scripts.lib.calibration_fit.fit_calibration, or leave "
                f"{asked} at its default to read raw scores."
            )

    def raw_scores(self, docs: Sequence[Doc]) -> list[list[float]]:
        """Per doc, per entity of doc.ents: the product of its actions' probabilities.

        The score rows come from the ner's own decoding where it kept them (encoder_backend's greedy
        NER, asked to by listen_to_ner), else from running the ner again along doc.ents' path.
        """
        ner = self.nlp.get_pipe(self.ner)
        if self._table is None:
            self._table = ActionTable(ner)
        ends = [max(ent.end for ent in doc.ents) if doc.ents else 0 for doc in docs]
        kept = [take_action_scores(doc) for doc in docs]
        paths = [path_arrays(doc, self._table) if end else None for doc, end in zip(docs, ends, strict=True)]
        probabilities = [
            path_probabilities(rows[:end], path, self._table, greedy=True) if end and rows is not None else None
            for rows, path, end in zip(kept, paths, ends, strict=True)
        ]
        again = [i for i in range(len(docs)) if ends[i] and probabilities[i] is None]
        if again:
            replayed = replayed_rows(
                ner, [docs[i] for i in again], [paths[i][0] for i in again], self._table, [ends[i] for i in again]
            )
            for i, rows in zip(again, replayed, strict=True):
                probabilities[i] = path_probabilities(rows, paths[i], self._table)
        return [
            [float(numpy.prod(probabilities[i][ent.start : ent.end])) for ent in doc.ents] for i, doc in enumerate(docs)
        ]

    def listen_to_ner(self) -> None:
        """Ask the ner to keep its score rows on each Doc, where it can (encoder_backend's greedy NER)."""
        if self.ner in self.nlp.pipe_names:
            request_action_scores(self.nlp.get_pipe(self.ner))

    def probabilities(self, raw: Sequence[float]) -> list[float]:
        if not raw:
            return []
        calibrated = self.calibration(raw) if self.calibration is not None else numpy.asarray(raw)
        return numpy.clip(calibrated, 0.0, 1.0).tolist()

    def set_scores(self, doc: Doc, raw: Sequence[float]) -> None:
        ents, scores = list(doc.ents), self.probabilities(raw)
        if self.threshold > 0:
            kept = [(ent, score) for ent, score in zip(ents, scores, strict=True) if score >= self.threshold]
            ents, scores = [ent for ent, _ in kept], [score for _, score in kept]
            doc.set_ents(ents, default="outside")
        doc.spans[SCORED_KEY] = SpanGroup(doc, name=SCORED_KEY, spans=ents, attrs={"scores": scores})

    def __call__(self, doc: Doc) -> Doc:
        return next(self.pipe([doc]))

    def pipe(self, docs: Iterable[Doc], batch_size: int = 128) -> Iterator[Doc]:
        self.check_calibrated()
        self.listen_to_ner()  # before the first batch: nlp.pipe runs the ner as this loop asks for Docs
        for batch in minibatch(docs, size=batch_size):
            for doc, raw in zip(batch, self.raw_scores(batch), strict=True):
                self.set_scores(doc, raw)
            yield from batch

    def to_disk(self, path: str | Path, *, exclude: Iterable[str] = ()) -> None:
        path = ensure_path(path)
        path.mkdir(parents=True, exist_ok=True)
        if self.calibration is not None:
            srsly.write_json(path / CALIBRATION_FILE, self.calibration.to_dict())

    def from_disk(self, path: str | Path, *, exclude: Iterable[str] = ()) -> EntityScorer:
        file = ensure_path(path) / CALIBRATION_FILE
        self.calibration = LogisticCalibration.from_dict(srsly.read_json(file), str(file)) if file.exists() else None
        self.check_calibrated()
        return self

    def to_bytes(self, *, exclude: Iterable[str] = ()) -> bytes:
        return srsly.msgpack_dumps({"calibration": self.calibration.to_dict() if self.calibration else None})

    def from_bytes(self, data: bytes, *, exclude: Iterable[str] = ()) -> EntityScorer:
        stored = srsly.msgpack_loads(data)["calibration"]
        self.calibration = LogisticCalibration.from_dict(stored, "the serialized component") if stored else None
        self.check_calibrated()
        return self


DEFAULT_CONFIG = {"ner": "ner", "threshold": 0.0, "require_calibration": False}
# What the component declares to spaCy (nlp.analyze_pipes); doc.ents: the entities a threshold drops.
ASSIGNS = ["doc.spans", "span._.score", "doc.ents"]
REQUIRES = ["doc.ents"]


@register_factory(FACTORY, default_config=DEFAULT_CONFIG, assigns=ASSIGNS, requires=REQUIRES)
def make_entity_scorer(nlp: Language, name: str, ner: str, threshold: float, require_calibration: bool) -> EntityScorer:
    return EntityScorer(nlp, name, ner, threshold, require_calibration)
