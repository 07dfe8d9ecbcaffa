"""The torch-int8 backend: dynamic int8 quantization of the encoder's linear layers, keep_fp32 left in fp32."""

from __future__ import annotations

import numpy
import pytest
import spacy
import torch

from scripts.runtime.backends import EncoderBackendError
from tests.runtime.conftest import encoder, load, outputs

KEPT = "encoder.layer.0.output.dense"


@pytest.mark.parametrize("backend", ["torch-int8", "onnx-int8"])
def test_int8_backends_stay_close_to_torch(saved_pipeline, backend):
    reference, int8 = outputs(spacy.load(saved_pipeline)), outputs(load(saved_pipeline, backend))
    for expected, got in zip(reference, int8, strict=True):
        x, y = expected.model_output.last_hidden_state, got.model_output.last_hidden_state
        assert x.shape == y.shape
        assert numpy.corrcoef(x.ravel(), y.ravel())[0, 1] > 0.98
        assert not numpy.array_equal(x, y)


def test_torch_int8_quantizes_every_linear_layer_but_keep_fp32(saved_pipeline):
    assert not any(type(module) is torch.nn.Linear for module in encoder(load(saved_pipeline, "torch-int8")).modules())
    modules = dict(encoder(load(saved_pipeline, "torch-int8", keep_fp32=[KEPT])).named_modules())
    assert type(modules[KEPT]) is torch.nn.Linear
    assert type(modules["encoder.layer.1.output.dense"]) is not torch.nn.Linear
    assert "dynamic" in type(modules["encoder.layer.1.output.dense"]).__module__


def test_an_unknown_keep_fp32_name_is_named(saved_pipeline):
    for backend in ("torch-int8", "onnx-int8"):
        with pytest.raises(EncoderBackendError, match=r"keep_fp32 names encoder\.layer\.9\.output\.dense.*Fix"):
            load(saved_pipeline, backend, keep_fp32=["encoder.layer.9.output.dense"])
