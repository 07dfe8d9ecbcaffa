"""What is wrong with a request, as one line that names the field or the limit, and the fix.

`validation_answer` rewords FastAPI's validation errors (400 for a body that is not JSON, 422 for
a field); `checked_texts` holds the request to the server's limits (413) and refuses texts the
pipeline would fail on (422), before any reaches the model.
"""

from __future__ import annotations

from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from scripts.lib.text_entities import text_problem
from scripts.serving.schema import NerRequest
from scripts.serving.settings import ServeSettings


def error(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """Every error the app answers: `{"detail": message}`, one line, never a traceback."""
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
        problem = text_problem(text, settings.max_text_chars)
        if problem is not None:
            return error(422, f'"{name}": {problem}.')
    return texts
