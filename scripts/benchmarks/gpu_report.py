"""What `make gpu-check` needs around the GPU tests: a preflight, the checks on a training log, one table.

- `preflight`: stops in seconds, with what to install, when no CUDA device is usable, so that
  `make gpu-check` never reports a run of skipped tests as a pass.
- `entities`: the entities a pipeline finds in a JSON list of texts, on the GPU or the CPU
  (tests/test_gpu.py runs it once per device, each in its own process).
- `report`: training words/s and peak GPU memory (from each run's train_log.jsonl), the HF
  recipe's training words/s on the same encoder (its reference.json), and inference words/s (from
  benchmark_speed.json) as one Markdown table.

The checks on a log (`training_problems`) are plain functions so that the GPU tests and
the CPU tests share them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer
from wasabi import msg

from scripts.benchmarks.speed_configurations import BY_NAME as SPEED_CONFIGURATIONS
from scripts.lib.atomic import write_text_atomic
from scripts.lib.cli import fail
from scripts.lib.preflight import PreflightError, check_gpu
from scripts.lib.reports import md_table
from scripts.lib.training_run import TRAIN_LOG_NAME, read_train_log

GIB = 1024**3
# What a "16 GB" card offers a process: a T4 or V100-16GB shows 15,360 MiB (15 GiB) in
# nvidia-smi, and the CUDA context takes about half a GiB of that before anything is allocated.
CARD_16GB_USABLE_BYTES = int(14.5 * GIB)
# The untrained loss against the last evaluation interval's mean per step: below this share, the loss fell.
LOSS_FALL_RATIO = 0.75
# fp16 overflows in the first steps are normal (the scaler starts at 2**16 and halves on each);
# a scaler that skips more than this share of all updates is stuck.
MAX_SKIPPED_SHARE = 0.1
DOC_MODES = ("sentence", "document")
CHECK_TABLE_NAME = "gpu_check.md"
# Where `make gpu-check` runs the HF recipe, in the sentence-mode project: scripts.benchmarks.hf_reference's output.
REFERENCE_JSON = Path("training") / "hf_reference" / "reference.json"


# --- the training log -----------------------------------------------------------------


def per_step_losses(log: Sequence[dict[str, Any]], component: str) -> list[float]:
    """Mean loss per update in each evaluation interval (spaCy sums the losses between evaluations).

    The first line is the evaluation at step 0: the loss of the first update, before any learning.
    """
    losses, previous_step = [], -1
    for record in log:
        steps = max(record["step"] - previous_step, 1)
        losses.append(record["losses"][component] / steps)
        previous_step = record["step"]
    return losses


def training_problems(
    log: Sequence[dict[str, Any]], component: str = "ner", mixed_precision: bool = False
) -> list[str]:
    """What is wrong with a training run, from its log; empty when nothing is.

    The loss of every component must be finite; `component`'s mean loss per update in the
    last interval must be below LOSS_FALL_RATIO of the untrained loss at step 0; with
    mixed precision, an fp16 gradient scaler must be there and must have skipped at most
    MAX_SKIPPED_SHARE of the updates, and not every update of the last interval.
    """
    if len(log) < 2:
        return [f"{len(log)} evaluation(s) in the log: at least 2 are needed to see the loss fall"]
    problems = []
    for record in log:
        bad = {name: loss for name, loss in record["losses"].items() if not math.isfinite(loss)}
        if bad:
            problems.append(f"step {record['step']}: non-finite loss {bad}")
    losses = per_step_losses(log, component)
    if not losses[-1] < LOSS_FALL_RATIO * losses[0]:
        problems.append(
            f"{component} loss did not fall: {losses[0]:.4g} per update at step 0, "
            f"{losses[-1]:.4g} in the last interval (needs < {LOSS_FALL_RATIO:.0%} of the first)"
        )
    if mixed_precision:
        problems.extend(grad_scaler_problems(log))
    return problems


def grad_scaler_problems(log: Sequence[dict[str, Any]]) -> list[str]:
    """The fp16 gradient scaler's counts (scripts/components/training_logger.py), over the run and its last interval."""
    if "grad_scaler" not in log[-1]:
        return ["no fp16 gradient scaler in the log: mixed precision is off, or the logger did not find it"]
    previous, last = log[-2].get("grad_scaler", {"updates": 0, "skipped": 0}), log[-1]["grad_scaler"]
    problems = []
    if last["skipped"] > MAX_SKIPPED_SHARE * last["updates"]:
        problems.append(
            f"the fp16 gradient scaler skipped {last['skipped']} of {last['updates']} updates "
            f"(more than {MAX_SKIPPED_SHARE:.0%}); its scale is {last['scale']:g}"
        )
    interval_updates, interval_skipped = last["updates"] - previous["updates"], last["skipped"] - previous["skipped"]
    if interval_updates > 0 and interval_skipped == interval_updates:
        problems.append(f"the fp16 gradient scaler skipped all {interval_updates} updates of the last interval")
    return problems


