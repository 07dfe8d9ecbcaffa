"""The int8 load option: off by default, quantizes the encoder when enabled, refuses what it cannot do."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy
import pytest
import spacy
import torch

from scripts.encoder_int8 import ENABLED_SETTING, EncoderInt8Error
from scripts.pipeline_loading import PipelineLoadError, load_pipeline
from tests.conftest import PROJECT_DIR, WorkflowRun, run

TEXT = "Angela Merkel met Emmanuel Macron in Paris on Tuesday to discuss the European Union budget ."


@pytest.fixture(scope="module")
def saved_pipeline(tmp_path_factory, tiny_bert) -> Path:
    """transformer + encoder_int8 on the tiny BERT, initialised and saved as a pipeline folder."""
    nlp = spacy.blank("en")
    nlp.add_pipe("transformer", config={"model": {"name": str(tiny_bert)}})
    nlp.add_pipe("encoder_int8")
    nlp.initialize()
    path = tmp_path_factory.mktemp("int8") / "pipeline"
    nlp.to_disk(path)
    return path


def encoder_modules(nlp) -> list[torch.nn.Module]:
    return [module for shim in nlp.get_pipe("transformer").model.layers[0].shims for module in shim._model.modules()]


def last_hidden_state(nlp) -> numpy.ndarray:
    return nlp(TEXT)._.trf_data.model_output.last_hidden_state


def test_off_by_default(saved_pipeline):
    nlp = spacy.load(saved_pipeline)
    assert nlp.get_pipe("encoder_int8").quantized is False
    assert any(type(module) is torch.nn.Linear for module in encoder_modules(nlp))


def test_enabled_quantizes_every_linear_layer_and_keeps_the_output(saved_pipeline):
    fp32 = spacy.load(saved_pipeline)
    int8 = spacy.load(saved_pipeline, config={ENABLED_SETTING: True})
    modules = encoder_modules(int8)
    assert not any(type(module) is torch.nn.Linear for module in modules)
    assert sum(type(module).__name__ == "Linear" and "dynamic" in type(module).__module__ for module in modules) > 0
    reference, quantized = last_hidden_state(fp32), last_hidden_state(int8)
    assert reference.shape == quantized.shape
    assert numpy.corrcoef(reference.ravel(), quantized.ravel())[0, 1] > 0.98
    assert not numpy.array_equal(reference, quantized)


def test_keep_fp32_leaves_the_named_layers_alone(saved_pipeline):
    kept = "encoder.layer.0.output.dense"
    nlp = spacy.load(saved_pipeline, config={ENABLED_SETTING: True, "components.encoder_int8.keep_fp32": [kept]})
    encoder = nlp.get_pipe("transformer").model.layers[0].shims[0]._model
    modules = dict(encoder.named_modules())
    assert type(modules[kept]) is torch.nn.Linear
    assert type(modules["encoder.layer.1.output.dense"]) is not torch.nn.Linear


def test_an_unknown_keep_fp32_name_is_named(saved_pipeline):
    config = {ENABLED_SETTING: True, "components.encoder_int8.keep_fp32": ["encoder.layer.9.output.dense"]}
    with pytest.raises(EncoderInt8Error, match=r"keep_fp32 names encoder\.layer\.9\.output\.dense.*Fix"):
        spacy.load(saved_pipeline, config=config)


def test_saving_an_int8_pipeline_is_refused(saved_pipeline, tmp_path):
    int8 = spacy.load(saved_pipeline, config={ENABLED_SETTING: True})
    with pytest.raises(EncoderInt8Error, match="Load it without the int8 option to save it"):
        int8.to_disk(tmp_path / "saved")


def test_a_missing_transformer_is_named(saved_pipeline):
    with pytest.raises(EncoderInt8Error, match="no component 'encoder'"):
        spacy.load(saved_pipeline, config={ENABLED_SETTING: True, "components.encoder_int8.transformer": "encoder"})


def test_a_pipeline_without_the_option_says_so(tmp_path, tiny_bert):
    nlp = spacy.blank("en")
    nlp.add_pipe("transformer", config={"model": {"name": str(tiny_bert)}})
    nlp.initialize()
    nlp.to_disk(tmp_path / "old")
    with pytest.raises(PipelineLoadError, match="has no encoder_int8 component, so it has no int8 option"):
        load_pipeline(str(tmp_path / "old"), int8=True)


@pytest.mark.slow
def test_installed_package_offers_int8(installed_model):
    nlp = spacy.load(installed_model, config={ENABLED_SETTING: True})
    assert nlp.get_pipe("encoder_int8").quantized
    assert nlp(TEXT).text == TEXT


@pytest.mark.slow
def test_evaluate_scores_the_int8_option(workflow: WorkflowRun, tmp_path):
    run(
        [sys.executable, "-m", "scripts.evaluate", str(workflow.model_best),
         str(workflow.project / "corpus" / "test.spacy"), str(tmp_path), "--split", "test", "--int8"],
        PROJECT_DIR,
    )  # fmt: skip
    results = json.loads((tmp_path / "test.json").read_text())
    assert results["int8"] is True
    assert 0.0 <= results["seqeval_strict"]["f1"] <= 1.0
