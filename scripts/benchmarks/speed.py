"""Inference speed, side by side, on the CoNLL test texts.

(a) our spaCy pipeline through nlp.pipe, with each encoder backend it offers at load
time (scripts/components/encoder_backend.py: PyTorch fp32 and int8, ONNX Runtime fp32 and int8);
(b) the HF token-classification pipeline (aggregation "simple") on the same encoder at
batch 1 and batch 32; (c) the bare encoder forward pass over length-sorted batches of 32,
in PyTorch and in ONNX Runtime, fp32 and int8: the practical ceilings. Each configuration
runs in a fresh process (so its peak memory is its own) with the same thread count (ONNX
Runtime takes torch's); one warm-up pass is excluded and the median of several timed passes
is reported, in words per second (CoNLL words), with the test F1 of the configurations that
tag. Writes the JSON and a Markdown table beside it.
"""

from __future__ import annotations

import json
import multiprocessing
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from spacy.tokens import DocBin
from spacy.vocab import Vocab
from wasabi import msg

from scripts.components.encoder_backend import (
    ONNX,
    ONNX_INT8,
    TORCH,
    TORCH_INT8,
    OnnxRuntimeEncoder,
    build_graph,
    output_signature,
    quantize_linear_int8,
    require_onnx_packages,
)
from scripts.lib.atomic import write_text_atomic
from scripts.lib.cli import fail
from scripts.lib.pipeline_loading import PipelineLoadError, load_pipeline
from scripts.lib.preflight import PreflightError, resolve_encoder
from scripts.lib.reports import machine_description, md_table, percent
from scripts.lib.scoring import EvaluationError, evaluate, load_gold_docs

ENCODER_BATCH = 32


def sentence_texts(path: Path, limit: int = 0) -> list[str]:
    """Sentence texts of a gold DocBin (document-mode Docs are split into sentences)."""
    texts = [sent.text for doc in DocBin().from_disk(path).get_docs(Vocab()) for sent in doc.sents]
    return texts[:limit] if limit else texts


@dataclass
class Runner:
    """One configuration, loaded: `run` processes the texts; `test_f1`, if it can score, is its test F1 (strict)."""

    run: Callable[[list[str]], None]
    test_f1: Callable[[], float] | None = None


def spacy_runner(model: str, backend: str, gpu_id: int, test_docbin: str) -> Runner:
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


# Only the torch fp32 backend runs on a GPU: the int8 and ONNX Runtime configurations run on the CPU whatever
# gpu_id says.
RUNNERS: dict[str, Callable[[dict[str, Any]], Runner]] = {
    "spacy": lambda o: spacy_runner(o["spacy_model"], TORCH, o["gpu_id"], o["test_docbin"]),
    "spacy_int8": lambda o: spacy_runner(o["spacy_model"], TORCH_INT8, -1, o["test_docbin"]),
    "spacy_onnx": lambda o: spacy_runner(o["spacy_model"], ONNX, -1, o["test_docbin"]),
    "spacy_onnx_int8": lambda o: spacy_runner(o["spacy_model"], ONNX_INT8, -1, o["test_docbin"]),
    "hf_pipeline_bs1": lambda o: hf_pipeline_runner(o["hf_model"], 1, o["gpu_id"]),
    "hf_pipeline_bs32": lambda o: hf_pipeline_runner(o["hf_model"], 32, o["gpu_id"]),
    "encoder_forward": lambda o: encoder_runner(o["encoder"], TORCH, o["gpu_id"]),
    "encoder_forward_int8": lambda o: encoder_runner(o["encoder"], TORCH_INT8, -1),
    "encoder_forward_onnx": lambda o: encoder_runner(o["encoder"], ONNX, -1),
    "encoder_forward_onnx_int8": lambda o: encoder_runner(o["encoder"], ONNX_INT8, -1),
}


def measure(name: str, options: dict[str, Any], texts: list[str], repetitions: int, threads: int) -> dict[str, Any]:
    """Runs in its own process: load, one warm-up pass, the timed passes, then the test F1 where there is one."""
    import torch

    torch.set_num_threads(threads)
    started = time.perf_counter()
    runner = RUNNERS[name](options)
    load_seconds = time.perf_counter() - started
    runner.run(texts[: min(len(texts), 64)])
    seconds = []
    for _ in range(repetitions):
        started = time.perf_counter()
        runner.run(texts)
        seconds.append(time.perf_counter() - started)
    words = sum(len(text.split()) for text in texts)
    return {
        "words_per_second": words / statistics.median(seconds),
        "seconds": seconds,
        "load_seconds": load_seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_gpu_mb": peak_gpu_mb(),
        "test_f1_strict": runner.test_f1() if runner.test_f1 else None,
    }


