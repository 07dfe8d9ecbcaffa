"""The serving engine behind `serve`: the HTTP application, the batcher, uvicorn on one machine, Ray Serve beyond.

- `create_app`: the FastAPI application every mode serves: `POST /ner` (one text or a list), `GET /healthz`,
  the page at `/` (serving_page.html) and the OpenAPI schema at `/docs`. Each text's answer is what
  `annotate` writes for it, `{"text", "entities"}`, built by scripts.tools.annotation.entity_records.
- `Batcher`: gathers the texts of concurrent requests into one `nlp.pipe` call (up to max_batch_size texts,
  waiting at most max_wait_ms for more), runs it in a worker thread, and answers each request with its part.
  Its queue is bounded: a request that does not fit gets a 503 at once.
- `BodyLimit`: refuses a body over max_body_bytes before it is read whole (Content-Length, then the bytes
  as they stream in).
- `local_server`: the application under uvicorn's process supervisor, one worker process per replica;
  a worker that dies is started again. `serve_on_ray` and `ray_app` (the `serve deploy` entry point of
  configs/serve.yaml): the same application as a Ray Serve deployment, batching with `@serve.batch`.

The model and its backend are server settings: no request names a file, a model or a backend.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, suppress
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictStr
from spacy.language import Language
from starlette.exceptions import HTTPException as StarletteHTTPException

from scripts.components.encoder_backend import TORCH
from scripts.lib.pipeline_loading import load_pipeline
from scripts.tools.annotation import check_text, entity_records

logger = logging.getLogger("en_bert_ner.serve")

PAGE = Path(__file__).with_name("serving_page.html")
LOOPBACK = "127.0.0.1"
# uvicorn's exit status for a worker that could not start: its supervisor then stops instead of restarting it.
STARTUP_FAILURE = 3
RAY_APP_NAME = "en_bert_ner"
RAY_DEPLOYMENT_NAME = "NerReplica"
# OpenMP's threads spin after each parallel region by default, waiting for the next one. A server's model shares
# its cores with the server's own event loop (and, on a small machine, with its clients): there the spinning
# takes the cycles they need, and under contention a 2-thread forward pass became 10-30x slower. Passive threads
# sleep instead. Set in the environment of the worker processes and replicas, unless the user set it.
OMP_WAIT_POLICY = "OMP_WAIT_POLICY"


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask), which can be fewer than the machine has."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def replica_environment() -> dict[str, str]:
    """Environment variables a replica's process starts with (before torch and OpenMP load)."""
    return {OMP_WAIT_POLICY: os.environ.get(OMP_WAIT_POLICY, "PASSIVE")}


class ServeError(Exception):
    """A setting the user can fix before the server starts: the message names the option and the fix."""


class Overloaded(Exception):
    """The queue has no room for the request's texts: answered with 503 at once."""


class TimedOut(Exception):
    """The request waited longer than timeout_s: answered with 503."""


class NotReady(Exception):
    """The model is still loading: answered with 503."""


class ModelFailed(Exception):
    """nlp.pipe raised on the request's texts: answered with 500; the traceback goes to the log only."""


# The CLI option of a setting, where its name differs.
OPTION_NAMES = {"torch_threads": "cpus-per-replica"}


@dataclass(frozen=True)
class ServeSettings:
    """Everything a server process needs, picklable: it travels to uvicorn's workers and to Ray's replicas."""

    model: str
    backend: str = TORCH
    max_batch_size: int = 32  # texts in one nlp.pipe call
    max_wait_ms: float = 2.0  # how long a batch waits for more texts once its first has arrived
    max_queue: int = 256  # texts waiting for a batch; a request beyond that gets 503 at once
    max_texts: int = 64  # texts in one request
    max_text_chars: int = 10_000  # characters in one text
    max_body_bytes: int = 1 << 20  # bytes in one request body, counted before it is parsed
    timeout_s: float = 30.0  # a request not answered in this time gets 503
    torch_threads: int = 1  # per replica: its CPUs

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                minimum = 0 if field.name == "max_wait_ms" else 1
                if value < minimum or (isinstance(value, float) and not math.isfinite(value)):
                    option = OPTION_NAMES.get(field.name, field.name.replace("_", "-"))
                    raise ServeError(f"--{option} is {value}: it must be {minimum} or more.")
        if self.max_texts > self.max_queue:
            raise ServeError(
                f"--max-texts ({self.max_texts}) is more than --max-queue ({self.max_queue}): a request with that many "
                "texts could never be queued. Lower --max-texts or raise --max-queue."
            )

    def limits(self) -> dict[str, Any]:
        """What a client may send, for /healthz."""
        return {
            "max_texts": self.max_texts,
            "max_text_chars": self.max_text_chars,
            "max_body_bytes": self.max_body_bytes,
            "timeout_s": self.timeout_s,
        }

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> ServeSettings:
        """Settings from a config file's args (Ray Serve's `serve deploy`): unknown keys are named."""
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ServeError(f"Unknown setting(s) {', '.join(unknown)}: the settings are {', '.join(sorted(known))}.")
        if "model" not in values:
            raise ServeError("The args need `model`: an installed pipeline package (en_bert_ner) or a pipeline folder.")
        return cls(**values)


