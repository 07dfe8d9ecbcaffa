"""The request body capped in bytes before the app reads it whole, let alone parses it: an ASGI middleware."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any


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