def peak_gpu_mb() -> float | None:
    """This process's peak GPU memory (PyTorch's peak reserved plus cupy's pool), None if it never used CUDA."""
    import torch

    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    cupy = sys.modules.get("cupy")  # imported only by the configurations that run thinc on the GPU
    cupy_pool_bytes = cupy.get_default_memory_pool().total_bytes() if cupy is not None else 0
    return (torch.cuda.max_memory_reserved() + cupy_pool_bytes) / 1024**2


def measure_in_fresh_process(name: str, options: dict[str, Any], texts: list[str], repetitions: int, threads: int):
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(measure, (name, options, texts, repetitions, threads))


def benchmark(
    options: dict[str, Any], texts: list[str], repetitions: int, threads: int, reference_f1: float | None
) -> dict[str, Any]:
    runs = {}
    for name in RUNNERS:
        msg.info(f"{name}: {len(texts):,} texts x {repetitions}")
        runs[name] = measure_in_fresh_process(name, options, texts, repetitions, threads)
        msg.text(f"  {runs[name]['words_per_second']:,.0f} words/s, peak {runs[name]['peak_rss_mb']:,.0f} MB")
    # The HF pipelines run the recipe's model: its test F1 is the one scripts.benchmarks.hf_reference measured.
    for name in ("hf_pipeline_bs1", "hf_pipeline_bs32"):
        runs[name]["test_f1_strict"] = reference_f1
    speed = {name: run["words_per_second"] for name, run in runs.items()}
    return {
        "spacy_words_per_s": speed["spacy"],
        "spacy_int8_words_per_s": speed["spacy_int8"],
        "spacy_onnx_words_per_s": speed["spacy_onnx"],
        "spacy_onnx_int8_words_per_s": speed["spacy_onnx_int8"],
        "hf_pipeline_bs1_words_per_s": speed["hf_pipeline_bs1"],
        "hf_pipeline_bs32_words_per_s": speed["hf_pipeline_bs32"],
        "encoder_forward_words_per_s": speed["encoder_forward"],
        "encoder_forward_int8_words_per_s": speed["encoder_forward_int8"],
        "encoder_forward_onnx_words_per_s": speed["encoder_forward_onnx"],
        "encoder_forward_onnx_int8_words_per_s": speed["encoder_forward_onnx_int8"],
        "ratio_vs_hf_bs32": speed["spacy"] / speed["hf_pipeline_bs32"],
        "ratio_int8_vs_hf_bs32": speed["spacy_int8"] / speed["hf_pipeline_bs32"],
        "ratio_onnx_vs_hf_bs32": speed["spacy_onnx"] / speed["hf_pipeline_bs32"],
        "ratio_onnx_int8_vs_hf_bs32": speed["spacy_onnx_int8"] / speed["hf_pipeline_bs32"],
        "ratio_vs_encoder": speed["spacy"] / speed["encoder_forward"],
        "ratio_int8_vs_encoder_int8": speed["spacy_int8"] / speed["encoder_forward_int8"],
        "ratio_onnx_vs_encoder_onnx": speed["spacy_onnx"] / speed["encoder_forward_onnx"],
        "ratio_onnx_int8_vs_encoder_onnx_int8": speed["spacy_onnx_int8"] / speed["encoder_forward_onnx_int8"],
        "test_f1_strict": {name: f1 for name, run in runs.items() if (f1 := run["test_f1_strict"]) is not None},
        "runs": runs,
        "n_texts": len(texts),
        "n_words": sum(len(text.split()) for text in texts),
        "threads": threads,
        "repetitions": repetitions,
        "machine": machine_description(),
        "options": options,
    }


def reference_test_f1(path: Path | None) -> float | None:
    if path is None or not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))["test"]["seqeval_strict"]["f1"]


