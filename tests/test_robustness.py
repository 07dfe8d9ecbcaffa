"""The packaged en_bert_ner, loaded with spacy.load, on hard inputs: no crash, no hang, only valid entities.

One test per kind of input. Entities are checked by one helper, `check_doc`: each is a span of
its Doc with one of the four labels whose character offsets give back its text.
"""

from __future__ import annotations

import multiprocessing
import threading
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy
import pytest
import spacy
from spacy.language import Language
from spacy.tokens import Doc, DocBin

from tests.conftest import LABELS, WorkflowRun

pytestmark = pytest.mark.slow

NEWS = "Peter Blackburn reported from Brussels that the European Union rejects German calls to boycott British lamb ."
WORKER_DEADLINE_S = 300


@pytest.fixture(scope="module")
def nlp(installed_model: str) -> Language:
    return spacy.load(installed_model)


def entity_problems(doc: Doc) -> list[str]:
    """What is wrong with doc.ents, if anything."""
    problems = []
    for ent in doc.ents:
        where = (
            f"entity {ent.text!r} ({ent.label_}, tokens {ent.start}-{ent.end}, chars {ent.start_char}-{ent.end_char})"
        )
        if not 0 <= ent.start < ent.end <= len(doc):
            problems.append(f"{where}: token offsets outside the Doc of {len(doc)} tokens")
        if not 0 <= ent.start_char < ent.end_char <= len(doc.text):
            problems.append(f"{where}: character offsets outside the text of {len(doc.text)} characters")
        if doc.text[ent.start_char : ent.end_char] != ent.text:
            problems.append(
                f"{where}: the text at its character offsets is {doc.text[ent.start_char : ent.end_char]!r}"
            )
        if ent.label_ not in LABELS:
            problems.append(f"{where}: label not one of {sorted(LABELS)}")
        # A boundary between a letter and its combining accent would cut a character in two.
        if unicodedata.combining(doc.text[ent.start_char : ent.start_char + 1] or " "):
            problems.append(f"{where}: starts with a combining mark")
        if unicodedata.combining(doc.text[ent.end_char : ent.end_char + 1] or " "):
            problems.append(f"{where}: ends right before a combining mark")
    return problems


def check_doc(doc: Doc, text: str) -> Doc:
    """The Doc keeps the text exactly, and every entity is valid; returns the Doc."""
    assert doc.text == text, f"the Doc's text differs from its input: {doc.text!r} != {text!r}"
    problems = entity_problems(doc)
    assert not problems, f"invalid entities in {text[:200]!r}:\n" + "\n".join(problems)
    return doc


def entity_spans(doc: Doc) -> list[tuple[int, int, str]]:
    return [(ent.start, ent.end, ent.label_) for ent in doc.ents]


def test_empty_string(nlp: Language):
    doc = check_doc(nlp(""), "")
    assert len(doc) == 0 and not doc.ents


def test_whitespace_only(nlp: Language):
    text = " \t\n  \r\n \u00a0 "
    doc = check_doc(nlp(text), text)
    assert not doc.ents, "whitespace cannot be an entity"


def test_single_token(nlp: Language):
    doc = check_doc(nlp("Germany"), "Germany")
    assert len(doc) == 1


HARD_CHARACTERS = {
    "emoji": "👍🏽 Angela Merkel 🇩🇪 met Emmanuel Macron in Paris 👨‍👩‍👧 today 🎉🎉",
    "cjk": "東京 is the capital of 日本 . 习近平 met Obama in 北京 . 서울 에서 회의가 열렸다 .",
    "arabic_right_to_left": "ذهب محمد إلى القاهرة . \u202bPeter visited Cairo\u202c . שלום Jerusalem",
    "control_characters": "Peter\x00 Blackburn\x07 went\x1b to\x0c Brussels\x7f \x85 \u2028 \x1c on\x08 Monday .",
    "zero_width_characters": "Ger\u200dmany and Fran\u200bce \u200d\u200d signed \ufeff a deal in Bru\u200cssels .",
    "combining_accents": "Jose\u0301 Mourinho left Mu\u0308nchen for Zu\u0308rich . Ge\u0301\u0301\u0336r\u0308many",
}


@pytest.mark.parametrize("text", HARD_CHARACTERS.values(), ids=HARD_CHARACTERS.keys())
def test_hard_characters(nlp: Language, text: str):
    check_doc(nlp(text), text)


@pytest.mark.parametrize("text", [NEWS.upper(), NEWS.lower()], ids=["all_caps", "all_lowercase"])
def test_news_text_in_one_case(nlp: Language, text: str):
    check_doc(nlp(text), text)


def test_unpaired_surrogate_raises_instead_of_annotating(nlp: Language):
    """Not valid Unicode (only JSON escapes such as "\\ud800" make one): the tokenizer refuses it.

    scripts/tools/annotate.py therefore skips such lines, with their line number.
    """
    with pytest.raises(UnicodeEncodeError):
        nlp("Germany \ud800 France")


