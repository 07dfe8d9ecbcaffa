"""The encoder backend load option: torch by default; torch-int8, onnx and onnx-int8 on request; what it refuses."""

from __future__ import annotations

import json
import multiprocessing
import sys
import warnings
from pathlib import Path

import numpy
import pytest
import spacy
import torch

import scripts.components.encoder_backend as encoder_backend
from scripts.components.encoder_backend import BACKEND_SETTING, EncoderBackendError
from scripts.lib.pipeline_loading import PipelineLoadError, load_pipeline
from tests.conftest import PROJECT_DIR, WorkflowRun, run
from tests.test_robustness import WORKER_DEADLINE_S, entity_spans, short_texts, worker_deadline

TEXTS = [
    "Angela Merkel met Emmanuel Macron in Paris on Tuesday to discuss the European Union budget .",
    "EU",
    "Talks between Germany and France resumed on day 12 in Paris , officials said . " * 6,
]
KEPT = "encoder.layer.0.output.dense"


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("onnx_cache")


@pytest.fixture(scope="module")
def saved_pipeline(tmp_path_factory, tiny_bert, cache_dir) -> Path:
    """transformer + encoder_backend on the tiny BERT, initialised and saved as a pipeline folder."""
    nlp = spacy.blank("en")
    nlp.add_pipe("transformer", config={"model": {"name": str(tiny_bert)}})
    nlp.add_pipe("encoder_backend", config={"cache_dir": str(cache_dir)})
    nlp.initialize()
    path = tmp_path_factory.mktemp("backend") / "pipeline"
    nlp.to_disk(path)
    return path


def load(path: Path, backend: str, **settings) -> spacy.language.Language:
    config = {BACKEND_SETTING: backend, **{f"components.encoder_backend.{k}": v for k, v in settings.items()}}
    return spacy.load(path, config=config)


def encoder(nlp) -> torch.nn.Module:
    return nlp.get_pipe("transformer").model.layers[0].shims[0]._model


def outputs(nlp) -> list:
    return [doc._.trf_data for doc in nlp.pipe(TEXTS)]


def test_torch_by_default(saved_pipeline):
    nlp = spacy.load(saved_pipeline)
    assert nlp.get_pipe("encoder_backend").backend == "torch"
    assert not nlp.get_pipe("encoder_backend").applied
    assert any(type(module) is torch.nn.Linear for module in encoder(nlp).modules())


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

    monkeypatch.setattr(encoder_backend, "export_onnx", no_export)
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


@pytest.mark.parametrize("backend", ["torch-int8", "onnx", "onnx-int8"])
def test_saving_a_pipeline_loaded_with_another_backend_is_refused(saved_pipeline, tmp_path, backend):
    with pytest.raises(EncoderBackendError, match="Load it with backend 'torch' to save it"):
        load(saved_pipeline, backend).to_disk(tmp_path / "saved")


def test_an_unknown_backend_is_named(saved_pipeline):
    with pytest.raises(EncoderBackendError, match=r"unknown backend 'onnx-fp16'.*one of torch, torch-int8, onnx"):
        load(saved_pipeline, "onnx-fp16")


def test_an_unknown_keep_fp32_name_is_named(saved_pipeline):
    for backend in ("torch-int8", "onnx-int8"):
        with pytest.raises(EncoderBackendError, match=r"keep_fp32 names encoder\.layer\.9\.output\.dense.*Fix"):
            load(saved_pipeline, backend, keep_fp32=["encoder.layer.9.output.dense"])


def test_a_missing_transformer_is_named(saved_pipeline):
    with pytest.raises(EncoderBackendError, match="no component 'encoder'"):
        load(saved_pipeline, "onnx", transformer="encoder")


def test_a_missing_onnxruntime_says_what_to_install(saved_pipeline, monkeypatch):
    monkeypatch.setattr(encoder_backend, "module_available", lambda name: name != "onnxruntime")
    with pytest.raises(EncoderBackendError, match=r"need onnxruntime.*pip install onnxruntime==1\.32\.0"):
        load(saved_pipeline, "onnx")


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