def run_pipeline(nlp: Language, texts: list[str]) -> list[list[dict[str, Any]]]:
    """The entities of each text, as `annotate` writes them, from one nlp.pipe call."""
    return [entity_records(doc) for doc in nlp.pipe(texts)]


def use_torch_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


# --- batching ---------------------------------------------------------------------


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
            raise TimedOut(
                f"The server did not answer within its timeout of {self.timeout_s:g} s: it is overloaded. Retry later."
            ) from None

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
                resolve(batch[0].future, exception=ModelFailed("The model failed on this request's text."))
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


# --- what the application serves --------------------------------------------------


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


def load_served_pipeline(settings: ServeSettings) -> Language:
    use_torch_threads(settings.torch_threads)
    nlp = load_pipeline(settings.model, backend=settings.backend, needs=["ner"])
    # Warm up: the first call builds the backend's session (ONNX) and torch's kernels, not the first client.
    run_pipeline(nlp, ["Warm-up text from Berlin ."])
    return nlp


def exit_worker(message: str) -> None:
    sys.stderr.flush()
    os._exit(STARTUP_FAILURE)


# --- the HTTP application ---------------------------------------------------------


class NerRequest(BaseModel):
    """One text, or a list of texts (answered in order). Give exactly one of the two."""

    model_config = ConfigDict(extra="forbid")

    text: StrictStr | None = Field(None, description="One text; the answer is its entities")
    texts: list[StrictStr] | None = Field(None, description="Several texts; the answer lists each one's entities")


class Entity(BaseModel):
    start: int = Field(description="Character offset of its first character (Python string index)")
    end: int = Field(description="Character offset just past its last character")
    label: str = Field(description="The entity type: one of the pipeline's labels (GET /healthz lists them)")
    text: str = Field(description="text[start:end]")
    score: float | None = Field(None, description="The model's confidence, where the pipeline reports one")


class Annotated(BaseModel):
    text: str
    entities: list[Entity]


class AnnotatedList(BaseModel):
    results: list[Annotated]


class ErrorAnswer(BaseModel):
    detail: str


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorAnswer, "description": description}
    for status, description in {
        400: "The body is not valid JSON",
        415: "The body is not sent as JSON (Content-Type: application/json)",
        413: "The body, a text or the number of texts is over its limit",
        422: "A field is missing, of the wrong type, or unknown",
        500: "The model failed on the text (the server's log has the details)",
        503: "The model is loading, or the server is busy: retry shortly",
    }.items()
}


