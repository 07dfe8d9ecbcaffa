"""The checks the GPU tests make on a training log, and the table of `make gpu-check`, on the CPU."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from scripts.benchmarks.gpu_report import (
    CARD_16GB_USABLE_BYTES,
    GIB,
    REFERENCE_JSON,
    check_table,
    entity_agreement,
    peak_gpu_bytes,
    per_step_losses,
    run_folder,
    training_problems,
    training_words_per_second,
)
from tests.conftest import PROJECT_DIR, flat


def record(step: int, ner_loss: float, words: int = 0, seconds: float = 0.0, **extra) -> dict:
    return {"step": step, "words": words, "seconds": seconds, "losses": {"transformer": 0.0, "ner": ner_loss}, **extra}


def scaler(updates: int, skipped: int, scale: float = 2.0**15) -> dict:
    return {"grad_scaler": {"updates": updates, "skipped": skipped, "scale": scale}}


def gpu_report(*arguments: str, hide_cupy: bool = False) -> subprocess.CompletedProcess:
    """`python -m scripts.benchmarks.gpu_report ARGUMENTS` from the project folder."""
    hide = "sys.modules['cupy'] = None; " if hide_cupy else ""
    command = [
        sys.executable,
        "-c",
        f"import sys; {hide}from scripts.benchmarks.gpu_report import app; app()",
        *arguments,
    ]
    return subprocess.run(command, cwd=PROJECT_DIR, capture_output=True, text=True, timeout=120)


# Evaluations at 0, 100, 200: the loss of step 0 alone, then sums over 100 updates.
HEALTHY = [
    record(0, 900.0, **scaler(1, 1)),
    record(100, 100 * 300.0, **scaler(101, 3)),
    record(200, 100 * 150.0, **scaler(201, 3)),
]


def test_losses_are_compared_per_update():
    assert per_step_losses(HEALTHY, "ner") == [900.0, 300.0, 150.0]


def test_a_healthy_mixed_precision_run_has_no_problem():
    assert training_problems(HEALTHY, mixed_precision=True) == []


def test_a_non_finite_loss_is_a_problem():
    log = [*HEALTHY[:2], record(200, float("nan"), **scaler(201, 3))]
    assert any("non-finite loss" in problem for problem in training_problems(log))


def test_a_loss_that_does_not_fall_is_a_problem():
    log = [record(0, 900.0), record(100, 100 * 800.0)]
    (problem,) = training_problems(log)
    assert "ner loss did not fall" in problem and "900" in problem and "800" in problem


def test_a_grad_scaler_stuck_skipping_is_a_problem():
    stuck = [
        record(0, 900.0, **scaler(1, 1)),
        record(100, 100 * 300.0, **scaler(101, 2)),
        record(200, 0.0, **scaler(201, 102)),
    ]
    problems = training_problems(stuck, mixed_precision=True)
    assert any("skipped 102 of 201 updates" in problem for problem in problems)
    assert any("skipped all 100 updates of the last interval" in problem for problem in problems)


def test_mixed_precision_without_a_grad_scaler_in_the_log_is_a_problem():
    log = [record(0, 900.0), record(100, 100 * 300.0)]
    assert training_problems(log) == []
    assert training_problems(log, mixed_precision=True) == [
        "no fp16 gradient scaler in the log: mixed precision is off, or the logger did not find it"
    ]


def test_one_evaluation_is_not_enough():
    assert "at least 2" in training_problems([record(0, 900.0)])[0]


def memory(reserved: float, cupy_pool: float = 0) -> dict:
    return {
        "gpu_memory": {"torch_peak_allocated": 0, "torch_peak_reserved": int(reserved), "cupy_pool": int(cupy_pool)}
    }


def test_peak_gpu_memory_is_the_highest_reserved_plus_cupy_pool():
    log = [record(0, 1.0, **memory(2 * GIB, GIB)), record(100, 1.0, **memory(5 * GIB, GIB)), record(200, 1.0)]
    assert peak_gpu_bytes(log) == 6 * GIB
    assert peak_gpu_bytes([record(0, 1.0)]) is None
    assert 14 * GIB < CARD_16GB_USABLE_BYTES < 15 * GIB


def test_entity_agreement_is_entity_f1_text_by_text():
    cpu = [[[0, 5, "PER"], [10, 16, "LOC"]], [], [[3, 7, "ORG"]]]
    assert entity_agreement(cpu, cpu) == 1.0
    assert entity_agreement([[], []], [[], []]) == 1.0
    # One label flipped: 2 of 3 entities shared on each side.
    assert entity_agreement(cpu, [[[0, 5, "PER"], [10, 16, "ORG"]], [], [[3, 7, "ORG"]]]) == pytest.approx(2 / 3)
    # The same entity on another text does not count.
    assert entity_agreement([[[0, 5, "PER"]], []], [[], [[0, 5, "PER"]]]) == 0.0


def benchmark_speed_json() -> dict:
    runs = {
        name: {"words_per_second": speed, "peak_gpu_mb": gpu_mb}
        for name, speed, gpu_mb in [
            ("spacy", 40_000.0, 2048.0),
            ("spacy_int8", 900.0, None),
            ("hf_pipeline_bs1", 3_000.0, 1024.0),
            ("hf_pipeline_bs32", 20_000.0, 1536.0),
            ("encoder_forward", 60_000.0, 1024.0),
            ("encoder_forward_int8", 1_200.0, None),
        ]
    }
    return {"runs": runs, "n_texts": 3453, "machine": "test machine"}


def reference_json() -> dict:
    """What scripts.benchmarks.hf_reference writes (the keys the table reads): `make gpu-check`'s short recipe run."""
    return {
        "recipe": {"learning_rate": 2e-5, "batch_size": 16, "epochs": 1.0, "max_train_sentences": 2000},
        "train_sentences": 2000,
        "train_seconds": 10.0,
        "train_words_per_second": 2_500.0,
    }


