"""The product's main path on a GPU: bert-base's shape, mixed precision, the PyTorch allocator.

Marked `gpu` and skipped with the reason where no CUDA device is usable (cupy, a CUDA
build of torch and a device: scripts/lib/preflight.py's check_gpu). Offline: the encoder is
bert-base-shaped with random weights (tests/tiny_bert.py), built here in seconds.
`spacy project run all` runs with configs/bert_ner.cfg unchanged and `--vars.gpu_id 0`;
only the schedule is cut, through the project var train_overrides, once per doc_mode.

`make gpu-check` sets GPU_CHECK_DIR so that the runs stay there for the speed benchmark
and the table (scripts/benchmarks/gpu_report.py); otherwise they go to a temporary folder.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from scripts.benchmarks.gpu_report import (
    CARD_16GB_USABLE_BYTES,
    DOC_MODES,
    GIB,
    entity_agreement,
    peak_gpu_bytes,
    run_folder,
    training_problems,
)
from scripts.benchmarks.harness import sentence_texts
from scripts.lib.preflight import PreflightError, check_gpu
from scripts.lib.training_run import TRAIN_LOG_NAME, read_train_log
from tests.conftest import (
    FIXTURE_CONLL_DIR,
    PACKAGE,
    PROJECT_DIR,
    copy_project,
    missing_real_data,
    run,
    vocabulary_texts,
    workflow_command,
    workflow_env,
    workflow_wheel,
)
from tests.tiny_bert import BERT_BASE_CASED_VOCAB_SIZE, BERT_BASE_SHAPE, MAX_WORDPIECES, build_bert_base_shaped


def cuda_unusable_reason() -> str | None:
    try:
        check_gpu(0)
    except PreflightError as err:
        return str(err)
    return None


CUDA_UNUSABLE = cuda_unusable_reason()
needs_cuda = pytest.mark.skipif(CUDA_UNUSABLE is not None, reason=f"no usable CUDA device: {CUDA_UNUSABLE}")

# 300 updates at the config's batch settings (steps of up to 1,100 words, one pass each). Adam
# moves a weight by about the learning rate per step: at bert-base-cased's fine-tuning rate of
# 5e-5, 300 steps move each by 0.015 at most, likely too little for the NER on a random encoder
# to show learning; the CPU config's 2e-4 gives it four times that.
GPU_SCHEDULE = {
    "training.max_steps": 300,
    "training.eval_frequency": 100,
    "training.patience": 0,
    "training.optimizer.learn_rate.warmup_steps": 30,
    "training.optimizer.learn_rate.total_steps": 300,
    "training.optimizer.learn_rate.initial_rate": 0.0002,
    "training.logger.progress_bar": "false",
}
# Sentences of the test split tagged on both devices.
AGREEMENT_SENTENCES = 300
# fp16 autocast on the GPU against fp32 on the CPU: a near-tie between two actions can
# flip, so the entities need not be identical to the last one. More than 1 in 100 differing
# means a real fault (weights not loaded, a wrong alignment), not rounding.
MIN_AGREEMENT = 0.99
# Too few entities and the comparison says nothing (a pipeline that finds none agrees with itself).
MIN_ENTITIES = 10


def gpu_env() -> dict[str, str]:
    return {**workflow_env(), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


@dataclass
class GpuRun:
    doc_mode: str
    project: Path
    conll_dir: Path
    output: str

    @property
    def log(self) -> list[dict[str, Any]]:
        return read_train_log(self.project / "training" / TRAIN_LOG_NAME)


@pytest.fixture(scope="module")
def check_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = os.environ.get("GPU_CHECK_DIR")
    return Path(folder).resolve() if folder else tmp_path_factory.mktemp("gpu_check")


@pytest.fixture(scope="module")
def bert_base_encoder(check_dir: Path, workflow_conll_dir: Path) -> Path:
    folder = check_dir / "encoder"
    shutil.rmtree(folder, ignore_errors=True)
    return build_bert_base_shaped(folder, vocabulary_texts(workflow_conll_dir))


def run_workflow(check_dir: Path, doc_mode: str, encoder: Path, conll_dir: Path, gpu_id: int = 0) -> GpuRun:
    """`spacy project run all` in a fresh copy of the project under check_dir (gpu_id -1: a CPU dry run)."""
    shutil.rmtree(check_dir / doc_mode, ignore_errors=True)
    project = copy_project(run_folder(check_dir, doc_mode))
    command = workflow_command(
        project, encoder, conll_dir, "--vars.doc_mode", doc_mode, gpu_id=gpu_id, settings=GPU_SCHEDULE
    )
    return GpuRun(doc_mode, project, conll_dir, run(command, project, gpu_env(), timeout=3600))


@pytest.fixture(scope="module", params=DOC_MODES)
def gpu_run(request, check_dir: Path, bert_base_encoder: Path, workflow_conll_dir: Path) -> GpuRun:
    return run_workflow(check_dir, request.param, bert_base_encoder, workflow_conll_dir)


def wheel_entities(site: Path, texts_file: Path, gpu_id: int) -> list[list[list[Any]]]:
    """The installed wheel's entities, in a fresh process on the GPU (gpu_id 0) or the CPU (-1)."""
    output = texts_file.with_name(f"entities_gpu{gpu_id}.json")
    env = gpu_env()
    # Kept after them: an offline machine may carry its spaCy stack on PYTHONPATH (../shared/gpu_kit does).
    inherited = [env["PYTHONPATH"]] if env.get("PYTHONPATH") else []
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(PROJECT_DIR), *inherited])
    command = [sys.executable, "-m", "scripts.benchmarks.gpu_report", "entities", PACKAGE, str(texts_file), str(output)]
    run([*command, "--gpu-id", str(gpu_id)], PROJECT_DIR, env)
    return json.loads(output.read_text())


