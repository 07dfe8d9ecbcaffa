"""How every CLI of the project stops on an error: one message with the fix, exit status 1, no traceback."""

from __future__ import annotations

from typing import NoReturn

import typer
from wasabi import msg


def fail(title: str, detail: object = "") -> NoReturn:
    """wasabi's ✘ line with the title, the detail (an error's message: what to change) below it."""
    msg.fail(title, str(detail))
    raise typer.Exit(1)


def fail_to_stderr(program: str, message: object, code: int = 1) -> NoReturn:
    """`PROGRAM: error: MESSAGE` on stderr, for the tools whose stdout may be the data (annotate writes JSONL there)."""
    typer.echo(f"{program}: error: {message}", err=True)
    raise typer.Exit(code)
