"""Checks that fail in seconds, before any long work: a usable GPU, and an encoder that can be had."""

from __future__ import annotations

from pathlib import Path


class PreflightError(Exception):
    """A setting that cannot work: the message says what to change."""


def check_gpu(gpu_id: int) -> None:
    if gpu_id < 0:
        return
    cpu_hint = (
        "Or train on the CPU with `--vars.gpu_id -1`, or run the CPU workflow: `make demo` (`spacy project run demo`)."
    )
    install_hint = (
        "Install the GPU extra (`make all EXTRAS=gpu`, or `pip install -e '.[gpu]'`: everything plus cupy's "
        f"[cuda13x] build; '.[cuda12x]' beside a CUDA 12 build of torch: docs/gpu.md). {cpu_hint}"
    )
    try:
        import cupy
    except ImportError:
        raise PreflightError(f"gpu_id is {gpu_id} but cupy is not installed. {install_hint}") from None
    # cupy is there: what is missing is the GPU, its driver, or the right device number, not an install.
    device_hint = (
        "Run on a machine with an NVIDIA GPU and a driver for CUDA 13 (580 or newer; `nvidia-smi` shows both), "
        f"or set `--vars.gpu_id` to one of its devices. {cpu_hint}"
    )
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as err:  # cupy raises CUDARuntimeError, or fails to find the driver
        raise PreflightError(f"gpu_id is {gpu_id} but no CUDA device is usable ({err}). {device_hint}") from None
    if gpu_id >= count:
        raise PreflightError(f"gpu_id is {gpu_id} but this machine has {count} CUDA device(s). {device_hint}")
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
