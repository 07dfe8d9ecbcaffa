from __future__ import annotations

import json
import sys

import pytest

from tests.benchmarks.test_hf_reference import train_reference_on_fixture
from tests.conftest import PROJECT_DIR, WorkflowRun, run

pytestmark = pytest.mark.slow


def test_speed_benchmark_runs_every_configuration_on_a_slice(tmp_path, tiny_bert, workflow: WorkflowRun):
    train_reference_on_fixture(tiny_bert, tmp_path / "corpus", tmp_path / "hf", 16)
    output = tmp_path / "benchmark_speed.json"
    run(
        [sys.executable, "-m", "scripts.benchmarks.speed", str(workflow.model_best), str(tmp_path / "hf" / "model"),
         str(tiny_bert), str(tmp_path / "corpus" / "test.spacy"), str(output), "--repetitions", "2", "--limit", "12",
         "--reference", str(tmp_path / "hf" / "reference.json")],
        PROJECT_DIR,
    )  # fmt: skip
    speed = json.loads(output.read_text())
    for key in (
        "spacy_words_per_s",
        "spacy_int8_words_per_s",
        "spacy_onnx_words_per_s",
        "spacy_onnx_int8_words_per_s",
        "hf_pipeline_bs1_words_per_s",
        "hf_pipeline_bs32_words_per_s",
        "encoder_forward_words_per_s",
        "encoder_forward_int8_words_per_s",
        "encoder_forward_onnx_words_per_s",
        "encoder_forward_onnx_int8_words_per_s",
    ):
        assert speed[key] > 0, key
    assert speed["ratio_vs_hf_bs32"] == pytest.approx(
        speed["spacy_words_per_s"] / speed["hf_pipeline_bs32_words_per_s"]
    )
    assert speed["ratio_int8_vs_encoder_int8"] == pytest.approx(
        speed["spacy_int8_words_per_s"] / speed["encoder_forward_int8_words_per_s"]
    )
    assert speed["ratio_onnx_int8_vs_hf_bs32"] == pytest.approx(
        speed["spacy_onnx_int8_words_per_s"] / speed["hf_pipeline_bs32_words_per_s"]
    )
    assert speed["ratio_onnx_vs_encoder_onnx"] == pytest.approx(
        speed["spacy_onnx_words_per_s"] / speed["encoder_forward_onnx_words_per_s"]
    )
    assert speed["n_texts"] == 12 and "CPU cores" in speed["machine"]
    assert all(len(run["seconds"]) == 2 and run["peak_rss_mb"] > 0 for run in speed["runs"].values())
    reference = json.loads((tmp_path / "hf" / "reference.json").read_text())
    assert set(speed["test_f1_strict"]) == {
        "spacy",
        "spacy_int8",
        "spacy_onnx",
        "spacy_onnx_int8",
        "hf_pipeline_bs1",
        "hf_pipeline_bs32",
    }
    # The ONNX Runtime fp32 pipeline tags like the PyTorch one.
    assert speed["test_f1_strict"]["spacy_onnx"] == pytest.approx(speed["test_f1_strict"]["spacy"], abs=1e-9)
    assert speed["test_f1_strict"]["hf_pipeline_bs32"] == reference["test"]["seqeval_strict"]["f1"]
    table = output.with_suffix(".md").read_text()
    assert "| spaCy pipeline, ONNX Runtime int8 (backend onnx-int8) |" in table and "Share of the ceiling" in table
    assert "| bare encoder forward, ONNX Runtime fp32, length-sorted batches of 32 (ceiling) |" in table
