"""scripts.lib.span_records: character-span exports (spaCy/Prodigy, doccano, Label Studio) read into Docs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import spacy
from spacy.language import Language

from scripts.lib.conll import ENTITY_ORIGINS, CorpusError, read_conll, tags_to_spans
from scripts.lib.span_records import (
    DOCCANO,
    LABEL_STUDIO,
    SPANS,
    detect_span_format,
    pipeline_tokenizer,
    read_span_file,
)

PROJECT_DIR = Path(__file__).resolve().parents[2]
TEXT = "Fans in AL-AIN cheered Acme Corp ."  # AL-AIN [8:14], Acme Corp [23:32]


@pytest.fixture(scope="module")
def nlp() -> Language:
    return pipeline_tokenizer(PROJECT_DIR / "configs" / "minilm_cpu.cfg")


def write_jsonl(path: Path, records: list[object]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


def entities(doc) -> list[tuple[str, str]]:
    return [(ent.text, ent.label_) for ent in doc.ents]


def error_of(path: Path, nlp: Language, **options) -> str:
    with pytest.raises(CorpusError) as caught:
        read_span_file(path, nlp, **options)
    return str(caught.value)


def spans_record(text: str, *spans: tuple[int, int, str], **extra) -> dict:
    return {"text": text, "spans": [{"start": s, "end": e, "label": label} for s, e, label in spans], **extra}


def ls_result(start: int, end: int, label: str, text: str, kind: str = "labels") -> dict:
    value = {"start": start, "end": end, "text": text, "labels": [label]}
    return {"value": value, "from_name": "label", "to_name": "text", "type": kind}


def ls_task(task_id: int, text: str, *annotations: list[dict], **extra) -> dict:
    return {"id": task_id, "data": {"text": text}, "annotations": [{"result": r} for r in annotations], **extra}


# --- the tokenizer ------------------------------------------------------------------------------


@pytest.mark.parametrize("config", ["minilm_cpu.cfg", "bert_ner.cfg"])
def test_pipeline_tokenizer_keeps_hyphenated_words_like_the_trained_pipeline(config):
    nlp = pipeline_tokenizer(PROJECT_DIR / "configs" / config)
    assert [t.text for t in nlp("AL-AIN won 6-4 .")] == ["AL-AIN", "won", "6-4", "."]
    assert [t.text for t in spacy.blank("en")("AL-AIN")] == ["AL", "-", "AIN"]
    # Cheap: the tokenizer only, no component built (the configs' encoder folder need not exist).
    assert nlp.pipe_names == []


# --- the formats --------------------------------------------------------------------------------


def test_spans_jsonl(tmp_path, nlp):
    path = write_jsonl(
        tmp_path / "data.jsonl",
        [spans_record(TEXT, (8, 14, "LOC"), (23, 32, "ORG"), answer="accept"), spans_record("Nothing here .")],
    )
    result = read_span_file(path, nlp)
    assert [entities(doc) for doc in result.docs] == [[("AL-AIN", "LOC"), ("Acme Corp", "ORG")], []]
    assert [t.text for t in result.docs[0]] == ["Fans", "in", "AL-AIN", "cheered", "Acme", "Corp", "."]
    assert result.docs[0].user_data[ENTITY_ORIGINS] == [f"{path}:1", f"{path}:1"]
    assert (result.moved, result.skipped, result.trimmed) == (0, 0, 0)
    assert all(doc.vocab is nlp.vocab for doc in result.docs)


def test_prodigy_tokens_are_the_words(tmp_path, nlp):
    tokens = [
        {"text": "AL", "start": 0, "end": 2, "id": 0, "ws": False},
        {"text": "-", "start": 2, "end": 3, "id": 1, "ws": False},
        {"text": "AIN", "start": 3, "end": 6, "id": 2, "ws": True},
        {"text": "won", "start": 7, "end": 10, "id": 3},  # no "ws": from the gap to the text's end
    ]
    path = write_jsonl(tmp_path / "p.jsonl", [spans_record("AL-AIN won", (3, 6, "LOC"), tokens=tokens)])
    doc = read_span_file(path, nlp).docs[0]
    assert [t.text for t in doc] == ["AL", "-", "AIN", "won"] and doc.text == "AL-AIN won"
    assert entities(doc) == [("AIN", "LOC")]  # cuts the pipeline's token "AL-AIN", not Prodigy's


def test_prodigy_tokens_that_do_not_spell_the_text(tmp_path, nlp):
    tokens = [{"text": "AL", "start": 0, "end": 2, "ws": True}, {"text": "AIN", "start": 3, "end": 6}]
    path = write_jsonl(tmp_path / "p.jsonl", [spans_record("AL-AIN", (0, 6, "LOC"), tokens=tokens)])
    message = error_of(path, nlp)
    assert f"{path}:1" in message and "token 0 ('AL'" in message and 'delete "tokens"' in message


def test_prodigy_rejected_and_ignored_answers_are_skipped(tmp_path, nlp):
    records = [
        spans_record(TEXT, (8, 14, "LOC"), answer="reject"),
        spans_record(TEXT, (8, 14, "LOC"), answer="ignore"),
        spans_record(TEXT, (8, 14, "LOC"), answer="accept"),
    ]
    result = read_span_file(write_jsonl(tmp_path / "p.jsonl", records), nlp)
    assert (len(result.docs), result.skipped) == (1, 2)
    assert result.docs[0].user_data[ENTITY_ORIGINS] == [f"{tmp_path / 'p.jsonl'}:3"]


def test_doccano_label_lists_and_entity_objects(tmp_path, nlp):
    records = [
        {"id": 1, "text": TEXT, "label": [[8, 14, "LOC"], [23, 32, "ORG"]], "Comments": []},
        {"id": 2, "text": TEXT, "entities": [{"id": 5, "label": "LOC", "start_offset": 8, "end_offset": 14}]},
        {"text": TEXT, "entities": [[23, 32, "ORG"]], "cats": []},
        {"data": TEXT, "label": []},
    ]
    result = read_span_file(write_jsonl(tmp_path / "d.jsonl", records), nlp, span_format=DOCCANO)
    assert [entities(doc) for doc in result.docs] == [
        [("AL-AIN", "LOC"), ("Acme Corp", "ORG")],
        [("AL-AIN", "LOC")],
        [("Acme Corp", "ORG")],
        [],
    ]


def test_label_studio(tmp_path, nlp):
    cancelled = {"result": [ls_result(0, 4, "PER", "Fans")], "was_cancelled": True}
    choice = {"value": {"choices": ["sports"]}, "from_name": "topic", "to_name": "text", "type": "choices"}
    relation = {"from_id": "a", "to_id": "b", "type": "relation", "direction": "right"}
    tasks = [
        {
            "id": 17,
            "data": {"text": TEXT, "meta": "x"},
            "annotations": [
                cancelled,
                {"result": [ls_result(8, 14, "LOC", "AL-AIN"), choice, relation], "was_cancelled": False},
                {"result": [ls_result(23, 32, "ORG", "Acme Corp")]},  # a second annotator's: not read
            ],
            "predictions": [{"result": [ls_result(0, 4, "PER", "Fans")]}],
        },
        {"id": 18, "data": {"text": TEXT}, "annotations": [], "predictions": [{"result": []}]},
        {"id": 19, "data": {"text": TEXT}, "annotations": [cancelled]},
        {
            "id": 20,
            "data": {"body": TEXT, "n": 3},
            "annotations": [{"result": [ls_result(23, 32, "ORG", "Acme Corp")]}],
        },
    ]
    path = tmp_path / "export.json"
    path.write_text(json.dumps(tasks), encoding="utf-8")
    result = read_span_file(path, nlp)
    assert [entities(doc) for doc in result.docs] == [[("AL-AIN", "LOC")], [("Acme Corp", "ORG")]]
    assert result.skipped == 2
    assert result.docs[1].user_data[ENTITY_ORIGINS] == [f"{path} task 4 (id 20)"]


def test_label_studio_json_min_export(tmp_path, nlp):
    """JSON-MIN: a flat record a task, each labels control's spans under its name; a task without spans has none."""
    records = [
        {"id": 3, "text": TEXT, "label": [{"start": 8, "end": 14, "text": "AL-AIN", "labels": ["LOC"]}],
         "annotator": 1, "annotation_id": 7, "lead_time": 2.5},
        {"id": 4, "text": TEXT, "annotator": 1, "annotation_id": 8},
    ]  # fmt: skip
    path = tmp_path / "export-min.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    assert detect_span_format(path) == LABEL_STUDIO
    result = read_span_file(path, nlp)
    assert [entities(doc) for doc in result.docs] == [[("AL-AIN", "LOC")], []]
    assert result.docs[0].user_data[ENTITY_ORIGINS] == [f"{path} task 1 (id 3)"]


