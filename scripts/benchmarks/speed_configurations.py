"""The configurations of the speed benchmark (scripts.benchmarks.speed), in one table, and what runs them.

Each row names a configuration: the key of its figures in benchmark_speed.json, its row in the
Markdown table (and in gpu_report's), how to load it, whether it runs on the GPU, and, for the
spaCy pipelines, the ratios the benchmark reports: against the HF pipeline at batch 32 and against
the bare encoder of the same backend (its ceiling).

Nothing heavy is imported here: gpu_report reads the labels without torch; a runner imports what
it needs when it is made, in the measuring process.
"""

from __future__ import annotations

import importlib.util
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENCODER_BATCH = 32
# The configuration every spaCy pipeline is compared with ("vs HF batch 32").
HF_BASELINE = "hf_pipeline_bs32"


@dataclass
class Runner:
    """One configuration, loaded: `run` processes the texts; `test_f1`, if it can score, is its test F1 (strict)."""

    run: Callable[[list[str]], None]
    test_f1: Callable[[], float] | None = None


def spacy_runner(model: str, backend: str, gpu_id: int, test_docbin: str) -> Runner:
    from scripts.lib.pipeline_loading import load_pipeline
    from scripts.lib.scoring import evaluate, load_gold_docs

    nlp = load_pipeline(model, gpu_id, backend)

    def run(texts: list[str]) -> None:
        for _ in nlp.pipe(texts):
            pass

    def test_f1() -> float:
        gold_docs = load_gold_docs(Path(test_docbin), nlp.vocab)
        return evaluate(nlp, gold_docs, nlp.batch_size).results["seqeval_strict"]["f1"]

    return Runner(run, test_f1)


def hf_pipeline_runner(model: str, batch_size: int, gpu_id: int) -> Runner:
    from transformers import pipeline

    tagger = pipeline("token-classification", model=model, aggregation_strategy="simple", device=gpu_id)

    def run(texts: list[str]) -> None:
        for _ in tagger(texts, batch_size=batch_size):
            pass

    return Runner(run)


