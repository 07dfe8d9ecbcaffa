from __future__ import annotations

import json
import subprocess
import sys

import pytest

from scripts.corpus import convert
from tests.conftest import FIXTURE_CONLL_DIR, PROJECT_DIR, WorkflowRun

pytestmark = pytest.mark.slow


def test_speed_benchmark_runs_every_configuration_on_a_slice(tmp_path, tiny_bert, workflow: WorkflowRun):
    convert(tmp_path / "corpus", FIXTURE_CONLL_DIR)
    reference = subprocess.run(
        [
            sys.executable,
            "-m",
            "scripts.hf_reference",
            str(tiny_bert),
            str(tmp_path / "corpus"),
            str(tmp_path / "hf"),
            "--epochs",
            "1",
            "--max-train-sentences",
            "16",
        ],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert reference.returncode == 0, reference.stdout + reference.stderr
    output = tmp_path / "benchmark_speed.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "scripts.benchmark_speed",
            str(workflow.model_best),
            str(tmp_path / "hf" / "model"),
            str(tiny_bert),
            str(tmp_path / "corpus" / "test.spacy"),
            str(output),
            "--repetitions",
            "2",
            "--limit",
            "12",
        ],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
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
