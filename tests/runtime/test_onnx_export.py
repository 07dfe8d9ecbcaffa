"""The ONNX graphs: exported from the loaded weights, int8 copies that keep keep_fp32 in fp32, and their cache."""

from __future__ import annotations

import importlib.util
import warnings

import numpy
import pytest
import spacy

import scripts.runtime.onnx_export as onnx_export
from scripts.runtime.backends import EncoderBackendError
from tests.runtime.conftest import TEXTS, encoder, load, outputs
from tests.runtime.test_torch_int8 import KEPT


def test_onnx_int8_keeps_the_keep_fp32_layers_in_fp32(saved_pipeline):
    import onnx

    graph = encoder(load(saved_pipeline, "onnx-int8", keep_fp32=[KEPT])).graph
    nodes = {node.name: node.op_type for node in onnx.load(str(graph)).graph.node}
    assert nodes["/encoder/encoder/layer.0/output/dense/MatMul"] == "MatMul"
    assert nodes["/encoder/encoder/layer.1/output/dense/MatMul_quant"] == "MatMulInteger"


def test_graphs_are_cached_by_weights_and_reused(saved_pipeline, cache_dir, monkeypatch):
    load(saved_pipeline, "onnx")(TEXTS[0])
    load(saved_pipeline, "onnx-int8")(TEXTS[0])
    graphs = sorted(path.name.split("-", 1)[1] for path in cache_dir.glob("*.onnx"))
    assert "fp32.onnx" in graphs and "int8.onnx" in graphs
    assert not list(cache_dir.glob(".export-*")), "a temporary export folder was left behind"

    def no_export(*args, **kwargs):
        raise AssertionError("exported again although the graph was cached")

    monkeypatch.setattr(onnx_export, "export_onnx", no_export)
    assert load(saved_pipeline, "onnx")(TEXTS[0]).text == TEXTS[0]


def test_an_unwritable_cache_exports_in_memory_with_a_warning(saved_pipeline, tmp_path):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    with pytest.warns(
        UserWarning, match=r"Cannot write the ONNX graph .* Set \[components.encoder_backend\] cache_dir"
    ):
        nlp = load(saved_pipeline, "onnx", cache_dir=str(not_a_folder / "cache"))
    assert isinstance(encoder(nlp).graph, bytes)
    numpy.testing.assert_allclose(
        outputs(nlp)[0].model_output.last_hidden_state,
        outputs(spacy.load(saved_pipeline))[0].model_output.last_hidden_state,
        atol=1e-4,
    )


def test_a_missing_onnxruntime_says_what_to_install(saved_pipeline, monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *args: None if name == "onnxruntime" else find_spec(name, *args)
    )
    with pytest.raises(EncoderBackendError, match=r"need onnxruntime.*pip install onnxruntime==1\.32\.0"):
        load(saved_pipeline, "onnx")


def test_no_warning_from_the_exporter_reaches_the_user(saved_pipeline, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load(saved_pipeline, "onnx-int8", cache_dir=str(tmp_path / "fresh"))(TEXTS[0])