def encoder_runner(encoder: str, backend: str, gpu_id: int) -> Runner:
    """The bare encoder: every linear layer in int8 for the int8 backends (a bound for the pipeline's options)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from scripts.components.encoder_backend import (
        ONNX,
        ONNX_INT8,
        TORCH_INT8,
        OnnxRuntimeEncoder,
        build_graph,
        output_signature,
        quantize_linear_int8,
        require_onnx_packages,
    )

    device = torch.device(f"cuda:{gpu_id}" if gpu_id >= 0 else "cpu")
    tokenizer = AutoTokenizer.from_pretrained(encoder)
    model = AutoModel.from_pretrained(encoder).eval().to(device)
    if backend == TORCH_INT8:
        model = quantize_linear_int8(model)
    elif backend in (ONNX, ONNX_INT8):
        require_onnx_packages()
        with tempfile.TemporaryDirectory(prefix="benchmark-onnx-") as folder:
            graph = build_graph(model, tokenizer, backend, [], Path(folder)).read_bytes()
        model = OnnxRuntimeEncoder(graph, *output_signature(model, tokenizer))

    def run(texts: list[str]) -> None:
        ordered = sorted(texts, key=len)
        with torch.inference_mode():
            for start in range(0, len(ordered), ENCODER_BATCH):
                batch = tokenizer(ordered[start : start + ENCODER_BATCH], padding=True, return_tensors="pt")
                model(**batch.to(device))

    return Runner(run)


# (the benchmark's options, the CUDA device or -1) -> the loaded configuration
RunnerFactory = Callable[[dict[str, Any], int], Runner]


# The backends are spelled out as scripts/components/encoder_backend.py names them (TORCH, TORCH_INT8, ONNX,
# ONNX_INT8): importing that module here would import torch.
def spacy_pipeline(backend: str) -> RunnerFactory:
    return lambda options, gpu_id: spacy_runner(options["spacy_model"], backend, gpu_id, options["test_docbin"])


def hf_pipeline(batch_size: int) -> RunnerFactory:
    return lambda options, gpu_id: hf_pipeline_runner(options["hf_model"], batch_size, gpu_id)


def bare_encoder(backend: str) -> RunnerFactory:
    return lambda options, gpu_id: encoder_runner(options["encoder"], backend, gpu_id)


@dataclass(frozen=True)
class SpeedConfiguration:
    name: str
    label: str
    runner: RunnerFactory
    # On the benchmark's gpu_id: the PyTorch fp32 configurations; int8 and ONNX Runtime run on the CPU whatever it says.
    on_gpu: bool = False
    # The HF pipelines run the recipe's model: their test F1 is the one scripts.benchmarks.hf_reference measured.
    f1_from_reference: bool = False
    # The spaCy pipelines: the backend in words, and the keys of words/s over HF_BASELINE's and over the ceiling's.
    engine: str = ""
    ratio_vs_hf: str = ""
    ceiling: str = ""
    ratio_vs_ceiling: str = ""
    # The optional extra of pyproject.toml that brings what it runs on, and the modules it checks for.
    extra: str = ""
    modules: tuple[str, ...] = ()

    def load(self, options: dict[str, Any]) -> Runner:
        return self.runner(options, options["gpu_id"] if self.on_gpu else -1)

    def missing_modules(self) -> list[str]:
        return [name for name in self.modules if importlib.util.find_spec(name) is None]


ONNX_RUNTIME = {"extra": "onnx", "modules": ("onnxruntime", "onnx")}


CONFIGURATIONS = (
    SpeedConfiguration(
        "spacy",
        "spaCy pipeline, PyTorch fp32 (this project)",
        spacy_pipeline("torch"),
        on_gpu=True,
        engine="PyTorch fp32",
        ratio_vs_hf="ratio_vs_hf_bs32",
        ceiling="encoder_forward",
        ratio_vs_ceiling="ratio_vs_encoder",
    ),
    SpeedConfiguration(
        "spacy_int8",
        "spaCy pipeline, PyTorch int8 (backend torch-int8)",
        spacy_pipeline("torch-int8"),
        engine="PyTorch int8",
        ratio_vs_hf="ratio_int8_vs_hf_bs32",
        ceiling="encoder_forward_int8",
        ratio_vs_ceiling="ratio_int8_vs_encoder_int8",
    ),
    SpeedConfiguration(
        "spacy_onnx",
        "spaCy pipeline, ONNX Runtime fp32 (backend onnx)",
        spacy_pipeline("onnx"),
        engine="ONNX Runtime fp32",
        ratio_vs_hf="ratio_onnx_vs_hf_bs32",
        ceiling="encoder_forward_onnx",
        ratio_vs_ceiling="ratio_onnx_vs_encoder_onnx",
        **ONNX_RUNTIME,
    ),
    SpeedConfiguration(
        "spacy_onnx_int8",
        "spaCy pipeline, ONNX Runtime int8 (backend onnx-int8)",
        spacy_pipeline("onnx-int8"),
        engine="ONNX Runtime int8",
        ratio_vs_hf="ratio_onnx_int8_vs_hf_bs32",
        ceiling="encoder_forward_onnx_int8",
        ratio_vs_ceiling="ratio_onnx_int8_vs_encoder_onnx_int8",
        **ONNX_RUNTIME,
    ),
    SpeedConfiguration("hf_pipeline_bs1", "HF pipeline, batch 1", hf_pipeline(1), on_gpu=True, f1_from_reference=True),
    SpeedConfiguration(HF_BASELINE, "HF pipeline, batch 32", hf_pipeline(32), on_gpu=True, f1_from_reference=True),
    SpeedConfiguration(
        "encoder_forward",
        "bare encoder forward, PyTorch fp32, length-sorted batches of 32 (ceiling)",
        bare_encoder("torch"),
        on_gpu=True,
    ),
    SpeedConfiguration(
        "encoder_forward_int8",
        "bare encoder forward, PyTorch int8, length-sorted batches of 32 (ceiling)",
        bare_encoder("torch-int8"),
    ),
    SpeedConfiguration(
        "encoder_forward_onnx",
        "bare encoder forward, ONNX Runtime fp32, length-sorted batches of 32 (ceiling)",
        bare_encoder("onnx"),
        **ONNX_RUNTIME,
    ),
    SpeedConfiguration(
        "encoder_forward_onnx_int8",
        "bare encoder forward, ONNX Runtime int8, length-sorted batches of 32 (ceiling)",
        bare_encoder("onnx-int8"),
        **ONNX_RUNTIME,
    ),
)
BY_NAME = {configuration.name: configuration for configuration in CONFIGURATIONS}
SPACY_PIPELINES = tuple(configuration for configuration in CONFIGURATIONS if configuration.ratio_vs_hf)