def test_check_table_has_training_and_inference_rows():
    log = [record(0, 900.0, 0, 0.0), record(300, 1.0, words=600_000, seconds=120.0, **memory(9 * GIB, 0))]
    table = check_table({"sentence": log}, benchmark_speed_json())
    assert "| training, sentence mode (300 steps) | 5,000 | 9.00 |" in table
    assert "| inference: spaCy pipeline, PyTorch fp32 (this project) | 40,000 | 2.00 |" in table
    assert "| inference: HF pipeline, batch 1 | 3,000 | 1.00 |" in table
    assert "| inference: spaCy pipeline, PyTorch int8 (backend torch-int8), on the CPU | 900 |  |" in table
    assert "3,453 CoNLL test sentences" in table
    assert training_words_per_second(log) == 5000.0
    assert "HF recipe" not in table  # no reference.json: no row, no ratio


def test_check_table_shows_the_hf_recipes_training_speed_beside_ours():
    logs = {
        "sentence": [record(0, 900.0), record(300, 1.0, words=600_000, seconds=120.0)],
        "document": [record(0, 900.0), record(300, 1.0, words=300_000, seconds=120.0)],
    }
    table = check_table(logs, benchmark_speed_json(), reference_json())
    lines = table.splitlines()
    hf_row = "| training, HF recipe (transformers Trainer, 2,000 sentences, 1 epoch) | 2,500 |  |"
    # Among the training rows, before the inference ones.
    assert lines.index(hf_row) == lines.index("| training, document mode (300 steps) | 2,500 |  |") + 1
    assert lines.index(hf_row) < next(i for i, line in enumerate(lines) if line.startswith("| inference:"))
    assert (
        "Training words/s against the HF recipe's on the same encoder and GPU: sentence mode 2.00x, "
        "document mode 1.00x" in table
    )


def test_report_reads_the_runs_the_gpu_tests_leave(tmp_path):
    for doc_mode, words in (("sentence", 600_000), ("document", 300_000)):
        training = run_folder(tmp_path, doc_mode) / "training"
        training.mkdir(parents=True)
        lines = [record(0, 900.0, **memory(GIB)), record(300, 1.0, words=words, seconds=100.0, **memory(8 * GIB))]
        (training / "train_log.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    metrics = run_folder(tmp_path, "sentence") / "metrics"
    metrics.mkdir()
    (metrics / "benchmark_speed.json").write_text(json.dumps(benchmark_speed_json()))
    reference = run_folder(tmp_path, "sentence") / REFERENCE_JSON
    reference.parent.mkdir(parents=True)
    reference.write_text(json.dumps(reference_json()))
    result = gpu_report("report", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "| training, document mode (300 steps) | 3,000 | 8.00 |" in result.stdout
    assert "| training, HF recipe (transformers Trainer, 2,000 sentences, 1 epoch) | 2,500 |  |" in result.stdout
    assert (
        "| inference: bare encoder forward, PyTorch fp32, length-sorted batches of 32 (ceiling) | 60,000 | 1.00 |"
        in result.stdout
    )
    assert (tmp_path / "gpu_check.md").read_text() in result.stdout + "\n"


def test_report_without_runs_says_how_to_make_them(tmp_path):
    result = gpu_report("report", str(tmp_path))
    assert result.returncode == 1 and "make gpu-check" in flat(result.stdout)


def test_preflight_without_cuda_fails_in_one_message(tmp_path):
    """What `make gpu-check` prints first on a machine without a GPU: the fix, no traceback."""
    result = gpu_report("preflight", hide_cupy=True)  # as on a machine without the GPU extra
    output = flat(result.stdout + result.stderr)
    assert result.returncode == 1
    assert "make gpu-check needs a usable CUDA device" in output and "[cuda13x]" in output
    assert "Traceback" not in output
