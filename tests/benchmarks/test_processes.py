from __future__ import annotations

import json
import subprocess
import sys

import pytest

from scripts.benchmarks.processes import CONFIGURATIONS
from tests.conftest import PROJECT_DIR, WorkflowRun, flat, run

pytestmark = pytest.mark.slow


def test_process_benchmark_runs_every_configuration_on_a_slice(tmp_path, workflow: WorkflowRun):
    output = tmp_path / "benchmark_processes.json"
    run(
        [sys.executable, "-m", "scripts.benchmarks.processes", str(workflow.model_best),
         str(workflow.project / "corpus" / "test.spacy"), str(output), "--repetitions", "1", "--limit", "40",
         "--backend", "onnx"],
        PROJECT_DIR,
    )  # fmt: skip
    result = json.loads(output.read_text())
    assert set(result["runs"]) == set(CONFIGURATIONS)
    for name, run_result in result["runs"].items():
        assert run_result["n_process"] == CONFIGURATIONS[name][1]
        assert run_result["start_method_used"] == run_result["start_method"] == CONFIGURATIONS[name][2], name
        assert run_result["words_per_second"] > 0 and run_result["startup_seconds"] >= 0, name
        assert run_result["steady_words_per_second"] >= run_result["words_per_second"], name
        assert run_result["per_process_words_per_second"] == pytest.approx(
            run_result["steady_words_per_second"] / run_result["n_process"]
        )
    assert result["speedup_annotate_2"] == pytest.approx(
        result["runs"]["annotate_2"]["words_per_second"] / result["runs"]["annotate_1"]["words_per_second"]
    )
    assert result["n_texts"] == 40 and "CPU cores" in result["machine"] and result["backend"] == "onnx"
    table = output.with_suffix(".md").read_text()
    assert "encoder backend `onnx`" in table
    assert "| `nlp.pipe(n_process=2)`, fork (default) |" in table and "Two processes against one" in table


def test_unknown_model_fails_before_any_process_starts(tmp_path, workflow: WorkflowRun):
    output = tmp_path / "benchmark_processes.json"
    command = [sys.executable, "-m", "scripts.benchmarks.processes", str(tmp_path / "missing"),
               str(workflow.project / "corpus" / "test.spacy"), str(output)]  # fmt: skip
    result = subprocess.run(command, cwd=PROJECT_DIR, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert "no such folder" in flat(result.stdout + result.stderr)
    assert not output.exists()