def test_label_studio_text_field_unclear(tmp_path, nlp):
    path = tmp_path / "export.json"
    path.write_text(json.dumps([ls_task(1, TEXT), {"id": 9, "data": {"a": "x", "b": "y"}, "annotations": [{}]}]))
    message = error_of(path, nlp)
    assert f"{path} task 2 (id 9)" in message and "['a', 'b']" in message and 'Name the text field "text"' in message


def test_label_studio_span_text_disagrees_with_offsets(tmp_path, nlp):
    path = tmp_path / "export.json"
    path.write_text(json.dumps([ls_task(3, "🙂 Acme Corp rose .", [ls_result(3, 12, "ORG", "Acme Corp")])]))
    message = error_of(path, nlp)
    assert f"{path} task 1 (id 3)" in message and "'Acme Corp'" in message and "UTF-16" in message


def test_detect_span_format(tmp_path):
    assert detect_span_format(write_jsonl(tmp_path / "a.jsonl", [spans_record(TEXT, label="x")])) == SPANS
    assert detect_span_format(write_jsonl(tmp_path / "b.jsonl", [{"text": TEXT, "label": []}])) == DOCCANO
    assert detect_span_format(write_jsonl(tmp_path / "c.jsonl", [{"text": TEXT, "entities": []}])) == DOCCANO
    (tmp_path / "d.json").write_text(json.dumps([ls_task(1, TEXT)], indent=2))
    assert detect_span_format(tmp_path / "d.json") == LABEL_STUDIO
    with pytest.raises(CorpusError, match=r"e\.jsonl:1: a record with the keys \['meta', 'text'\].*doccano JSONL"):
        detect_span_format(write_jsonl(tmp_path / "e.jsonl", [{"text": TEXT, "meta": {}}]))


