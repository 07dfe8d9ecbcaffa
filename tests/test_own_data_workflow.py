"""The whole workflow on data that is not CoNLL-2003, the way a user brings theirs: other labels, another scheme.

CoNLL-2003 relabelled (PER → PERSON, LOC → PLACE, ORG and MISC merged into GROUP) and written as
two tab-separated columns in BILOU, with its own file names, goes through `spacy project run all`
in a copy of the project, with a tiny random cased BERT and a short schedule; the wheel is installed
and loaded by name, and served. Real data where present (required in CI), else the project's fixture.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import pytest

from scripts.lib.conll import make_docs, read_conll
from scripts.lib.tag_schemes import Scheme, spans_to_tags
from tests.conftest import SHORT_SETTINGS, copy_project, install_wheel, run, workflow_command, workflow_env
from tests.tools.test_serve import REQUEST_TIMEOUT_S, chromium, post, running_server, submit_on_page

pytestmark = pytest.mark.slow

RELABEL = {"PER": "PERSON", "LOC": "PLACE", "ORG": "GROUP", "MISC": "GROUP"}
NEW_LABELS = ["GROUP", "PERSON", "PLACE"]
NAME, VERSION = "own_ner", "0.0.2"
PACKAGE = f"en_{NAME}"
LICENSE = "CC-BY-4.0 (test data)"
DESCRIPTION = "Groups, people and places, trained by the test suite"
# CoNLL-2003's file names, each with its own: the user names them through project vars.
SPLIT_FILES = {"train": "train.txt", "dev": "valid.txt", "test": "test.txt"}
OWN_NAMES = {"train": "people-places.train.tsv", "dev": "people-places.dev.tsv", "test": "people-places.test.tsv"}


def write_relabelled(conll_dir: Path, destination: Path) -> dict[str, dict[str, int]]:
    """Each split as `token<TAB>BILOU tag`, no -DOCSTART-; returns the entities per label each split must hold."""
    destination.mkdir(parents=True)
    expected: dict[str, dict[str, int]] = {}
    for split, name in SPLIT_FILES.items():
        docs = make_docs_of(conll_dir / name)
        lines, counts = [], dict.fromkeys(NEW_LABELS, 0)
        for words, spans in docs:
            relabelled = [(start, end, RELABEL[label]) for start, end, label in spans]
            for _, _, label in relabelled:
                counts[label] += 1
            tags = spans_to_tags(relabelled, len(words), Scheme.bilou)
            lines += [f"{word}\t{tag}" for word, tag in zip(words, tags, strict=True)] + [""]
        (destination / OWN_NAMES[split]).write_text("\n".join(lines), encoding="utf-8")
        expected[split] = counts
    return expected


def make_docs_of(path: Path) -> list[tuple[list[str], list[tuple[int, int, str]]]]:
    from spacy.vocab import Vocab

    from scripts.lib.conll import DocMode

    docs = make_docs(Vocab(), read_conll(path), DocMode.sentence)
    return [([token.text for token in doc], [(ent.start, ent.end, ent.label_) for ent in doc.ents]) for doc in docs]


class OwnDataRun:
    def __init__(self, project: Path, output: str, expected: dict[str, dict[str, int]], site: Path) -> None:
        self.project, self.output, self.expected, self.site = project, output, expected, site

    @property
    def package_dir(self) -> Path:
        return self.project / "packages" / f"{PACKAGE}-{VERSION}"


@pytest.fixture(scope="module")
def own_data_run(tmp_path_factory, tiny_bert, workflow_conll_dir) -> OwnDataRun:
    root = tmp_path_factory.mktemp("own_data")
    expected = write_relabelled(workflow_conll_dir, root / "people_places")
    project = copy_project(root / "project")
    command = workflow_command(project, tiny_bert, root / "people_places", settings=SHORT_SETTINGS)
    command[command.index("--vars.version") + 1] = VERSION
    command += ["--vars.name", NAME, "--vars.package_license", LICENSE, "--vars.package_description", DESCRIPTION]
    for split, name in OWN_NAMES.items():
        command += [f"--vars.{split}_file", name]
    output = run(command, project, workflow_env())
    wheel = project / "packages" / f"{PACKAGE}-{VERSION}" / "dist" / f"{PACKAGE}-{VERSION}-py3-none-any.whl"
    site = install_wheel(wheel, root / "site")
    return OwnDataRun(project, output, expected, site)


def test_the_corpus_holds_the_new_labels_read_as_bilou(own_data_run: OwnDataRun):
    manifest = json.loads((own_data_run.project / "corpus" / "corpus.json").read_text())
    assert manifest["labels"] == NEW_LABELS and manifest["scheme"] == "BILOU" and manifest["conll2003"] is False
    for split, counts in own_data_run.expected.items():
        assert manifest["splits"][split]["entities"] == counts
        assert manifest["splits"][split]["origin"].endswith(OWN_NAMES[split])
    assert "Tagging scheme: BILOU (detected)" in own_data_run.output


def test_evaluation_scores_each_new_label(own_data_run: OwnDataRun):
    metrics = json.loads((own_data_run.project / "metrics" / "test.json").read_text())
    assert sorted(metrics["seqeval_strict"]["per_type"]) == NEW_LABELS
    assert metrics["seqeval_strict"]["f1"] > 0.2, "the tiny model learnt nothing of the new labels"
    assert "GROUP" in (own_data_run.project / "metrics" / "report.md").read_text()


def test_the_model_card_lists_the_new_labels_and_no_conll_notice(own_data_run: OwnDataRun):
    card = (own_data_run.package_dir / "README.md").read_text()
    for label in NEW_LABELS:
        assert f"`{label}`" in card and f"`ENTS_F_{label}`" in card
    for old in ("`PER`", "`LOC`", "`MISC`", "Research use only", "CoNLL-2003"):
        assert old not in card, old
    assert LICENSE in card and DESCRIPTION in card


LOAD_BY_NAME = """
import json, sys
import spacy
nlp = spacy.load(sys.argv[1])
texts = sys.argv[2:]
print(json.dumps({
    "labels": sorted(nlp.get_pipe("ner").labels),
    "meta_labels": sorted(nlp.meta["labels"]["ner"]),
    "ents": [[(e.text, e.label_, round(e._.score, 3)) for e in doc.ents] for doc in nlp.pipe(texts)],
}))
"""
TEXTS = [
    "Peter Blackburn reported from Brussels that the European Union rejects German calls .",
    "Germany beat Japan 3-1 in Tokyo on Sunday , Reuters said .",
    "Angela Merkel met Jacques Chirac in Paris .",
]


def test_the_wheel_loads_by_name_and_finds_the_new_labels(own_data_run: OwnDataRun):
    env = {**workflow_env(), "PYTHONPATH": str(own_data_run.site)}
    result = json.loads(run([sys.executable, "-c", LOAD_BY_NAME, PACKAGE, *TEXTS], own_data_run.site, env))
    assert result["labels"] == result["meta_labels"] == NEW_LABELS
    found = [entity for doc in result["ents"] for entity in doc]
    assert found, "the packaged model found no entity in texts full of names"
    assert {label for _, label, _ in found} <= set(NEW_LABELS)
    assert all(0 <= score <= 1 for _, _, score in found)


def test_the_server_page_shows_the_new_labels(own_data_run: OwnDataRun):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with running_server(PACKAGE, env={"PYTHONPATH": str(own_data_run.site)}) as server:
        health = httpx.get(f"{server.url}/healthz", timeout=REQUEST_TIMEOUT_S).json()
        answers = [post(server.url, {"text": text}).json() for text in TEXTS]
        best = max(answers, key=lambda answer: len(answer["entities"]))
        browser = chromium()
        try:
            shown = submit_on_page(browser, server.url, best["text"])
            WebDriverWait(browser, 30).until(lambda page: page.find_elements(By.CSS_SELECTOR, "#legend span"))
            legend = [
                element.get_attribute("data-label")
                for element in browser.find_elements(By.CSS_SELECTOR, "#legend span")
            ]
            heading, title = browser.find_element(By.ID, "model").text, browser.title
        finally:
            browser.quit()
    assert sorted(health["labels"]) == NEW_LABELS and health["model"].startswith(f"{PACKAGE} ")
    assert sorted(legend) == NEW_LABELS
    assert heading == PACKAGE and title.startswith(f"{PACKAGE}:")
    assert best["entities"] and [(e["label"], e["text"]) for e in shown] == [
        (e["label"], e["text"]) for e in best["entities"]
    ]