def peak_gpu_bytes(log: Sequence[dict[str, Any]]) -> int | None:
    """Peak GPU memory of a run: PyTorch's peak reserved plus cupy's pool, at its highest evaluation."""
    peaks = [
        record["gpu_memory"]["torch_peak_reserved"] + record["gpu_memory"]["cupy_pool"]
        for record in log
        if record.get("gpu_memory")
    ]
    return max(peaks) if peaks else None


def training_words_per_second(log: Sequence[dict[str, Any]]) -> float | None:
    last = log[-1] if log else None
    return last["words"] / last["seconds"] if last and last["seconds"] else None


# --- GPU against CPU ------------------------------------------------------------------


Entity = tuple[int, int, str]


def entity_agreement(reference: Sequence[Sequence[Entity]], other: Sequence[Sequence[Entity]]) -> float:
    """Entity-level F1 of `other` against `reference`, text by text (1.0: the same entities)."""
    assert len(reference) == len(other), "both sides must tag the same texts"
    expected = {(i, *entity) for i, entities in enumerate(reference) for entity in entities}
    found = {(i, *entity) for i, entities in enumerate(other) for entity in entities}
    if not expected and not found:
        return 1.0
    return 2 * len(expected & found) / (len(expected) + len(found))


def pipeline_entities(model: str, texts: Sequence[str], gpu_id: int) -> list[list[Entity]]:
    """Character offsets and labels of the entities `model` finds, loaded on the GPU (gpu_id >= 0) or the CPU."""
    from scripts.lib.pipeline_loading import load_pipeline

    nlp = load_pipeline(model, gpu_id)
    return [[(ent.start_char, ent.end_char, ent.label_) for ent in doc.ents] for doc in nlp.pipe(texts)]


# --- the table ------------------------------------------------------------------------


def run_folder(check_dir: Path, doc_mode: str) -> Path:
    """Where tests/test_gpu.py keeps the project copy of one doc_mode when GPU_CHECK_DIR is set."""
    return check_dir / doc_mode / "project"


def gib(n_bytes: float | None) -> str:
    return f"{n_bytes / GIB:.2f}" if n_bytes is not None else ""


def inference_label(name: str) -> str:
    """The speed benchmark's row of configuration `name`, which says when it does not run on the GPU."""
    configuration = SPEED_CONFIGURATIONS[name]
    return configuration.label if configuration.on_gpu else f"{configuration.label}, on the CPU"


INFERENCE_ROWS = tuple(
    (name, inference_label(name))
    for name in (
        "spacy",
        "spacy_int8",
        "hf_pipeline_bs1",
        "hf_pipeline_bs32",
        "encoder_forward",
        "encoder_forward_int8",
    )
)