def old_pipeline(path: Path, tiny_bert: Path, component: str | None) -> Path:
    """A pipeline as saved before encoder_backend existed: with encoder_int8 (its settings only), or with neither."""
    nlp = spacy.blank("en")
    nlp.add_pipe("transformer", config={"model": {"name": str(tiny_bert)}})
    if component:
        nlp.add_pipe(component)
    nlp.initialize()
    nlp.to_disk(path)
    if component:
        config = (path / "config.cfg").read_text()
        config = config.replace('backend = "torch"\n', "").replace('cache_dir = ""\n', "")
        (path / "config.cfg").write_text(config)
        assert "backend" not in config
    return path


def test_a_pipeline_with_the_older_encoder_int8_loads_with_every_backend(tmp_path, tiny_bert, cache_dir):
    path = old_pipeline(tmp_path / "old", tiny_bert, "encoder_int8")
    reference = outputs(spacy.load(path))[0].model_output.last_hidden_state
    int8 = spacy.load(path, config={"components.encoder_int8.enabled": True})
    assert int8.get_pipe("encoder_int8").quantized
    for backend in ("torch-int8", "onnx", "onnx-int8"):
        nlp = load_pipeline(str(path), backend=backend)
        assert nlp.get_pipe("encoder_int8").backend == backend
        got = outputs(nlp)[0].model_output.last_hidden_state
        assert numpy.corrcoef(reference.ravel(), got.ravel())[0, 1] > (0.999999 if backend == "onnx" else 0.98)
    with pytest.raises(EncoderBackendError, match="enabled = true asks for the torch-int8 backend"):
        spacy.load(path, config={"components.encoder_int8.enabled": True, "components.encoder_int8.backend": "onnx"})


def test_a_pipeline_without_the_option_says_so(tmp_path, tiny_bert):
    path = old_pipeline(tmp_path / "older", tiny_bert, None)
    with pytest.raises(PipelineLoadError, match="has no encoder_backend component .* so it has no backend option"):
        load_pipeline(str(path), backend="onnx")


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
@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_onnx_backend_with_two_processes_matches_one_process(installed_model, start_method):
    """nlp.pipe(n_process=2): each worker makes its own ONNX Runtime session (a session made before fork is dead)."""
    nlp = spacy.load(installed_model, config={BACKEND_SETTING: "onnx"})
    texts = short_texts(400)
    one_process = [entity_spans(doc) for doc in nlp.pipe(texts, batch_size=50)]  # the parent's session exists now
    previous = multiprocessing.get_start_method(allow_none=True)
    multiprocessing.set_start_method(start_method, force=True)
    try:
        with worker_deadline(WORKER_DEADLINE_S) as expired:
            try:
                docs = list(nlp.pipe(texts, batch_size=50, n_process=2))
            finally:  # a hang ends with the workers killed: say so rather than how reading from them failed
                assert not expired.is_set(), f"n_process=2 with {start_method} did not finish in {WORKER_DEADLINE_S} s"
    finally:
        multiprocessing.set_start_method(previous, force=True)
    assert [entity_spans(doc) for doc in docs] == one_process


@pytest.mark.slow
def test_evaluate_and_annotate_take_the_backend(workflow: WorkflowRun, tmp_path):
    run(
        [sys.executable, "-m", "scripts.workflow.evaluate", str(workflow.model_best),
         str(workflow.project / "corpus" / "test.spacy"), str(tmp_path), "--split", "test", "--backend", "onnx-int8"],
        PROJECT_DIR,
    )  # fmt: skip
    results = json.loads((tmp_path / "test.json").read_text())
    assert results["backend"] == "onnx-int8" and results["int8"] is True
    assert 0.0 <= results["seqeval_strict"]["f1"] <= 1.0
    source = tmp_path / "in.txt"
    source.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    output = run(
        [sys.executable, "-m", "scripts.tools.annotate", str(workflow.model_best), str(source)]
        + [str(tmp_path / "out.jsonl"), "--backend", "onnx"],
        PROJECT_DIR,
    )  # fmt: skip
    assert f"annotated {len(TEXTS)}, skipped 0" in output