def check_workflow_run(gpu_run: GpuRun, tmp_path: Path, gpu_id: int = 0) -> None:
    """Trained with mixed precision, evaluated, packaged; the wheel tags alike on GPU gpu_id and on the CPU.

    gpu_id -1 makes the same checks of a CPU run (mixed precision off, CPU against CPU):
    a dry run of this plumbing on a machine without a GPU.
    """
    on_gpu = gpu_id >= 0
    assert ("Training on the CPU" in gpu_run.output) != on_gpu
    config = (gpu_run.project / "training" / "model-best" / "config.cfg").read_text()
    assert f"mixed_precision = {str(on_gpu).lower()}" in config and 'gpu_allocator = "pytorch"' in config
    log = gpu_run.log
    if on_gpu:
        assert log[-1].get("gpu_memory"), "the training log has no GPU memory: did it train on the CPU?"
    problems = training_problems(log, mixed_precision=on_gpu)
    assert not problems, "\n".join(problems)
    assert (gpu_run.project / "metrics" / "test.json").is_file()
    wheel = workflow_wheel(gpu_run.project)
    assert wheel.is_file()

    site = tmp_path / "site"
    pip_install = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet"]
    run([*pip_install, "--target", str(site), str(wheel)], tmp_path)
    texts_file = tmp_path / "texts.json"
    texts = sentence_texts(gpu_run.project / "corpus" / "test.spacy", AGREEMENT_SENTENCES)
    texts_file.write_text(json.dumps(texts))
    on_device, on_cpu = wheel_entities(site, texts_file, gpu_id), wheel_entities(site, texts_file, -1)
    n_entities = sum(map(len, on_cpu))
    assert n_entities >= MIN_ENTITIES, f"the CPU found {n_entities} entities in {len(texts)} sentences"
    agreement = entity_agreement(on_cpu, on_device)
    differing = [(texts[i], on_cpu[i], on_device[i]) for i in range(len(texts)) if on_cpu[i] != on_device[i]]
    assert agreement >= MIN_AGREEMENT, f"GPU and CPU agree on {agreement:.3f} of the entities: {differing[:5]}"


@pytest.mark.gpu
@needs_cuda
def test_all_trains_with_mixed_precision_and_the_wheel_tags_alike_on_gpu_and_cpu(gpu_run: GpuRun, tmp_path):
    assert gpu_run.log[-1]["step"] == 300
    check_workflow_run(gpu_run, tmp_path, gpu_id=0)


@pytest.mark.gpu
@needs_cuda
def test_training_peak_gpu_memory_fits_a_16gb_card(gpu_run: GpuRun):
    if gpu_run.conll_dir == FIXTURE_CONLL_DIR:
        missing_real_data("the invented fixture is too small to fill the config's batches of 2,000 padded tokens")
    peak = peak_gpu_bytes(gpu_run.log)
    assert peak is not None, "the training log has no GPU memory"
    assert peak < CARD_16GB_USABLE_BYTES, (
        f"{gpu_run.doc_mode} mode: training peaked at {peak / GIB:.2f} GiB (PyTorch reserved + cupy's pool), "
        f"over the {CARD_16GB_USABLE_BYTES / GIB:.1f} GiB a 16 GB card leaves"
    )


def test_bert_base_shaped_encoder_builds_offline(tmp_path, conll2003_dir):
    """The GPU tests' encoder, built here too (seconds, 440 MB), so a broken builder shows without a GPU."""
    from transformers import AutoConfig, AutoTokenizer

    encoder = build_bert_base_shaped(tmp_path / "encoder", vocabulary_texts(conll2003_dir))
    config = AutoConfig.from_pretrained(encoder)
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads, config.intermediate_size) == (
        BERT_BASE_SHAPE.num_hidden_layers,
        BERT_BASE_SHAPE.hidden_size,
        BERT_BASE_SHAPE.num_attention_heads,
        BERT_BASE_SHAPE.intermediate_size,
    )
    assert config.vocab_size == BERT_BASE_CASED_VOCAB_SIZE
    assert (encoder / "model.safetensors").stat().st_size > 400e6  # 110 M fp32 parameters
    tokenizer = AutoTokenizer.from_pretrained(encoder)
    assert tokenizer.model_max_length == MAX_WORDPIECES
    pieces = tokenizer.tokenize("Peter Blackburn reported from Brussels")
    assert "[UNK]" not in pieces and pieces[0] == "Peter"  # cased, as bert-base-cased
