"""The local batcher: the texts of concurrent requests gathered into one `nlp.pipe` call, run in a worker thread.

Batches of up to max_batch_size texts, each waiting at most max_wait_s for more once its first text
has arrived; a bounded queue, so a request that does not fit gets Overloaded (503) at once instead
of a time-out. Ray Serve replicas batch with `@serve.batch` instead (scripts.serving.ray_app).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from scripts.serving.failures import ModelFailed, Overloaded, TimedOut
from scripts.serving.settings import LOGGER

logger = logging.getLogger(LOGGER)


@dataclass
class Pending:
    texts: list[str]
    future: asyncio.Future


class Batcher:
    """Concurrent requests' texts gathered into batches, run one batch at a time in a worker thread.

    A batch starts as soon as the worker is free and a text waits, after waiting at most max_wait_s for
    the batch to fill; requests that arrive while a batch runs form the next one, so under load the
    batches fill without any waiting. A request's texts stay in one batch (unless it alone is larger).
    """

    def __init__(
        self,
        run_batch: Callable[[list[str]], list[Any]],
        executor: ThreadPoolExecutor,
        max_batch_size: int,
        max_wait_s: float,
        max_queue: int,
        timeout_s: float,
    ) -> None:
        self.run_batch = run_batch
        self.executor = executor
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.timeout_s = timeout_s
        self.pending: deque[Pending] = deque()
        self.queued_texts = 0
        self.batches = 0
        self.batched_texts = 0
        self.busy_seconds = 0.0
        self.arrived = asyncio.Event()
        self.worker: asyncio.Task | None = None

    def start(self) -> None:
        self.worker = asyncio.get_running_loop().create_task(self.batch_forever())

    async def stop(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
            with suppress(asyncio.CancelledError):
                await self.worker

    async def annotate(self, texts: list[str]) -> list[Any]:
        """The results of `run_batch` for these texts; Overloaded, TimedOut or ModelFailed instead."""
        if not texts:
            return []
        if self.queued_texts + len(texts) > self.max_queue:
            raise Overloaded(
                f"The server is busy: {self.queued_texts} texts are waiting and it queues at most {self.max_queue}. "
                "Retry shortly; the operator can add replicas."
            )
        future = asyncio.get_running_loop().create_future()
        self.pending.append(Pending(texts, future))
        self.queued_texts += len(texts)
        self.arrived.set()
        try:
            return await asyncio.wait_for(future, self.timeout_s)
        except asyncio.TimeoutError:
            raise TimedOut(self.timeout_s) from None

    async def batch_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self.pending:
                self.arrived.clear()
                await self.arrived.wait()
            deadline = loop.time() + self.max_wait_s
            while self.queued_texts < self.max_batch_size and (left := deadline - loop.time()) > 0:
                self.arrived.clear()
                try:
                    await asyncio.wait_for(self.arrived.wait(), left)
                except asyncio.TimeoutError:
                    break
            batch = self.take_batch()
            if batch:
                await self.run(batch)

    def take_batch(self) -> list[Pending]:
        """Requests from the front of the queue, up to max_batch_size texts; those already given up are dropped."""
        batch: list[Pending] = []
        size = 0
        while self.pending:
            request = self.pending[0]
            if request.future.done():  # timed out or its client went away
                self.pending.popleft()
                self.queued_texts -= len(request.texts)
                continue
            if batch and size + len(request.texts) > self.max_batch_size:
                break
            self.pending.popleft()
            self.queued_texts -= len(request.texts)
            batch.append(request)
            size += len(request.texts)
        return batch

    async def run(self, batch: list[Pending]) -> None:
        loop = asyncio.get_running_loop()
        texts = [text for request in batch for text in request.texts]
        started = time.perf_counter()
        try:
            results = await loop.run_in_executor(self.executor, self.run_batch, texts)
        except Exception:
            if len(batch) == 1:
                logger.exception("nlp.pipe failed on a request of %d text(s)", len(texts))
                resolve(batch[0].future, exception=ModelFailed())
                return
            # One request's text can fail a whole batch: run each request alone, so only that one fails.
            for request in batch:
                await self.run([request])
            return
        self.batches += 1
        self.batched_texts += len(texts)
        self.busy_seconds += time.perf_counter() - started
        start = 0
        for request in batch:
            resolve(request.future, result=results[start : start + len(request.texts)])
            start += len(request.texts)


def resolve(future: asyncio.Future, result: Any = None, exception: BaseException | None = None) -> None:
    if future.done():  # its request timed out or was cancelled while the batch ran
        return
    if exception is not None:
        future.set_exception(exception)
    else:
        future.set_result(result)