def check_table(
    logs: dict[str, list[dict[str, Any]]], speed: dict[str, Any] | None, reference: dict[str, Any] | None = None
) -> str:
    """One table: training words/s and peak GPU memory per doc_mode, then inference words/s.

    With the HF recipe's reference.json (scripts.benchmarks.hf_reference), its training words/s beside ours.
    """
    rows = []
    for doc_mode, log in logs.items():
        words_per_second = training_words_per_second(log)
        rows.append(
            [
                f"training, {doc_mode} mode ({log[-1]['step']} steps)",
                f"{words_per_second:,.0f}" if words_per_second else "",
                gib(peak_gpu_bytes(log)),
            ]
        )
    if reference:
        epochs = reference["recipe"]["epochs"]
        rows.append(
            [
                f"training, HF recipe (transformers Trainer, {reference['train_sentences']:,} sentences, "
                f"{epochs:g} epoch{'s' if epochs != 1 else ''})",
                f"{reference['train_words_per_second']:,.0f}",
                "",
            ]
        )
    for name, label in INFERENCE_ROWS if speed else ():
        run = speed["runs"].get(name)
        if run is not None:
            gpu_mb = run.get("peak_gpu_mb")
            peak = gib(gpu_mb * 1024**2) if gpu_mb else ""
            rows.append([f"inference: {label}", f"{run['words_per_second']:,.0f}", peak])
    table = md_table(["measurement", "words/s", "peak GPU memory GiB"], rows)
    notes = [
        "Peak GPU memory: PyTorch's peak reserved plus cupy's pool; training must stay under "
        f"{gib(CARD_16GB_USABLE_BYTES)} GiB to fit a 16 GB card."
    ]
    if reference:
        notes.append(training_against_reference(logs, reference["train_words_per_second"]))
    if speed:
        notes.append(f"Inference: {speed['n_texts']:,} CoNLL test sentences, {speed['machine']}.")
    return table + "\n\n" + "\n".join(notes) + "\n"


def training_against_reference(logs: dict[str, list[dict[str, Any]]], reference_words_per_second: float) -> str:
    """Our training words/s over the HF recipe's, doc_mode by doc_mode (same encoder, same GPU)."""
    ratios = [
        f"{doc_mode} mode {words_per_second / reference_words_per_second:.2f}x"
        for doc_mode, log in logs.items()
        if (words_per_second := training_words_per_second(log))
    ]
    return (
        f"Training words/s against the HF recipe's on the same encoder and GPU: {', '.join(ratios) or 'n/a'} "
        "(our seconds include the dev evaluations, the recipe's do not)."
    )


def json_if_there(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def gpu_name() -> str:
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
    except ImportError:
        return "torch not installed"


app = typer.Typer(add_completion=False, help=__doc__.splitlines()[0])


@app.command()
def preflight(gpu_id: int = typer.Option(0, help="The CUDA device the check will use")) -> None:
    """Stop with what to install unless cupy, a CUDA build of torch and a CUDA device are there."""
    try:
        check_gpu(gpu_id)
    except PreflightError as err:
        fail("make gpu-check needs a usable CUDA device", str(err))
    msg.good(f"GPU {gpu_id}: {gpu_name()}")


@app.command()
def entities(
    model: str = typer.Argument(..., help="Pipeline folder or installed package"),
    texts_file: Path = typer.Argument(..., exists=True, help="JSON list of texts"),
    output: Path = typer.Argument(..., help="JSON: one list of [start_char, end_char, label] per text"),
    gpu_id: int = typer.Option(-1, help="CUDA device, -1 for the CPU"),
) -> None:
    texts = json.loads(texts_file.read_text(encoding="utf-8"))
    write_text_atomic(output, json.dumps(pipeline_entities(model, texts, gpu_id)) + "\n")


@app.command()
def report(check_dir: Path = typer.Argument(..., help="GPU_CHECK_DIR of the GPU tests")) -> None:
    """Print and write <check_dir>/gpu_check.md from the runs the GPU tests left there."""
    logs = {
        doc_mode: read_train_log(path)
        for doc_mode in DOC_MODES
        if (path := run_folder(check_dir, doc_mode) / "training" / TRAIN_LOG_NAME).is_file()
    }
    if not logs:
        fail(f"No training log under {check_dir}", "Run the GPU tests with GPU_CHECK_DIR set (`make gpu-check`).")
    sentence_run = run_folder(check_dir, "sentence")
    speed = json_if_there(sentence_run / "metrics" / "benchmark_speed.json")
    reference = json_if_there(sentence_run / REFERENCE_JSON)
    text = f"GPU check on {gpu_name()}\n\n" + check_table(logs, speed, reference)
    write_text_atomic(check_dir / CHECK_TABLE_NAME, text)
    print(text)


if __name__ == "__main__":
    app()
