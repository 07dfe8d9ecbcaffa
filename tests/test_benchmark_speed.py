from __future__ import annotations

import json
import sys

import pytest

from tests.conftest import PROJECT_DIR, WorkflowRun, run
from tests.test_hf_reference import train_reference_on_fixture

pytestmark = pytest.mark.slow


def test_speed_benchmark_runs_every_configuration_on_a_slice(tmp_path, tiny_bert, workflow: WorkflowRun):
    train_reference_on_fixture(tiny_bert, tmp_path / "corpus", tmp_path / "hf", 16)
    output = tmp_path / "benchmark_speed.json"
    run(
        [sys.executable, "-m", "scripts.benchmark_speed", str(workflow.model_best), str(tmp_path / "hf" / "model"),
         str(tiny_bert), str(tmp_path / "corpus" / "test.spacy"), str(output), "--repetitions", "2", "--limit", "12"],
        PROJECT_DIR,
    )  # fmt: skip
    speed = json.loads(output.read_text())
    for key in (
        "spacy_words_per_s",
        "spacy_int8_words_per_s",
        "hf_pipeline_bs1_words_per_s",
        "hf_pipeline_bs32_words_per_s",
        "encoder_forward_words_per_s",
    ):
        assert speed[key] > 0, key
    assert speed["ratio_vs_hf_bs32"] == pytest.approx(
        speed["spacy_words_per_s"] / speed["hf_pipeline_bs32_words_per_s"]
    )
    assert speed["n_texts"] == 12 and speed["machine"]
    assert all(len(run["seconds"]) == 2 and run["peak_rss_mb"] > 0 for run in speed["runs"].values())
