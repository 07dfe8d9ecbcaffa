"""Annotation-tool exports whose entities are character spans over text, read into spaCy Docs with `doc.ents` set.

One record is one text and its entities. The formats:

- SPANS, spaCy / Prodigy JSONL: {"text", "spans": [{"start", "end", "label"}], "tokens"} a line. Prodigy's
  "tokens" ([{"text", "start", "end", "ws"}]), where given, are the Doc's words. Records whose "answer" is
  "reject" or "ignore" are skipped, as Prodigy skips them.
- DOCCANO, JSONL: {"text", "label": [[start, end, "LABEL"]]} (the sequence-labelling export) or {"text",
  "entities": [{"start_offset", "end_offset", "label"}]} (the export with relations; [start, end, label]
  lists there too). Versions that wrote the text as "data" are read as well.
- LABEL_STUDIO, Label Studio's JSON export: an array of tasks {"id", "data": {"text"}, "annotations":
  [{"result", "was_cancelled"}], "predictions"}. A task's first annotation not cancelled is read ("completions"
  before Label Studio 1.0), its results of type "labels" only; predictions are ignored, and a task without
  such an annotation is skipped. The text is data["text"], else data's only string value. Its JSON-MIN
  export, flat records {"text", "label": [{"start", "end", "text", "labels"}]}, is read too.

Without Prodigy tokens the text is cut by the pipeline's own tokenizer (`nlp.make_doc`, what `nlp(text)`
runs), so training sees the cuts inference makes; `pipeline_tokenizer` builds it from a training config.

Each span becomes a token span (`Doc.char_span`):
- Whitespace at its edges is trimmed (tools often take the space after a word), counted in `trimmed`, apart
  from `moved`, as it changes no token; a span of whitespace only is an error.
- Offsets that cut a token are an error, unless `misaligned` is "expand" (grow to the tokens touched) or
  "contract" (shrink to the tokens inside), counted in `moved`; contracting to nothing is an error, as gold
  entities are never dropped silently.
- The same span twice is read once; spans that overlap, before or after snapping, are an error.
- A span's text where the export gives it (Label Studio's value "text", a Prodigy span's "text") must be the
  text at its offsets: tools that count in UTF-16 shift every offset after an emoji.
Bad input raises CorpusError, naming the file, the line or task, and the fix.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import spacy
from spacy.language import Language
from spacy.tokens import Doc, Span
from spacy.util import load_config, registry

from scripts.lib.conll import ENTITY_ORIGINS, CorpusError, decode_utf8

SPANS = "spans"
DOCCANO = "doccano"
LABEL_STUDIO = "label-studio"
AUTO = "auto"
SPAN_FORMATS = (SPANS, DOCCANO, LABEL_STUDIO)
MISALIGNED_MODES = ("error", "expand", "contract")
SKIPPED_ANSWERS = ("reject", "ignore")
ACCEPTED = (
    'spaCy/Prodigy JSONL ({"text", "spans"}), doccano JSONL ({"text", "label"} or {"text", "entities"}) '
    'and Label Studio\'s JSON export (an array of {"data", "annotations"} tasks)'
)
RETOKENIZE = 'Fix the tokens, or delete "tokens" to let the pipeline\'s tokenizer cut the text.'


@dataclass
class CharSpan:
    start: int
    end: int
    label: str


@dataclass
class SpanRecord:
    text: str
    spans: list[CharSpan]
    where: str  # "file.jsonl:12" or "file.json task 3 (id 17)"
    words: list[str] | None = None
    spaces: list[bool] | None = None


@dataclass
class SpanRecords:
    docs: list[Doc]
    moved: int = 0  # spans snapped to token bounds (misaligned "expand" / "contract")
    skipped: int = 0  # Prodigy rejects and ignores, Label Studio tasks without an annotation
    trimmed: int = 0  # spans with whitespace at their edges


Parsed = tuple[list[SpanRecord], int]  # the records, and how many were skipped


def read_text(path: Path) -> str:
    if not path.is_file():
        raise CorpusError(f"{path}: no such file.")
    text = decode_utf8(path).removeprefix("\ufeff")
    if not text.strip():
        raise CorpusError(f"{path}: the file is empty. Export the annotations again, or point at the export.")
    return text


def json_error(where: str, err: json.JSONDecodeError) -> CorpusError:
    return CorpusError(
        f"{where}: not valid JSON ({err.msg}, column {err.colno}). A JSONL file holds one JSON object a line, "
        "a Label Studio export one JSON array: fix or delete that line, or export the file again."
    )


def expect(value: Any, kind: type, what: str, where: str) -> Any:
    if not isinstance(value, kind):
        shape = "an array" if kind is list else "an object"
        raise CorpusError(f"{where}: {what} is {value!r:.80}, not {shape}. Fix the record, or delete it.")
    return value


def json_lines(path: Path, text: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, record) of each non-blank line."""
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise json_error(where, err) from None
        yield where, expect(record, dict, "the line", where)


