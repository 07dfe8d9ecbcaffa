"""Inference speed, side by side, on the CoNLL test texts.

(a) our spaCy pipeline through nlp.pipe, in full precision and with its encoder's
linear layers quantized to int8; (b) the HF token-classification pipeline
(aggregation "simple") on the same encoder at batch 1 and batch 32; (c) the bare
encoder forward pass over length-sorted batches of 32, the practical ceiling.
Each configuration runs in a fresh process (so its peak memory is its own) with
the same thread count; one warm-up pass is excluded and the median of several
timed passes is reported, in words per second (CoNLL words).
"""

from __future__ import annotations

import json
import multiprocessing
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from spacy.tokens import DocBin
from spacy.vocab import Vocab
from wasabi import msg

from scripts.atomic import write_text_atomic
from scripts.train import PreflightError, resolve_encoder

ENCODER_BATCH = 32


def sentence_texts(path: Path, limit: int = 0) -> list[str]:
    """Sentence texts of a gold DocBin (document-mode Docs are split into sentences)."""
    texts = [sent.text for doc in DocBin().from_disk(path).get_docs(Vocab()) for sent in doc.sents]
    return texts[:limit] if limit else texts


def quantize_int8(torch_model: Any) -> Any:
    """Dynamic int8 quantization of the linear layers: the bulk of an encoder's work on the CPU."""
    import torch

    return torch.ao.quantization.quantize_dynamic(torch_model, {torch.nn.Linear}, dtype=torch.qint8)


def spacy_runner(model: str, int8: bool, gpu_id: int) -> Callable[[list[str]], None]:
    import spacy

    if gpu_id >= 0:
        spacy.require_gpu(gpu_id)
    nlp = spacy.load(model)
    if int8:
        shim = nlp.get_pipe("transformer").model.layers[0].shims[0]
        shim._model = quantize_int8(shim._model)

    def run(texts: list[str]) -> None:
        for _ in nlp.pipe(texts):
            pass

    return run


def hf_pipeline_runner(model: str, batch_size: int, gpu_id: int) -> Callable[[list[str]], None]:
    from transformers import pipeline

    tagger = pipeline("token-classification", model=model, aggregation_strategy="simple", device=gpu_id)

    def run(texts: list[str]) -> None:
        for _ in tagger(texts, batch_size=batch_size):
            pass

    return run


def encoder_runner(encoder: str, gpu_id: int) -> Callable[[list[str]], None]:
    import torch
    from transformers import AutoModel, AutoTokenizer

    device = torch.device(f"cuda:{gpu_id}" if gpu_id >= 0 else "cpu")
    tokenizer = AutoTokenizer.from_pretrained(encoder)
    model = AutoModel.from_pretrained(encoder).eval().to(device)

    def run(texts: list[str]) -> None:
        ordered = sorted(texts, key=len)
        with torch.inference_mode():
            for start in range(0, len(ordered), ENCODER_BATCH):
                batch = tokenizer(ordered[start : start + ENCODER_BATCH], padding=True, return_tensors="pt")
                model(**batch.to(device))

    return run


RUNNERS: dict[str, Callable[[dict[str, Any]], Callable[[list[str]], None]]] = {
    "spacy": lambda o: spacy_runner(o["spacy_model"], False, o["gpu_id"]),
    # torch's dynamic int8 kernels are CPU kernels: measured on the CPU whatever gpu_id says.
    "spacy_int8": lambda o: spacy_runner(o["spacy_model"], True, -1),
    "hf_pipeline_bs1": lambda o: hf_pipeline_runner(o["hf_model"], 1, o["gpu_id"]),
    "hf_pipeline_bs32": lambda o: hf_pipeline_runner(o["hf_model"], 32, o["gpu_id"]),
    "encoder_forward": lambda o: encoder_runner(o["encoder"], o["gpu_id"]),
}


def measure(name: str, options: dict[str, Any], texts: list[str], repetitions: int, threads: int) -> dict[str, Any]:
    """Runs in its own process: load, one warm-up pass, then the timed passes."""
    import torch

    torch.set_num_threads(threads)
    run = RUNNERS[name](options)
    run(texts[: min(len(texts), 64)])
    seconds = []
    for _ in range(repetitions):
        started = time.perf_counter()
        run(texts)
        seconds.append(time.perf_counter() - started)
    words = sum(len(text.split()) for text in texts)
    return {
        "words_per_second": words / statistics.median(seconds),
        "seconds": seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def measure_in_fresh_process(name: str, options: dict[str, Any], texts: list[str], repetitions: int, threads: int):
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(measure, (name, options, texts, repetitions, threads))


def benchmark(options: dict[str, Any], texts: list[str], repetitions: int, threads: int) -> dict[str, Any]:
    runs = {}
    for name in RUNNERS:
        msg.info(f"{name}: {len(texts):,} texts x {repetitions}")
        runs[name] = measure_in_fresh_process(name, options, texts, repetitions, threads)
        msg.text(f"  {runs[name]['words_per_second']:,.0f} words/s, peak {runs[name]['peak_rss_mb']:,.0f} MB")
    speed = {name: run["words_per_second"] for name, run in runs.items()}
    return {
        "spacy_words_per_s": speed["spacy"],
        "spacy_int8_words_per_s": speed["spacy_int8"],
        "hf_pipeline_bs1_words_per_s": speed["hf_pipeline_bs1"],
        "hf_pipeline_bs32_words_per_s": speed["hf_pipeline_bs32"],
        "encoder_forward_words_per_s": speed["encoder_forward"],
        "ratio_vs_hf_bs32": speed["spacy"] / speed["hf_pipeline_bs32"],
        "ratio_int8_vs_hf_bs32": speed["spacy_int8"] / speed["hf_pipeline_bs32"],
        "ratio_vs_encoder": speed["spacy"] / speed["encoder_forward"],
        "runs": runs,
        "n_texts": len(texts),
        "n_words": sum(len(text.split()) for text in texts),
        "threads": threads,
        "repetitions": repetitions,
        "machine": f"{platform.machine()}, {multiprocessing.cpu_count()} CPU cores, {platform.platform()}",
        "options": options,
    }


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
) -> None:
    if not test_docbin.is_file():
        msg.fail(f"{test_docbin}: no such DocBin", "Build the corpus with `spacy project run corpus`.")
        sys.exit(1)
    try:
        encoder = resolve_encoder(encoder, model_revision)
    except PreflightError as err:
        msg.fail("Cannot load the encoder", str(err))
        sys.exit(1)
    options = {"spacy_model": spacy_model, "hf_model": hf_model, "encoder": encoder, "gpu_id": gpu_id}
    results = benchmark(options, sentence_texts(test_docbin, limit), repetitions, threads)
    write_text_atomic(output, json.dumps(results, indent=2) + "\n")
    msg.good(f"Wrote {output}: spaCy {results['ratio_vs_hf_bs32']:.2f}x the HF pipeline at batch 32")


if __name__ == "__main__":
    typer.run(main)