def error(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def field_name(location: tuple[Any, ...]) -> str:
    """body.texts.3 -> texts[3]: the field as the client wrote it."""
    parts = [part for part in location if part != "body"]
    name = ""
    for part in parts:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name or "the body"


def validation_answer(err: RequestValidationError) -> JSONResponse:
    """FastAPI's list of validation errors as one message naming each field."""
    problems = err.errors()
    if any(problem.get("type") == "json_invalid" for problem in problems):
        problem = next(problem for problem in problems if problem.get("type") == "json_invalid")
        reason = (problem.get("ctx") or {}).get("error", "not valid JSON")
        return error(400, f'The body is not valid JSON ({reason}): send {{"text": "..."}} or {{"texts": [...]}}.')
    messages = []
    for problem in problems[:5]:
        name = field_name(tuple(problem.get("loc", ())))
        kind = problem.get("type", "")
        if kind == "extra_forbidden":
            messages.append(f'unknown field "{name}": the body takes "text" or "texts"')
        elif kind == "missing" and name == "the body":
            messages.append('the body is missing: send {"text": "..."} or {"texts": [...]}')
        elif kind in ("model_attributes_type", "dict_type", "model_type"):
            messages.append('the body must be a JSON object: {"text": "..."} or {"texts": [...]}')
        elif kind == "string_type":
            messages.append(f'"{name}" must be a string')
        elif kind == "list_type":
            messages.append(f'"{name}" must be a list of strings')
        else:
            messages.append(f'"{name}": {problem.get("msg", "invalid")}')
    more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
    return error(422, "Invalid request: " + "; ".join(messages) + more + ".")


def checked_texts(body: NerRequest, settings: ServeSettings) -> list[str] | JSONResponse:
    """The texts to annotate, or the answer that says which limit or field is wrong."""
    if (body.text is None) == (body.texts is None):
        both = body.text is not None
        return error(
            422,
            'Give either "text" (one string) or "texts" (a list of strings), not both.'
            if both
            else 'The body needs "text" (a string) or "texts" (a list of strings).',
        )
    texts = [body.text] if body.text is not None else body.texts or []
    if len(texts) > settings.max_texts:
        return error(
            413, f'"texts" holds {len(texts)} texts; the server takes at most {settings.max_texts} in one request.'
        )
    for index, text in enumerate(texts):
        name = "text" if body.text is not None else f"texts[{index}]"
        if len(text) > settings.max_text_chars:
            return error(
                413,
                f'"{name}" is {len(text):,} characters; the limit is {settings.max_text_chars:,}: split it into '
                "sentences or paragraphs.",
            )
        problem = check_text(text, index, settings.max_text_chars)
        if problem is not None:
            return error(422, f'"{name}": {problem.reason}.')
    return texts


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes gets 413 before it is read whole, let alone parsed.

    A Content-Length over the limit is refused before any body byte is read; a body without one (chunked)
    is counted as it arrives and refused at the first byte over the limit.
    """

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                await self.refuse(send, 400, "Content-Length is not a number.")
                return
            if length > self.limit:
                await self.refuse(send, 413, self.too_large(f"{length:,} bytes"))
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self.refuse(send, 413, self.too_large(f"more than {self.limit:,} bytes"))
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def too_large(self, size: str) -> str:
        return (
            f"The request body is {size}; the server takes at most {self.limit:,} bytes. "
            "Send fewer or shorter texts per request."
        )

    @staticmethod
    async def refuse(send: Callable, status: int, detail: str) -> None:
        body = json.dumps({"detail": detail}).encode("utf-8")
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   (b"connection", b"close")]  # fmt: skip
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def create_app(
    service: Service,
    settings: ServeSettings,
    on_startup: Callable[[], Awaitable[None]] | None = None,
    on_shutdown: Callable[[], Awaitable[None]] | None = None,
) -> FastAPI:
    """The FastAPI application over `service`: the same in a uvicorn worker and in a Ray Serve replica."""

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        if on_startup is not None:
            await on_startup()
        yield
        if on_shutdown is not None:
            await on_shutdown()

    app = FastAPI(
        title="en_bert_ner",
        summary="Named entities in English text, with character offsets; GET /healthz lists the entity types.",
        version="1.0",
        lifespan=lifespan,
    )
    page = PAGE.read_text(encoding="utf-8")

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, err: RequestValidationError) -> JSONResponse:
        content_type = request.headers.get("content-type", "")
        if request.method == "POST" and "json" not in content_type.lower():
            return error(415, f"The body must be JSON, sent with Content-Type: application/json (not "
                              f"{content_type or 'none'}).")  # fmt: skip
        return validation_answer(err)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, err: StarletteHTTPException) -> JSONResponse:
        return error(err.status_code, str(err.detail), getattr(err, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(_: Request, err: Exception) -> JSONResponse:
        # Starlette raises the error on after this answer, and the server logs it with its traceback: the log
        # gets the details, the client never does.
        return error(500, "Internal error: the server's log has the details.")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/healthz", summary="200 once the model is loaded, 503 before")
    async def healthz() -> JSONResponse:
        answer = service.status()
        return JSONResponse(answer, status_code=200 if answer["status"] == "ready" else 503)

    @app.post(
        "/ner",
        summary="The entities of one text or of a list of texts",
        response_model=Annotated | AnnotatedList,
        responses=ERROR_RESPONSES,
    )
    async def ner(body: NerRequest) -> JSONResponse:
        texts = checked_texts(body, settings)
        if isinstance(texts, JSONResponse):
            return texts
        try:
            entities = await service.annotate(texts)
        except NotReady:
            return error(503, "The model is still loading: retry in a few seconds.", {"Retry-After": "5"})
        except (Overloaded, TimedOut) as err:
            return error(503, str(err), {"Retry-After": "1"})
        except ModelFailed as err:
            return error(500, f"{err} The server's log has the details.")
        results = [{"text": text, "entities": found} for text, found in zip(texts, entities, strict=True)]
        return JSONResponse(results[0] if body.text is not None else {"results": results})

    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    return app


def worker_app(settings: ServeSettings) -> FastAPI:
    """The application of one uvicorn worker process (uvicorn calls this factory in each new worker)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    service = LocalService(settings)
    return create_app(service, settings, on_startup=service.start, on_shutdown=service.stop)


# --- one machine: uvicorn's supervisor ----------------------------------------------


@dataclass
class LocalServer:
    """A bound socket and uvicorn's supervisor of its worker processes, for `serve_locally`."""

    config: Any
    socket: Any
    supervisor: Any

    @property
    def port(self) -> int:
        return self.socket.getsockname()[1]

    def worker_pids(self) -> list[int]:
        return [process.pid for process in self.supervisor.processes]

    def failed_to_start(self) -> bool:
        return any(process.exitcode == STARTUP_FAILURE for process in self.supervisor.processes)


def local_server(settings: ServeSettings, host: str, port: int, replicas: int, access_log: bool = False) -> LocalServer:
    """The socket bound (port 0: a free one) and the supervisor of `replicas` worker processes, not yet started.

    Every worker accepts on the one socket and has its own model and batcher. uvicorn's supervisor pings
    each worker and starts a new one in place of one that died or hangs.
    """
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    os.environ.update(replica_environment())  # the spawned workers inherit it
    config = uvicorn.Config(
        functools.partial(worker_app, settings),
        factory=True,
        host=host,
        port=port,
        workers=replicas,
        access_log=access_log,
        # Loading a model holds the GIL for seconds at a time: give a worker that long to answer a ping.
        timeout_worker_healthcheck=30,
        timeout_graceful_shutdown=10,
        log_level="info",
    )
    try:
        sock = config.bind_socket()
    except SystemExit:
        raise ServeError(f"Cannot listen on {host}:{port}: the port is taken or the address is not this machine's. "
                         "Choose another --port (0: any free port) or --host.") from None  # fmt: skip
    return LocalServer(config, sock, Multiprocess(config, sockets=[sock]))


# --- a cluster: Ray Serve ---------------------------------------------------------


def ray_deployment(settings: ServeSettings) -> Any:
    """The Ray Serve deployment class: each replica loads the model and serves `create_app` over `@serve.batch`."""
    from ray import serve

    @serve.deployment(
        name=RAY_DEPLOYMENT_NAME,
        # Requests a replica takes at once: enough to fill two batches. More wait in Ray's queue, which holds
        # at most max_queue requests: past that, Ray answers 503 at once.
        max_ongoing_requests=2 * settings.max_batch_size,
        max_queued_requests=settings.max_queue,
        ray_actor_options={"num_cpus": settings.torch_threads, "runtime_env": {"env_vars": replica_environment()}},
        health_check_period_s=5,
    )
    @serve.ingress()
    class NerReplica:
        def __init__(self, replica_settings: ServeSettings) -> None:
            self.settings = replica_settings
            self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nlp")
            self.nlp = load_served_pipeline(replica_settings)

        def __serve_build_asgi_app__(self) -> FastAPI:
            return create_app(self, self.settings)

        def status(self) -> dict[str, Any]:
            return describe(self.nlp, self.settings, "ready")

        @serve.batch(max_batch_size=settings.max_batch_size, batch_wait_timeout_s=settings.max_wait_ms / 1000)
        async def batch_handler(self, texts: list[str]) -> list[list[dict[str, Any]]]:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self.executor, run_pipeline, self.nlp, texts)

        async def annotate(self, texts: list[str]) -> list[list[dict[str, Any]]]:
            try:
                return list(
                    await asyncio.wait_for(
                        asyncio.gather(*(self.batch_handler(text) for text in texts)), self.settings.timeout_s
                    )
                )
            except asyncio.TimeoutError:
                raise TimedOut(
                    f"The server did not answer within its timeout of {self.settings.timeout_s:g} s: it is "
                    "overloaded. Retry later."
                ) from None
            except Exception as err:
                logger.error("serve: nlp.pipe failed", exc_info=err)
                raise ModelFailed("The model failed on this request's text.") from None

    return NerReplica


def ray_application(settings: ServeSettings, replicas: int) -> Any:
    return ray_deployment(settings).options(num_replicas=replicas).bind(settings)


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
    import ray
    from ray import serve

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
            raise ServeError(f"Ray Serve could not start a replica: {deployment_failure(serve, err)}") from None
        on_ready()
        wait_for_signal()
    finally:
        with suppress(Exception):
            serve.shutdown()
        ray.shutdown()


def deployment_failure(serve: Any, err: Exception) -> str:
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
    """Block until SIGINT or SIGTERM."""
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


def settings_summary(settings: ServeSettings) -> str:
    values = asdict(settings)
    return ", ".join(f"{key} {value}" for key, value in values.items() if key != "model")