# --- alignment ----------------------------------------------------------------------------------


def test_misaligned_span_is_an_error_by_default(tmp_path, nlp):
    path = write_jsonl(tmp_path / "m.jsonl", [spans_record(TEXT), spans_record(TEXT, (8, 10, "LOC"))])
    message = error_of(path, nlp)
    assert f"{path}:2" in message and "'AL' [8:10] LOC" in message and "'AL-AIN' [8:14]" in message
    assert 'misaligned to "expand"' in message and '"contract"' in message


def test_misaligned_spans_expanded_or_contracted_and_counted(tmp_path, nlp):
    records = [spans_record(TEXT, (23, 30, "ORG")), spans_record(TEXT, (8, 14, "LOC"), (25, 32, "ORG"))]
    path = write_jsonl(tmp_path / "m.jsonl", records)  # "Acme Co" and "me Corp" cut tokens
    expanded = read_span_file(path, nlp, misaligned="expand")
    assert [entities(doc) for doc in expanded.docs] == [
        [("Acme Corp", "ORG")],
        [("AL-AIN", "LOC"), ("Acme Corp", "ORG")],
    ]
    assert expanded.moved == 2
    contracted = read_span_file(path, nlp, misaligned="contract")
    assert [entities(doc) for doc in contracted.docs] == [[("Acme", "ORG")], [("AL-AIN", "LOC"), ("Corp", "ORG")]]
    assert contracted.moved == 2


def test_span_that_contracts_to_nothing_is_an_error(tmp_path, nlp):
    path = write_jsonl(tmp_path / "m.jsonl", [spans_record(TEXT, (8, 10, "LOC"))])
    message = error_of(path, nlp, misaligned="contract")
    assert f"{path}:1" in message and "'AL' [8:10] LOC" in message and "contracting leaves nothing" in message


