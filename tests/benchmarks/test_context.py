from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.benchmarks.context import markdown, summarize
from tests.conftest import FIXTURE_CONLL_DIR, SHORT_SCHEDULE

PROJECT = Path(__file__).resolve().parents[2]


def run(variant: str, seed: int, test_f1: float, seconds: float) -> dict:
    return {
        "variant": variant,
        "seed": seed,
        "dev_f1_strict": test_f1 + 0.02,
        "test_f1_strict": test_f1,
        "test_f1_default": test_f1 + 0.001,
        "train_seconds": seconds,
        "words_per_step": 1100.0,
    }


def test_context_wins_only_with_half_a_point_within_the_time_budget():
    runs = [
        run("sentence", 0, 0.850, 500),
        run("sentence", 1, 0.854, 520),
        run("document", 0, 0.860, 560),
        run("document", 1, 0.858, 580),
        run("flert", 0, 0.870, 900),
    ]
    summary = summarize(runs)
    assert summary["means"]["sentence"]["test_f1_strict"] == pytest.approx(0.852)
    assert summary["against_sentence"]["document"]["test_f1_strict_gain"] == pytest.approx(0.007)
    assert summary["against_sentence"]["document"]["train_time_ratio"] == pytest.approx(570 / 510)
    assert summary["against_sentence"]["document"]["wins"]
    assert not summary["against_sentence"]["flert"]["wins"]  # 1.76x the time
    table = markdown({"config": "c.cfg", "model": "m", "machine": "2 cores", "runs": runs, "summary": summary})
    assert "| **sentence** | mean | 87.20 | 85.20 | 85.30 | 8.5 |  |" in table
    assert "document against sentence mode (means): test F1 +0.70 points, training time 1.12x: wins" in table
    assert "flert against sentence mode (means): test F1 +1.80 points, training time 1.76x: does not win" in table


def test_a_loss_is_reported_as_such():
    summary = summarize([run("sentence", 0, 0.857, 500), run("document", 0, 0.852, 500)])
    assert summary["against_sentence"]["document"]["test_f1_strict_gain"] == pytest.approx(-0.005)
    assert not summary["against_sentence"]["document"]["wins"]


@pytest.mark.slow
def test_benchmark_trains_scores_and_resumes(tiny_bert, tmp_path):
    """Both doc modes, one seed, on the tiny BERT and the invented fixture; a rerun reuses the runs."""
    command = [
        sys.executable,
        "-m",
        "scripts.benchmarks.context",
        str(PROJECT / "configs" / "minilm_cpu.cfg"),
        str(tmp_path / "metrics" / "benchmark_context.json"),
        "--model",
        str(tiny_bert),
        "--data-dir",
        str(FIXTURE_CONLL_DIR),
        "--work-dir",
        str(tmp_path / "context"),
        "--seeds",
        "0",
    ]
    env = {
        **os.environ,
        "SPACY_CONFIG_OVERRIDES": SHORT_SCHEDULE.replace("max_steps 200", "max_steps 40").replace(
            "eval_frequency 100", "eval_frequency 20"
        ),
    }
    first = subprocess.run(command, cwd=PROJECT, env=env, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    result = json.loads((tmp_path / "metrics" / "benchmark_context.json").read_text())
    assert [(r["variant"], r["seed"]) for r in result["runs"]] == [("sentence", 0), ("document", 0)]
    for each in result["runs"]:
        assert 0.0 <= each["test_f1_strict"] <= 1.0 and each["train_steps"] == 40
    # Same words per step in both modes (the fixture's chunks are whole 10-sentence documents).
    sentence, document = (r["words_per_step"] for r in result["runs"])
    assert document == pytest.approx(sentence, rel=0.5)
    assert "document against sentence mode" in (tmp_path / "metrics" / "benchmark_context.md").read_text()
    second = subprocess.run(command, cwd=PROJECT, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0 and second.stdout.count("finished before") == 2
    assert json.loads((tmp_path / "metrics" / "benchmark_context.json").read_text())["runs"] == result["runs"]


def test_unknown_variant_is_named(tmp_path):
    command = [sys.executable, "-m", "scripts.benchmarks.context", str(PROJECT / "configs" / "minilm_cpu.cfg")]
    command += [str(tmp_path / "out.json"), "--model", "x", "--variants", "sentence,paragraph"]
    result = subprocess.run(command, cwd=PROJECT, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "unknown variant 'paragraph'" in result.stdout + result.stderr
