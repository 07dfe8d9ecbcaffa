"""Entity scores on the workflow's trained pipeline: probabilities, the greedy entities kept, calibration saved."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy
import pytest
import spacy

import scripts.runtime.entity_scores as entity_scores_module
from scripts.benchmarks.harness import sentence_texts
from scripts.runtime.action_scores import ACTION_SCORES_KEY
from scripts.runtime.entity_scores import (
    CALIBRATION_FILE,
    SCORED_KEY,
    ActionTable,
    EntityScoresError,
    LogisticCalibration,
    path_arrays,
    path_probabilities,
)
from tests.conftest import PACKAGE

# Test sentences scored in each test: enough for entities of every type on the short-trained pipeline.
SENTENCES = 300
# int8 moves the encoder's output a little: an entity's score may move by this much, not more.
INT8_SCORE_TOLERANCE = 0.15


# Another load, another process or another batch may add float noise (BLAS and torch's threads sum in
# another order): scores agree to this, entities exactly.
SCORE_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def texts(workflow) -> list[str]:
    return sentence_texts(workflow.project / "corpus" / "test.spacy", SENTENCES)


def scored(nlp, texts: list[str], **pipe_settings) -> list[list[tuple[int, int, str, float | None]]]:
    return [
        [(ent.start, ent.end, ent.label_, ent._.score) for ent in doc.ents] for doc in nlp.pipe(texts, **pipe_settings)
    ]


def entities(rows: list[list[tuple]]) -> list[list[tuple[int, int, str]]]:
    return [[row[:3] for row in doc] for doc in rows]


def scores(rows: list[list[tuple]]) -> numpy.ndarray:
    return numpy.array([row[3] for doc in rows for row in doc], dtype=float)


def assert_same_scored(actual: list[list[tuple]], expected: list[list[tuple]]) -> None:
    assert entities(actual) == entities(expected)
    assert numpy.abs(scores(actual) - scores(expected)).max(initial=0.0) <= SCORE_TOLERANCE


@pytest.fixture(scope="module")
def with_scores(workflow, texts) -> list[list[tuple]]:
    return scored(spacy.load(workflow.model_best), texts)


def test_every_entity_has_a_probability_and_the_entities_are_the_greedy_ones(workflow, texts, with_scores):
    without = scored(spacy.load(workflow.model_best, exclude=["entity_scores"]), texts)
    assert entities(with_scores) == entities(without)
    values = scores(with_scores)
    assert len(values) >= 20, "too few entities to say anything"
    assert numpy.all((values >= 0) & (values <= 1))
    assert len(set(values.round(6))) > 1, "every entity got the same score"


def test_scores_are_in_doc_spans_as_spancat_writes_them(workflow):
    nlp = spacy.load(workflow.model_best)
    doc = next(doc for doc in nlp.pipe(sentence_texts(workflow.project / "corpus" / "test.spacy", 50)) if doc.ents)
    group = doc.spans[SCORED_KEY]
    assert [(s.start, s.end, s.label_) for s in group] == [(e.start, e.end, e.label_) for e in doc.ents]
    assert group.attrs["scores"] == [ent._.score for ent in doc.ents]


def test_the_scores_come_from_the_ners_own_decoding_and_equal_a_replay(workflow, texts, with_scores, monkeypatch):
    """On the CPU the greedy NER keeps its score rows for entity_scores: the ner runs once, and the scores are
    those of running it again along doc.ents' path (the way taken without kept rows)."""
    replays = []
    replayed_rows = entity_scores_module.replayed_rows
    monkeypatch.setattr(
        entity_scores_module, "replayed_rows", lambda *args: replays.append(len(args[1])) or replayed_rows(*args)
    )
    nlp = spacy.load(workflow.model_best, config={"components.encoder_backend.keep_trf_data": True})
    docs = list(nlp.pipe(texts))
    assert replays == [], "the ner ran again although it kept its score rows"
    assert not any(ACTION_SCORES_KEY in doc.user_data for doc in docs), "the score rows stayed on the Docs"
    assert_same_scored([[(e.start, e.end, e.label_, e._.score) for e in doc.ents] for doc in docs], with_scores)
    # Without kept rows (the Docs made with entity_scores off; encoder_backend drops what the ner kept), the
    # component runs the ner again, from doc._.trf_data.
    unscored = list(nlp.pipe(texts, disable=["entity_scores"]))
    assert not any(ACTION_SCORES_KEY in doc.user_data for doc in unscored)
    rescored = list(nlp.get_pipe("entity_scores").pipe(unscored))
    assert sum(replays) == sum(1 for doc in unscored if doc.ents)
    assert_same_scored([[(e.start, e.end, e.label_, e._.score) for e in doc.ents] for doc in rescored], with_scores)