def test_window_of_more_than_512_wordpieces(nlp: Language):
    """A list of long URLs: one token each for spaCy, dozens of wordpieces each for BERT.

    One 128-token window is then thousands of wordpieces, far past BERT's 512 positions.
    spacy-transformers cuts a window at the tokenizer's model_max_length, and the tokens past the
    cut get no transformer features; a tokenizer without model_max_length lets the whole window
    through to BERT, which then crashes.
    """
    url = "https://www.reuters.com/world/europe/germany-france-talks-2-1-0-9-8/index.html?id=1&x=2"
    text = " ".join([url] * 300) + " . Germany"
    window_text = " ".join([url] * 128)
    tokenizer = nlp.get_pipe("transformer").model.tokenizer
    assert len(tokenizer(window_text)["input_ids"]) > 4 * 512, "the URLs no longer make a long window"
    check_doc(nlp(text), text)


# --- one long document: 20,000 words, far beyond 512 wordpieces --------------

LONG_DOCUMENT_TOKENS = 20_000


@dataclass
class LongDocument:
    doc: Doc
    window: int
    stride: int
    # (start, end, label) where a sentence's entity, as found in that sentence alone, was placed.
    placed: list[tuple[int, int, str]]


def training_sentences(workflow: WorkflowRun, nlp: Language) -> list[Doc]:
    """Training Docs that the pipeline's tokenizer splits exactly into their gold words."""
    docs = DocBin().from_disk(workflow.project / "corpus" / "train.spacy").get_docs(nlp.vocab)
    return [
        doc
        for doc in docs
        if 3 <= len(doc) <= 40
        and [t.text for t in nlp.make_doc(" ".join(t.text for t in doc))] == [t.text for t in doc]
    ]


def find_carrier(nlp: Language, sentences: list[Doc], context: list[str]) -> tuple[list[str], tuple[int, int, str]]:
    """A one-entity training sentence whose entity the model finds on its own and within one window of context.

    Only that is asked of the model; the long-document test then asks the same at window boundaries.
    """
    candidates = [doc for doc in sentences if len(doc.ents) == 1][:500]
    texts = [" ".join(t.text for t in doc) for doc in candidates]
    contexts = [" ".join([*context, text, *context]) for text in texts]
    alone = nlp.pipe(texts)
    in_context = nlp.pipe(contexts)
    for doc, found_alone, found_in_context in zip(candidates, alone, in_context, strict=True):
        (start, end, label) = entity_spans(doc)[0]
        shifted = (start + len(context), end + len(context), label)
        if entity_spans(found_alone) == [(start, end, label)] and shifted in entity_spans(found_in_context):
            return [t.text for t in doc], (start, end, label)
    pytest.fail("the trained model finds no one-entity training sentence's entity: nothing to place at a boundary")


def filler_for(gap: int, fillers_by_length: dict[int, list[list[str]]]) -> list[list[str]]:
    """Whole filler sentences that add up to exactly `gap` tokens (a coin change over sentence lengths)."""
    ways: dict[int, int | None] = {0: None}  # total -> length of the last sentence used to reach it
    for total in range(1, gap + 1):
        for length in fillers_by_length:
            if total - length in ways:
                ways[total] = length
                break
    assert gap in ways, f"no training sentences add up to {gap} tokens: cannot place the entity exactly"
    chosen, total = [], gap
    while total:
        length = ways[total]
        chosen.append(fillers_by_length[length][len(chosen) % len(fillers_by_length[length])])
        total -= length
    return chosen


@pytest.fixture(scope="module")
def nlp_keeping_trf_data(installed_model: str) -> Language:
    """The pipeline with doc._.trf_data kept (by default encoder_backend leaves it None), to see the windows."""
    return spacy.load(installed_model, config={"components.encoder_backend.keep_trf_data": True})


@pytest.fixture(scope="module")
def long_document(nlp_keeping_trf_data: Language, workflow: WorkflowRun) -> LongDocument:
    """Over 20,000 tokens of training sentences, with one known entity placed at window edges and at the end.

    The edges are those of the config's strided windows (128 tokens, stride 96): the first token
    of a window (96), the last token of a window (3 * 96 + 127), the first token past a window,
    which only the next window covers (5 * 96 + 128), and the first token of another (8 * 96).
    """
    nlp = nlp_keeping_trf_data
    spans_config = nlp.config["components"]["transformer"]["model"]["get_spans"]
    assert spans_config["@span_getters"] == "spacy-transformers.strided_spans.v1", spans_config
    window, stride = spans_config["window"], spans_config["stride"]
    sentences = training_sentences(workflow, nlp)
    # Ending in punctuation, so that no name at a sentence's end can run on into the next sentence's.
    fillers = [[t.text for t in doc] for doc in sentences if doc[-1].is_punct]
    fillers_by_length: dict[int, list[list[str]]] = {}
    for words in fillers:
        fillers_by_length.setdefault(len(words), []).append(words)
    carrier, (ent_start, ent_end, label) = find_carrier(nlp, sentences, fillers[0])
    targets = [stride, 3 * stride + window - 1, 5 * stride + window, 8 * stride]
    words: list[str] = []
    placed = []
    for target in targets:
        for sentence in filler_for(target - ent_start - len(words), fillers_by_length):
            words.extend(sentence)
        placed.append((len(words) + ent_start, len(words) + ent_end, label))
        words.extend(carrier)
    while len(words) < LONG_DOCUMENT_TOKENS:
        words.extend(fillers[len(words) % len(fillers)])
    placed.append((len(words) + ent_start, len(words) + ent_end, label))
    words.extend(carrier)
    text = " ".join(words)
    doc = check_doc(nlp(text), text)
    assert [t.text for t in doc] == words, "the long text was not tokenized into the words it was built from"
    return LongDocument(doc, window, stride, placed)


