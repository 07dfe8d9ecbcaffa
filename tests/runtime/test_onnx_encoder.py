"""The ONNX Runtime encoder in place of the HF module: the same output, the session's threads and spinning."""

from __future__ import annotations

import numpy
import spacy
import torch

from tests.runtime.conftest import TEXTS, encoder, load, outputs


def test_onnx_gives_the_torch_output(saved_pipeline):
    """Same output type, names, shapes and alignment as PyTorch's, values equal to float precision."""
    reference, onnx = outputs(spacy.load(saved_pipeline)), outputs(load(saved_pipeline, "onnx"))
    for expected, got in zip(reference, onnx, strict=True):
        assert type(got.model_output) is type(expected.model_output)
        assert (
            list(got.model_output.keys())
            == list(expected.model_output.keys())
            == ["last_hidden_state", "pooler_output"]
        )
        for name in expected.model_output.keys():
            assert got.model_output[name].shape == expected.model_output[name].shape
            numpy.testing.assert_allclose(got.model_output[name], expected.model_output[name], atol=1e-4)
        assert numpy.array_equal(got.align.data, expected.align.data)
        assert numpy.array_equal(got.align.lengths, expected.align.lengths)
        numpy.testing.assert_allclose(got.tensors[0], expected.tensors[0], atol=1e-4)


def test_onnx_runtime_threads_follow_torch(saved_pipeline):
    nlp = load(saved_pipeline, "onnx")
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            nlp(TEXTS[0])
            assert encoder(nlp).session().get_session_options().intra_op_num_threads == threads
    finally:
        torch.set_num_threads(before)


def test_onnx_spinning_reaches_the_session(saved_pipeline):
    for spinning in (True, False):
        nlp = load(saved_pipeline, "onnx", onnx_spinning=spinning)
        nlp(TEXTS[0])
        options = encoder(nlp).session().get_session_options()
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == ("1" if spinning else "0")