ROWS = (
    ("spaCy pipeline, PyTorch fp32 (this project)", "spacy", "ratio_vs_hf_bs32"),
    ("spaCy pipeline, PyTorch int8 (backend torch-int8)", "spacy_int8", "ratio_int8_vs_hf_bs32"),
    ("spaCy pipeline, ONNX Runtime fp32 (backend onnx)", "spacy_onnx", "ratio_onnx_vs_hf_bs32"),
    ("spaCy pipeline, ONNX Runtime int8 (backend onnx-int8)", "spacy_onnx_int8", "ratio_onnx_int8_vs_hf_bs32"),
    ("HF pipeline, batch 1", "hf_pipeline_bs1", None),
    ("HF pipeline, batch 32", "hf_pipeline_bs32", None),
    ("bare encoder forward, PyTorch fp32, length-sorted batches of 32 (ceiling)", "encoder_forward", None),
    ("bare encoder forward, PyTorch int8, length-sorted batches of 32 (ceiling)", "encoder_forward_int8", None),
    ("bare encoder forward, ONNX Runtime fp32, length-sorted batches of 32 (ceiling)", "encoder_forward_onnx", None),
    (
        "bare encoder forward, ONNX Runtime int8, length-sorted batches of 32 (ceiling)",
        "encoder_forward_onnx_int8",
        None,
    ),
)


def markdown(result: dict[str, Any]) -> str:
    rows = []
    for label, name, ratio_key in ROWS:
        run, f1 = result["runs"][name], result["runs"][name]["test_f1_strict"]
        rows.append(
            [
                label,
                f"{run['words_per_second']:,.0f}",
                f"{result[ratio_key]:.2f}x" if ratio_key else "",
                f"{run['peak_rss_mb']:,.0f}",
                percent(f1) if f1 is not None else "",
            ]
        )
    header = ["configuration", "words/s", "vs HF batch 32", "peak RSS MB", "test F1 strict"]
    return (
        f"{result['n_texts']:,} CoNLL test sentences ({result['n_words']:,} words), {result['threads']} torch threads, "
        f"median of {result['repetitions']} passes after a warm-up; {result['machine']}.\n\n"
        + md_table(header, rows)
        + "\n\n"
        f"Share of the ceiling of the same backend: PyTorch fp32 {result['ratio_vs_encoder']:.2f}x, "
        f"PyTorch int8 {result['ratio_int8_vs_encoder_int8']:.2f}x, "
        f"ONNX Runtime fp32 {result['ratio_onnx_vs_encoder_onnx']:.2f}x, "
        f"ONNX Runtime int8 {result['ratio_onnx_int8_vs_encoder_onnx_int8']:.2f}x.\n"
    )


def main(
    spacy_model: str = typer.Argument(..., help="Trained spaCy pipeline (folder or package)"),
    hf_model: str = typer.Argument(..., help="Token-classification model on the same encoder (hf_reference output)"),
    encoder: str = typer.Argument(..., help="The bare encoder both were trained from"),
    test_docbin: Path = typer.Argument(..., help="corpus/test.spacy"),
    output: Path = typer.Argument(..., help="metrics/benchmark_speed.json"),
    repetitions: int = typer.Option(3, help="Timed passes per configuration (median reported)"),
    threads: int = typer.Option(2, help="torch threads, the same for every configuration"),
    limit: int = typer.Option(0, help="Only the first N test sentences (0: all)"),
    model_revision: str = typer.Option("", help="Hub commit of the encoder when it is a hub name"),
    gpu_id: int = typer.Option(-1, help="CUDA device, -1 for the CPU"),
    reference: Path = typer.Option(
        None, help="reference.json of scripts.benchmarks.hf_reference: the HF model's test F1"
    ),
) -> None:
    if not test_docbin.is_file():
        fail(f"{test_docbin}: no such DocBin", "Build the corpus with `spacy project run corpus`.")
    try:
        encoder = resolve_encoder(encoder, model_revision)
    except PreflightError as err:
        fail("Cannot load the encoder", str(err))
    options = {
        "spacy_model": spacy_model,
        "hf_model": hf_model,
        "encoder": encoder,
        "gpu_id": gpu_id,
        "test_docbin": str(test_docbin),
    }
    try:
        texts = sentence_texts(test_docbin, limit)
        results = benchmark(options, texts, repetitions, threads, reference_test_f1(reference))
    except (EvaluationError, PipelineLoadError) as err:
        fail("Cannot load the spaCy pipeline", str(err))
    write_text_atomic(output, json.dumps(results, indent=2) + "\n")
    write_text_atomic(output.with_suffix(".md"), markdown(results))
    msg.good(
        f"Wrote {output} and its .md: spaCy {results['ratio_vs_hf_bs32']:.2f}x the HF pipeline at batch 32 (fp32), "
        f"{results['ratio_int8_vs_hf_bs32']:.2f}x in PyTorch int8, "
        f"{results['ratio_onnx_vs_hf_bs32']:.2f}x in ONNX Runtime fp32, "
        f"{results['ratio_onnx_int8_vs_hf_bs32']:.2f}x in ONNX Runtime int8"
    )


if __name__ == "__main__":
    typer.run(main)
