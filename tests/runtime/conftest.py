"""Pipelines on the tiny BERT that the runtime's tests load with each backend, and how they read them."""

from __future__ import annotations

from pathlib import Path

import pytest
import spacy
import torch

from scripts.runtime.backends import BACKEND_SETTING

TEXTS = [
    "Angela Merkel met Emmanuel Macron in Paris on Tuesday to discuss the European Union budget .",
    "EU",
    "Talks between Germany and France resumed on day 12 in Paris , officials said . " * 6,
]
LONG_TEXT = " ".join(["Germany beat Japan 3-1 in Tokyo on Sunday , Reuters reported ."] * 30)
# Odd whitespace, tokens that touch, accents and ligatures, a text of one token, an empty text, a long one.
HARD_TEXTS = [
    *TEXTS,
    "a  b\n\nc   d",
    "  leading and trailing spaces  ",
    "U.S.-based naïve café ﬁne\tdone",
    "x",
    "",
    LONG_TEXT,
]
NER_LISTENER = {
    "model": {
        "@architectures": "spacy.TransitionBasedParser.v2",
        "state_type": "ner",
        "extra_state_tokens": False,
        "hidden_width": 32,
        "maxout_pieces": 2,
        "use_upper": False,
        "nO": None,
        "tok2vec": {
            "@architectures": "spacy-transformers.TransformerListener.v1",
            "grad_factor": 1.0,
            "upstream": "*",
            "pooling": {"@layers": "reduce_mean.v1"},
        },
    }
}


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("onnx_cache")


@pytest.fixture(scope="session")
def saved_pipeline(tmp_path_factory, tiny_bert, cache_dir) -> Path:
    """transformer + encoder_backend on the tiny BERT, initialised and saved as a pipeline folder."""
    nlp = spacy.blank("en")
    nlp.add_pipe("transformer", config={"model": {"name": str(tiny_bert)}})
    nlp.add_pipe("encoder_backend", config={"cache_dir": str(cache_dir)})
    nlp.initialize()
    path = tmp_path_factory.mktemp("backend") / "pipeline"
    nlp.to_disk(path)
    return path


def ner_pipeline(path: Path, tiny_bert: Path, cache_dir: Path, order: tuple[str, ...]) -> Path:
    """transformer + a NER listening to it + encoder_backend, initialised (random weights, four labels) and saved.

    The transformer's windows are short (8 tokens, stride 6), so that the long text spans several.
    """
    from spacy.training import Example

    nlp = spacy.blank("en")
    for name in order:
        if name == "transformer":
            nlp.add_pipe(
                "transformer",
                config={
                    "model": {
                        "name": str(tiny_bert),
                        "get_spans": {"@span_getters": "spacy-transformers.strided_spans.v1", "window": 8, "stride": 6},
                    }
                },
            )
        elif name == "ner":
            nlp.add_pipe("ner", config=NER_LISTENER)
        else:
            nlp.add_pipe("encoder_backend", config={"cache_dir": str(cache_dir)})
    doc = nlp.make_doc("Angela Merkel met Emmanuel Macron in Paris for the EU .")
    entities = {"entities": [(0, 13, "PER"), (18, 33, "PER"), (37, 42, "LOC"), (51, 53, "ORG"), (47, 50, "MISC")]}
    nlp.initialize(lambda: [Example.from_dict(doc, entities)])
    nlp.to_disk(path)
    return path


@pytest.fixture(scope="session")
def saved_ner_pipeline(tmp_path_factory, tiny_bert, cache_dir) -> Path:
    return ner_pipeline(
        tmp_path_factory.mktemp("ner") / "pipeline", tiny_bert, cache_dir, ("transformer", "ner", "encoder_backend")
    )


def load(path: Path, backend: str, **settings) -> spacy.language.Language:
    config = {BACKEND_SETTING: backend, **{f"components.encoder_backend.{k}": v for k, v in settings.items()}}
    return spacy.load(path, config=config)


def encoder(nlp) -> torch.nn.Module:
    return nlp.get_pipe("transformer").model.layers[0].shims[0]._model


def outputs(nlp) -> list:
    return [doc._.trf_data for doc in nlp.pipe(TEXTS)]


def entity_lists(nlp, texts: list[str]) -> list[list[tuple[int, int, str]]]:
    return [[(ent.start, ent.end, ent.label_) for ent in doc.ents] for doc in nlp.pipe(texts)]
