from __future__ import annotations

import re

from scripts.lib.labels import CONLL_COLOURS, label_colour, label_colours, label_hash, label_order
from tests.conftest import PROJECT_DIR


def test_conll_labels_come_first_in_their_order_then_the_rest_by_name():
    assert label_order(["MISC", "LOC", "ORG", "PER"]) == ["PER", "ORG", "LOC", "MISC"]
    assert label_order(["DRUG", "LOC", "DOSE", "PER", "DRUG"]) == ["PER", "LOC", "DOSE", "DRUG"]
    assert label_order([]) == []


def test_the_hash_is_32_bit_fnv_1a():
    # The published FNV-1a test vectors (ASCII, so code points are the bytes).
    assert label_hash("") == 0x811C9DC5
    assert label_hash("a") == 0xE40C292C
    assert label_hash("foobar") == 0xBF9CF968


def test_conll_labels_keep_their_colours_and_any_other_gets_a_stable_pastel():
    assert label_colour("PER") == "#aa9cfc" and label_colour("MISC") == "#feca74"
    # Pinned: the page's JavaScript copy must give the same string (tests/tools/test_serve.py checks it there).
    assert label_colour("DRUG") == "hsl(183, 70%, 80%)"
    colours = label_colours(["PER", "DRUG", "DOSE", "Médicament 💊"])
    assert colours["PER"] == CONLL_COLOURS["PER"]
    for label in ("DRUG", "DOSE", "Médicament 💊"):
        assert re.fullmatch(r"hsl\((\d|[1-9]\d|[12]\d\d|3[0-5]\d), 70%, 80%\)", colours[label])
    assert colours["DRUG"] != colours["DOSE"]


def test_the_page_holds_the_same_conll_colours():
    page = (PROJECT_DIR / "scripts" / "serving" / "page.html").read_text(encoding="utf-8")
    for label, colour in CONLL_COLOURS.items():
        assert f'{label}: "{colour}"' in page
