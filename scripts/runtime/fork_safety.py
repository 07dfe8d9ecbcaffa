"""What makes a process that loaded the pipeline a safe parent of `nlp.pipe(texts, n_process=N)` workers under fork.

Linux's default start method is fork; whoever forks (spaCy, multiprocessing, the app), each child
should be a working spaCy worker: one torch thread (GNU OpenMP's pool does not survive fork) and a
quiet Rust tokenizer. The first copy of the runtime to load in a process installs the handlers
(registration.first_copy_in_process).
"""

from __future__ import annotations

import os
import sys

TOKENIZERS_PARALLELISM = "TOKENIZERS_PARALLELISM"


def use_one_torch_thread_in_forked_child() -> None:
    """A forked child inherits the parent's OpenMP state but not its worker threads.

    PyTorch's CPU kernels run on GNU OpenMP, whose thread pool does not survive fork: a child
    whose first forward pass asks for more than one thread waits forever for threads that do
    not exist (that is how `nlp.pipe(n_process=2)` hung). With one thread, OpenMP runs the
    work inline and never touches the pool. spaCy's workers are meant to be one per core
    anyway, so one thread each is also the right share of the CPU. The ONNX Runtime backends
    follow: their sessions take torch's thread count and are made again in each process.
    """
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


_tokenizers_parallelism_set_for_fork = False


def quiet_tokenizers_before_fork() -> None:
    """Set TOKENIZERS_PARALLELISM for the child to inherit; the parent gets its own value back after the fork.

    The Rust tokenizer's own fork handler runs in the child before any Python code can, and
    prints "The current process just got forked, after parallelism has already been used"
    unless the variable is set. It also turns the child's tokenizer parallelism off, which
    the variable's value, false, says too.
    """
    global _tokenizers_parallelism_set_for_fork
    if TOKENIZERS_PARALLELISM not in os.environ:
        os.environ[TOKENIZERS_PARALLELISM] = "false"
        _tokenizers_parallelism_set_for_fork = True


def restore_tokenizers_after_fork_in_parent() -> None:
    global _tokenizers_parallelism_set_for_fork
    if _tokenizers_parallelism_set_for_fork:
        os.environ.pop(TOKENIZERS_PARALLELISM, None)
        _tokenizers_parallelism_set_for_fork = False


def install_fork_handlers() -> None:
    """Make every fork of this process a safe spaCy worker, whoever forks (spaCy, multiprocessing, the app)."""
    os.register_at_fork(
        before=quiet_tokenizers_before_fork,
        after_in_parent=restore_tokenizers_after_fork_in_parent,
        after_in_child=use_one_torch_thread_in_forked_child,
    )
