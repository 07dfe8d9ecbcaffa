"""The FastAPI application every mode serves, over a Service: a uvicorn worker's or a Ray Serve replica's.

`POST /ner` (one text or a list), `GET /healthz` (200 once the model is loaded), the page at `/`
(page.html beside this module) and the OpenAPI schema at `/docs`. Each text's answer is what
`annotate` writes for it, `{"text", "entities"}`; each failure is answered with its status and a
message that names the fix, never a traceback (scripts.serving.request_checks words them).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from scripts.serving.body_limit import BodyLimit
from scripts.serving.failures import ModelFailed, NotReady, Overloaded, TimedOut
from scripts.serving.request_checks import checked_texts, error, validation_answer
from scripts.serving.schema import ERROR_RESPONSES, Annotated, AnnotatedList, NerRequest
from scripts.serving.service import Service
from scripts.serving.settings import ServeSettings

PAGE = Path(__file__).with_name("page.html")


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
