"""The `all` workflow's first step: on a machine that cannot train on its GPU, stop in seconds and say what to run.

Without it, the corpus step (a download from the hub) would run first and training would stop
only after it. With `--gpu-id -1` (training on the CPU) there is nothing to check.
"""

from __future__ import annotations

import typer
from wasabi import msg

from scripts.lib.cli import fail
from scripts.lib.preflight import PreflightError, check_gpu


def main(
    gpu_id: int = typer.Option(0, help="The workflow's gpu_id: the CUDA device to train on, -1 for the CPU"),
) -> None:
    try:
        check_gpu(gpu_id)
    except PreflightError as err:
        fail("The GPU workflow cannot train on this machine", err)
    msg.good("Training on the CPU: no GPU to check" if gpu_id < 0 else f"GPU {gpu_id} is usable: cupy and torch see it")


if __name__ == "__main__":
    typer.run(main)