def test_whitespace_at_span_edges_is_trimmed_and_duplicates_read_once(tmp_path, nlp):
    path = write_jsonl(tmp_path / "t.jsonl", [spans_record(TEXT, (7, 15, "LOC"), (8, 14, "LOC"), (23, 32, "ORG"))])
    result = read_span_file(path, nlp)
    assert entities(result.docs[0]) == [("AL-AIN", "LOC"), ("Acme Corp", "ORG")]
    assert (result.trimmed, result.moved) == (1, 0)


def test_overlap_after_snapping_is_an_error(tmp_path, nlp):
    path = write_jsonl(tmp_path / "o.jsonl", [spans_record(TEXT, (8, 10, "LOC"), (11, 14, "ORG"))])
    message = error_of(path, nlp, misaligned="expand")
    assert "'AL' [8:10] LOC" in message and "'AIN' [11:14] ORG" in message and "once snapped" in message


# --- bad data -----------------------------------------------------------------------------------

BAD_RECORDS = [
    (
        spans_record(TEXT, (23, 32, "ORG"), (28, 32, "LOC")),
        ["'Acme Corp' [23:32] ORG", "'Corp' [28:32] LOC", "overlap"],
    ),
    (spans_record(TEXT, (8, 99, "LOC")), ["8, 99", "34 (the text's length)", "Fix the span"]),
    (spans_record(TEXT, (14, 8, "LOC")), ["14, 8", "0 <= start < end"]),
    (spans_record(TEXT, (8, 8, "LOC")), ["8, 8", "0 <= start < end"]),
    ({"text": TEXT, "spans": [{"start": 8.0, "end": 14, "label": "LOC"}]}, ["8.0, 14", "integers"]),
    ({"text": TEXT, "spans": [{"start": "8", "end": 14, "label": "LOC"}]}, ["'8', 14", "integers"]),
    ({"text": TEXT, "spans": [{"start": True, "end": 14, "label": "LOC"}]}, ["True, 14", "integers"]),
    (spans_record(TEXT, (8, 14, "")), ["the label ''", "Label the span, or delete it"]),
    (spans_record(TEXT, (8, 14, "  ")), ["the label '  '", "Label the span, or delete it"]),
    ({"text": TEXT, "spans": [{"start": 8, "end": 14}]}, ["the label None", "non-empty string"]),
    (spans_record(TEXT, (8, 14, "LOC ")), ["the label 'LOC '", "Rename it 'LOC'"]),
    (spans_record(TEXT, (4, 5, "LOC")), ["' ' [4:5] LOC", "whitespace only", "Delete it"]),
    ({"spans": []}, ['no "text"', "Give it its text"]),
    ({"text": 5, "spans": []}, ['"text" is 5', "Give it its text"]),
    ({"text": " \t", "spans": []}, ["\"text\" is ' \\t'", "Give it its text"]),
    ({"text": TEXT, "tags": []}, ["['tags', 'text']", "doccano JSONL", "Label Studio", "pass the file's format"]),
    ({"text": TEXT, "spans": {"start": 0}}, ['"spans" is', "not an array"]),
    ({"text": TEXT, "spans": [[8, 14, "LOC"]]}, ["a span is [8, 14, 'LOC']", "not an object"]),
]


@pytest.mark.parametrize(("record", "expected"), BAD_RECORDS)
def test_bad_record(tmp_path, nlp, record, expected):
    path = write_jsonl(tmp_path / "bad.jsonl", [spans_record(TEXT), record])
    message = error_of(path, nlp, span_format=SPANS)
    assert message.startswith(f"{path}:2: ")
    for part in expected:
        assert part in message


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ({"text": TEXT, "label": ["positive"]}, ["'positive'", "Export a sequence-labelling project"]),
        ({"text": TEXT, "entities": [{"start": 8, "end": 14, "label": "LOC"}]}, ["None, None", "integers"]),
        ({"text": "", "label": []}, ["\"text\" is ''", "Give it its text"]),
        ({"text": TEXT, "spans": []}, ["['spans', 'text']", "doccano's"]),
    ],
)
def test_bad_doccano_record(tmp_path, nlp, record, expected):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"text": TEXT, "label": []}, record])
    message = error_of(path, nlp, span_format=DOCCANO)
    assert message.startswith(f"{path}:2: ")
    for part in expected:
        assert part in message


