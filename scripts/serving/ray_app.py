"""A Ray cluster: the same application as a Ray Serve deployment, each replica batching with `@serve.batch`.

- `NerReplica`: the deployment; each replica (a Ray actor) loads the model once and serves
  `create_app` over itself as the Service.
- `ray_app`: the application builder that `serve deploy configs/serve.yaml` imports, its `args`
  the server settings; `serve_on_ray`: what `serve --ray` and `serve --address` run.

The only module of the server that imports Ray, which takes seconds: `serve` imports it only when
told to run on Ray, and uvicorn's workers never do.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from typing import Any

import ray
from fastapi import FastAPI
from ray import serve

from scripts.lib.machine import available_cpus
from scripts.serving.failures import ModelFailed, TimedOut
from scripts.serving.http_app import create_app
from scripts.serving.service import describe, load_served_pipeline, run_pipeline
from scripts.serving.settings import LOGGER, ServeError, ServeSettings, replica_environment

logger = logging.getLogger(LOGGER)
RAY_APP_NAME = "en_bert_ner"
RAY_DEPLOYMENT_NAME = "NerReplica"


@serve.deployment(name=RAY_DEPLOYMENT_NAME, health_check_period_s=5)
@serve.ingress()
class NerReplica:
    """One replica: the model loaded once, behind `create_app`, its texts batched across requests by `@serve.batch`.

    What depends on the settings (the replicas, their CPUs and queues) is set by `ray_application`.
    """

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nlp")
        self.nlp = load_served_pipeline(settings)
        # @serve.batch's own arguments are fixed where the class is defined, before any settings exist.
        self.batch_handler.set_max_batch_size(settings.max_batch_size)
        self.batch_handler.set_batch_wait_timeout_s(settings.max_wait_ms / 1000)

    def __serve_build_asgi_app__(self) -> FastAPI:
        return create_app(self, self.settings)

    def status(self) -> dict[str, Any]:
        return describe(self.nlp, self.settings, "ready")

    @serve.batch
    async def batch_handler(self, texts: list[str]) -> list[list[dict[str, Any]]]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, run_pipeline, self.nlp, texts)

    async def annotate(self, texts: list[str]) -> list[list[dict[str, Any]]]:
        try:
            batched = asyncio.gather(*(self.batch_handler(text) for text in texts))
            return list(await asyncio.wait_for(batched, self.settings.timeout_s))
        except asyncio.TimeoutError:
            raise TimedOut(self.settings.timeout_s) from None
        except Exception as err:
            logger.error("serve: nlp.pipe failed", exc_info=err)
            raise ModelFailed() from None


def ray_application(settings: ServeSettings, replicas: int) -> Any:
    """The deployment with `replicas` replicas of these settings, bound and ready for `serve.run`."""
    return NerReplica.options(
        num_replicas=replicas,
        # Requests a replica takes at once: enough to fill two batches. More wait in Ray's queue, which holds
        # at most max_queue requests: past that, Ray answers 503 at once.
        max_ongoing_requests=2 * settings.max_batch_size,
        max_queued_requests=settings.max_queue,
        ray_actor_options={"num_cpus": settings.torch_threads, "runtime_env": {"env_vars": replica_environment()}},
    ).bind(settings)


def ray_app(args: dict[str, Any]) -> Any:
    """The application builder that `serve deploy configs/serve.yaml` imports: the file's `args` are the settings."""
    values = dict(args)
    replicas = int(values.pop("replicas", 1))
    return ray_application(ServeSettings.from_mapping(values), replicas)


def serve_on_ray(
    settings: ServeSettings,
    host: str,
    port: int,
    replicas: int,
    address: str | None,
    on_ready: Callable[[], None],
) -> None:
    """Deploy on the Ray cluster at ADDRESS (or a new local one), then wait until interrupted."""
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        cpus = max(available_cpus(), replicas * settings.torch_threads)
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(
            http_options={"host": host, "port": port, "request_timeout_s": settings.timeout_s + 5},
        )
        try:
            serve.run(ray_application(settings, replicas), name=RAY_APP_NAME, route_prefix="/", blocking=False)
        except RuntimeError as err:  # DEPLOY_FAILED: the replicas' constructor (loading the model) raised
            raise ServeError(f"Ray Serve could not start a replica: {deployment_failure(err)}") from None
        on_ready()
        wait_for_signal()
    finally:
        with suppress(Exception):
            serve.shutdown()
        ray.shutdown()


def deployment_failure(err: Exception) -> str:
    """Why the deployment failed: the last line of the replica's error, which Ray keeps in the deployment's status."""
    with suppress(Exception):
        deployment = serve.status().applications[RAY_APP_NAME].deployments[RAY_DEPLOYMENT_NAME]
        return last_error_line(deployment.message) or str(err)
    return str(err)


def last_error_line(message: str) -> str:
    """The exception line that ends a traceback Ray quotes, e.g. `PipelineLoadError: No pipeline at ...`."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def wait_for_signal() -> None:
    """Block until SIGINT or SIGTERM: Ray Serve runs in its own processes, and this one only has to stay."""
    received: list[int] = []

    def handler(number: int, _frame: Any) -> None:
        received.append(number)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not received:
            time.sleep(0.2)
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
