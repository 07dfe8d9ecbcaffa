"""Inference speed, side by side, on the CoNLL test texts.

(a) our spaCy pipeline through nlp.pipe, with each encoder backend it offers at load
time (scripts/runtime/encoder_backend.py: PyTorch fp32 and int8, ONNX Runtime fp32 and int8);
(b) the HF token-classification pipeline (aggregation "simple") on the recipe's model at
batch 1 and batch 32, and the same pipeline on HF optimum's ONNX Runtime export of that model,
fp32 and dynamic int8 in optimum's configuration for the CPU's flags (the `optimum` extra;
skipped, with a line saying so, without it or on a CPU that none fits);
(c) the bare encoder forward pass over length-sorted batches of 32, in PyTorch and in ONNX
Runtime, fp32 and int8: the practical ceilings, tokenizing each batch as it goes, and again on
batches tokenized before the timed passes (the encoder alone). Each configuration runs in a
fresh process (so its peak memory is its own) with the same thread count (ONNX Runtime takes
torch's); one warm-up pass is excluded and the median of several timed passes is reported, in
words per second (CoNLL words), with the test F1 of the configurations that tag. Writes the
JSON and a Markdown table beside it, both naming the machine (CPU, its vector flags, cores,
versions).
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from wasabi import msg

from scripts.benchmarks.harness import (
    count_words,
    in_fresh_process,
    peak_rss_mb,
    require_docbin,
    sentence_texts,
    timed,
    timed_passes,
)
from scripts.benchmarks.speed_configurations import (
    CONFIGURATIONS,
    HF_BASELINE,
    QUANTIZATION_CONFIG,
    SCORES_OFF,
    SCORES_ON,
    SCORES_RATIO,
    SPACY_PIPELINES,
    Runner,
    SpeedConfiguration,
)
from scripts.lib.cli import fail
from scripts.lib.machine import use_torch_threads
from scripts.lib.pipeline_loading import PipelineLoadError
from scripts.lib.preflight import PreflightError, resolve_encoder
from scripts.lib.reports import machine_description, md_table, percent, write_json_and_markdown
from scripts.lib.scoring import EvaluationError

# name: the benchmark's options -> the configuration, loaded (see scripts/benchmarks/speed_configurations.py)
RUNNERS: dict[str, Callable[[dict[str, Any]], Runner]] = {
    configuration.name: configuration.load for configuration in CONFIGURATIONS
}


def measure(name: str, options: dict[str, Any], texts: list[str], repetitions: int, threads: int) -> dict[str, Any]:
    """Runs in its own process: load, one warm-up pass, the timed passes, then the test F1 where there is one."""
    use_torch_threads(threads)
    runner, load_seconds = timed(RUNNERS[name], options)
    if runner.prepare:
        runner.prepare(texts)
    seconds = timed_passes(runner.run, texts, repetitions)
    return {
        "words_per_second": count_words(texts) / statistics.median(seconds),
        "seconds": seconds,
        "load_seconds": load_seconds,
        "peak_rss_mb": peak_rss_mb(),
        "peak_gpu_mb": peak_gpu_mb(),
        "test_f1_strict": runner.test_f1() if runner.test_f1 else None,
        "test_f1_raw_text": runner.raw_text_f1() if runner.raw_text_f1 else None,
        **runner.details,
    }


def peak_gpu_mb() -> float | None:
    """This process's peak GPU memory (PyTorch's peak reserved plus cupy's pool), None if it never used CUDA."""
    import torch

    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    cupy = sys.modules.get("cupy")  # imported only by the configurations that run thinc on the GPU
    cupy_pool_bytes = cupy.get_default_memory_pool().total_bytes() if cupy is not None else 0
    return (torch.cuda.max_memory_reserved() + cupy_pool_bytes) / 1024**2


def benchmark(
    options: dict[str, Any], texts: list[str], repetitions: int, threads: int, reference_f1: float | None
) -> dict[str, Any]:
    runs, skipped = {}, skipped_configurations()
    for name, reason in skipped.items():
        msg.warn(f"{name}: skipped, {reason}")
    for configuration in CONFIGURATIONS:
        name = configuration.name
        if name in skipped:
            continue
        msg.info(f"{name}: {len(texts):,} texts x {repetitions}")
        runs[name] = in_fresh_process(
            name, measure, name, options, texts, repetitions, threads, expected=(EvaluationError, PipelineLoadError)
        )
        msg.text(f"  {runs[name]['words_per_second']:,.0f} words/s, peak {runs[name]['peak_rss_mb']:,.0f} MB")
        if configuration.f1_from_reference:
            runs[name]["test_f1_strict"] = reference_f1
    speed = {name: run["words_per_second"] for name, run in runs.items()}
    measured = [each for each in SPACY_PIPELINES if each.name in speed]
    return {
        **{f"{name}_words_per_s": words_per_second for name, words_per_second in speed.items()},
        **{each.ratio_vs_hf: speed[each.name] / speed[HF_BASELINE] for each in measured},
        **{each.ratio_vs_ceiling: speed[each.name] / speed[each.ceiling] for each in measured},
        **{
            each.ratio_vs_encoder_alone: speed[each.name] / speed[each.encoder_alone]
            for each in measured
            if each.encoder_alone in speed
        },
        **{each.ratio_vs_peer: speed[each.name] / speed[each.peer] for each in measured if each.peer in speed},
        **({SCORES_RATIO: speed[SCORES_ON] / speed[SCORES_OFF]} if {SCORES_ON, SCORES_OFF} <= speed.keys() else {}),
        "test_f1_strict": {name: f1 for name, run in runs.items() if (f1 := run["test_f1_strict"]) is not None},
        "runs": runs,
        "skipped": skipped,
        "n_texts": len(texts),
        "n_words": count_words(texts),
        "threads": threads,
        "repetitions": repetitions,
        "machine": machine_description(),
        "options": options,
    }


