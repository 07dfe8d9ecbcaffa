from __future__ import annotations

import json
import subprocess
import sys

import numpy
import pytest
import torch

from scripts.benchmarks import profile_stages
from scripts.benchmarks.profile_stages import STAGES, StageClock, bytes_held
from tests.conftest import PROJECT_DIR, WorkflowRun, run


class FakeClocks:
    """time.perf_counter and time.thread_time that move only when told to."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0

    def advance(self, wall: float, cpu: float) -> None:
        self.wall += wall
        self.cpu += cpu


@pytest.fixture
def clocks(monkeypatch) -> FakeClocks:
    fake = FakeClocks()
    monkeypatch.setattr(profile_stages.time, "perf_counter", lambda: fake.wall)
    monkeypatch.setattr(profile_stages.time, "thread_time", lambda: fake.cpu)
    return fake


def test_a_stage_keeps_only_its_own_time(clocks: FakeClocks):
    clock = StageClock()

    def inner() -> str:
        clocks.advance(2.0, 1.0)
        return "inner"

    def outer() -> str:
        clocks.advance(1.0, 1.0)
        result = timed_inner()
        clocks.advance(3.0, 0.5)
        return result

    timed_inner = clock.timed("alignment", inner)
    timed_outer = clock.timed("transformer", outer)
    with clock.measuring() as seconds:
        clocks.advance(0.5, 0.5)
        assert timed_outer() == "inner"
    assert seconds["wall"] == {"other": 0.5, "transformer": 4.0, "alignment": 2.0, "total": 6.5}
    assert seconds["cpu"] == {"other": 0.5, "transformer": 1.5, "alignment": 1.0, "total": 3.0}


def test_a_failing_stage_still_hands_back_the_clock(clocks: FakeClocks):
    clock = StageClock()

    def failing() -> None:
        clocks.advance(1.0, 1.0)
        raise ValueError("boom")

    with clock.measuring() as seconds:
        with pytest.raises(ValueError):
            clock.timed("encoder", failing)()
        clocks.advance(1.0, 0.0)
    assert seconds["wall"] == {"encoder": 1.0, "other": 1.0, "total": 2.0}


def test_bytes_held_counts_each_buffer_once_and_not_the_docs():
    import spacy

    nlp = spacy.blank("en")
    docs = [nlp.make_doc("a b c"), nlp.make_doc("d e")]
    shared = numpy.zeros((100, 10), dtype="float32")  # 4,000 bytes, held through two views
    tensor = torch.zeros(50, dtype=torch.float32)  # 200 bytes of storage
    docs[0].user_data["views"] = [shared[:10], shared[10:], tensor]
    docs[1].user_data["same"] = [shared[5:], tensor[10:], docs[0]]  # a Doc is not followed
    held = bytes_held(docs)
    assert 4_200 <= held < 4_200 + 2_000  # the buffers, and the Python objects around them
    assert bytes_held([nlp.make_doc("nothing kept")]) == 0


def test_an_unknown_backend_is_named(tmp_path):
    import spacy
    from spacy.tokens import DocBin

    DocBin(docs=[spacy.blank("en")("Peter went to Paris .")]).to_disk(tmp_path / "test.spacy")
    command = [
        sys.executable, "-m", "scripts.benchmarks.profile_stages", str(tmp_path / "no-model"),
        str(tmp_path / "test.spacy"), str(tmp_path / "profile.json"), "--backend", "onnx-fp16",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=PROJECT_DIR, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "Unknown backend onnx-fp16" in result.stdout + result.stderr
    assert not (tmp_path / "profile.json").exists()


@pytest.mark.slow
def test_profile_of_both_inferences_on_a_slice(tmp_path, workflow: WorkflowRun):
    output = tmp_path / "benchmark_profile.json"
    run(
        [sys.executable, "-m", "scripts.benchmarks.profile_stages", str(workflow.model_best),
         str(workflow.project / "corpus" / "test.spacy"), str(output), "--limit", "30", "--repetitions", "1",
         "--backend", "torch", "--backend", "onnx-int8"],
        PROJECT_DIR,
    )  # fmt: skip
    result = json.loads(output.read_text())
    assert set(result["backends"]) == {"torch", "onnx-int8"}
    assert set(result["backends"]["torch"]) == set(profile_stages.VARIANTS)
    assert set(result["backends"]["onnx-int8"]) == {*profile_stages.VARIANTS, profile_stages.OTHER_SPINNING}
    for variants in result["backends"].values():
        for name, variant in variants.items():
            per_word = variant["us_per_word"]
            assert sum(per_word[stage] for stage in STAGES) == pytest.approx(per_word["total"], rel=1e-6)
            for stage in ("tokenizer", "hf_tokenization", "alignment", "encoder", "pooling", "ner", "entity_scores"):
                assert per_word[stage] > 0, (name, stage)
            assert variant["differing_sentences"] == 0, name
            assert variant["words_per_second"] > 0 and variant["busiest_functions"]
        assert variants["spacy_transformers"]["us_per_word"]["split_by_doc"] > 0
        assert variants["spacy_transformers"]["us_per_word"]["listener_alignment"] > 0
        assert all(variant["untimed_functions"] == [] for variant in variants.values())
        assert variants["batched"]["us_per_word"]["split_by_doc"] == 0  # no doc._.trf_data to make
        assert variants["batched"]["us_per_word"]["span_texts"] > 0
        assert variants["batched"]["kept_docs_hold_mb"] == 0 < variants["batched_keep_trf_data"]["kept_docs_hold_mb"]
    assert result["n_texts"] == 30 and "(flags: " in result["machine"] and "onnxruntime " in result["machine"]
    table = output.with_suffix(".md").read_text()
    assert "### Backend `torch`" in table and "### Backend `onnx-int8`" in table
    assert "| alignment of wordpieces to tokens |" in table and "| batched, onnx_spinning " in table
    assert "| batched, one encoder call a batch (encoder_batch_wordpieces 0) |" in table
    assert "sentences whose entities differ from spacy-transformers" in table


def test_every_listed_function_is_found_where_it_is_wrapped():
    """A function the runtime imports by another name, or no longer calls, would leave its stage untimed."""
    import scripts.runtime.batched_inference as batched_inference

    clock = profile_stages.StageClock()
    patches, untimed = profile_stages.wrap_modules(clock, batched_inference)
    for patch in reversed(patches):
        patch.undo()
    assert untimed == []


def test_a_function_not_found_is_reported_as_untimed():
    import types

    clock = profile_stages.StageClock()
    patches, untimed = profile_stages.wrap_modules(clock, types.ModuleType("elsewhere"))
    for patch in reversed(patches):
        patch.undo()
    assert untimed == [
        f"elsewhere.{name}" for name in ("span_texts", "tokenize", "align_wordpieces", "truncate_oversize_splits")
    ]
    note = profile_stages.untimed_note({"batched": {"untimed_functions": untimed}})
    assert "Not timed" in note[0] and "`elsewhere.tokenize`" in note[0]
