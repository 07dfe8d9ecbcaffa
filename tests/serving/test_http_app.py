"""scripts.serving.http_app over a stand-in service: the answers, each bad request's status and message, the page.

The service is a stand-in (no model), so that readiness and each failure can be steered.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from scripts.serving.failures import ModelFailed, NotReady, Overloaded
from scripts.serving.http_app import create_app
from scripts.serving.settings import ServeSettings


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
