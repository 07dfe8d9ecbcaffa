"""The encoder_backend component: torch by default, the backend a load option, what it refuses, what it declares."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import spacy
import torch

from scripts.lib.pipeline_loading import PipelineLoadError, load_pipeline
from scripts.runtime.backends import BACKEND_SETTING, EncoderBackendError
from scripts.runtime.batched_inference import BATCH_KEY
from tests.conftest import PROJECT_DIR, WorkflowRun, run
from tests.runtime.conftest import TEXTS, encoder, load, ner_pipeline
from tests.test_robustness import entity_spans


def test_torch_by_default(saved_pipeline):
    nlp = spacy.load(saved_pipeline)
    assert nlp.get_pipe("encoder_backend").backend == "torch"
    assert not nlp.get_pipe("encoder_backend").applied
    assert any(type(module) is torch.nn.Linear for module in encoder(nlp).modules())


@pytest.mark.parametrize("backend", ["torch-int8", "onnx", "onnx-int8"])
def test_saving_a_pipeline_loaded_with_another_backend_is_refused(saved_pipeline, tmp_path, backend):
    with pytest.raises(EncoderBackendError, match="Load it with backend 'torch' to save it"):
        load(saved_pipeline, backend).to_disk(tmp_path / "saved")


def test_an_unknown_backend_is_named(saved_pipeline):
    with pytest.raises(EncoderBackendError, match=r"unknown backend 'onnx-fp16'.*one of torch, torch-int8, onnx"):
        load(saved_pipeline, "onnx-fp16")


def test_a_missing_transformer_is_named(saved_pipeline):
    with pytest.raises(EncoderBackendError, match="no component 'encoder'"):
        load(saved_pipeline, "onnx", transformer="encoder")


def test_a_negative_encoder_batch_refused(saved_ner_pipeline):
    with pytest.raises(EncoderBackendError, match=r"encoder_batch_wordpieces is -1.*\[components.encoder_backend\]"):
        load(saved_ner_pipeline, "torch", encoder_batch_wordpieces=-1)


@pytest.mark.parametrize("backend", ["torch-int8", "onnx", "onnx-int8"])
def test_a_gpu_is_refused(saved_pipeline, backend):
    """Asked for on the command line, and found by the component itself (an encoder not on the CPU)."""
    with pytest.raises(PipelineLoadError, match=f"Backend {backend} runs on the CPU only.*--backend torch"):
        load_pipeline(str(saved_pipeline), gpu_id=0, backend=backend)
    nlp = spacy.load(saved_pipeline)
    component = nlp.get_pipe("encoder_backend")
    component.backend = backend
    encoder(nlp).to("meta")  # any device but the CPU: the machine needs no GPU for this test
    with pytest.raises(EncoderBackendError, match=f"backend '{backend}' runs on the CPU only.*backend 'torch'"):
        component.apply()


def test_the_batch_is_released_and_trf_data_dropped_by_default(saved_ner_pipeline):
    nlp = load(saved_ner_pipeline, "torch")
    docs = list(nlp.pipe(TEXTS))
    assert all(doc._.trf_data is None and BATCH_KEY not in doc.user_data for doc in docs)
    assert nlp(TEXTS[0])._.trf_data is None


def test_a_listener_after_the_component_leaves_the_inference_unbatched(tmp_path, tiny_bert, cache_dir):
    path = ner_pipeline(tmp_path / "late", tiny_bert, cache_dir, ("transformer", "encoder_backend", "ner"))
    with pytest.warns(UserWarning, match="ner come after encoder_backend.*runs unbatched"):
        nlp = spacy.load(path)
    assert not nlp.get_pipe("encoder_backend").batched
    assert all(doc._.trf_data is not None for doc in nlp.pipe(TEXTS))


def test_analyze_pipes_shows_what_the_component_assigns_and_requires(saved_ner_pipeline):
    analysis = spacy.load(saved_ner_pipeline).analyze_pipes()
    assert analysis["summary"]["encoder_backend"]["assigns"] == ["doc.user_data"]
    assert analysis["summary"]["encoder_backend"]["requires"] == ["doc._.trf_data"]
    assert not analysis["problems"]["encoder_backend"]  # the transformer before it sets doc._.trf_data


def test_a_pipeline_with_the_retired_encoder_int8_stops_with_the_fix(tmp_path, saved_pipeline):
    """A pipeline saved when the component was encoder_int8 (settings enabled, transformer, keep_fp32)."""
    path = tmp_path / "old"
    nlp = spacy.load(saved_pipeline)
    nlp.to_disk(path)
    config = (path / "config.cfg").read_text()
    section = config[config.index("[components.encoder_backend]") :].split("\n\n")[0]
    old_section = "\n".join(
        [
            "[components.encoder_int8]",
            'factory = "encoder_int8"',
            "enabled = true",
            "keep_fp32 = []",
            'transformer = "transformer"',
        ]
    )
    old = config.replace(section, old_section).replace('"encoder_backend"', '"encoder_int8"')
    (path / "config.cfg").write_text(old)
    with pytest.raises(PipelineLoadError, match=r"encoder_int8.*no longer has.*factory = \"encoder_backend\""):
        load_pipeline(str(path))


def test_a_pipeline_without_the_component_has_no_backend_option(tmp_path, tiny_bert):
    nlp = spacy.blank("en")
    nlp.add_pipe("transformer", config={"model": {"name": str(tiny_bert)}})
    nlp.initialize()
    nlp.to_disk(tmp_path / "plain")
    with pytest.raises(PipelineLoadError, match="has no encoder_backend component, so it has no backend option"):
        load_pipeline(str(tmp_path / "plain"), backend="onnx")


# --- on the end-to-end test's trained pipeline -----------------------------------------

# int8 moves some entity decisions of the tiny test model; this bounds how many (share of the entities
# of either side that the other side does not have, over the corpus's test sentences).
INT8_ENTITY_DISAGREEMENT = 0.15


def corpus_test_sentences(workflow: WorkflowRun, limit: int = 600) -> list[str]:
    from spacy.tokens import DocBin
    from spacy.vocab import Vocab

    docs = DocBin().from_disk(workflow.project / "corpus" / "test.spacy").get_docs(Vocab())
    return [sent.text for doc in docs for sent in doc.sents][:limit]


def entity_disagreement(reference: list[list[tuple]], other: list[list[tuple]]) -> float:
    differing = sum(len(set(a) ^ set(b)) for a, b in zip(reference, other, strict=True))
    return differing / max(1, sum(len(a) + len(b) for a, b in zip(reference, other, strict=True)))


@pytest.mark.slow
def test_every_backend_finds_the_torch_entities(installed_model, workflow: WorkflowRun):
    texts = corpus_test_sentences(workflow)
    reference = [entity_spans(doc) for doc in spacy.load(installed_model).pipe(texts)]
    assert sum(map(len, reference)) > 50
    for backend in ("onnx", "torch-int8", "onnx-int8"):
        nlp = spacy.load(installed_model, config={BACKEND_SETTING: backend})
        assert nlp.get_pipe("encoder_backend").applied
        found = [entity_spans(doc) for doc in nlp.pipe(texts)]
        if backend == "onnx":
            assert found == reference
        else:
            assert entity_disagreement(reference, found) <= INT8_ENTITY_DISAGREEMENT, backend


@pytest.mark.slow
def test_evaluate_and_annotate_take_the_backend(workflow: WorkflowRun, tmp_path: Path):
    run(
        [sys.executable, "-m", "scripts.workflow.evaluate", str(workflow.model_best),
         str(workflow.project / "corpus" / "test.spacy"), str(tmp_path), "--split", "test", "--backend", "onnx-int8"],
        PROJECT_DIR,
    )  # fmt: skip
    results = json.loads((tmp_path / "test.json").read_text())
    assert results["backend"] == "onnx-int8"
    assert 0.0 <= results["seqeval_strict"]["f1"] <= 1.0
    source = tmp_path / "in.txt"
    source.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    output = run(
        [sys.executable, "-m", "scripts.tools.annotate", str(workflow.model_best), str(source)]
        + [str(tmp_path / "out.jsonl"), "--backend", "onnx"],
        PROJECT_DIR,
    )  # fmt: skip
    assert f"annotated {len(TEXTS)}, skipped 0" in output
