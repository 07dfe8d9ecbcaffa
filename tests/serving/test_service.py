"""scripts.serving.service: what /healthz says of the model."""

from __future__ import annotations

import spacy

from scripts.serving.service import describe
from scripts.serving.settings import ServeSettings


def test_healthz_lists_the_labels_of_the_pipelines_ner_whatever_they_are():
    nlp = spacy.blank("en")
    ner = nlp.add_pipe("ner")
    for label in ("DRUG", "Dose form", "PER"):
        ner.add_label(label)
    settings = ServeSettings("model")
    assert describe(nlp, settings, "ready")["labels"] == ["DRUG", "Dose form", "PER"]
    assert "labels" not in describe(None, settings, "loading")
