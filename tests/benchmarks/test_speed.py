from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

from scripts.benchmarks import speed as speed_benchmark
from scripts.benchmarks.speed_configurations import CONFIGURATIONS
from tests.benchmarks.test_hf_reference import train_reference_on_fixture
from tests.conftest import PROJECT_DIR, WorkflowRun, flat, run

ONNX_ROWS = {
    "spacy_onnx",
    "spacy_onnx_int8",
    "encoder_forward_onnx",
    "encoder_forward_onnx_int8",
    "encoder_calls_onnx",
    "encoder_calls_onnx_int8",
}
OPTIMUM_ROWS = {"optimum_onnx", "optimum_onnx_int8"}


@pytest.fixture(scope="module")
def recipe(tmp_path_factory, tiny_bert) -> Path:
    """The HF recipe's model on the fixture corpus, and that corpus: what the HF rows run."""
    folder = tmp_path_factory.mktemp("recipe")
    train_reference_on_fixture(tiny_bert, folder / "corpus", folder / "hf", 16)
    return folder


def speed_command(workflow: WorkflowRun, recipe: Path, encoder: Path, output: Path, *options: str) -> list[str]:
    return [
        "-m", "scripts.benchmarks.speed", str(workflow.model_best), str(recipe / "hf" / "model"), str(encoder),
        str(recipe / "corpus" / "test.spacy"), str(output), "--reference", str(recipe / "hf" / "reference.json"),
        *options,
    ]  # fmt: skip


def hide_modules(monkeypatch, *hidden: str) -> None:
    """importlib.util.find_spec as on an install without these packages (a missing parent raises, as it does)."""
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args):
        if name.split(".")[0] in hidden:
            if "." in name:
                raise ModuleNotFoundError(f"No module named {name.split('.')[0]!r}")
            return None
        return real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_without_onnx_runtime_its_rows_are_skipped_with_the_extra_named(monkeypatch):
    hide_modules(monkeypatch, "onnxruntime")
    skipped = speed_benchmark.skipped_configurations()
    assert set(skipped) == ONNX_ROWS | OPTIMUM_ROWS
    assert all("onnxruntime not installed: the onnx extra brings it" in skipped[name] for name in ONNX_ROWS)
    # With onnxruntime hidden, the optimum rows name it too (and optimum, where that is absent as well).
    assert all(
        "onnxruntime" in skipped[name] and "not installed: the optimum extra brings" in skipped[name]
        for name in OPTIMUM_ROWS
    )
    assert {each.name for each in CONFIGURATIONS if not each.modules} == {
        each.name for each in CONFIGURATIONS
    } - ONNX_ROWS - OPTIMUM_ROWS


def test_without_optimum_only_its_rows_are_skipped(monkeypatch):
    hide_modules(monkeypatch, "optimum")
    skipped = speed_benchmark.skipped_configurations()
    assert set(skipped) == OPTIMUM_ROWS
    assert all(
        "optimum.onnxruntime not installed: the optimum extra brings it (`pip install -e '.[optimum]'`)" in reason
        for reason in skipped.values()
    )


