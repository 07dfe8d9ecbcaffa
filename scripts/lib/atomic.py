"""Write outputs so that a killed or failed run never leaves a half-written file.

One scheme for every file the project writes: a temporary file beside the target (same folder, so
the rename stays on one file system), renamed onto it only when everything is written, and
removed otherwise. Readers see the old file or the whole new one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


def temporary_path(path: Path) -> Path:
    """The temporary file beside `path` that becomes `path`: hidden, and named by the writing process."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


@contextmanager
def atomic_target(path: Path) -> Iterator[Path]:
    """A temp path beside `path`, renamed onto it only when the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_stream(path: Path) -> Iterator[BinaryIO]:
    """`path` opened for writing through atomic_target, flushed to disk (fsync) before the rename.

    fsync: so that a power cut cannot leave a renamed but empty file.
    """
    with atomic_target(path) as tmp, tmp.open("wb") as stream:
        yield stream
        stream.flush()
        os.fsync(stream.fileno())


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_target(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
