"""spaCy's console logger, plus a JSONL log that keeps the words and seconds spaCy's own leaves out.

The configs name it as `[training.logger] @loggers = "en_bert_ner.TrainingLogger.v1"`;
the spacy_loggers entry point (pyproject.toml) lets `spacy train` find it. One line per
evaluation: epoch, step, words seen, seconds since training started (evaluations
included), losses, the scores in score_weights and the weighted score. The benchmarks
read training words per second from it.

On a GPU two more keys tell whether mixed precision works (scripts/benchmarks/gpu_report.py reads
them): `gpu_memory`, the peak so far of PyTorch's allocator and the bytes in cupy's pool,
and `grad_scaler`, the fp16 gradient scaler's current scale and how many updates it has
skipped because a gradient overflowed. CPU runs log neither.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from spacy.language import Language
from spacy.training.loggers import console_logger
from spacy.util import registry
from thinc.api import CupyOps, Model, get_current_ops

LOGGER_NAME = "en_bert_ner.TrainingLogger.v1"


def log_record(info: dict[str, Any], score_names: list[str]) -> dict[str, Any]:
    """The JSONL line for one evaluation, from the info dict spaCy's training loop passes its loggers."""
    return {
        "epoch": info["epoch"],
        "step": info["step"],
        "words": info["words"],
        "seconds": info["seconds"],
        "losses": {name: float(loss) for name, loss in info["losses"].items()},
        "scores": {name: info["other_scores"].get(name) for name in score_names},
        "score": float(info["score"]),
    }


class SkippedStepCounter:
    """Counts the updates that thinc's fp16 gradient scalers skip.

    thinc's PyTorchShim skips the weight update of a step whose gradients overflowed
    (`found_inf`) and then calls the scaler's `update()`, which halves the scale and clears
    `found_inf`. By the time a logger runs the flag is gone, so `update()` is wrapped to
    look at it first. A scaler stuck skipping keeps the weights where they are while the
    loss looks plausible: only this count shows it.
    """

    def __init__(self, scalers: list[Any]):
        self.scalers = scalers
        self.updates = 0
        self.skipped = 0
        for scaler in scalers:
            scaler.update = self._counting(scaler, scaler.update)

    def _counting(self, scaler: Any, update: Callable[[], None]) -> Callable[[], None]:
        def counting_update() -> None:
            self.updates += 1
            self.skipped += bool(scaler.found_inf)
            update()

        return counting_update

    def record(self) -> dict[str, Any]:
        # A scaler's scale is a one-element tensor (on the GPU once training runs there).
        return {
            "updates": self.updates,
            "skipped": self.skipped,
            "scale": min(float(scaler._scale.item()) for scaler in self.scalers),
        }


def enabled_grad_scalers(models: list[Model]) -> list[Any]:
    """The enabled gradient scalers of the PyTorch shims in these models (mixed precision on)."""
    scalers = []
    for model in models:
        for node in model.walk():
            for shim in node.shims:
                # PyTorchShim keeps its scaler private; `_enabled` is false without mixed precision.
                scaler = getattr(shim, "_grad_scaler", None)
                if scaler is not None and scaler._enabled and scaler not in scalers:
                    scalers.append(scaler)
    return scalers


def pipeline_models(nlp: Language) -> list[Model]:
    return [proc.model for _, proc in nlp.pipeline if isinstance(getattr(proc, "model", None), Model)]


def gpu_memory(cuda: Any, cupy_pool: Any) -> dict[str, int]:
    """Peak bytes of PyTorch's allocator (allocated and reserved) and the bytes held by cupy's pool.

    With `gpu_allocator = "pytorch"` cupy allocates through PyTorch, so its own pool stays
    near empty; with cupy's allocator the two are separate and both count. Reserved is what
    the card must provide (allocated plus the cache PyTorch keeps), so that is the peak
    compared with a card's size.
    """
    return {
        "torch_peak_allocated": int(cuda.max_memory_allocated()),
        "torch_peak_reserved": int(cuda.max_memory_reserved()),
        "cupy_pool": int(cupy_pool.total_bytes()),
    }


def current_gpu_memory() -> dict[str, int] | None:
    """gpu_memory of this process's GPU, or None when thinc runs on the CPU."""
    if not isinstance(get_current_ops(), CupyOps):
        return None
    import cupy
    import torch

    return gpu_memory(torch.cuda, cupy.get_default_memory_pool())


@registry.loggers(LOGGER_NAME)
def training_logger(progress_bar: bool = False, console_output: bool = True, output_file: str | None = None):
    console = console_logger(progress_bar=progress_bar, console_output=console_output, output_file=None)

    def setup(
        nlp: Language, stdout: IO = sys.stdout, stderr: IO = sys.stderr
    ) -> tuple[Callable[[dict[str, Any] | None], None], Callable[[], None]]:
        log_console, finalize_console = console(nlp, stdout, stderr)
        score_names = list(nlp.config["training"]["score_weights"])
        scalers = enabled_grad_scalers(pipeline_models(nlp))
        skipped_steps = SkippedStepCounter(scalers) if scalers else None
        stream = None
        if output_file:
            Path(output_file).parent.mkdir(parents=True, exist_ok=True)
            # A new run starts a new log: a resumed folder must not mix two runs' lines.
            stream = open(output_file, "w", encoding="utf-8")  # noqa: SIM115 (closed in finalize)

        def log_step(info: dict[str, Any] | None) -> None:
            log_console(info)
            if info is not None and stream is not None:
                record = log_record(info, score_names)
                if skipped_steps is not None:
                    record["grad_scaler"] = skipped_steps.record()
                if (memory := current_gpu_memory()) is not None:
                    record["gpu_memory"] = memory
                stream.write(json.dumps(record) + "\n")
                stream.flush()

        def finalize() -> None:
            finalize_console()
            if stream is not None:
                stream.close()

        return log_step, finalize

    return setup
