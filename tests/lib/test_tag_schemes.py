"""scripts.lib.tag_schemes: token tags to entity spans and back in IOB1, IOB2, IOBES and BILOU."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from scripts.lib.tag_schemes import Scheme, TagError, detect_scheme, parse_scheme, spans_to_tags, tags_to_spans

Span = tuple[int, int, str]
FIX = "Fix the tag, or set the scheme the file uses (project var scheme / --scheme)."


def origins(tags: Sequence[str]) -> list[str]:
    """Where each tag is, as the readers name it: file and line."""
    return [f"train.txt:{i + 1}" for i in range(len(tags))]


def decode(tags: Sequence[str], scheme: Scheme) -> list[Span]:
    return tags_to_spans(tags, scheme, origins(tags))


def error_of(tags: Sequence[str], scheme: Scheme) -> str:
    with pytest.raises(TagError) as caught:
        decode(tags, scheme)
    return str(caught.value)


def detect(*sentences: Sequence[str]) -> Scheme:
    return detect_scheme((tags, origins(tags)) for tags in sentences)


# --- decoding --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scheme", "tags", "spans"),
    [
        # IOB2: every entity opens with B-; two B- of one type are two entities.
        (Scheme.iob2, ["B-PER", "I-PER", "O", "B-LOC", "B-LOC"], [(0, 2, "PER"), (3, 4, "LOC"), (4, 5, "LOC")]),
        (Scheme.iob2, ["B-ORG", "I-ORG", "I-ORG", "B-MISC"], [(0, 3, "ORG"), (3, 4, "MISC")]),
        # IOB1: I- opens an entity; B- only where one directly follows another of its type.
        (Scheme.iob1, ["I-PER", "I-PER", "O", "I-LOC", "B-LOC"], [(0, 2, "PER"), (3, 4, "LOC"), (4, 5, "LOC")]),
        # IOB1: I- of another type right after an entity opens a new one (CoNLL-2003 has 248 such pairs).
        (Scheme.iob1, ["I-MISC", "I-ORG", "I-ORG", "O"], [(0, 1, "MISC"), (1, 3, "ORG")]),
        # IOB1 also reads IOB2: B- always opens.
        (Scheme.iob1, ["B-PER", "I-PER", "O", "B-LOC"], [(0, 2, "PER"), (3, 4, "LOC")]),
        # IOBES: S- is a one-token entity, B- (I-)* E- a longer one.
        (
            Scheme.iobes,
            ["S-PER", "B-ORG", "I-ORG", "E-ORG", "O", "B-LOC", "E-LOC"],
            [(0, 1, "PER"), (1, 4, "ORG"), (5, 7, "LOC")],
        ),
        (Scheme.iobes, ["S-LOC", "S-LOC"], [(0, 1, "LOC"), (1, 2, "LOC")]),
        # BILOU: U- and L- in the places of S- and E-.
        (
            Scheme.bilou,
            ["U-PER", "B-ORG", "I-ORG", "L-ORG", "O", "B-LOC", "L-LOC"],
            [(0, 1, "PER"), (1, 4, "ORG"), (5, 7, "LOC")],
        ),
        # Labels are everything after the first "-".
        (Scheme.iob2, ["B-WORK-OF-ART", "I-WORK-OF-ART", "O"], [(0, 2, "WORK-OF-ART")]),
        (Scheme.bilou, ["O", "O"], []),
    ],
)
def test_each_scheme_decodes(scheme, tags, spans):
    assert decode(tags, scheme) == spans


# --- detection -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sentences", "scheme"),
    [
        ([["B-PER", "I-PER", "O"], ["B-LOC", "B-LOC"]], Scheme.iob2),
        ([["O", "O"]], Scheme.iob2),  # nothing to tell schemes apart: IOB2, which reads the same
        ([["I-PER", "I-PER"], ["I-LOC", "O"]], Scheme.iob1),  # I- opens at a sentence's start
        ([["I-PER", "O", "I-LOC"]], Scheme.iob1),  # ... after O
        ([["I-PER", "I-LOC"]], Scheme.iob1),  # ... after another type
        ([["I-PER", "B-PER", "O"]], Scheme.iob1),  # B- only between two entities of one type
        # B- opens entities too: IOB2 with a typo, which decoding then reports, rather than IOB1 read silently.
        ([["B-PER", "I-PER"], ["I-LOC", "O"]], Scheme.iob2),
        ([["B-ORG", "I-LOC"]], Scheme.iob2),
        ([["B-PER", "E-PER"], ["I-LOC"]], Scheme.iobes),  # E-/S- win over I- openings
        ([["O", "S-PER"]], Scheme.iobes),
        ([["U-PER"], ["B-ORG", "L-ORG"]], Scheme.bilou),
    ],
)
def test_detection_from_the_prefixes(sentences, scheme):
    assert detect(*sentences) == scheme


def test_iobes_and_bilou_in_one_corpus_is_an_error_naming_both_first_places():
    with pytest.raises(TagError) as caught:
        detect(["B-PER", "E-PER"], ["O", "O", "U-LOC"])
    message = str(caught.value)
    assert "mix IOBES (E-/S- tags, first at train.txt:2)" in message
    assert "BILOU (L-/U- tags, first at train.txt:3)" in message
    assert message.endswith("Use one scheme throughout.")


def test_detection_checks_every_tag():
    with pytest.raises(TagError, match=r"train.txt:2: 'X-PER' is not an NER tag"):
        detect(["O", "X-PER"])


@pytest.mark.parametrize(
    ("name", "scheme"),
    [
        ("IOB1", Scheme.iob1),
        ("iob2", Scheme.iob2),
        ("BIO", Scheme.iob2),
        (" bioes ", Scheme.iobes),
        ("IOBES", Scheme.iobes),
        ("BILOU", Scheme.bilou),
        ("auto", None),
        ("", None),
    ],
)
def test_scheme_names(name, scheme):
    assert parse_scheme(name) == scheme


def test_an_unknown_scheme_name_lists_the_names():
    with pytest.raises(TagError, match=r"unknown tagging scheme 'BIOLU'. Use auto, IOB1, IOB2 \(or BIO\)"):
        parse_scheme("BIOLU")


# --- spans to tags and back ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scheme", "tags"),
    [
        (Scheme.iob2, ["B-PER", "I-PER", "B-PER", "B-LOC", "O", "B-ORG"]),
        # IOB1 writes B- only for the second of two adjacent entities of one type.
        (Scheme.iob1, ["I-PER", "I-PER", "B-PER", "I-LOC", "O", "I-ORG"]),
        (Scheme.iobes, ["B-PER", "E-PER", "S-PER", "S-LOC", "O", "S-ORG"]),
        (Scheme.bilou, ["B-PER", "L-PER", "U-PER", "U-LOC", "O", "U-ORG"]),
    ],
)
def test_spans_to_tags_writes_each_scheme(scheme, tags):
    spans = [(5, 6, "ORG"), (0, 2, "PER"), (2, 3, "PER"), (3, 4, "LOC")]  # unsorted on purpose
    assert spans_to_tags(spans, 6, scheme) == tags


def random_spans(rng: random.Random, length: int) -> list[Span]:
    """Non-overlapping spans, often adjacent, of one to four tokens and few labels (so neighbours share them)."""
    spans, at = [], rng.randint(0, 2)
    while at < length:
        end = min(length, at + rng.randint(1, 4))
        spans.append((at, end, rng.choice(["PER", "LOC", "B-X", "WORK-OF-ART"])))
        at = end + rng.choice([0, 0, 1, 3])
    return spans


@pytest.mark.parametrize("scheme", list(Scheme), ids=[s.value for s in Scheme])
def test_random_spans_survive_a_round_trip_through_tags(scheme):
    rng = random.Random(f"round trip {scheme.value}")
    corpus = []
    for _ in range(2_000):
        length = rng.randint(1, 12)
        spans = random_spans(rng, length)
        tags = spans_to_tags(spans, length, scheme)
        assert decode(tags, scheme) == spans, (spans, tags)
        corpus.append(tags)
    # Written tags read back as the scheme they were written in: the detection tells all four apart.
    assert detect(*corpus) == scheme


def test_iob2_tags_read_as_iob1_give_the_same_spans():
    rng = random.Random(7)
    for _ in range(500):
        spans = random_spans(rng, 10)
        assert decode(spans_to_tags(spans, 10, Scheme.iob2), Scheme.iob1) == spans


# --- broken schemes: every message names the place, the tag, the scheme and the fix ------------------


@pytest.mark.parametrize(
    ("scheme", "tags", "place", "tag", "why"),
    [
        (Scheme.iob2, ["O", "I-PER"], "train.txt:2", "I-PER", "an I- tag must follow B-PER or I-PER"),
        (Scheme.iob2, ["I-PER"], "train.txt:1", "I-PER", "an I- tag must follow B-PER or I-PER"),
        (
            Scheme.iob2,
            ["B-ORG", "I-LOC"],
            "train.txt:2",
            "I-LOC",
            "it would continue the ORG entity opened at train.txt:1; start a new entity with B-LOC, "
            "or give the token I-ORG",
        ),
        (Scheme.iob2, ["B-PER", "E-PER"], "train.txt:2", "E-PER", "IOB2 has no E- tags"),
        (Scheme.iob1, ["U-PER"], "train.txt:1", "U-PER", "IOB1 has no U- tags"),
        (Scheme.iobes, ["B-PER", "L-PER"], "train.txt:2", "L-PER", "IOBES has no L- tags"),
        (Scheme.bilou, ["S-PER"], "train.txt:1", "S-PER", "BILOU has no S- tags"),
        (Scheme.iobes, ["O", "I-PER", "E-PER"], "train.txt:2", "I-PER", "I-PER must follow B-PER or I-PER"),
        (Scheme.iobes, ["E-LOC"], "train.txt:1", "E-LOC", "E-LOC must follow B-LOC or I-LOC"),
        (Scheme.bilou, ["O", "L-LOC"], "train.txt:2", "L-LOC", "L-LOC must follow B-LOC or I-LOC"),
        (
            Scheme.iobes,
            ["B-PER", "O"],
            "train.txt:2",
            "O",
            "the PER entity opened at train.txt:1 is not closed with E-PER",
        ),
        (
            Scheme.bilou,
            ["B-PER", "I-PER", "L-ORG"],
            "train.txt:3",
            "L-ORG",
            "the PER entity opened at train.txt:1 is not closed with L-PER",
        ),
        (
            Scheme.iobes,
            ["B-PER", "S-PER"],
            "train.txt:2",
            "S-PER",
            "the PER entity opened at train.txt:1 is not closed with E-PER",
        ),
        (
            Scheme.bilou,
            ["O", "B-ORG", "I-ORG"],
            "train.txt:3",
            "I-ORG",
            "the sentence ends inside the ORG entity opened at train.txt:2",
        ),
    ],
)
def test_broken_scheme_messages(scheme, tags, place, tag, why):
    expected = f"{place}: the tag '{tag}' breaks the {scheme.value} scheme: {why}. {FIX}"
    assert error_of(tags, scheme) == expected


@pytest.mark.parametrize("tag", ["X-PER", "PER", "BI-PER", "-PER", "o", "B_PER"])
def test_a_tag_that_is_no_ner_tag_is_named(tag):
    message = error_of(["O", tag], Scheme.iob2)
    assert message.startswith(f"train.txt:2: '{tag}' is not an NER tag.")
    assert "Tags are O or PREFIX-LABEL" in message and "e.g. B-PER" in message


@pytest.mark.parametrize("scheme", list(Scheme), ids=[s.value for s in Scheme])
@pytest.mark.parametrize("tag", ["B-", "B- ", "B-\t"])
def test_an_empty_label_is_named(scheme, tag):
    assert error_of([tag], scheme) == (
        f"train.txt:1: the tag '{tag}' has an empty label. Give the entity a label, e.g. B-PER."
    )


@pytest.mark.parametrize("tag", ["B- PER", "B-PER ", "I-PER\u00a0"])
def test_whitespace_around_a_label_is_named(tag):
    # A label with a space is another label than the one without: spaCy would learn both.
    assert error_of(["O", tag], Scheme.iob1) == (
        f"train.txt:2: the label of the tag {tag!r} starts or ends with whitespace. Remove it."
    )


def test_origins_name_the_tag_even_when_they_are_dataset_rows():
    tags = ["O", "I-PER"]
    with pytest.raises(TagError, match=r"^data \[train\] row 4: the tag 'I-PER' breaks the IOB2 scheme"):
        tags_to_spans(tags, Scheme.iob2, ["data [train] row 4"] * 2)