def test_kept_rows_of_another_path_are_not_used(workflow, texts):
    """Rows whose best valid actions are not doc.ents' path (entities changed after the ner) give no probabilities."""
    nlp = spacy.load(workflow.model_best)
    ner = nlp.get_pipe("ner")
    table = ActionTable(ner)
    doc = next(doc for doc in nlp.pipe(texts, disable=["entity_scores"]) if doc.ents)
    path = path_arrays(doc, table)
    rows = numpy.full((len(doc), table.n_classes), -5.0, dtype="float32")
    rows[numpy.arange(len(doc)), path[0]] = 3.0  # the path's action is the best at every token
    probabilities = path_probabilities(rows, path, table, greedy=True)
    assert probabilities is not None and numpy.all((probabilities > 0.5) & (probabilities <= 1.0))
    first = doc.ents[0].start
    rows[first, path[0][first]] = -10.0  # another valid action is now the best at the first entity's start
    assert path_probabilities(rows, path, table, greedy=True) is None
    replayed = path_probabilities(rows, path, table)  # rows of a replay: the taken action's probability all the same
    assert replayed is not None and replayed[first] < 0.01


def test_the_calibration_is_fitted_after_training_and_survives_saving(workflow, texts, with_scores, tmp_path):
    assert (workflow.model_best / "entity_scores" / CALIBRATION_FILE).is_file()
    nlp = spacy.load(workflow.model_best)
    assert nlp.get_pipe("entity_scores").calibration is not None
    nlp.to_disk(tmp_path / "copy")
    assert_same_scored(scored(spacy.load(tmp_path / "copy"), texts), with_scores)
    reloaded = spacy.load(workflow.model_best)
    reloaded.get_pipe("entity_scores").from_bytes(nlp.get_pipe("entity_scores").to_bytes())
    assert_same_scored(scored(reloaded, texts), with_scores)


def test_the_threshold_keeps_the_entities_scored_at_or_above_it(workflow, texts, with_scores):
    # Halfway between two neighbouring scores near the median, so float noise cannot move an entity across it.
    distinct = numpy.unique(scores(with_scores))
    middle = len(distinct) // 2
    threshold = float(distinct[middle - 1] + distinct[middle]) / 2
    nlp = spacy.load(workflow.model_best, config={"components.entity_scores.threshold": threshold})
    kept = scored(nlp, texts)
    expected = [[row for row in doc if row[3] >= threshold] for doc in with_scores]
    assert_same_scored(kept, expected)
    assert 0 < sum(map(len, kept)) < sum(map(len, with_scores))


def test_two_processes_give_the_same_scores(workflow, texts, with_scores):
    assert_same_scored(scored(spacy.load(workflow.model_best), texts, n_process=2, batch_size=50), with_scores)


@pytest.mark.parametrize("backend", ["onnx", "torch-int8", "onnx-int8"])
def test_every_backend_scores_the_entities(workflow, texts, with_scores, backend, onnx_graph_cache):
    nlp = spacy.load(workflow.model_best, config={"components.encoder_backend.backend": backend})
    rows = scored(nlp, texts)
    if backend == "onnx":
        assert entities(rows) == entities(with_scores)
        assert numpy.allclose(scores(rows), scores(with_scores), atol=1e-3)
        return
    # int8: the entities may differ a little; the scores of the shared ones stay close.
    ours = {(i, *row[:3]): row[3] for i, doc in enumerate(with_scores) for row in doc}
    theirs = {(i, *row[:3]): row[3] for i, doc in enumerate(rows) for row in doc}
    shared = ours.keys() & theirs.keys()
    assert len(shared) >= 0.9 * len(ours)
    assert max(abs(ours[key] - theirs[key]) for key in shared) <= INT8_SCORE_TOLERANCE