@pytest.mark.slow
def test_speed_benchmark_without_the_onnx_extra_runs_the_other_rows(tmp_path, tiny_bert, recipe, workflow):
    """As on an install without the onnx extra (onnxruntime and onnx hidden): the run ends, naming what it skipped."""
    output = tmp_path / "benchmark_speed.json"
    # Every process of the run (the benchmark spawns one per configuration) starts without them.
    hiding = tmp_path / "without_onnx"
    hiding.mkdir()
    (hiding / "sitecustomize.py").write_text("import sys\nsys.modules['onnxruntime'] = sys.modules['onnx'] = None\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hiding), str(PROJECT_DIR)])}
    command = speed_command(workflow, recipe, tiny_bert, output, "--repetitions", "1", "--limit", "6")
    printed = run([sys.executable, *command], PROJECT_DIR, env)
    speed = json.loads(output.read_text())
    assert set(speed["skipped"]) == ONNX_ROWS | OPTIMUM_ROWS and not ONNX_ROWS & set(speed["runs"])
    assert speed["spacy_words_per_s"] > 0 and "ratio_onnx_vs_hf_bs32" not in speed
    assert "spacy_onnx: skipped, onnxruntime and onnx not installed: the onnx extra brings them" in flat(printed)
    table = output.with_suffix(".md").read_text()
    assert "| spaCy pipeline, ONNX Runtime fp32 (backend onnx) | skipped: onnxruntime and onnx not installed" in table


@pytest.mark.slow
def test_speed_benchmark_runs_every_configuration_on_a_slice(tmp_path, tiny_bert, recipe, workflow: WorkflowRun):
    output = tmp_path / "benchmark_speed.json"
    run(
        [sys.executable, *speed_command(workflow, recipe, tiny_bert, output, "--repetitions", "2", "--limit", "12")],
        PROJECT_DIR,
    )
    speed = json.loads(output.read_text())
    for key in (
        "spacy_words_per_s",
        "spacy_scores_off_words_per_s",
        "spacy_int8_words_per_s",
        "spacy_onnx_words_per_s",
        "spacy_onnx_int8_words_per_s",
        "hf_pipeline_bs1_words_per_s",
        "hf_pipeline_bs32_words_per_s",
        "encoder_forward_words_per_s",
        "encoder_forward_int8_words_per_s",
        "encoder_forward_onnx_words_per_s",
        "encoder_forward_onnx_int8_words_per_s",
        "encoder_calls_onnx_words_per_s",
        "encoder_calls_onnx_int8_words_per_s",
        "encoder_calls_words_per_s",
        "encoder_calls_int8_words_per_s",
        "optimum_onnx_words_per_s",
        "optimum_onnx_int8_words_per_s",
    ):
        assert speed[key] > 0, key
    assert speed["ratio_vs_hf_bs32"] == pytest.approx(
        speed["spacy_words_per_s"] / speed["hf_pipeline_bs32_words_per_s"]
    )
    # Entity scores cost time, never entities: the same test F1 with them on and off.
    assert speed["ratio_scores_on_vs_off"] == pytest.approx(
        speed["spacy_words_per_s"] / speed["spacy_scores_off_words_per_s"]
    )
    assert speed["test_f1_strict"]["spacy"] == speed["test_f1_strict"]["spacy_scores_off"]
    assert speed["ratio_int8_vs_encoder_int8"] == pytest.approx(
        speed["spacy_int8_words_per_s"] / speed["encoder_forward_int8_words_per_s"]
    )
    assert speed["ratio_onnx_int8_vs_hf_bs32"] == pytest.approx(
        speed["spacy_onnx_int8_words_per_s"] / speed["hf_pipeline_bs32_words_per_s"]
    )
    assert speed["ratio_onnx_vs_encoder_onnx"] == pytest.approx(
        speed["spacy_onnx_words_per_s"] / speed["encoder_forward_onnx_words_per_s"]
    )
    assert speed["ratio_onnx_int8_vs_optimum_onnx_int8"] == pytest.approx(
        speed["spacy_onnx_int8_words_per_s"] / speed["optimum_onnx_int8_words_per_s"]
    )
    assert speed["ratio_onnx_vs_encoder_calls_onnx"] == pytest.approx(
        speed["spacy_onnx_words_per_s"] / speed["encoder_calls_onnx_words_per_s"]
    )
    for name in OPTIMUM_ROWS:
        raw_text = speed["runs"][name]["test_f1_raw_text"]
        assert raw_text["best_aggregation"] in {"simple", "first", "average", "max"}
        assert raw_text["f1"] == max(raw_text["by_aggregation"].values()) and 0.0 <= raw_text["f1"] <= 1.0
    assert speed["n_texts"] == 12 and "CPU cores" in speed["machine"] and speed["skipped"] == {}
    assert all(len(run["seconds"]) == 2 and run["peak_rss_mb"] > 0 for run in speed["runs"].values())
    reference = json.loads((recipe / "hf" / "reference.json").read_text())
    assert set(speed["test_f1_strict"]) == {
        "spacy",
        "spacy_scores_off",
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
    assert "| bare encoder forward, ONNX Runtime int8, pre-tokenized, in the pipeline's encoder calls |" in table
    assert "| HF optimum pipeline, ONNX Runtime dynamic int8 (avx512_vnni, per channel), batch 32 |" in table
    assert "against HF optimum's pipeline of the same precision: ONNX Runtime fp32" in table
    assert "entity scores on, against off (PyTorch fp32): " in table
    assert "onnxruntime 1.32.0" in speed["machine"] and "torch " in speed["machine"]


def test_the_encoder_alone_is_timed_on_the_pipelines_calls(workflow: WorkflowRun):
    """Every text's wordpieces once, in the pipeline's calls: at most the budget's padded wordpieces, or one a batch."""
    from scripts.benchmarks.harness import sentence_texts
    from scripts.benchmarks.speed_configurations import recorded_encoder_calls
    from scripts.lib.pipeline_loading import load_pipeline

    texts = sentence_texts(workflow.project / "corpus" / "test.spacy", 40)
    tokenizer = load_pipeline(str(workflow.model_best)).get_pipe("transformer").model.tokenizer
    expected = sorted(tokenizer(texts)["input_ids"])

    def real_rows(calls):
        rows = []
        for call in calls:
            real = call["attention_mask"].astype(bool)
            assert real[:, -1].any()  # each call is cut to its longest row
            rows += [row[mask].tolist() for row, mask in zip(call["input_ids"], real, strict=True)]
        return sorted(rows)

    calls = recorded_encoder_calls(str(workflow.model_best), texts, 64)
    assert len(calls) > 3 and all(call["input_ids"].size <= 64 or len(call["input_ids"]) == 1 for call in calls)
    assert real_rows(calls) == expected
    one_a_batch = recorded_encoder_calls(str(workflow.model_best), texts, 0)
    assert len(one_a_batch) < len(calls) and real_rows(one_a_batch) == expected
    assert any(call["input_ids"].size > 64 for call in one_a_batch)
