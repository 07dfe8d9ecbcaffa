"""The runtime's one door to spaCy's internals: all there with the pinned versions, and a load that stops when not."""

from __future__ import annotations

import types

import pytest
import spacy
import spacy_transformers.layers.transformer_model as transformer_model
import spacy_transformers.truncate as truncate

from scripts.runtime import internals
from scripts.runtime.backends import EncoderBackendError


def test_the_pinned_versions_have_every_internal_the_runtime_uses():
    assert internals.missing_internals(spacy.blank("en")) == []


def test_a_missing_function_is_named(monkeypatch):
    monkeypatch.delattr(truncate, "truncate_oversize_splits")
    assert "spacy_transformers.truncate.truncate_oversize_splits: missing" in internals.missing_internals()


def test_a_changed_signature_is_named(monkeypatch):
    monkeypatch.setattr(transformer_model, "forward", lambda model, docs: None)
    problems = internals.missing_internals()
    assert any(
        problem.startswith("spacy_transformers.layers.transformer_model.forward: takes (model, docs)")
        for problem in problems
    ), problems


def test_a_pipeline_without_its_component_list_is_named():
    problems = internals.missing_internals(types.SimpleNamespace())
    assert problems == ["spacy.language.Language._components: not a list of (name, component)"]


@pytest.mark.parametrize("factory", ["encoder_backend", "entity_scores"])
def test_the_components_stop_the_load_with_the_versions_and_the_fix(monkeypatch, tmp_path, factory):
    nlp = spacy.blank("en")
    nlp.add_pipe(factory)
    nlp.to_disk(tmp_path / "pipeline")
    monkeypatch.delattr(truncate, "truncate_oversize_splits")
    with pytest.raises(EncoderBackendError) as raised:
        spacy.load(tmp_path / "pipeline")
    message = str(raised.value)
    versions = internals.installed_versions()
    assert f"spacy {versions['spacy']}" in message and f"spacy-transformers {versions['spacy-transformers']}" in message
    assert "truncate_oversize_splits: missing" in message
    assert "pip install 'spacy>=3.8.18,<3.9' 'spacy-transformers==1.4.0'" in message


def test_the_check_follows_what_the_runtime_calls(monkeypatch):
    """The runtime looks its upstream functions up when it calls them, so the check and the calls see the same."""
    calls = []
    monkeypatch.setattr(truncate, "truncate_oversize_splits", lambda *args: calls.append(args) or args[:2])
    assert internals.truncate_oversize_splits("wordpieces", "align", 512) == ("wordpieces", "align")
    assert calls == [("wordpieces", "align", 512)]