def test_the_installed_wheel_scores_with_its_calibration(installed_model, texts, with_scores):
    nlp = spacy.load(installed_model)
    assert installed_model == PACKAGE and nlp.get_pipe("entity_scores").calibration is not None
    assert_same_scored(scored(nlp, texts), with_scores)


@pytest.mark.parametrize("threshold", [-0.1, 1.5])
def test_a_threshold_outside_0_1_is_refused_with_the_setting_named(workflow, threshold):
    with pytest.raises(EntityScoresError, match=r"components\.entity_scores\.threshold is .* between 0 and 1"):
        spacy.load(workflow.model_best, config={"components.entity_scores.threshold": threshold})


def test_a_threshold_without_a_fitted_calibration_is_refused(workflow, tmp_path):
    uncalibrated = shutil.copytree(workflow.model_best, tmp_path / "model")
    (uncalibrated / "entity_scores" / CALIBRATION_FILE).unlink()
    spacy.load(uncalibrated)  # raw scores: allowed
    with pytest.raises(EntityScoresError, match="no fitted calibration"):
        spacy.load(uncalibrated, config={"components.entity_scores.threshold": 0.9})
    with pytest.raises(EntityScoresError, match="no fitted calibration"):
        spacy.load(uncalibrated, config={"components.entity_scores.require_calibration": True})


def test_a_damaged_calibration_file_names_itself(workflow, tmp_path):
    damaged = shutil.copytree(workflow.model_best, tmp_path / "model")
    calibration_file = damaged / "entity_scores" / CALIBRATION_FILE
    calibration_file.write_text('{"method": "logistic", "slope": 1.0}')
    with pytest.raises(EntityScoresError, match=str(calibration_file)):
        spacy.load(damaged)


def test_the_calibration_learns_how_overconfident_the_raw_scores_are():
    rng = numpy.random.default_rng(0)
    raw = rng.uniform(0.5, 1.0, 4000)
    # Right with probability raw ** 3: the raw scores are overconfident.
    correct = rng.uniform(size=raw.size) < raw**3
    calibration = LogisticCalibration.fit(raw, correct)
    mapped = calibration(raw)
    assert abs(mapped.mean() - correct.mean()) < 0.01
    for low, high in [(0.5, 0.7), (0.9, 1.0)]:
        inside = (raw >= low) & (raw < high)
        assert abs(mapped[inside].mean() - correct[inside].mean()) < 0.03
    ordered = calibration(numpy.linspace(0, 1, 21))
    assert numpy.all(numpy.diff(ordered) >= 0) and ordered.min() >= 0 and ordered.max() <= 1


def test_a_calibration_on_outcomes_all_right_still_converges():
    calibration = LogisticCalibration.fit([0.9, 0.95, 0.99], [True, True, True])
    assert numpy.isfinite([calibration.slope, calibration.intercept]).all()
    # Three right of three is evidence for about 4 in 5 (Platt's targets), not for certainty.
    assert calibration([0.99])[0] == pytest.approx(0.8, abs=0.02)


def test_a_small_dev_split_the_raw_scores_separate_gives_scores_short_of_0_and_1():
    """An overconfident model, a small dev split: 0/1 targets gave WNUT-16 a slope of 20,181, every score 0 or 1."""
    raw = [1 - 1e-12] * 40 + [0.999] * 10 + [0.99] * 5 + [0.6] * 5
    correct = [True] * 50 + [False] * 10
    calibration = LogisticCalibration.fit(raw, correct)
    scores = calibration(numpy.array([1 - 1e-12, 0.6]))
    assert calibration.slope < 100
    assert 0.9 < scores[0] < 0.999 and 0.01 < scores[1] < 0.3


def test_a_calibration_needs_outcomes():
    with pytest.raises(EntityScoresError, match="score a dev split"):
        LogisticCalibration.fit([], [])


def test_a_stored_calibration_round_trips():
    calibration = LogisticCalibration.fit([0.2, 0.9, 0.95, 0.6], [0, 1, 1, 0])
    again = LogisticCalibration.from_dict(calibration.to_dict(), "here")
    assert again(numpy.array([0.5, 0.97])).tolist() == calibration(numpy.array([0.5, 0.97])).tolist()


def test_the_component_file_is_shipped_in_the_wheel(workflow):
    import zipfile

    names = zipfile.ZipFile(workflow.wheel).namelist()
    assert any(Path(name).name == "entity_scores.py" for name in names)
