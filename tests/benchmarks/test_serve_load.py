from __future__ import annotations

import json
import subprocess
import sys

import pytest

from scripts.benchmarks.serve_load import checks, parse_levels, percentile
from tests.conftest import PROJECT_DIR, WorkflowRun, flat, run


def level(words_per_second: float, p50: float, p99: float) -> dict:
    return {"words_per_second": words_per_second, "p50_ms": p50, "p99_ms": p99}


def test_percentiles_are_measured_values():
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 0.5), percentile(values, 0.99), percentile(values, 1.0)) == (50.0, 99.0, 100.0)
    assert percentile([7.0], 0.99) == 7.0


def test_levels_are_positive_numbers():
    assert parse_levels("1, 8,32") == [1, 8, 32]
    for bad in ("", "0,8", "a"):
        with pytest.raises(Exception, match="positive numbers"):
            parse_levels(bad)


def test_the_done_criteria_are_checked_against_the_naive_server():
    result = {
        "served": {"1": level(100, 14, 20), "32": level(1400, 300, 600)},
        "naive": {"1": level(120, 10, 15), "32": level(1000, 400, 900)},
        "overload": {"only_200_or_503": True, "within_timeout": True, "server_survived": True, "normal_after": False},
    }
    found = checks(result)
    assert found["speedup_at_32"]["value"] == pytest.approx(1.4) and found["speedup_at_32"]["passed"]
    assert found["p99_at_32_not_above_naive"]["passed"]
    assert found["p50_ratio_at_1"]["value"] == pytest.approx(1.4) and found["p50_ratio_at_1"]["passed"]
    assert not found["overload"]["passed"]
    result["served"]["32"] = level(1200, 300, 950)
    found = checks(result)
    assert not found["speedup_at_32"]["passed"] and not found["p99_at_32_not_above_naive"]["passed"]


@pytest.mark.slow
def test_load_benchmark_runs_both_servers_offline_and_overload_on_a_slice(tmp_path, workflow: WorkflowRun):
    output = tmp_path / "benchmark_serve.json"
    run(
        [sys.executable, "-m", "scripts.benchmarks.serve_load", str(workflow.model_best),
         str(workflow.project / "corpus" / "test.spacy"), str(output), "--concurrency", "1,4", "--requests", "24",
         "--seconds", "20", "--limit", "40", "--overload-queue", "4", "--overload-timeout-s", "15", "--warm-up", "8",
         "--threads", "1"],
        PROJECT_DIR,
    )  # fmt: skip
    result = json.loads(output.read_text())
    assert result["n_texts"] == 40 and result["threads"] == 1 and "CPU cores" in result["machine"]
    assert result["offline"]["pipe_words_per_second"] > 0 and result["offline"]["single_words_per_second"] > 0
    for name in ("served", "naive"):
        assert set(result[name]) == {"1", "4"}, name
        for concurrency, measured in result[name].items():
            assert measured["concurrency"] == int(concurrency)
            assert measured["ok"] == measured["requests"] == 24, (name, measured["statuses"])
            assert measured["words_per_second"] > 0 and measured["p50_ms"] <= measured["p95_ms"] <= measured["p99_ms"]
            assert measured["over_offline_pipe"] == pytest.approx(
                measured["words_per_second"] / result["offline"]["pipe_words_per_second"]
            )
            assert 0 < measured["generator_cpu_share"] <= 1 and 0 < measured["server_cpu_share"] <= 1
    overload = result["overload"]
    assert overload["concurrency"] == 16 and overload["burst"]["requests"] > 0
    assert overload["only_200_or_503"] and overload["server_survived"] and overload["normal_after"]
    assert set(result["checks"]) == {"p50_ratio_at_1", "overload"}
    table = output.with_suffix(".md").read_text()
    assert "| callers | server | requests/s | words/s |" in table and "| 4 | `served` |" in table
    assert "Overload: queue of 4 texts, 16 concurrent callers" in table and result["machine"] in table


def test_a_missing_model_stops_before_any_server_starts(tmp_path):
    docbin = tmp_path / "test.spacy"
    docbin.write_bytes(b"")
    command = [sys.executable, "-m", "scripts.benchmarks.serve_load", str(tmp_path / "missing"), str(docbin),
               str(tmp_path / "out.json")]  # fmt: skip
    result = subprocess.run(command, cwd=PROJECT_DIR, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "no such folder" in flat(result.stdout + result.stderr)
    assert not (tmp_path / "out.json").exists()
