"""spaCy's console logger, plus a JSONL log that keeps the words and seconds spaCy's own leaves out.

The configs name it as `[training.logger] @loggers = "en_bert_ner.TrainingLogger.v1"`;
scripts/train.py imports this module so that `spacy train` finds it. One line per
evaluation: epoch, step, words seen, seconds since training started (evaluations
included), losses, the scores in score_weights and the weighted score. The benchmarks
read training words per second from it.
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


@registry.loggers(LOGGER_NAME)
def training_logger(progress_bar: bool = False, console_output: bool = True, output_file: str | None = None):
    console = console_logger(progress_bar=progress_bar, console_output=console_output, output_file=None)

    def setup(
        nlp: Language, stdout: IO = sys.stdout, stderr: IO = sys.stderr
    ) -> tuple[Callable[[dict[str, Any] | None], None], Callable[[], None]]:
        log_console, finalize_console = console(nlp, stdout, stderr)
        score_names = list(nlp.config["training"]["score_weights"])
        stream = None
        if output_file:
            Path(output_file).parent.mkdir(parents=True, exist_ok=True)
            # A new run starts a new log: a resumed folder must not mix two runs' lines.
            stream = open(output_file, "w", encoding="utf-8")  # noqa: SIM115 (closed in finalize)

        def log_step(info: dict[str, Any] | None) -> None:
            log_console(info)
            if info is not None and stream is not None:
                stream.write(json.dumps(log_record(info, score_names)) + "\n")
                stream.flush()

        def finalize() -> None:
            finalize_console()
            if stream is not None:
                stream.close()

        return log_step, finalize

    return setup