@pytest.mark.slow
def test_int8_shorthand_of_the_clis_still_works(workflow: WorkflowRun, tmp_path):
    run(
        [sys.executable, "-m", "scripts.workflow.evaluate", str(workflow.model_best),
         str(workflow.project / "corpus" / "test.spacy"), str(tmp_path), "--split", "test", "--int8"],
        PROJECT_DIR,
    )  # fmt: skip
    results = json.loads((tmp_path / "test.json").read_text())
    assert results["backend"] == "torch-int8" and results["int8"] is True


def test_no_warning_from_the_exporter_reaches_the_user(saved_pipeline, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load(saved_pipeline, "onnx-int8", cache_dir=str(tmp_path / "fresh"))(TEXTS[0])


# --- batched inference -------------------------------------------------------------

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


@pytest.fixture(scope="module")
def saved_ner_pipeline(tmp_path_factory, tiny_bert, cache_dir) -> Path:
    return ner_pipeline(
        tmp_path_factory.mktemp("ner") / "pipeline", tiny_bert, cache_dir, ("transformer", "ner", "encoder_backend")
    )


def entity_lists(nlp, texts: list[str]) -> list[list[tuple[int, int, str]]]:
    return [[(ent.start, ent.end, ent.label_) for ent in doc.ents] for doc in nlp.pipe(texts)]


@pytest.mark.parametrize("backend", ["torch", "onnx", "onnx-int8"])
def test_batched_inference_finds_the_entities_of_spacy_transformers(saved_ner_pipeline, backend):
    unbatched = load(saved_ner_pipeline, backend, batched_inference=False)
    batched = load(saved_ner_pipeline, backend)
    assert batched.get_pipe("encoder_backend").batched and not unbatched.get_pipe("encoder_backend").batched
    assert type(batched.get_pipe("ner")) is encoder_backend.GreedyEntityRecognizer
    assert type(unbatched.get_pipe("ner")) is spacy.pipeline.EntityRecognizer
    texts = HARD_TEXTS * 3
    expected = entity_lists(unbatched, texts)
    assert sum(map(len, expected)) > 20, "the random NER finds too few entities for the comparison to mean much"
    assert entity_lists(batched, texts) == expected
    assert [entity_lists(batched, [text])[0] for text in HARD_TEXTS] == expected[: len(HARD_TEXTS)]  # nlp(text) too


def test_kept_trf_data_is_spacy_transformers_own(saved_ner_pipeline):
    """keep_trf_data: every Doc's wordpieces, alignment and encoder output as spacy-transformers sets them.

    With the encoder in one call a batch (encoder_batch_wordpieces 0), as spacy-transformers calls it.
    """
    expected = list(load(saved_ner_pipeline, "torch", batched_inference=False).pipe(HARD_TEXTS))
    got = list(load(saved_ner_pipeline, "torch", keep_trf_data=True, encoder_batch_wordpieces=0).pipe(HARD_TEXTS))
    for a, b in zip(expected, got, strict=True):
        x, y = a._.trf_data, b._.trf_data
        assert x.wordpieces.strings == y.wordpieces.strings and x.wordpieces.lengths == y.wordpieces.lengths
        for name in ("input_ids", "attention_mask"):
            assert numpy.array_equal(getattr(x.wordpieces, name), getattr(y.wordpieces, name)), name
        assert numpy.array_equal(x.align.data, y.align.data) and numpy.array_equal(x.align.lengths, y.align.lengths)
        assert list(x.model_output.keys()) == list(y.model_output.keys())
        for name in x.model_output.keys():
            assert numpy.array_equal(x.model_output[name], y.model_output[name]), name


def test_encoder_calls_take_sorted_rows_within_the_budget():
    lengths = [5, 1, 9, 3, 3, 20, 2]
    calls = encoder_backend.encoder_calls(lengths, 10)
    assert sorted(int(row) for rows in calls for row in rows) == list(range(len(lengths)))
    in_order = [lengths[row] for rows in calls for row in rows]
    assert in_order == sorted(lengths)
    for rows in calls:  # within the budget, or a row alone that is longer than it
        assert len(rows) == 1 or max(lengths[row] for row in rows) * len(rows) <= 10
    assert [len(rows) for rows in calls] == [3, 2, 1, 1]
    assert encoder_backend.encoder_calls([], 10) == []


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_the_encoder_in_calls_gives_the_output_of_one_call(saved_ner_pipeline, backend):
    """Calls of at most 16 padded wordpieces: each Doc's output (its wordpieces' rows) as from one call."""
    one_call = list(load(saved_ner_pipeline, backend, keep_trf_data=True, encoder_batch_wordpieces=0).pipe(HARD_TEXTS))
    nlp = load(saved_ner_pipeline, backend, keep_trf_data=True, encoder_batch_wordpieces=16)
    calls = []
    encoder_module = type(encoder(nlp))
    original = encoder_module.forward
    try:
        encoder_module.forward = lambda self, **inputs: (
            calls.append(inputs["input_ids"].shape) or original(self, **inputs)
        )
        in_calls = list(nlp.pipe(HARD_TEXTS))
    finally:
        encoder_module.forward = original
    assert len(calls) > len(HARD_TEXTS) // 2 and all(rows == 1 or rows * width <= 16 for rows, width in calls)
    for a, b in zip(one_call, in_calls, strict=True):
        x, y = a._.trf_data, b._.trf_data
        assert x.wordpieces.strings == y.wordpieces.strings
        assert list(x.model_output.keys()) == list(y.model_output.keys())
        if not y.model_output:  # a Doc without wordpieces (whitespace only)
            continue
        real = y.wordpieces.attention_mask.astype(bool)
        hidden_x, hidden_y = x.model_output.last_hidden_state, y.model_output.last_hidden_state
        assert hidden_x.shape == hidden_y.shape
        numpy.testing.assert_allclose(hidden_y[real], hidden_x[real], atol=1e-5)
        numpy.testing.assert_allclose(y.model_output.pooler_output, x.model_output.pooler_output, atol=1e-5)
    assert entity_lists(nlp, HARD_TEXTS * 3) == entity_lists(load(saved_ner_pipeline, backend), HARD_TEXTS * 3)


def test_a_negative_encoder_batch_refused(saved_ner_pipeline):
    with pytest.raises(EncoderBackendError, match=r"encoder_batch_wordpieces is -1.*\[components.encoder_backend\]"):
        load(saved_ner_pipeline, "torch", encoder_batch_wordpieces=-1)


def test_trf_data_is_dropped_by_default_and_the_batch_released(saved_ner_pipeline):
    nlp = load(saved_ner_pipeline, "torch")
    docs = list(nlp.pipe(TEXTS))
    assert all(doc._.trf_data is None and encoder_backend.BATCH_KEY not in doc.user_data for doc in docs)
    assert nlp(TEXTS[0])._.trf_data is None


def test_a_doc_holding_its_batch_place_serializes_without_it(saved_ner_pipeline):
    """Before encoder_backend releases it (here: disabled), the place travels as None in bytes, pickles and DocBins."""
    import copy

    from spacy.tokens import Doc, DocBin

    nlp = load(saved_ner_pipeline, "torch")
    doc = next(nlp.pipe(TEXTS[:1], disable=["encoder_backend"]))
    place = doc.user_data[encoder_backend.BATCH_KEY]
    assert isinstance(place, encoder_backend.BatchPlace)
    assert doc.copy().user_data[encoder_backend.BATCH_KEY] is place  # a copy shares the batch
    assert copy.deepcopy(doc).user_data[encoder_backend.BATCH_KEY] is None  # deepcopy pickles the Doc
    again = Doc(nlp.vocab).from_bytes(doc.to_bytes())
    assert again.user_data[encoder_backend.BATCH_KEY] is None
    docbin = DocBin(store_user_data=True, docs=[doc])
    (loaded,) = DocBin().from_bytes(docbin.to_bytes()).get_docs(nlp.vocab)
    assert loaded.user_data[encoder_backend.BATCH_KEY] is None
    # Without its batch, the NER reads doc._.trf_data, as spacy-transformers does (none here: zero vectors).
    assert nlp.get_pipe("ner")(again) is again


def test_a_listener_after_the_component_leaves_the_inference_unbatched(
    tmp_path, tiny_bert, cache_dir, saved_ner_pipeline
):
    path = ner_pipeline(tmp_path / "late", tiny_bert, cache_dir, ("transformer", "encoder_backend", "ner"))
    with pytest.warns(UserWarning, match="ner come after encoder_backend.*runs unbatched"):
        nlp = spacy.load(path)
    assert not nlp.get_pipe("encoder_backend").batched
    assert all(doc._.trf_data is not None for doc in nlp.pipe(TEXTS))


def test_training_goes_through_spacy_transformers(saved_ner_pipeline):
    """The batched steps are inference only: an update of a loaded pipeline learns as before."""
    from spacy.training import Example

    batched, unbatched = load(saved_ner_pipeline, "torch"), load(saved_ner_pipeline, "torch", batched_inference=False)
    losses = []
    for nlp in (batched, unbatched):
        doc = nlp.make_doc("Angela Merkel met Emmanuel Macron in Paris .")
        example = Example.from_dict(doc, {"entities": [(0, 13, "PER"), (18, 33, "PER"), (37, 42, "LOC")]})
        torch.manual_seed(0)
        losses.append(nlp.update([example], sgd=None, drop=0.0))
    assert losses[0]["ner"] == pytest.approx(losses[1]["ner"]) and losses[0]["ner"] > 0


def test_the_batched_steps_are_spacy_transformers_steps(saved_ner_pipeline):
    """Span texts, tokenization and alignment, against spacy-transformers' own, on windows that overlap."""
    from spacy_transformers.align import get_alignment_via_offset_mapping
    from spacy_transformers.data_classes import WordpieceBatch
    from spacy_transformers.layers.transformer_model import huggingface_tokenize

    nlp = load(saved_ner_pipeline, "torch")
    model = nlp.get_pipe("transformer").model
    docs = [nlp.make_doc(text) for text in HARD_TEXTS]
    spans = [span for doc_spans in model.attrs["get_spans"](docs) for span in doc_spans]
    assert len(spans) > len(docs)  # the long text is cut into overlapping windows
    texts = encoder_backend.span_texts(spans)
    assert texts == [span.text for span in spans]
    expected_encoding = huggingface_tokenize(model.tokenizer, texts)
    expected = WordpieceBatch.from_batch_encoding(expected_encoding)
    wordpieces, offsets = encoder_backend.tokenize(model.tokenizer, texts)
    assert wordpieces.strings == expected.strings and wordpieces.lengths == expected.lengths
    for name in ("input_ids", "attention_mask", "token_type_ids"):
        a, b = getattr(wordpieces, name), getattr(expected, name)
        assert a.dtype == b.dtype and numpy.array_equal(a, b), name
    assert numpy.array_equal(offsets, expected_encoding["offset_mapping"])
    align = encoder_backend.align_wordpieces(spans, offsets)
    reference = get_alignment_via_offset_mapping(spans, expected_encoding["offset_mapping"])
    assert align.data.dtype == reference.data.dtype and numpy.array_equal(align.data, reference.data)
    assert numpy.array_equal(align.lengths, reference.lengths)


def test_onnx_spinning_reaches_the_session(saved_pipeline):
    for spinning in (True, False):
        nlp = load(saved_pipeline, "onnx", onnx_spinning=spinning)
        nlp(TEXTS[0])
        options = encoder(nlp).session().get_session_options()
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == ("1" if spinning else "0")
