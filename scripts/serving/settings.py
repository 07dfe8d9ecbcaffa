"""The server's settings: what `serve` and `serve deploy` configure, checked before any process starts.

ServeSettings travels, pickled, to every uvicorn worker and Ray replica; `replica_environment` is
what their processes start with.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, fields
from typing import Any

from scripts.runtime.backends import TORCH

LOOPBACK = "127.0.0.1"
# One logger for the whole server, whichever module or process (uvicorn worker, Ray replica) writes.
LOGGER = "en_bert_ner.serve"
# OpenMP's threads spin after each parallel region by default, waiting for the next one. A server's model shares
# its cores with the server's own event loop (and, on a small machine, with its clients): there the spinning
# takes the cycles they need, and under contention a 2-thread forward pass became 10-30x slower. Passive threads
# sleep instead. Set in the environment of the worker processes and replicas, unless the user set it.
OMP_WAIT_POLICY = "OMP_WAIT_POLICY"
# The CLI option of a setting, where its name differs.
OPTION_NAMES = {"torch_threads": "cpus-per-replica"}


class ServeError(Exception):
    """A setting the user can fix before the server starts: the message names the option and the fix."""


@dataclass(frozen=True)
class ServeSettings:
    """Everything a server process needs, picklable: it travels to uvicorn's workers and to Ray's replicas."""

    model: str
    backend: str = TORCH
    max_batch_size: int = 32  # texts in one nlp.pipe call
    max_wait_ms: float = 2.0  # how long a batch waits for more texts once its first has arrived
    max_queue: int = 256  # texts waiting for a batch; a request beyond that gets 503 at once
    max_texts: int = 64  # texts in one request
    max_text_chars: int = 10_000  # characters in one text
    max_body_bytes: int = 1 << 20  # bytes in one request body, counted before it is parsed
    timeout_s: float = 30.0  # a request not answered in this time gets 503
    torch_threads: int = 1  # per replica: its CPUs

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                minimum = 0 if field.name == "max_wait_ms" else 1
                if value < minimum or (isinstance(value, float) and not math.isfinite(value)):
                    option = OPTION_NAMES.get(field.name, field.name.replace("_", "-"))
                    raise ServeError(f"--{option} is {value}: it must be {minimum} or more.")
        if self.max_texts > self.max_queue:
            raise ServeError(
                f"--max-texts ({self.max_texts}) is more than --max-queue ({self.max_queue}): a request with that many "
                "texts could never be queued. Lower --max-texts or raise --max-queue."
            )

    def limits(self) -> dict[str, Any]:
        """What a client may send, for /healthz."""
        return {
            "max_texts": self.max_texts,
            "max_text_chars": self.max_text_chars,
            "max_body_bytes": self.max_body_bytes,
            "timeout_s": self.timeout_s,
        }

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> ServeSettings:
        """Settings from a config file's args (Ray Serve's `serve deploy`): unknown keys are named."""
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ServeError(f"Unknown setting(s) {', '.join(unknown)}: the settings are {', '.join(sorted(known))}.")
        if "model" not in values:
            raise ServeError("The args need `model`: an installed pipeline package (en_bert_ner) or a pipeline folder.")
        return cls(**values)


def settings_summary(settings: ServeSettings) -> str:
    """The settings on one line, as `serve` prints them when it listens (the model is named before them)."""
    values = asdict(settings)
    return ", ".join(f"{key} {value}" for key, value in values.items() if key != "model")


def replica_environment() -> dict[str, str]:
    """Environment variables a replica's process starts with (before torch and OpenMP load)."""
    return {OMP_WAIT_POLICY: os.environ.get(OMP_WAIT_POLICY, "PASSIVE")}
