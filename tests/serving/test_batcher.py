"""scripts.serving.batcher: shared batches, a bounded queue, time-outs, a failing text, with a stand-in model.

A stand-in model (a function over texts) takes the place of the pipeline, so that batches, queue
limits and timeouts can be steered; tests/tools/test_serve.py runs the real server processes with
a trained pipeline.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from scripts.serving.batcher import Batcher
from scripts.serving.failures import ModelFailed, Overloaded, TimedOut


class StandIn:
    """A model that upper-cases texts, records its batches and can be held back or made to fail."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.batches: list[list[str]] = []
        self.release = threading.Event()
        self.release.set()
        self.fail_on = fail_on

    def __call__(self, texts: list[str]) -> list[str]:
        assert self.release.wait(10), "the test never released the stand-in model"
        self.batches.append(list(texts))
        if self.fail_on is not None and self.fail_on in texts:
            raise ValueError("stand-in failure")
        return [text.upper() for text in texts]


def batcher_for(model: StandIn, **options: Any) -> Batcher:
    settings = {"max_batch_size": 8, "max_wait_s": 0.005, "max_queue": 64, "timeout_s": 10.0, **options}
    return Batcher(model, ThreadPoolExecutor(max_workers=1), **settings)


def run_with(batcher: Batcher, scenario: Callable[[Batcher], Any]) -> Any:
    async def main() -> Any:
        batcher.start()
        try:
            return await asyncio.wait_for(scenario(batcher), 30)
        finally:
            await batcher.stop()

    return asyncio.run(main())


def test_concurrent_requests_share_batches_and_each_gets_its_own_answers():
    model = StandIn()
    model.release.clear()  # the first batch waits, so the other requests queue up behind it
    requests = [[f"a{i}"] if i % 3 else [f"b{i}", f"c{i}"] for i in range(12)]

    async def scenario(batcher: Batcher) -> list[list[str]]:
        tasks = [asyncio.create_task(batcher.annotate(texts)) for texts in requests]
        await asyncio.sleep(0.05)
        model.release.set()
        return await asyncio.gather(*tasks)

    answers = run_with(batcher_for(model), scenario)
    assert answers == [[text.upper() for text in texts] for texts in requests]
    assert all(len(batch) <= 8 for batch in model.batches)
    assert len(model.batches) < len(requests) and max(len(batch) for batch in model.batches) == 8
    flat = [text for batch in model.batches for text in batch]
    assert sorted(flat) == sorted(text for texts in requests for text in texts)  # each text once
    for texts in requests:  # a request's texts stay together, in order
        assert any(batch[i : i + len(texts)] == texts for batch in model.batches for i in range(len(batch)))


def test_a_lone_request_waits_at_most_max_wait():
    model = StandIn()

    async def scenario(batcher: Batcher) -> float:
        started = time.perf_counter()
        assert await batcher.annotate(["x"]) == ["X"]
        return time.perf_counter() - started

    assert run_with(batcher_for(model, max_wait_s=0.0), scenario) < 1.0
    assert model.batches == [["x"]]


def test_a_full_queue_answers_at_once_and_service_resumes():
    model = StandIn()
    model.release.clear()

    async def scenario(batcher: Batcher) -> None:
        running = asyncio.create_task(batcher.annotate(["running"]))
        await asyncio.sleep(0.05)  # taken into the batch that the stand-in holds back
        queued = [asyncio.create_task(batcher.annotate([f"q{i}", f"r{i}"])) for i in range(2)]
        await asyncio.sleep(0.01)
        assert batcher.queued_texts == 4
        started = time.perf_counter()
        with pytest.raises(Overloaded, match="4 texts are waiting and it queues at most 4"):
            await batcher.annotate(["one too many"])
        assert time.perf_counter() - started < 0.5, "a full queue must answer at once, not wait"
        model.release.set()
        assert await running == ["RUNNING"]
        assert [await task for task in queued] == [["Q0", "R0"], ["Q1", "R1"]]
        assert await batcher.annotate(["after"]) == ["AFTER"]

    run_with(batcher_for(model, max_queue=4), scenario)


def test_a_request_over_its_timeout_gets_timed_out_and_the_batcher_carries_on():
    model = StandIn()
    model.release.clear()

    async def scenario(batcher: Batcher) -> None:
        with pytest.raises(TimedOut, match="timeout of 0.2 s"):
            await batcher.annotate(["slow"])
        model.release.set()
        assert await batcher.annotate(["next"]) == ["NEXT"]

    run_with(batcher_for(model, timeout_s=0.2), scenario)


def test_a_text_that_fails_fails_only_its_own_request():
    model = StandIn(fail_on="bad")
    model.release.clear()

    async def scenario(batcher: Batcher) -> list[Any]:
        tasks = [asyncio.create_task(batcher.annotate([text])) for text in ("good", "bad", "fine")]
        await asyncio.sleep(0.05)
        model.release.set()
        return await asyncio.gather(*tasks, return_exceptions=True)

    good, bad, fine = run_with(batcher_for(model, max_wait_s=0.05), scenario)
    assert (good, fine) == (["GOOD"], ["FINE"])
    assert isinstance(bad, ModelFailed)