def unknown_shape(where: str, record: dict[str, Any], expected: str) -> CorpusError:
    return CorpusError(
        f"{where}: a record with the keys {sorted(record)}, not {expected}. Read: {ACCEPTED}. "
        "Export the annotations as one of those, or pass the file's format."
    )


def record_text(record: dict[str, Any], where: str, key: str = "text") -> str:
    text = record.get(key)
    if not isinstance(text, str) or not text.strip():
        found = f'no "{key}"' if key not in record else f'"{key}" is {text!r}'
        raise CorpusError(f"{where}: the record has no text ({found}). Give it its text, or delete the record.")
    return text


def char_span(start: Any, end: Any, label: Any, text: str, where: str, quoted: Any = None) -> CharSpan:
    """A span checked against its text; `quoted` is the span's text where the export gives it."""
    # type() rather than isinstance: JSON's true and false are bools, which are ints to isinstance.
    if not (type(start) is int and type(end) is int and 0 <= start < end <= len(text)):
        raise CorpusError(
            f"{where}: span {label!r} has the offsets {start!r}, {end!r}: they must be integers, 0 <= start < end "
            f"<= {len(text)} (the text's length). Fix the span, or delete it."
        )
    covered = text[start:end]
    if not isinstance(label, str) or not label.strip() or label != label.strip():
        named = isinstance(label, str) and label.strip()
        raise CorpusError(
            f"{where}: span {covered!r} [{start}:{end}] has the label {label!r}: a label must be a non-empty string "
            "without whitespace at its ends (else it is a label of its own). "
            + (f"Rename it {label.strip()!r} in the export." if named else "Label the span, or delete it.")
        )
    if isinstance(quoted, str) and quoted.split() != covered.split():
        raise CorpusError(
            f"{where}: span [{start}:{end}] {label} covers {covered!r}, but the export gives its text as {quoted!r}: "
            "the offsets do not point at the annotated words (a tool that counts in UTF-16 shifts them after "
            "an emoji). Fix the offsets, or export the file again."
        )
    return CharSpan(start, end, label)


def prodigy_tokens(tokens: list[Any], text: str, where: str) -> tuple[list[str], list[bool]]:
    """Words and spaces of Prodigy's tokens, which must spell the text exactly: Doc offsets are the text's."""
    words, spaces, position = [], [], 0
    for i, item in enumerate(tokens):
        token = expect(item, dict, f"token {i}", where)
        word, end = token.get("text"), token.get("end")
        following = tokens[i + 1].get("start") if i + 1 < len(tokens) and isinstance(tokens[i + 1], dict) else len(text)
        space = bool(token["ws"]) if "ws" in token else following != end
        spelled = word + " " * space if isinstance(word, str) and word else None
        if spelled is None or token.get("start") != position or not text.startswith(spelled, position):
            raise CorpusError(
                f"{where}: token {i} ({word!r}, start {token.get('start')!r}, ws {space}) is not the text at "
                f"character {position} ({text[position : position + 15]!r}): the tokens must spell the text, one "
                f"space after a token whose ws is true. {RETOKENIZE}"
            )
        words.append(word)
        spaces.append(space)
        position += len(spelled)
    if position != len(text):
        raise CorpusError(f"{where}: the tokens end at character {position} of {len(text)}. {RETOKENIZE}")
    return words, spaces


