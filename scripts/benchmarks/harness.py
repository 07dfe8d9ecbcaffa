"""What every speed benchmark does around its measurement: the texts, a fresh process, the timed passes.

- `require_docbin`: stops the CLI, with the fix, when the DocBin of the texts is not there;
  `sentence_texts` reads its sentences;
- `in_fresh_process`: a function run in a new interpreter (spawn), so that its load time and peak
  memory are its own; the process is not a daemon, so the function may start processes of its
  own (`nlp.pipe(n_process=2)`, Ray);
- `timed_passes`: a warm-up pass over the first WARM_UP_TEXTS texts, then the timed passes;
- `count_words` and `peak_rss_mb`: the figures every benchmark reports.

No torch here at import time: a measured function imports it in its own process.
"""

from __future__ import annotations

import multiprocessing
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from scripts.lib.cli import fail

WARM_UP_TEXTS = 64
T = TypeVar("T")


def require_docbin(path: Path) -> None:
    """Stop the CLI with the fix when the test DocBin is not there."""
    if not path.is_file():
        fail(f"{path}: no such DocBin", "Build the corpus with `spacy project run corpus`.")


def sentence_texts(path: Path, limit: int = 0) -> list[str]:
    """Sentence texts of a gold DocBin (document-mode Docs are split into sentences)."""
    from spacy.tokens import DocBin  # spaCy's import brings thinc's, and thinc's torch
    from spacy.vocab import Vocab

    texts = [sent.text for doc in DocBin().from_disk(path).get_docs(Vocab()) for sent in doc.sents]
    return texts[:limit] if limit else texts


def count_words(texts: list[str]) -> int:
    """CoNLL words: the texts are the corpus tokens joined by spaces."""
    return sum(len(text.split()) for text in texts)


def timed(function: Callable[..., T], *args: Any) -> tuple[T, float]:
    """`function(*args)` and the seconds it took."""
    started = time.perf_counter()
    value = function(*args)
    return value, time.perf_counter() - started


def timed_passes(run: Callable[[list[str]], None], texts: list[str], repetitions: int) -> list[float]:
    """One warm-up pass over the first WARM_UP_TEXTS texts (not timed), then `repetitions` timed passes over all."""
    run(texts[:WARM_UP_TEXTS])
    return [timed(run, texts)[1] for _ in range(repetitions)]


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def in_fresh_process(
    name: str, function: Callable[..., Any], *args: Any, expected: tuple[type[Exception], ...] = ()
) -> Any:
    """`function(*args)` in a new spawned, non-daemonic process; its return value comes back through a pipe.

    An exception of an `expected` type (the errors the CLI reports with their fix) is raised here as it was
    raised there. Any other failure (an exception, whose traceback the process prints, or a process that dies)
    is a RuntimeError that names the configuration `name`.
    """
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=run_and_send, args=(sender, function, args, expected), daemon=False)
    process.start()
    sender.close()  # the child holds the only sending end: its exit ends recv() below
    try:
        outcome = receiver.recv()
    except EOFError:
        outcome = None
    finally:
        receiver.close()
    process.join()
    if outcome is not None and not outcome[0]:
        raise outcome[1]
    if outcome is None or process.exitcode != 0:
        raise RuntimeError(f"{name}: the measuring process failed (exit code {process.exitcode}); see above.")
    return outcome[1]


def run_and_send(sender: Any, function: Callable[..., Any], args: tuple[Any, ...], expected: tuple) -> None:
    """The fresh process's part: (True, result) or (False, an expected error) down the pipe."""
    try:
        outcome = (True, function(*args))
    except expected as err:
        outcome = (False, err)
    sender.send(outcome)
    sender.close()
