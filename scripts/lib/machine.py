"""The machine as this process may use it: how many CPUs, and torch's threads on them.

Every engine and benchmark sizes its workers and threads from these two, so that a container or
`taskset` that narrows the CPUs narrows them everywhere alike.
"""

from __future__ import annotations

import os


def available_cpus() -> int:
    """The CPUs this process may run on: its affinity mask, which containers and taskset narrow, else all of them."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def use_torch_threads(threads: int) -> None:
    """torch's intra-op threads in this process; ONNX Runtime's encoder session takes the same count.

    torch is imported here, not at the top, so that a process that never runs a model (a JSON
    report, a CLI checking its options) does not pay for importing it.
    """
    import torch

    torch.set_num_threads(threads)