def parse_spans_jsonl(path: Path, text: str) -> Parsed:
    """spaCy / Prodigy JSONL records; Prodigy's rejected and ignored answers are counted, not read."""
    records, skipped = [], 0
    for where, record in json_lines(path, text):
        if record.get("answer") in SKIPPED_ANSWERS:
            skipped += 1
            continue
        if SPANS not in record:
            raise unknown_shape(where, record, 'spaCy/Prodigy\'s {"text", "spans"}')
        body = record_text(record, where)
        spans = [expect(span, dict, "a span", where) for span in expect(record[SPANS], list, '"spans"', where)]
        spans = [char_span(s.get("start"), s.get("end"), s.get("label"), body, where, s.get("text")) for s in spans]
        tokens = expect(record.get("tokens") or [], list, '"tokens"', where)
        words, spaces = prodigy_tokens(tokens, body, where) if tokens else (None, None)
        records.append(SpanRecord(body, spans, where, words, spaces))
    return records, skipped


def doccano_span(item: Any, text: str, where: str) -> CharSpan:
    if isinstance(item, dict):
        return char_span(item.get("start_offset"), item.get("end_offset"), item.get("label"), text, where)
    if isinstance(item, list) and len(item) == 3:
        return char_span(*item, text, where)
    raise CorpusError(
        f"{where}: the entity {item!r:.80} is neither [start, end, label] nor {{start_offset, end_offset, label}}. "
        "Export a sequence-labelling project (a text-classification export has labels without offsets)."
    )


def parse_doccano_jsonl(path: Path, text: str) -> Parsed:
    """doccano JSONL records: "label" lists or "entities" objects over "text"."""
    records = []
    for where, record in json_lines(path, text):
        key = "entities" if "entities" in record else "label" if "label" in record else None
        if key is None:
            raise unknown_shape(where, record, 'doccano\'s {"text", "label"} or {"text", "entities"}')
        body = record_text(record, where, "data" if "data" in record and "text" not in record else "text")
        spans = [doccano_span(item, body, where) for item in expect(record[key], list, f'"{key}"', where)]
        records.append(SpanRecord(body, spans, where))
    return records, 0


def json_array(path: Path, text: str) -> list[Any]:
    try:
        tasks = json.loads(text)
    except json.JSONDecodeError as err:
        raise json_error(f"{path}:{err.lineno}", err) from None
    if not isinstance(tasks, list) or not tasks:
        raise CorpusError(f"{path}: not a JSON array of tasks, or an empty one. Read: {ACCEPTED}.")
    return tasks


def task_text(task: dict[str, Any], where: str) -> str:
    data = expect(task["data"], dict, '"data"', where)
    if "text" in data:
        return record_text(data, where)
    strings = [key for key, value in data.items() if isinstance(value, str)]
    if len(strings) != 1:
        raise CorpusError(
            f'{where}: "data" has no "text" and {len(strings)} string values (keys: {sorted(data)}), so which one '
            'was labelled is unclear. Name the text field "text" in the tasks you import.'
        )
    return record_text(data, where, strings[0])


def label_studio_span(result: dict[str, Any], text: str, where: str) -> CharSpan:
    value = expect(result.get("value"), dict, 'a result\'s "value"', where)
    labels = value.get("labels")
    if not isinstance(labels, list) or len(labels) != 1:
        raise CorpusError(
            f"{where}: the span [{value.get('start')}:{value.get('end')}] {value.get('text')!r} has the labels "
            f"{labels!r}: spaCy's ner gives a span exactly one label. Keep one label on it, or delete it."
        )
    return char_span(value.get("start"), value.get("end"), labels[0], text, where, value.get("text"))


