"""`spacy train` behind checks that fail in seconds, before any long work.

Checks the GPU (cupy and a CUDA device) when one is asked for and the encoder
(a local folder, or a hub name pinned to a revision, cached or reachable), then calls the
same function as `spacy train`. Extra `--section.key value` arguments and
SPACY_CONFIG_OVERRIDES pass through as with `spacy train`.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import typer
from spacy.cli._util import parse_config_overrides
from spacy.cli.train import train as spacy_train
from wasabi import msg

from scripts.lib.atomic import write_text_atomic

ENCODER_SETTING = "components.transformer.model.name"
MIXED_PRECISION_SETTING = "components.transformer.model.mixed_precision"
LOG_SETTING = "training.logger.output_file"
# One JSON line per evaluation: step, epoch, words, seconds, losses, scores (scripts/components/training_logger.py).
TRAIN_LOG_NAME = "train_log.jsonl"
# Wall time of the whole run (initialisation and evaluations included).
TRAIN_STATS_NAME = "train_stats.json"


class PreflightError(Exception):
    """A setting that cannot work: the message says what to change."""


def check_gpu(gpu_id: int) -> None:
    if gpu_id < 0:
        return
    cpu_hint = (
        "Install the GPU extra (`pip install -e '.[cuda13x]'`, or '.[cuda12x]' with a CUDA 12 build of torch: "
        "README, 'Train on your GPU'), or train on the CPU with "
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
    import torch

    # The configs let cupy allocate through PyTorch (gpu_allocator = "pytorch"), and the encoder
    # runs in torch: a CPU build of torch next to a working cupy fails only once training starts.
    if not torch.cuda.is_available():
        raise PreflightError(
            f"gpu_id is {gpu_id} and cupy sees {count} CUDA device(s), but torch {torch.__version__} cannot use "
            f"them (built for CUDA: {torch.version.cuda}). Install a CUDA build of torch: on Linux, "
            f"`pip install torch=={torch.__version__.split('+')[0]}` from PyPI is the CUDA 13.0 build. {cpu_hint}"
        )


# What spacy-transformers loads: config, tokenizer files, safetensors weights (no pickles).
ENCODER_FILE_PATTERNS = ["*.json", "*.txt", "model.safetensors"]


def resolve_encoder(model: str, revision: str = "") -> str:
    """The folder to train from: a local folder as given, or the hub snapshot at `revision`.

    spacy-transformers cannot pass a revision to the hub for the weights, so a hub
    name is resolved here to a pinned snapshot in the Hugging Face cache, fetched
    once and read from the cache after that.
    """
    local_hint = (
        "A local folder works too: `--vars.model /path/to/encoder`, a folder written by "
        "`save_pretrained` (config.json, weights, tokenizer files)."
    )
    folder = Path(model)
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise PreflightError(f"{folder}: no config.json in this folder. {local_hint}")
        return str(folder)
    if model.startswith((".", "/", "~")) or model.count("/") > 1:  # a path, not a hub name
        raise PreflightError(f"{model}: no such folder. Set --vars.model to an encoder folder or a hub name.")
    from huggingface_hub import HfApi, constants, snapshot_download

    pinned = f"'{model}' at revision {revision or 'main'}"
    options = {"revision": revision or None, "allow_patterns": ENCODER_FILE_PATTERNS}
    try:
        return snapshot_download(model, local_files_only=True, **options)
    except Exception:  # not cached (the hub raises several types): fetch it once
        pass
    if constants.HF_HUB_OFFLINE:
        raise PreflightError(
            f"Encoder {pinned} is not in the Hugging Face cache and HF_HUB_OFFLINE is set. {local_hint}"
        )
    try:
        HfApi().model_info(model, revision=revision or None, timeout=10)  # fails in a second when offline
        snapshot = snapshot_download(model, **options)
    except Exception as err:  # offline, unknown name or revision, gated repo: all mean "cannot be had"
        reason = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
        raise PreflightError(
            f"Encoder {pinned} is not in the Hugging Face cache and cannot be fetched from the hub "
            f"({type(err).__name__}: {reason}). {local_hint}"
        ) from None
    if not (Path(snapshot) / "model.safetensors").is_file():
        raise PreflightError(f"Encoder {pinned} has no model.safetensors; this project loads no pickled weights.")
    return snapshot


def training_overrides(model: str, gpu_id: int, extra: dict[str, Any], log_path: Path | None = None) -> dict[str, Any]:
    """The encoder var, the log file, then the user's overrides; fp16 needs CUDA, so it is off on the CPU."""
    overrides: dict[str, Any] = {ENCODER_SETTING: model}
    if log_path is not None:
        overrides[LOG_SETTING] = str(log_path)
    overrides.update(extra)
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
    model_revision: str = typer.Option("", help="Hub commit hash to pin a hub encoder to (ignored for folders)"),
    gpu_id: int = typer.Option(-1, help="CUDA device, -1 for the CPU"),
) -> None:
    try:
        check_gpu(gpu_id)
        encoder = resolve_encoder(model, model_revision)
    except PreflightError as err:
        msg.fail("Cannot start training", str(err))
        sys.exit(1)
    msg.info(f"Encoder: {model}" + (f" (snapshot {encoder})" if encoder != model else ""))
    log_path = output_dir / TRAIN_LOG_NAME
    overrides = training_overrides(encoder, gpu_id, parse_config_overrides(ctx.args), log_path)
    if gpu_id < 0:
        msg.info("Training on the CPU: mixed precision off")
    started = time.perf_counter()
    spacy_train(config_path, output_dir, use_gpu=gpu_id, overrides=overrides)
    # spaCy's log file has no times: the benchmarks read the wall time from here.
    stats = {"seconds": time.perf_counter() - started, "encoder": model, "gpu_id": gpu_id}
    write_text_atomic(output_dir / TRAIN_STATS_NAME, json.dumps(stats, indent=2) + "\n")


if __name__ == "__main__":
    app()
