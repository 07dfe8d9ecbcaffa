"""The model behind the HTTP app: the Service it calls, and the local one each uvicorn worker runs.

- `Service`: what `create_app` needs of a model: its status for /healthz and `annotate(texts)`;
  `LocalService` (here) and the Ray replica (scripts.serving.ray_app) are the two.
- `load_served_pipeline` and `run_pipeline`: a replica's model, loaded on its threads and warmed up,
  and one nlp.pipe call answered as `annotate` writes it (scripts.lib.text_entities).
- `describe`: the /healthz answer, naming the model and its version, never a path on the server.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from spacy.language import Language

from scripts.lib.machine import use_torch_threads
from scripts.lib.pipeline_loading import load_pipeline
from scripts.lib.text_entities import entity_records
from scripts.serving.batcher import Batcher
from scripts.serving.failures import NotReady
from scripts.serving.settings import LOGGER, ServeSettings

logger = logging.getLogger(LOGGER)
# uvicorn's exit status for a worker that could not start: its supervisor then stops instead of restarting it.
STARTUP_FAILURE = 3


class Service(Protocol):
    """The model behind the application: a local batcher (uvicorn) or a Ray Serve replica."""

    def status(self) -> dict[str, Any]:
        """{"status": "ready" | "loading", ...}."""

    async def annotate(self, texts: list[str]) -> list[list[dict[str, Any]]]: ...


def describe(nlp: Language | None, settings: ServeSettings, status: str) -> dict[str, Any]:
    """The /healthz answer: the model's name and version, never a path on the server."""
    answer: dict[str, Any] = {"status": status}
    if nlp is not None:
        meta = nlp.meta
        answer["model"] = f"{meta.get('lang', '')}_{meta.get('name', '')}".strip("_") + f" {meta.get('version', '')}"
        answer["labels"] = sorted(nlp.get_pipe("ner").labels) if "ner" in nlp.pipe_names else []
    answer["backend"] = settings.backend
    answer["limits"] = settings.limits()
    return answer


class LocalService:
    """One uvicorn worker's model: loaded in the background (so /healthz answers "loading" meanwhile), then batched.

    A model that fails to load stops the worker with uvicorn's start-up failure status: its supervisor then
    stops the server, instead of starting the worker again and again.
    """

    def __init__(
        self,
        settings: ServeSettings,
        load: Callable[[ServeSettings], Language] | None = None,
        on_load_failure: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.load = load or load_served_pipeline
        self.on_load_failure = on_load_failure or exit_worker
        self.nlp: Language | None = None
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nlp")
        self.batcher: Batcher | None = None
        self.loading: asyncio.Task | None = None

    async def start(self) -> None:
        self.loading = asyncio.get_running_loop().create_task(self.load_in_background())

    async def load_in_background(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            # The worker thread that runs every batch also loads the model.
            nlp = await loop.run_in_executor(self.executor, self.load, self.settings)
        except Exception as err:
            message = f"the model {self.settings.model} could not be loaded: {err}"
            logger.error("serve: %s", message)
            self.on_load_failure(message)
            return
        settings = self.settings
        self.batcher = Batcher(
            functools.partial(run_pipeline, nlp),
            self.executor,
            settings.max_batch_size,
            settings.max_wait_ms / 1000,
            settings.max_queue,
            settings.timeout_s,
        )
        self.batcher.start()
        self.nlp = nlp
        logger.info("serve: the model is loaded; ready (process %d)", os.getpid())

    async def stop(self) -> None:
        if self.loading is not None:
            self.loading.cancel()
        if self.batcher is not None:
            await self.batcher.stop()
        self.executor.shutdown(wait=False, cancel_futures=True)

    def status(self) -> dict[str, Any]:
        answer = describe(self.nlp, self.settings, "ready" if self.batcher is not None else "loading")
        if self.batcher is not None:
            batcher = self.batcher
            # Since this worker started: how full its batches are and how busy its model is.
            answer["batches"] = {
                "batches": batcher.batches,
                "texts": batcher.batched_texts,
                "busy_seconds": round(batcher.busy_seconds, 3),
                "queued_texts": batcher.queued_texts,
            }
        return answer

    async def annotate(self, texts: list[str]) -> list[list[dict[str, Any]]]:
        if self.batcher is None:
            raise NotReady()
        return await self.batcher.annotate(texts)


def run_pipeline(nlp: Language, texts: list[str]) -> list[list[dict[str, Any]]]:
    """The entities of each text, as `annotate` writes them, from one nlp.pipe call."""
    return [entity_records(doc) for doc in nlp.pipe(texts)]


def load_served_pipeline(settings: ServeSettings) -> Language:
    """The model of one replica, on its threads, warmed up: what a uvicorn worker and a Ray replica both load."""
    use_torch_threads(settings.torch_threads)
    nlp = load_pipeline(settings.model, backend=settings.backend, needs=["ner"])
    # Warm up: the first call builds the backend's session (ONNX) and torch's kernels, not the first client.
    run_pipeline(nlp, ["Warm-up text from Berlin ."])
    return nlp


def exit_worker(message: str) -> None:
    """Stop this uvicorn worker so that its supervisor stops the server instead of starting it again and again."""
    sys.stderr.flush()
    os._exit(STARTUP_FAILURE)
