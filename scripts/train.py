"""`spacy train` behind checks that fail in seconds, before any long work.

Checks the GPU (cupy and a CUDA device) when one is asked for and the encoder
(a local folder, or a hub name that is cached or reachable), then calls the
same function as `spacy train`. Extra `--section.key value` arguments and
SPACY_CONFIG_OVERRIDES pass through as with `spacy train`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer
from spacy.cli._util import parse_config_overrides
from spacy.cli.train import train as spacy_train
from wasabi import msg

ENCODER_SETTING = "components.transformer.model.name"
MIXED_PRECISION_SETTING = "components.transformer.model.mixed_precision"


class PreflightError(Exception):
    """A setting that cannot work: the message says what to change."""


def check_gpu(gpu_id: int) -> None:
    if gpu_id < 0:
        return
    cpu_hint = (
        "Install the GPU extra (`pip install -e '.[cuda12x]'`), or train on the CPU with "
        "`--vars.gpu_id -1`, or run the CPU workflow: `spacy project run demo`."
    )
    try:
        import cupy
    except ImportError:
        raise PreflightError(f"gpu_id is {gpu_id} but cupy is not installed. {cpu_hint}") from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as err:  # cupy raises CUDARuntimeError, or fails to find the driver
        raise PreflightError(f"gpu_id is {gpu_id} but no CUDA device is usable ({err}). {cpu_hint}") from None
    if gpu_id >= count:
        raise PreflightError(f"gpu_id is {gpu_id} but this machine has {count} CUDA device(s). {cpu_hint}")


def check_encoder(model: str) -> None:
    """A local folder with a config.json, or a hub name in the cache or reachable now."""
    local_hint = (
        "A local folder works too: `--vars.model /path/to/encoder`, a folder written by "
        "`save_pretrained` (config.json, weights, tokenizer files)."
    )
    folder = Path(model)
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise PreflightError(f"{folder}: no config.json in this folder. {local_hint}")
        return
    from huggingface_hub import HfApi, constants
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(model, local_files_only=True)
        return
    except (OSError, ValueError):
        pass  # not cached: ask the hub, once
    if constants.HF_HUB_OFFLINE:
        raise PreflightError(f"Encoder '{model}' is not in the Hugging Face cache and HF_HUB_OFFLINE is set. {local_hint}")
    try:
        HfApi().model_info(model, timeout=10)
    except Exception as err:  # offline, unknown name, gated repo: all mean "cannot be had"
        reason = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
        raise PreflightError(
            f"Encoder '{model}' is not in the Hugging Face cache and cannot be fetched from the hub "
            f"({type(err).__name__}: {reason}). {local_hint}"
        ) from None


def training_overrides(model: str, gpu_id: int, extra: dict[str, Any]) -> dict[str, Any]:
    """The encoder var, then the user's overrides; fp16 needs CUDA, so it is off on the CPU."""
    overrides: dict[str, Any] = {ENCODER_SETTING: model, **extra}
    if gpu_id < 0:
        overrides[MIXED_PRECISION_SETTING] = False
    return overrides


app = typer.Typer(add_completion=False)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def main(
    ctx: typer.Context,
    config_path: Path = typer.Argument(..., exists=True, dir_okay=False, help="spaCy training config"),
    output_dir: Path = typer.Argument(..., help="Where model-best and model-last go"),
    model: str = typer.Option("bert-base-cased", help="HF encoder name or local folder"),
    gpu_id: int = typer.Option(-1, help="CUDA device, -1 for the CPU"),
) -> None:
    try:
        check_gpu(gpu_id)
        check_encoder(model)
    except PreflightError as err:
        msg.fail("Cannot start training", str(err))
        sys.exit(1)
    overrides = training_overrides(model, gpu_id, parse_config_overrides(ctx.args))
    if gpu_id < 0:
        msg.info("Training on the CPU: mixed precision off")
    spacy_train(config_path, output_dir, use_gpu=gpu_id, overrides=overrides)


if __name__ == "__main__":
    app()