def min_export_results(task: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The spans of a JSON-MIN task (the data's fields and each labels control's spans, by its name), else None."""
    if "data" in task or not isinstance(task.get("text"), str):
        return None
    found = [
        item
        for value in task.values()
        if isinstance(value, list) and value and all(isinstance(item, dict) and "labels" in item for item in value)
        for item in value
    ]
    return found if found or "annotation_id" in task else None


def parse_label_studio_json(path: Path, text: str) -> Parsed:
    """Label Studio's JSON export: each task's first annotation not cancelled, its "labels" results.

    The JSON-MIN export (one flat record a task: the data's fields, and each control's spans under its name,
    e.g. "label": [{"start", "end", "text", "labels"}]) is read too.
    """
    records, skipped = [], 0
    for index, item in enumerate(json_array(path, text), start=1):
        task = expect(item, dict, f"task {index}", str(path))
        where = f"{path} task {index} (id {task.get('id')})"
        minimal = min_export_results(task)
        if minimal is not None:
            body = record_text(task, where)
            records.append(SpanRecord(body, [label_studio_span({"value": r}, body, where) for r in minimal], where))
            continue
        if "data" not in task:
            raise unknown_shape(where, task, 'a Label Studio task {"data", "annotations"} or a JSON-MIN record')
        annotations = expect(task.get("annotations", task.get("completions")) or [], list, "annotations", where)
        kept = [a for a in annotations if not expect(a, dict, "an annotation", where).get("was_cancelled")]
        if not kept:
            skipped += 1
            continue
        body = task_text(task, where)
        results = [expect(r, dict, "a result", where) for r in expect(kept[0].get("result"), list, "result", where)]
        spans = [label_studio_span(r, body, where) for r in results if r.get("type") == "labels"]
        records.append(SpanRecord(body, spans, where))
    return records, skipped


PARSERS: dict[str, Callable[[Path, str], Parsed]] = {
    SPANS: parse_spans_jsonl,
    DOCCANO: parse_doccano_jsonl,
    LABEL_STUDIO: parse_label_studio_json,
}


def format_of(path: Path, text: str) -> str:
    """The format of the file's first record."""
    if text.lstrip().startswith("["):
        first = json_array(path, text)[0]
        if isinstance(first, dict) and ("data" in first or min_export_results(first) is not None):
            return LABEL_STUDIO
        raise CorpusError(f"{path}: a JSON array whose first item is {first!r:.80}, not a task. Read: {ACCEPTED}.")
    where, record = next(json_lines(path, text))
    if SPANS in record:
        return SPANS
    if "label" in record or "entities" in record:
        return DOCCANO
    raise unknown_shape(where, record, "a format this reads")


def detect_span_format(path: Path) -> str:
    """SPANS, DOCCANO or LABEL_STUDIO, from the file's content."""
    return format_of(path, read_text(path))


def trim(span: CharSpan, text: str, where: str) -> CharSpan:
    covered = text[span.start : span.end]
    if not covered.strip():
        raise CorpusError(f"{where}: span {describe(span, text)} is whitespace only. Delete it.")
    start = span.start + len(covered) - len(covered.lstrip())
    return CharSpan(start, span.start + len(covered.rstrip()), span.label)


def describe(span: CharSpan, text: str) -> str:
    return f"{text[span.start : span.end]!r} [{span.start}:{span.end}] {span.label}"


def check_overlaps(spans: list[CharSpan], bounds: list[tuple[int, int]], text: str, where: str, when: str) -> None:
    """Spans sorted by their bounds overlap somewhere only if two neighbours do."""
    order = sorted(range(len(spans)), key=lambda i: bounds[i])
    for a, b in pairwise(order):
        if bounds[b][0] < bounds[a][1]:
            raise CorpusError(
                f"{where}: the spans {describe(spans[a], text)} and {describe(spans[b], text)} overlap{when}: "
                "spaCy's ner gives a token one entity, so it cannot hold both. Delete or fix one of them."
            )


def align(doc: Doc, span: CharSpan, where: str, misaligned: str) -> Span:
    mode = "strict" if misaligned == "error" else misaligned
    entity = doc.char_span(span.start, span.end, label=span.label, alignment_mode=mode)
    if entity is not None:
        return entity
    contracted = mode == "contract"
    cut = [t for t in doc if t.idx < span.start < t.idx + len(t) or t.idx < span.end < t.idx + len(t)]
    tokens = ", ".join(f"{t.text!r} [{t.idx}:{t.idx + len(t)}]" for t in cut)
    problem = "holds no whole token, so contracting leaves nothing" if contracted else f"cuts the tokens {tokens}"
    raise CorpusError(
        f"{where}: span {describe(span, doc.text)} {problem}: the pipeline's tokenizer (or the record's tokens) "
        'does not split there. Fix the span\'s offsets to whole tokens, or set misaligned to "expand" (grow it to '
        "the tokens it touches)" + ("" if contracted else ' or "contract" (shrink it to the tokens inside it)') + "."
    )


def make_span_doc(nlp: Language, record: SpanRecord, misaligned: str = "error") -> tuple[Doc, int, int]:
    """The record's Doc with its entities, and how many spans were moved and trimmed."""
    words = record.words
    doc = nlp.make_doc(record.text) if words is None else Doc(nlp.vocab, words=words, spaces=record.spaces)
    edges = [trim(span, record.text, record.where) for span in record.spans]
    spans = list({(s.start, s.end, s.label): s for s in edges}.values())
    check_overlaps(spans, [(s.start, s.end) for s in spans], record.text, record.where, "")
    entities = [align(doc, span, record.where, misaligned) for span in spans]
    moved = sum((e.start_char, e.end_char) != (s.start, s.end) for e, s in zip(entities, spans, strict=True))
    when = " once snapped to token bounds" if moved else ""
    check_overlaps(spans, [(e.start, e.end) for e in entities], record.text, record.where, when)
    doc.ents = sorted(entities, key=lambda e: e.start)
    doc.user_data[ENTITY_ORIGINS] = [record.where] * len(doc.ents)
    trimmed = sum(t != s for t, s in zip(edges, record.spans, strict=True))
    return doc, moved, trimmed


def read_span_file(path: Path, nlp: Language, span_format: str = AUTO, misaligned: str = "error") -> SpanRecords:
    """Docs of an export's records, cut by `nlp`'s tokenizer (or Prodigy's tokens), in `nlp.vocab`."""
    if span_format != AUTO and span_format not in SPAN_FORMATS:
        raise CorpusError(f"span format {span_format!r}: choose {AUTO!r} or one of {', '.join(SPAN_FORMATS)}.")
    if misaligned not in MISALIGNED_MODES:
        raise CorpusError(f"misaligned={misaligned!r}: choose one of {', '.join(MISALIGNED_MODES)}.")
    text = read_text(path)
    records, skipped = PARSERS[format_of(path, text) if span_format == AUTO else span_format](path, text)
    result = SpanRecords([], skipped=skipped)
    for record in records:
        doc, moved, trimmed = make_span_doc(nlp, record, misaligned)
        result.docs.append(doc)
        result.moved += moved
        result.trimmed += trimmed
    return result


def pipeline_tokenizer(config_path: Path) -> Language:
    """A training config's tokenizer alone: its language and [nlp.tokenizer], then [initialize] before_init
    and [initialize.tokenizer] as `nlp.initialize` applies them. No component is built, no model loaded."""
    config = load_config(config_path)
    nlp = spacy.blank(config["nlp"]["lang"], config={"nlp": {"tokenizer": config["nlp"]["tokenizer"]}})
    settings = registry.resolve(
        {"before_init": config["initialize"].get("before_init"), "tokenizer": config["initialize"].get("tokenizer")}
    )
    if settings["before_init"] is not None:
        settings["before_init"](nlp)
    if hasattr(nlp.tokenizer, "initialize"):
        nlp.tokenizer.initialize(lambda: [], nlp=nlp, **(settings["tokenizer"] or {}))
    return nlp