def test_label_studio_span_with_two_labels(tmp_path, nlp):
    result = ls_result(8, 14, "LOC", "AL-AIN")
    result["value"]["labels"] = ["LOC", "ORG"]
    path = tmp_path / "export.json"
    path.write_text(json.dumps([ls_task(1, TEXT), ls_task(7, TEXT, [result])]))
    message = error_of(path, nlp)
    assert f"{path} task 2 (id 7)" in message and "['LOC', 'ORG']" in message and "Keep one label" in message


def test_invalid_json_line(tmp_path, nlp):
    path = tmp_path / "broken.jsonl"
    path.write_text(json.dumps(spans_record(TEXT)) + "\n\n" + '{"text": "x", "spans": [}\n', encoding="utf-8")
    message = error_of(path, nlp)
    assert message.startswith(f"{path}:3: not valid JSON") and "fix or delete that line" in message


def test_invalid_label_studio_json(tmp_path, nlp):
    path = tmp_path / "export.json"
    path.write_text('[\n  {"id": 1, "data": {"text": "x"}},\n  {"id": 2,\n]\n', encoding="utf-8")
    assert error_of(path, nlp, span_format=LABEL_STUDIO).startswith(f"{path}:4: not valid JSON")


def test_file_not_utf8(tmp_path, nlp):
    path = tmp_path / "latin.jsonl"
    path.write_bytes(json.dumps(spans_record(TEXT)).encode() + b'\n{"text": "Caf\xe9", "spans": []}\n')
    message = error_of(path, nlp)
    assert f"{path}:2" in message and "not UTF-8" in message and "iconv" in message


@pytest.mark.parametrize("content", ["", "\n  \n"])
def test_empty_file(tmp_path, nlp, content):
    path = tmp_path / "empty.jsonl"
    path.write_text(content)
    message = error_of(path, nlp)
    assert f"{path}: the file is empty" in message and "Export the annotations again" in message


def test_bad_options(tmp_path, nlp):
    path = write_jsonl(tmp_path / "a.jsonl", [spans_record(TEXT)])
    assert "choose one of error, expand, contract" in error_of(path, nlp, misaligned="snap")
    assert "spans, doccano, label-studio" in error_of(path, nlp, span_format="conll")


# --- real data ----------------------------------------------------------------------------------


def test_conll2003_test_split_round_trips_through_every_format(tmp_path, nlp, conll2003_dir):
    """Each sentence as text (tokens joined by single spaces) with its entities' character spans, written in
    the three formats and read back: the same entities everywhere, CoNLL's tokens where Prodigy's are given."""
    sentences = [s for document in read_conll(conll2003_dir / "test.txt") for s in document]
    assert len(sentences) == 3453
    gold, prodigy, doccano, label_studio = [], [], [], []
    for number, sentence in enumerate(sentences, start=1):
        text = " ".join(sentence.words)
        starts = [sum(len(w) + 1 for w in sentence.words[:i]) for i in range(len(sentence.words))]
        spans = [
            (starts[s], starts[e - 1] + len(sentence.words[e - 1]), label)
            for s, e, label in tags_to_spans(sentence.tags, sentence.origins)
        ]
        gold.append(spans)
        tokens = [
            {"text": w, "start": b, "end": b + len(w), "id": i, "ws": i + 1 < len(starts)}
            for i, (w, b) in enumerate(zip(sentence.words, starts, strict=True))
        ]
        prodigy.append(spans_record(text, *spans, tokens=tokens, answer="accept"))
        doccano.append({"id": number, "text": text, "label": [list(span) for span in spans]})
        results = [ls_result(s, e, label, text[s:e]) for s, e, label in spans]
        label_studio.append(ls_task(number, text, results))
    (tmp_path / "ls.json").write_text(json.dumps(label_studio), encoding="utf-8")
    paths = [write_jsonl(tmp_path / "p.jsonl", prodigy), write_jsonl(tmp_path / "d.jsonl", doccano)]
    for path in [*paths, tmp_path / "ls.json"]:
        result = read_span_file(path, nlp)
        assert (len(result.docs), result.moved, result.skipped, result.trimmed) == (3453, 0, 0, 0)
        assert [sorted((e.start_char, e.end_char, e.label_) for e in doc.ents) for doc in result.docs] == gold
        if path.name == "p.jsonl":
            assert [[t.text for t in doc] for doc in result.docs] == [s.words for s in sentences]
