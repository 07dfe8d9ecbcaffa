"""scripts.lib.machine: the CPUs this process may use, and torch's threads."""

from __future__ import annotations

import os

import pytest

from scripts.lib import machine
from scripts.lib.machine import available_cpus, use_torch_threads


def test_the_cpus_are_those_of_the_affinity_mask_not_the_machine():
    if hasattr(os, "sched_getaffinity"):
        assert available_cpus() == len(os.sched_getaffinity(0))
    assert 1 <= available_cpus() <= (os.cpu_count() or 1)


def test_without_an_affinity_mask_every_cpu_counts(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delattr(machine.os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(machine.os, "cpu_count", lambda: 6)
    assert available_cpus() == 6
    monkeypatch.setattr(machine.os, "cpu_count", lambda: None)  # "undeterminable", says os.cpu_count
    assert available_cpus() == 1


def test_torch_gets_the_threads_it_is_given():
    import torch

    before = torch.get_num_threads()
    try:
        use_torch_threads(1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
