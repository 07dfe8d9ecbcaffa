"""Worker processes: each makes its own ONNX Runtime session, and forked children start with one torch thread."""

from __future__ import annotations

import multiprocessing
import os

import pytest
import spacy
import torch

import scripts.runtime.encoder_backend  # noqa: F401  (loading the runtime installs the fork handlers)
from scripts.runtime.backends import BACKEND_SETTING
from scripts.runtime.fork_safety import TOKENIZERS_PARALLELISM
from tests.test_robustness import WORKER_DEADLINE_S, entity_spans, short_texts, worker_deadline


def test_a_forked_child_runs_one_torch_thread_with_quiet_tokenizers(monkeypatch):
    monkeypatch.delenv(TOKENIZERS_PARALLELISM, raising=False)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child reports and leaves at once, without pytest's exit handlers
        os.write(write, f"{torch.get_num_threads()} {os.environ.get(TOKENIZERS_PARALLELISM)}".encode())
        os._exit(0)
    os.close(write)
    report = os.read(read, 100).decode()
    os.waitpid(child, 0)
    assert report == "1 false"
    assert TOKENIZERS_PARALLELISM not in os.environ  # the parent's own setting is back
    try:
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.slow
@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_onnx_backend_with_two_processes_matches_one_process(installed_model, start_method):
    """nlp.pipe(n_process=2): each worker makes its own ONNX Runtime session (a session made before fork is dead)."""
    nlp = spacy.load(installed_model, config={BACKEND_SETTING: "onnx"})
    texts = short_texts(400)
    one_process = [entity_spans(doc) for doc in nlp.pipe(texts, batch_size=50)]  # the parent's session exists now
    previous = multiprocessing.get_start_method(allow_none=True)
    multiprocessing.set_start_method(start_method, force=True)
    try:
        with worker_deadline(WORKER_DEADLINE_S) as expired:
            try:
                docs = list(nlp.pipe(texts, batch_size=50, n_process=2))
            finally:  # a hang ends with the workers killed: say so rather than how reading from them failed
                assert not expired.is_set(), f"n_process=2 with {start_method} did not finish in {WORKER_DEADLINE_S} s"
    finally:
        multiprocessing.set_start_method(previous, force=True)
    assert [entity_spans(doc) for doc in docs] == one_process
