"""scripts/tools/serving.py in-process: the batcher, the body limit, the answers to bad requests, the Ray config.

A stand-in model (a function over texts) takes the place of the pipeline here, so that batches,
queue limits and timeouts can be steered; tests/tools/test_serve.py runs the real server processes
with a trained pipeline.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import spacy
import yaml

from scripts.tools.serving import (
    Batcher,
    BodyLimit,
    ModelFailed,
    NotReady,
    Overloaded,
    ServeError,
    ServeSettings,
    TimedOut,
    create_app,
    describe,
    last_error_line,
    ray_app,
    replica_environment,
)
from tests.conftest import PROJECT_DIR

SERVE_CONFIG = PROJECT_DIR / "configs" / "serve.yaml"


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


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_texts": 100, "max_queue": 10}, "--max-texts (100) is more than --max-queue (10)"),
        ({"max_batch_size": 0}, "--max-batch-size is 0: it must be 1 or more"),
        ({"timeout_s": float("inf")}, "--timeout-s is inf"),
        ({"max_wait_ms": -1.0}, "--max-wait-ms is -1.0: it must be 0 or more"),
    ],
)
def test_settings_that_cannot_work_are_named(options: dict, message: str):
    with pytest.raises(ServeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ServeSettings("model", **options)


def test_replicas_get_passive_openmp_threads_unless_the_user_chose(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert replica_environment() == {"OMP_WAIT_POLICY": "PASSIVE"}
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert replica_environment() == {"OMP_WAIT_POLICY": "ACTIVE"}


def test_settings_from_a_config_file_name_unknown_keys():
    with pytest.raises(ServeError, match="Unknown setting"):
        ServeSettings.from_mapping({"model": "m", "max_bach_size": 3})
    with pytest.raises(ServeError, match="The args need `model`"):
        ServeSettings.from_mapping({})


# --- the application, over a stand-in service ------------------------------------


class StandInService:
    def __init__(self, ready: bool = True, failure: Exception | None = None) -> None:
        self.ready = ready
        self.failure = failure
        self.seen: list[list[str]] = []

    def status(self) -> dict[str, Any]:
        return {"status": "ready" if self.ready else "loading"}

    async def annotate(self, texts: list[str]) -> list[list[dict[str, Any]]]:
        if not self.ready:
            raise NotReady()
        if self.failure is not None:
            raise self.failure
        self.seen.append(texts)
        return [[{"start": 0, "end": 1, "label": "PER", "text": text[:1]}] if text else [] for text in texts]


SMALL_LIMITS = ServeSettings("model", max_texts=3, max_text_chars=20, max_body_bytes=300, max_queue=8)


def call(
    service: Any, method: str, path: str, settings: ServeSettings = SMALL_LIMITS, **request: Any
) -> httpx.Response:
    async def main() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app(service, settings), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.request(method, path, **request)

    return asyncio.run(main())


def test_one_text_and_a_list_of_texts():
    service = StandInService()
    one = call(service, "POST", "/ner", json={"text": "Anna"})
    assert one.status_code == 200
    assert one.json() == {"text": "Anna", "entities": [{"start": 0, "end": 1, "label": "PER", "text": "A"}]}
    several = call(service, "POST", "/ner", json={"texts": ["Bo", ""]})
    assert several.json() == {"results": [
        {"text": "Bo", "entities": [{"start": 0, "end": 1, "label": "PER", "text": "B"}]},
        {"text": "", "entities": []},
    ]}  # fmt: skip
    assert service.seen == [["Anna"], ["Bo", ""]]


BAD_REQUESTS = [
    ({"content": b'{"text": "a"', "headers": {"content-type": "application/json"}}, 400, "not valid JSON"),
    ({"content": b'{"text": "a"}', "headers": {"content-type": "text/plain"}}, 415, "Content-Type: application/json"),
    ({"json": {}}, 422, 'needs "text" (a string) or "texts"'),
    ({"json": {"text": 5}}, 422, '"text" must be a string'),
    ({"json": {"texts": ["a", None]}}, 422, '"texts[1]" must be a string'),
    ({"json": {"texts": "a"}}, 422, '"texts" must be a list of strings'),
    ({"json": {"text": "a", "texts": ["b"]}}, 422, "not both"),
    ({"json": {"text": "a", "model": "/etc/passwd"}}, 422, 'unknown field "model"'),
    ({"json": ["a"]}, 422, "must be a JSON object"),
    ({"json": {"text": "x" * 21}}, 413, '"text" is 21 characters; the limit is 20'),
    ({"json": {"texts": ["a"] * 4}}, 413, "holds 4 texts; the server takes at most 3"),
    (
        {"content": b'{"texts": ["a", "b\\ud800"]}', "headers": {"content-type": "application/json"}},
        422,
        '"texts[1]": the text holds an unpaired surrogate',
    ),
    ({"json": {"text": "y" * 400}}, 413, "the server takes at most 300 bytes"),
]


@pytest.mark.parametrize(("request_options", "status", "message"), BAD_REQUESTS, ids=[m for *_, m in BAD_REQUESTS])
def test_each_bad_request_gets_its_status_and_a_message_naming_the_fix(request_options, status, message):
    service = StandInService()
    answer = call(service, "POST", "/ner", **request_options)
    assert answer.status_code == status, answer.text
    assert message in answer.json()["detail"]
    assert "Traceback" not in answer.text
    assert service.seen == []


@pytest.mark.parametrize(
    ("service", "status", "message"),
    [
        (StandInService(ready=False), 503, "still loading"),
        (StandInService(failure=Overloaded("The server is busy")), 503, "busy"),
        (StandInService(failure=ModelFailed("The model failed on this request's text.")), 500, "server's log"),
        (StandInService(failure=RuntimeError("secret /path/in/traceback")), 500, "Internal error"),
    ],
)
def test_service_failures_answer_without_a_traceback(service, status, message):
    answer = call(service, "POST", "/ner", json={"text": "a"})
    assert answer.status_code == status and message in answer.json()["detail"]
    assert "Traceback" not in answer.text and "secret" not in answer.text


def test_healthz_is_ready_only_once_the_model_is():
    assert call(StandInService(ready=False), "GET", "/healthz").status_code == 503
    assert call(StandInService(), "GET", "/healthz").json() == {"status": "ready"}


def test_the_page_and_the_schema_are_served():
    page = call(StandInService(), "GET", "/")
    assert page.status_code == 200 and 'id="text"' in page.text and 'fetch("ner"' in page.text
    schema = call(StandInService(), "GET", "/openapi.json").json()
    assert set(schema["paths"]) == {"/healthz", "/ner"}
    assert {"413", "422", "503"} <= set(schema["paths"]["/ner"]["post"]["responses"])
    # Any label set: the page asks /healthz for the labels, and the schema names none of its own.
    assert 'fetch("healthz")' in page.text and ">PER</span>" not in page.text
    assert "MISC" not in json.dumps(schema) and "GET /healthz lists them" in json.dumps(schema)


def test_healthz_lists_the_labels_of_the_pipelines_ner_whatever_they_are():
    nlp = spacy.blank("en")
    ner = nlp.add_pipe("ner")
    for label in ("DRUG", "Dose form", "PER"):
        ner.add_label(label)
    settings = ServeSettings("model")
    assert describe(nlp, settings, "ready")["labels"] == ["DRUG", "Dose form", "PER"]
    assert "labels" not in describe(None, settings, "loading")


def body_limit_run(limit: int, messages: list[dict], headers: list[tuple[bytes, bytes]]) -> tuple[list[dict], int]:
    """(what the middleware sent, how many messages it read) for a request of these body messages."""
    sent: list[dict] = []
    reads = 0

    async def receive() -> dict:
        nonlocal reads
        reads += 1
        return messages[reads - 1]

    async def send(message: dict) -> None:
        sent.append(message)

    async def app(scope, receive, send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    scope = {"type": "http", "method": "POST", "headers": headers}
    asyncio.run(BodyLimit(app, limit)(scope, receive, send))
    return sent, reads


def test_a_body_over_the_limit_is_refused_before_it_is_read_whole():
    chunks = [{"type": "http.request", "body": b"x" * 40, "more_body": True} for _ in range(100)]
    sent, reads = body_limit_run(100, chunks, headers=[])  # chunked: no Content-Length
    assert sent[0]["status"] == 413 and reads == 3  # 120 bytes read of 4,000
    assert "at most 100 bytes" in json.loads(sent[1]["body"])["detail"]
    sent, reads = body_limit_run(100, chunks, headers=[(b"content-length", b"4000")])
    assert sent[0]["status"] == 413 and reads == 0
    small = [{"type": "http.request", "body": b"ab", "more_body": True}, {"type": "http.request", "body": b"c"}]
    sent, reads = body_limit_run(100, small, headers=[(b"content-length", b"3")])
    assert sent[0]["status"] == 200 and sent[1]["body"] == b"abc"


# --- the Ray Serve config file --------------------------------------------------------


def test_the_serve_config_file_is_a_valid_ray_serve_config_that_builds():
    from ray.serve.schema import ServeDeploySchema

    config = yaml.safe_load(SERVE_CONFIG.read_text())
    schema = ServeDeploySchema.model_validate(config) if hasattr(ServeDeploySchema, "model_validate") else None
    schema = schema or ServeDeploySchema.parse_obj(config)
    [application] = schema.applications
    assert application.import_path == "scripts.tools.serving:ray_app"
    assert schema.http_options.host == "127.0.0.1"
    built = ray_app(application.args)
    deployment = built._bound_deployment
    assert deployment.name == "NerReplica"
    [settings] = built._bound_deployment.init_args
    assert settings.model == application.args["model"] and settings.torch_threads >= 1


def test_a_failed_replica_is_reported_by_the_last_line_of_its_error():
    quoted = (
        "The deployment failed to start 3 times in a row.\nTraceback (most recent call last):\n  File x\n"
        "scripts.lib.pipeline_loading.PipelineLoadError: No pipeline at /m: there is no such folder.\n\n"
    )
    assert last_error_line(quoted) == "scripts.lib.pipeline_loading.PipelineLoadError: No pipeline at /m: there is " \
                                      "no such folder."  # fmt: skip
    assert last_error_line("") == ""


def test_the_ray_builder_names_a_wrong_setting():
    with pytest.raises(ServeError, match="max_bach_size"):
        ray_app({"model": "en_bert_ner", "max_bach_size": 8})


def test_the_config_file_names_only_existing_settings():
    config = yaml.safe_load(Path(SERVE_CONFIG).read_text())
    args = dict(config["applications"][0]["args"])
    args.pop("replicas", None)
    ServeSettings.from_mapping(args)
