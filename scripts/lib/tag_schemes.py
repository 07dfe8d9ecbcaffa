"""Token tags to entity spans and back, in the four schemes NER data comes in: IOB1, IOB2 (BIO), IOBES, BILOU.

A tag is `O` or `PREFIX-LABEL`; the label is everything after the first `-`, so `B-WORK-OF-ART` is
the label `WORK-OF-ART`. The scheme of a corpus is detected from the prefixes its tags use:
- `E-`/`S-`: IOBES (BIOES); `L-`/`U-`: BILOU; both kinds in one corpus is an error;
- only `B-`/`I-`: IOB1 (CoNLL-2003's original release) when `I-X` opens entities (at the start, after
  `O`, or after another type) and `B-X` never does, being kept for an entity right after one of its
  type; else IOB2, where an `I-X` that opens an entity is an error (a typo such as `B-ORG I-LOC`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from enum import Enum

OUTSIDE = "O"


class TagError(Exception):
    """A tag or a run of tags the scheme does not allow: the message names the place and the fix."""


class Scheme(str, Enum):
    iob1 = "IOB1"
    iob2 = "IOB2"
    iobes = "IOBES"
    bilou = "BILOU"


# Prefixes: (begin, inside, last, unit). IOB schemes have no last/unit tag.
PREFIXES = {
    Scheme.iob1: ("B", "I", None, None),
    Scheme.iob2: ("B", "I", None, None),
    Scheme.iobes: ("B", "I", "E", "S"),
    Scheme.bilou: ("B", "I", "L", "U"),
}
SCHEME_NAMES = {scheme.value.lower(): scheme for scheme in Scheme} | {"bio": Scheme.iob2, "bioes": Scheme.iobes}


def parse_scheme(name: str) -> Scheme | None:
    """A scheme by name (case-insensitive, BIO and BIOES accepted); None for "auto" or ""."""
    if name.strip().lower() in ("", "auto"):
        return None
    try:
        return SCHEME_NAMES[name.strip().lower()]
    except KeyError:
        raise TagError(
            f"unknown tagging scheme '{name}'. Use auto, IOB1, IOB2 (or BIO), IOBES (or BIOES) or BILOU."
        ) from None


def split_tag(tag: str, origin: str) -> tuple[str, str]:
    """(prefix, label) of a tag; `O` is ("O", "")."""
    if tag == OUTSIDE:
        return OUTSIDE, ""
    prefix, dash, label = tag.partition("-")
    if not dash or prefix not in "BILUES" or len(prefix) != 1:
        raise TagError(
            f"{origin}: '{tag}' is not an NER tag. Tags are O or PREFIX-LABEL with PREFIX one of "
            "B, I (IOB1, IOB2), E, S (IOBES) or L, U (BILOU), e.g. B-PER."
        )
    if not label.strip():
        raise TagError(f"{origin}: the tag '{tag}' has an empty label. Give the entity a label, e.g. {prefix}-PER.")
    if label != label.strip():
        raise TagError(f"{origin}: the label of the tag {tag!r} starts or ends with whitespace. Remove it.")
    return prefix, label


def opens_after(previous: str, tag: str) -> bool:
    """Whether `tag` follows `previous` at the start of a sentence, after O, or after an entity of another type."""
    return previous == OUTSIDE or previous[2:] != tag[2:]


def detect_scheme(sequences: Iterable[tuple[Sequence[str], Sequence[str]]]) -> Scheme:
    """The scheme of (tags, origins) sentences, from the prefixes used; raises on a mix of IOBES and BILOU."""
    first_seen: dict[str, str] = {}
    # Where an I- and a B- tag first open an entity: IOB1 opens with I-, IOB2 with B-.
    opened: dict[str, str] = {}
    for tags, origins in sequences:
        previous = OUTSIDE
        for tag, origin in zip(tags, origins, strict=True):
            prefix, _ = split_tag(tag, origin)
            first_seen.setdefault(prefix, origin)
            if prefix in ("B", "I") and opens_after(previous, tag):
                opened.setdefault(prefix, origin)
            previous = tag
    if {"E", "S"} & first_seen.keys() and {"L", "U"} & first_seen.keys():
        ends = first_seen.get("E") or first_seen["S"]
        units = first_seen.get("L") or first_seen["U"]
        raise TagError(
            f"the tags mix IOBES (E-/S- tags, first at {ends}) and BILOU (L-/U- tags, first at {units}). "
            "Use one scheme throughout."
        )
    if {"E", "S"} & first_seen.keys():
        return Scheme.iobes
    if {"L", "U"} & first_seen.keys():
        return Scheme.bilou
    return Scheme.iob1 if "I" in opened and "B" not in opened else Scheme.iob2


def broken(origin: str, tag: str, scheme: Scheme, why: str) -> TagError:
    return TagError(
        f"{origin}: the tag '{tag}' breaks the {scheme.value} scheme: {why}. Fix the tag, or set the scheme "
        "the file uses (project var scheme / --scheme)."
    )


def tags_to_spans(tags: Sequence[str], scheme: Scheme, origins: Sequence[str]) -> list[tuple[int, int, str]]:
    """Entity spans (start, end, label) of one sentence, checked against the scheme."""
    begin, inside, last, unit = PREFIXES[scheme]
    spans: list[tuple[int, int, str]] = []
    start, label = -1, ""  # the open entity, if label

    def close(end: int) -> None:
        nonlocal start, label
        spans.append((start, end, label))
        start, label = -1, ""

    for i, tag in enumerate(tags):
        prefix, tag_label = split_tag(tag, origins[i])
        if prefix not in (OUTSIDE, begin, inside, last, unit):
            raise broken(origins[i], tag, scheme, f"{scheme.value} has no {prefix}- tags")
        if scheme in (Scheme.iob1, Scheme.iob2):
            # IOB2 opens every entity with B-; IOB1 opens one with I- after O or after another type.
            if prefix == inside and label and tag_label != label and scheme == Scheme.iob2:
                raise broken(
                    origins[i],
                    tag,
                    scheme,
                    f"it would continue the {label} entity opened at {origins[start]}; start a new entity with "
                    f"B-{tag_label}, or give the token I-{label}",
                )
            if prefix == inside and tag_label == label:
                continue
            if prefix == inside and scheme == Scheme.iob2:
                raise broken(origins[i], tag, scheme, f"an I- tag must follow B-{tag_label} or I-{tag_label}")
            if label:
                close(i)
            if prefix != OUTSIDE:
                start, label = i, tag_label
            continue
        # IOBES and BILOU: every entity is B (I)* E/L, or a single S/U.
        if label and (prefix not in (inside, last) or tag_label != label):
            raise broken(
                origins[i],
                tag,
                scheme,
                f"the {label} entity opened at {origins[start]} is not closed with {last}-{label}",
            )
        if prefix in (inside, last) and not label:
            raise broken(origins[i], tag, scheme, f"{prefix}-{tag_label} must follow B-{tag_label} or I-{tag_label}")
        if prefix == begin:
            start, label = i, tag_label
        elif prefix == unit:
            spans.append((i, i + 1, tag_label))
        elif prefix == last:
            close(i + 1)
    if label and scheme in (Scheme.iob1, Scheme.iob2):
        close(len(tags))
    elif label:
        raise broken(
            origins[-1], tags[-1], scheme, f"the sentence ends inside the {label} entity opened at {origins[start]}"
        )
    return spans


def spans_to_tags(spans: Iterable[tuple[int, int, str]], length: int, scheme: Scheme) -> list[str]:
    """Tags of `length` tokens for non-overlapping entity spans, written in the scheme."""
    begin, inside, last, unit = PREFIXES[scheme]
    tags = [OUTSIDE] * length
    previous_end, previous_label = -1, ""
    for start, end, label in sorted(spans):
        single = end - start == 1
        if scheme in (Scheme.iob1, Scheme.iob2):
            # IOB1 marks B- only where an entity directly follows one of the same type.
            adjacent = previous_end == start and previous_label == label
            first = begin if scheme == Scheme.iob2 or adjacent else inside
            tags[start:end] = [f"{first}-{label}"] + [f"{inside}-{label}"] * (end - start - 1)
        elif single:
            tags[start] = f"{unit}-{label}"
        else:
            tags[start:end] = [f"{begin}-{label}"] + [f"{inside}-{label}"] * (end - start - 2) + [f"{last}-{label}"]
        previous_end, previous_label = end, label
    return tags
