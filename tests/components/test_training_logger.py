from __future__ import annotations

import io
import json
from types import SimpleNamespace

import spacy

from scripts.components.training_logger import (
    LOGGER_NAME,
    SkippedStepCounter,
    enabled_grad_scalers,
    gpu_memory,
    log_record,
)


def info(step: int, words: int, seconds: int) -> dict:
    return {
        "epoch": 0,
        "step": step,
        "words": words,
        "seconds": seconds,
        "losses": {"ner": 12.5},
        "other_scores": {"ents_f": 0.5, "ents_p": 0.4, "ents_r": 0.6, "speed": 1000.0},
        "score": 0.5,
        "checkpoints": [],
    }


def test_log_record_keeps_words_seconds_and_the_weighted_scores():
    record = log_record(info(110, 99_000, 180), ["ents_f", "ents_p"])
    assert record == {
        "epoch": 0,
        "step": 110,
        "words": 99_000,
        "seconds": 180,
        "losses": {"ner": 12.5},
        "scores": {"ents_f": 0.5, "ents_p": 0.4},
        "score": 0.5,
    }


def test_writes_one_line_per_evaluation_and_starts_a_new_file(tmp_path):
    output = tmp_path / "logs" / "train_log.jsonl"
    output.parent.mkdir()
    output.write_text('{"step": 999}\n')  # a previous run's log
    nlp = spacy.blank("en")
    nlp.add_pipe("ner")
    logger = spacy.registry.loggers.get(LOGGER_NAME)(progress_bar=False, console_output=False, output_file=str(output))
    log_step, finalize = logger(nlp, io.StringIO(), io.StringIO())
    log_step(info(0, 0, 0))
    log_step(None)  # a step without evaluation
    log_step(info(110, 99_000, 180))
    finalize()
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    assert [(line["step"], line["words"], line["seconds"]) for line in lines] == [(0, 0, 0), (110, 99_000, 180)]


def test_counts_the_updates_an_fp16_grad_scaler_skips():
    from thinc.shims.pytorch_grad_scaler import PyTorchGradScaler

    scaler = PyTorchGradScaler(enabled=True, init_scale=2.0**16)
    counter = SkippedStepCounter([scaler])
    for overflowed in (True, True, False, False, False):
        scaler._found_inf = overflowed  # what PyTorchShim's backprop sets when a gradient overflows
        scaler.update()  # what PyTorchShim.finish_update calls after each step
    assert not scaler.found_inf  # update() clears it: only the wrapper saw it
    assert counter.record() == {"updates": 5, "skipped": 2, "scale": 2.0**14}  # halved once per overflow


def test_finds_the_grad_scaler_only_with_mixed_precision():
    import torch
    from thinc.api import PyTorchWrapper_v2

    with_fp16 = PyTorchWrapper_v2(torch.nn.Linear(2, 2), mixed_precision=True)
    without = PyTorchWrapper_v2(torch.nn.Linear(2, 2), mixed_precision=False)
    assert enabled_grad_scalers([with_fp16, without]) == [with_fp16.shims[0]._grad_scaler]
    assert enabled_grad_scalers([without]) == []


def test_gpu_memory_keeps_each_part_apart():
    cuda = SimpleNamespace(max_memory_allocated=lambda: 3 * 2**30, max_memory_reserved=lambda: 4 * 2**30)
    pool = SimpleNamespace(total_bytes=lambda: 2**20)
    assert gpu_memory(cuda, pool) == {
        "torch_peak_allocated": 3 * 2**30,
        "torch_peak_reserved": 4 * 2**30,
        "cupy_pool": 2**20,
    }


def test_cpu_runs_log_no_gpu_keys(tmp_path):
    output = tmp_path / "train_log.jsonl"
    nlp = spacy.blank("en")
    nlp.add_pipe("ner")
    logger = spacy.registry.loggers.get(LOGGER_NAME)(progress_bar=False, console_output=False, output_file=str(output))
    log_step, finalize = logger(nlp, io.StringIO(), io.StringIO())
    log_step(info(0, 0, 0))
    finalize()
    (line,) = [json.loads(line) for line in output.read_text().splitlines()]
    assert "gpu_memory" not in line and "grad_scaler" not in line