def skipped_configurations() -> dict[str, str]:
    """The configurations this install or this CPU cannot run, each with the reason.

    A missing module names the extra that brings it; a CPU that cannot run one, what it lacks.
    """
    skipped = {}
    for configuration in CONFIGURATIONS:
        if missing := configuration.missing_modules():
            skipped[configuration.name] = (
                f"{' and '.join(missing)} not installed: the {configuration.extra} extra brings "
                f"{'them' if len(missing) > 1 else 'it'} (`pip install -e '.[{configuration.extra}]'`)"
            )
        elif unsupported := configuration.unsupported_cpu():
            skipped[configuration.name] = unsupported
    return skipped


def reference_test_f1(path: Path | None) -> float | None:
    if path is None or not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))["test"]["seqeval_strict"]["f1"]


def raw_text_cell(run: dict[str, Any]) -> str:
    """The raw-text test F1 with the aggregation that scored it, where the configuration was scored that way."""
    raw = run.get("test_f1_raw_text")
    return f"{percent(raw['f1'])} ({raw['best_aggregation']})" if raw else ""


def row_label(configuration: SpeedConfiguration, run: dict[str, Any]) -> str:
    """The configuration's label, and the quantization configuration it chose for this CPU where it chose one."""
    chosen = run.get(QUANTIZATION_CONFIG)
    return f"{configuration.label}, optimum's {chosen} configuration" if chosen else configuration.label


def markdown(result: dict[str, Any]) -> str:
    rows, skipped = [], result.get("skipped", {})
    for configuration in CONFIGURATIONS:
        if configuration.name in skipped:
            rows.append([configuration.label, f"skipped: {skipped[configuration.name]}", "", "", "", ""])
            continue
        run = result["runs"][configuration.name]
        f1, ratio_key = run["test_f1_strict"], configuration.ratio_vs_hf
        rows.append(
            [
                row_label(configuration, run),
                f"{run['words_per_second']:,.0f}",
                f"{result[ratio_key]:.2f}x" if ratio_key else "",
                f"{run['peak_rss_mb']:,.0f}",
                percent(f1) if f1 is not None else "",
                raw_text_cell(run),
            ]
        )
    header = [
        "configuration",
        "words/s",
        "vs HF batch 32",
        "peak RSS MB",
        "test F1 strict",
        "test F1, raw text (aggregation)",
    ]
    measured = [each for each in SPACY_PIPELINES if each.name not in skipped]
    shares = [
        "Share of the ceiling of the same backend: "
        + ", ".join(f"{each.engine} {result[each.ratio_vs_ceiling]:.2f}x" for each in measured)
    ]
    encoder_alone = [each for each in measured if each.ratio_vs_encoder_alone in result]
    if encoder_alone:
        shares.append(
            "of the encoder alone, pre-tokenized, in the pipeline's calls: "
            + ", ".join(f"{each.engine} {result[each.ratio_vs_encoder_alone]:.2f}x" for each in encoder_alone)
        )
    peers = [each for each in measured if each.ratio_vs_peer in result]
    if peers:
        shares.append(
            "against HF optimum's pipeline of the same precision: "
            + ", ".join(f"{each.engine} {result[each.ratio_vs_peer]:.2f}x" for each in peers)
        )
    if SCORES_RATIO in result:
        shares.append(f"entity scores on, against off (PyTorch fp32): {result[SCORES_RATIO]:.2f}x")
    return (
        f"{result['n_texts']:,} CoNLL test sentences ({result['n_words']:,} words), {result['threads']} torch threads, "
        f"median of {result['repetitions']} passes after a warm-up; {result['machine']}.\n\n"
        + md_table(header, rows)
        + "\n\n"
        + "; ".join(shares)
        + ".\n"
    )


def summary(result: dict[str, Any]) -> str:
    """The spaCy pipelines against the HF pipeline at batch 32, backend by backend."""
    fp32, *others = SPACY_PIPELINES
    text = f"spaCy {result[fp32.ratio_vs_hf]:.2f}x the HF pipeline at batch 32 (fp32), " + ", ".join(
        f"{result[each.ratio_vs_hf]:.2f}x in {each.engine}" for each in others if each.ratio_vs_hf in result
    )
    peers = [each for each in SPACY_PIPELINES if each.ratio_vs_peer in result]
    if peers:
        text += "; against HF optimum: " + ", ".join(
            f"{result[each.ratio_vs_peer]:.2f}x in {each.engine}" for each in peers
        )
    skipped = result.get("skipped", {})
    return text + (f"; skipped: {', '.join(skipped)} (see above)" if skipped else "")


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
    require_docbin(test_docbin)
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
    write_json_and_markdown(output, results, markdown(results))
    msg.good(f"Wrote {output} and its .md: {summary(results)}")


if __name__ == "__main__":
    typer.run(main)
