from __future__ import annotations

import json
import sys

import pytest

from tests.conftest import PROJECT_DIR, WorkflowRun, run

pytestmark = pytest.mark.slow


def test_ray_benchmark_runs_every_configuration_on_a_slice(tmp_path, workflow: WorkflowRun):
    output = tmp_path / "benchmark_ray.json"
    run(
        [sys.executable, "-m", "scripts.benchmarks.ray_scaling", str(workflow.model_best),
         str(workflow.project / "corpus" / "test.spacy"), str(output), "--sentences", "40", "--batch-size", "16",
         "--object-store-mb", "300", "--backend", "torch-int8"],
        PROJECT_DIR,
    )  # fmt: skip
    result = json.loads(output.read_text())
    assert result["n_texts"] == 40 and result["pipe"]["words_per_second"] > 0
    assert set(result["runs"]) == {"ray_1_worker", "ray_2_workers"}
    for name, workers in (("ray_1_worker", 1), ("ray_2_workers", 2)):
        measured = result["runs"][name]
        assert measured["workers"] == workers and measured["fixed_seconds"] > 0 and measured["words_per_second"] > 0
    assert len(result["load_average"]) == 2 and "CPU cores" in result["machine"] and result["backend"] == "torch-int8"
    table = output.with_suffix(".md").read_text()
    assert "| Ray local, 2 workers x 1 CPU (`ray_2_workers`) |" in table
