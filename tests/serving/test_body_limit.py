"""scripts.serving.body_limit: a body over the limit is refused before it is read whole, with or without a length."""

from __future__ import annotations

import asyncio
import json

from scripts.serving.body_limit import BodyLimit


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
