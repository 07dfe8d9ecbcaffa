"""The API's request and answer bodies, as FastAPI validates them and /docs shows them.

A request holds texts only: no field names a file, a model or a backend (those are the server's
settings), and an unknown field is refused (extra="forbid").
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictStr


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
