"""What the project's CLIs share: how they stop on an error (one message with the fix, exit status 1, no
traceback), and the --backend option of those that load a pipeline."""

from __future__ import annotations

from enum import Enum
from typing import NoReturn

import typer
from wasabi import msg

from scripts.runtime.backends import BACKENDS, TORCH

# The --backend choices of the CLIs that load a pipeline (typer lists and checks them).
Backend = Enum("Backend", {backend: backend for backend in BACKENDS}, type=str)
BACKEND_OPTION = typer.Option(TORCH, help="What runs the encoder; all but torch are CPU-only")


def fail(title: str, detail: object = "") -> NoReturn:
    """wasabi's ✘ line with the title, the detail (an error's message: what to change) below it."""
    msg.fail(title, str(detail))
    raise typer.Exit(1)


def fail_to_stderr(program: str, message: object, code: int = 1) -> NoReturn:
    """`PROGRAM: error: MESSAGE` on stderr, for the tools whose stdout may be the data (annotate writes JSONL there)."""
    typer.echo(f"{program}: error: {message}", err=True)
    raise typer.Exit(code)