def test_long_document_every_token_reaches_the_transformer(long_document: LongDocument):
    """Each token is aligned to wordpieces in exactly the windows that contain it, up to the last token."""
    doc, window, stride = long_document.doc, long_document.window, long_document.stride
    assert len(doc) > LONG_DOCUMENT_TOKENS
    trf_data = doc._.trf_data
    n_windows, padded_length = trf_data.wordpieces.input_ids.shape
    lengths = trf_data.align.lengths
    starts = numpy.concatenate([[0], numpy.cumsum(lengths)[:-1]])
    wrong = []
    for i in range(len(doc)):
        wordpieces = trf_data.align.dataXd[starts[i] : starts[i] + lengths[i]]
        windows = sorted({int(index) // padded_length for index in wordpieces})
        expected = [w for w in range(n_windows) if w * stride <= i < w * stride + window]
        if not wordpieces.size or windows != expected:
            wrong.append(f"token {i} {doc[i].text!r}: windows {windows}, expected {expected}")
    assert not wrong, f"{len(wrong)} of {len(doc)} tokens badly covered, e.g.:\n" + "\n".join(wrong[:10])


def test_long_document_finds_the_entity_at_window_boundaries(long_document: LongDocument):
    found = set(entity_spans(long_document.doc))
    missed = [
        f"{span}: found near it {[s for s in found if abs(s[0] - span[0]) < 5]}"
        for span in long_document.placed
        if span not in found
    ]
    assert not missed, "the entity found in its sentence alone was missed in the long Doc at:\n" + "\n".join(missed)


# --- many texts, several processes, several pipelines -------------------------


def short_texts(count: int) -> list[str]:
    """Short texts of every kind above; two in three carry their number."""
    kinds = ["", " ", "Germany", "EU", NEWS[:40], NEWS.upper()[:30], *HARD_CHARACTERS.values()]
    return [f"{kinds[i % len(kinds)]} {i}" if i % 3 else kinds[i % len(kinds)][:30] for i in range(count)]


def test_ten_thousand_short_texts_through_pipe(nlp: Language):
    texts = short_texts(10_000)
    docs = list(nlp.pipe(texts))
    assert len(docs) == len(texts)
    for doc, text in zip(docs, texts, strict=True):
        check_doc(doc, text)


@contextmanager
def worker_deadline(seconds: float) -> Iterator[threading.Event]:
    """Kill nlp.pipe's worker processes after `seconds`, so that a hang fails the test instead of stalling it.

    With its workers gone, nlp.pipe's read from them ends (EOFError) and the test goes on. The
    event says whether the deadline passed.
    """
    expired = threading.Event()

    def kill_workers() -> None:
        expired.set()
        for child in multiprocessing.active_children():
            child.kill()

    timer = threading.Timer(seconds, kill_workers)
    timer.start()
    try:
        yield expired
    finally:
        timer.cancel()


def test_pipe_with_two_processes_matches_one_process(nlp: Language):
    """n_process=2 with the default start method (fork) in a process that has run the model: same entities."""
    texts = short_texts(600)
    one_process = [entity_spans(doc) for doc in nlp.pipe(texts, batch_size=50)]
    with worker_deadline(WORKER_DEADLINE_S) as expired:
        try:
            docs = list(nlp.pipe(texts, batch_size=50, n_process=2))
        except (EOFError, OSError):
            if not expired.is_set():
                raise
            docs = []
    assert not expired.is_set(), f"nlp.pipe(n_process=2) did not finish in {WORKER_DEADLINE_S}s"
    for doc, text in zip(docs, texts, strict=True):
        check_doc(doc, text)
    assert [entity_spans(doc) for doc in docs] == one_process


def test_two_loads_in_one_process(nlp: Language, installed_model: str):
    second = spacy.load(installed_model)
    assert second is not nlp and second.get_pipe("transformer") is not nlp.get_pipe("transformer")
    from_second = check_doc(second(NEWS), NEWS)
    # The first pipeline still works, unchanged, after the second one was loaded.
    from_first = check_doc(nlp(NEWS), NEWS)
    assert entity_spans(from_second) == entity_spans(from_first)
