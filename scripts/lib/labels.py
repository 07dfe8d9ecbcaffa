"""Entity labels as the reports show them: CoNLL-2003's four in their usual order and colours, any other label after.

The pipeline learns whatever labels its corpus holds. CoNLL's four keep the order and colours the
project's figures and pages have always had, so results on CoNLL-2003 read as before; any other
label sorts after them by name and gets a pastel derived from its name, the same in every report
and run. The server's page (scripts/serving/page.html) holds a JavaScript copy of
`label_colour`: the same four colours and the same hash, so a label has one colour everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable

CONLL_LABELS = ("PER", "ORG", "LOC", "MISC")
CONLL_COLOURS = {"PER": "#aa9cfc", "ORG": "#7aecec", "LOC": "#ff9561", "MISC": "#feca74"}

# 32-bit FNV-1a: a few lines in any language and the same in every process (Python's hash() of a str is salted
# per process, so a label's colour would change from run to run).
FNV_OFFSET = 0x811C9DC5
FNV_PRIME = 0x01000193
# Pastels as light as displaCy's own palette, so dark text stays readable on every one.
SATURATION_PERCENT = 70
LIGHTNESS_PERCENT = 80


def label_order(labels: Iterable[str]) -> list[str]:
    """CoNLL's labels in their usual order, then any other label sorted by name; each once."""
    present = set(labels)
    return [label for label in CONLL_LABELS if label in present] + sorted(present - set(CONLL_LABELS))


def label_hash(label: str) -> int:
    """FNV-1a over the label's code points: JavaScript's `for (const ch of label)` walks the same ones."""
    value = FNV_OFFSET
    for character in label:
        value = ((value ^ ord(character)) * FNV_PRIME) & 0xFFFFFFFF
    return value


def label_colour(label: str) -> str:
    """A CSS colour for the label: CoNLL's own for its four, else a pastel hue hashed from the name."""
    if label in CONLL_COLOURS:
        return CONLL_COLOURS[label]
    return f"hsl({label_hash(label) % 360}, {SATURATION_PERCENT}%, {LIGHTNESS_PERCENT}%)"


def label_colours(labels: Iterable[str]) -> dict[str, str]:
    """displaCy's `colors` option for these labels."""
    return {label: label_colour(label) for label in labels}
