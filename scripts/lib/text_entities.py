"""What every tool answers for a text, and which texts it refuses, so `annotate`, `annotate_ray` and `serve` agree.

- `entity_records`: a Doc's entities as the tools write them, `{"start", "end", "label", "text", "score"}`;
- `text_problem`: why the pipeline would fail on a text (an unpaired surrogate, more than max_length
  characters), in words the user can act on; `annotate` skips such a line, the server answers 422.
"""

from __future__ import annotations

from typing import Any

from spacy.tokens import Doc

from scripts.runtime import entity_scores  # noqa: F401  (registers Span._.score: None for a pipeline without scores)


def entity_records(doc: Doc) -> list[dict[str, Any]]:
    """Each entity's character offsets, label, text and score (None where the pipeline has no entity_scores)."""
    return [
        {"start": ent.start_char, "end": ent.end_char, "label": ent.label_, "text": ent.text, "score": ent._.score}
        for ent in doc.ents
    ]


def text_problem(text: str, max_length: int) -> str | None:
    """Why the pipeline would fail on this text, if it would."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        # Only JSON escapes such as "\ud800" produce these; the transformer's tokenizer raises on them.
        return f"the text holds an unpaired surrogate (\\u{ord(text[err.start]):04x}): not valid Unicode"
    if len(text) > max_length:
        return f"the text is {len(text):,} characters, more than the pipeline's max_length ({max_length:,}): split it"
    return None
