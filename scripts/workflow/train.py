"""`spacy train` behind checks that fail in seconds, before any long work.

Checks the GPU (cupy and a CUDA device) when one is asked for and the encoder
(a local folder, or a hub name pinned to a revision, cached or reachable), then calls the
same function as `spacy train`. Config settings come as `--overrides 'section.key=value ...'`
(the project var train_overrides) or as extra `--section.key value` arguments, as with `spacy train`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer
from spacy.cli._util import parse_config_overrides
from spacy.cli.train import train as spacy_train
from spacy.util import load_config
from wasabi import msg

from scripts.lib.atomic import write_text_atomic
from scripts.lib.calibration import CalibrationError
from scripts.lib.calibration_fit import calibrate_pipeline
from scripts.lib.cli import fail
from scripts.lib.preflight import PreflightError, check_gpu, resolve_encoder
from scripts.lib.schedule import corpus_words, epoch_schedule, epochs_of
from scripts.lib.training_run import TRAIN_LOG_NAME, TRAIN_STATS_NAME

ENCODER_SETTING = "components.transformer.model.name"
MIXED_PRECISION_SETTING = "components.transformer.model.mixed_precision"
LOG_SETTING = "training.logger.output_file"


def training_overrides(model: str, gpu_id: int, extra: dict[str, Any], log_path: Path | None = None) -> dict[str, Any]:
    """The encoder var, the log file, then the user's overrides; fp16 needs CUDA, so it is off on the CPU."""
    overrides: dict[str, Any] = {ENCODER_SETTING: model}
    if log_path is not None:
        overrides[LOG_SETTING] = str(log_path)
    overrides.update(extra)
    if gpu_id < 0:
        overrides[MIXED_PRECISION_SETTING] = False
    return overrides


def setting_pairs(pairs: str) -> list[str]:
    """'section.key=value ...' (the project var train_overrides) as spaCy's `--section.key value` arguments.

    A var's value cannot start with `--` (weasel would read it as an option of its own), hence pairs.
    """
    arguments = []
    for pair in pairs.split():
        key, equals, value = pair.partition("=")
        if not equals or "." not in key or key.startswith("-"):
            raise PreflightError(
                f"--overrides: {pair!r} is not a 'section.key=value' pair. Write e.g. "
                "'training.max_steps=200 training.optimizer.learn_rate.total_steps=200'."
            )
        arguments += [f"--{key}", value]
    return arguments


app = typer.Typer(add_completion=False)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def main(
    ctx: typer.Context,
    config_path: Path = typer.Argument(..., exists=True, dir_okay=False, help="spaCy training config"),
    output_dir: Path = typer.Argument(..., help="Where model-best and model-last go"),
    model: str = typer.Option("bert-base-cased", help="HF encoder name or local folder"),
    model_revision: str = typer.Option("", help="Hub commit hash to pin a hub encoder to (ignored for folders)"),
    gpu_id: int = typer.Option(-1, help="CUDA device, -1 for the CPU"),
    pairs: str = typer.Option(
        "", "--overrides", help="Config settings as 'section.key=value' pairs, space-separated (vars.train_overrides)"
    ),
    epochs: float = typer.Option(0, help="> 0: train this many epochs, steps and schedule scaled to the corpus"),
) -> None:
    try:
        check_gpu(gpu_id)
        encoder = resolve_encoder(model, model_revision)
        extra = parse_config_overrides([*setting_pairs(pairs), *ctx.args])
    except PreflightError as err:
        fail("Cannot start training", str(err))
    msg.info(f"Encoder: {model}" + (f" (snapshot {encoder})" if encoder != model else ""))
    log_path = output_dir / TRAIN_LOG_NAME
    extra = {**corpus_schedule(config_path, extra, epochs), **extra}
    overrides = training_overrides(encoder, gpu_id, extra, log_path)
    if gpu_id < 0:
        msg.info("Training on the CPU: mixed precision off")
    started = time.perf_counter()
    spacy_train(config_path, output_dir, use_gpu=gpu_id, overrides=overrides)
    # spaCy's log file has no times: the benchmarks read the wall time from here.
    stats = {"seconds": time.perf_counter() - started, "encoder": model, "gpu_id": gpu_id}
    write_text_atomic(output_dir / TRAIN_STATS_NAME, json.dumps(stats, indent=2) + "\n")
    calibrate_best(output_dir / "model-best", overrides)


def corpus_schedule(config_path: Path, extra: dict[str, Any], epochs: float) -> dict[str, Any]:
    """With epochs, the schedule for them on this corpus; says how many epochs the run makes either way."""
    config = load_config(config_path)
    train_path = Path(extra.get("paths.train") or config["paths"]["train"])
    words_per_step = int(extra.get("training.batcher.size") or config["training"]["batcher"]["size"])
    if not train_path.is_file():
        fail("Cannot start training", f"{train_path}: no such file. Run `spacy project run corpus` first.")
    words = corpus_words(train_path)
    if epochs > 0:
        schedule = epoch_schedule(epochs, words, words_per_step)
        msg.info(
            f"{epochs:g} epochs of {words:,} training words at {words_per_step:,} a step: "
            + ", ".join(f"{key}={value}" for key, value in schedule.items())
        )
        return schedule
    steps = int(extra.get("training.max_steps") or config["training"]["max_steps"])
    made = epochs_of(steps, words, words_per_step)
    msg.info(f"The config's {steps:,} steps of {words_per_step:,} words make {made:.1f} epochs of {words:,} words")
    if steps and not 0.5 <= made <= 30:
        msg.warn(
            f"{made:.1f} epochs suits this corpus badly: set the project var train_epochs "
            "(e.g. --vars.train_epochs 5) to size the schedule to it"
        )
    return {}


def calibrate_best(model_dir: Path, overrides: dict[str, Any]) -> None:
    """Fit the entity scores' calibration of model-best on the dev split it was chosen on, read as raw text."""
    dev_path = Path(overrides.get("paths.dev") or load_config(model_dir / "config.cfg")["paths"]["dev"])
    msg.info(f"Calibrating the entity scores of {model_dir} on {dev_path}")
    try:
        calibration = calibrate_pipeline(model_dir, dev_path)
    except CalibrationError as err:
        fail("Cannot calibrate the entity scores", str(err))
    if calibration is None:
        msg.info("The pipeline has no entity_scores component: nothing to calibrate")
    else:
        msg.good(
            f"Entity scores calibrated on {dev_path}: sigmoid({calibration.slope:.3f} * logit(raw) "
            f"{calibration.intercept:+.3f})"
        )


if __name__ == "__main__":
    app()
