"""Document context for training: chunks, context that is not trained on, batches by words.

On the invented fixture (tests/fixtures/conll_small: 40 train sentences in 4 documents).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import spacy
from spacy.tokens import Doc, DocBin, Span
from spacy.util import load_config, registry

from scripts.components.context_corpus import (
    ContextCorpus,
    ContextCorpusError,
    batch_by_words_sorted,
    chunk_sentences,
    create_batch_by_words_sorted,
)
from scripts.lib.conll import DocMode
from scripts.lib.corpus_build import convert
from tests.conftest import FIXTURE_CONLL_DIR

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> dict[DocMode, Path]:
    folders = {}
    for mode in DocMode:
        folders[mode] = tmp_path_factory.mktemp(mode.value)
        convert(folders[mode], FIXTURE_CONLL_DIR, doc_mode=mode)
    return folders


def gold_sentences(corpus: Path) -> list[tuple[tuple[str, ...], tuple[tuple[int, int, str], ...]]]:
    """Words and entities (offsets within the sentence) of every gold sentence, in corpus order."""
    nlp = spacy.blank("en")
    sentences = []
    for doc in DocBin().from_disk(corpus / "train.spacy").get_docs(nlp.vocab):
        for sent in doc.sents:
            ents = tuple((e.start - sent.start, e.end - sent.start, e.label_) for e in sent.ents)
            sentences.append((tuple(t.text for t in sent), ents))
    return sentences


def trained_sentences(examples) -> list[tuple[tuple[str, ...], tuple[tuple[int, int, str], ...]]]:
    """The same, from the part of each example the ner is trained on (entity annotation not missing)."""
    sentences = []
    for example in examples:
        reference = example.reference
        for sent in reference.sents:
            if all(token.ent_iob_ == "" for token in sent):
                continue  # context only
            assert all(token.ent_iob_ != "" for token in sent), "a sentence half in context"
            ents = tuple((e.start - sent.start, e.end - sent.start, e.label_) for e in sent.ents)
            sentences.append((tuple(t.text for t in sent), ents))
    return sentences


def read(corpus: Path, max_tokens: int, context_tokens: int = 0, gold_preproc: bool = True) -> list:
    reader = ContextCorpus(corpus / "train.spacy", max_tokens, context_tokens, gold_preproc=gold_preproc)
    return list(reader(spacy.blank("en")))


def test_sentences_join_into_chunks_up_to_the_limit():
    sentences = [(0, 10), (10, 50), (50, 200), (200, 210), (210, 230)]
    assert chunk_sentences(sentences, 64) == [(0, 50), (50, 200), (200, 230)]
    assert chunk_sentences(sentences, 0) == sentences
    assert chunk_sentences(sentences, 1000) == [(0, 230)]


@pytest.mark.parametrize("max_tokens", [0, 24, 48, 128, 10_000])
def test_every_sentence_is_trained_on_once_and_none_dropped(corpora, max_tokens):
    examples = read(corpora[DocMode.document], max_tokens)
    assert trained_sentences(examples) == gold_sentences(corpora[DocMode.document])
    for example in examples:
        sentence_lengths = [len(sent) for sent in example.reference.sents]
        assert len(example) <= max_tokens or len(sentence_lengths) == 1
        assert [t.text for t in example.predicted] == [t.text for t in example.reference]


@pytest.mark.parametrize("mode", list(DocMode))
@pytest.mark.parametrize("context_tokens", [0, 5])
def test_without_gold_preproc_the_predicted_side_is_the_tokenizers(corpora, mode, context_tokens):
    """What inference sees: each chunk's text through the tokenizer; the gold side and what is trained on unchanged."""
    tokenized = read(corpora[mode], 48, context_tokens, gold_preproc=False)
    gold = read(corpora[mode], 48, context_tokens)
    tokenizer = spacy.blank("en").tokenizer
    assert [eg.reference.to_json() for eg in tokenized] == [eg.reference.to_json() for eg in gold]
    for example in tokenized:
        assert example.predicted.text == example.reference.text == " ".join(t.text for t in example.reference)
        assert [t.text for t in example.predicted] == [t.text for t in tokenizer(example.reference.text)]
    assert any(len(eg.predicted) > len(eg.reference) for eg in tokenized)  # the fixture's "2-1" is cut in three
    assert trained_sentences(tokenized) == gold_sentences(corpora[mode])


def hyphenated_entity_docbin(path: Path) -> Path:
    """One document: "Reuters" as context, then "AL-AIN beat Hewlett-Packard ." with a LOC and an ORG."""
    vocab = spacy.blank("en").vocab
    words = ["Reuters", ".", "AL-AIN", "beat", "Hewlett-Packard", "."]
    doc = Doc(vocab, words=words, sent_starts=[True, False, True, False, False, False])
    doc.ents = [Span(doc, 2, 3, "LOC"), Span(doc, 4, 5, "ORG")]
    DocBin(docs=[doc]).to_disk(path)
    return path


def test_an_entity_the_tokenizer_cuts_is_learnt_over_its_pieces(tmp_path):
    path = hyphenated_entity_docbin(tmp_path / "train.spacy")
    (context, target) = list(ContextCorpus(path, 0, 2, gold_preproc=False)(spacy.blank("en")))
    assert [t.text for t in target.predicted] == [
        "Reuters",
        ".",
        "AL",
        "-",
        "AIN",
        "beat",
        "Hewlett",
        "-",
        "Packard",
        ".",
    ]
    tags = [None, None, "B-LOC", "I-LOC", "L-LOC", "O", "B-ORG", "I-ORG", "L-ORG", "O"]
    assert target.get_aligned_ner() == tags  # the context before the sentence is missing (None), not O
    assert context.get_aligned_ner() == ["O", "O", None, None, None, None]  # "AL-AIN beat" after it, in three


def test_chunks_carry_neighbouring_sentences(corpora):
    examples = read(corpora[DocMode.document], 48)
    assert len(examples) < len(gold_sentences(corpora[DocMode.document]))
    assert max(len(list(eg.reference.sents)) for eg in examples) > 1


def test_sentence_mode_gives_one_example_per_sentence(corpora):
    examples = read(corpora[DocMode.sentence], 128)
    assert [len(list(eg.reference.sents)) for eg in examples] == [1] * 40
    assert trained_sentences(examples) == gold_sentences(corpora[DocMode.sentence])


def test_context_is_seen_but_not_trained_on(corpora):
    plain, with_context = read(corpora[DocMode.document], 0), read(corpora[DocMode.document], 0, context_tokens=5)
    assert trained_sentences(with_context) == gold_sentences(corpora[DocMode.document])
    assert sum(len(eg) for eg in with_context) > sum(len(eg) for eg in plain)
    # The second sentence of the first document: 5 tokens of the first before it, missing for the ner.
    example = with_context[1]
    assert [t.ent_iob_ for t in example.reference[:5]] == [""] * 5
    assert [t.text for t in example.reference[:5]] == [t.text for t in plain[0].reference[-5:]]
    assert all(token.ent_iob_ in ("B", "I", "O") for token in example.reference[5 : 5 + len(plain[1])])


def test_context_stops_at_the_document_edge(corpora):
    first = read(corpora[DocMode.document], 0, context_tokens=1000)[0]
    assert first.reference[0].ent_iob_ != ""  # nothing before the first sentence


def test_limit_counts_documents(corpora):
    train = corpora[DocMode.document] / "train.spacy"
    examples = list(ContextCorpus(train, 0, 0, limit=1)(spacy.blank("en")))
    first_document = next(DocBin().from_disk(train).get_docs(spacy.blank("en").vocab))
    assert len(examples) == len(list(first_document.sents))


def test_missing_docbin_names_the_file_and_the_command(tmp_path):
    with pytest.raises(ContextCorpusError, match=r"nope.spacy: no such DocBin.*spacy project run corpus"):
        list(ContextCorpus(tmp_path / "nope.spacy", 128, 0)(spacy.blank("en")))


def test_negative_sizes_are_rejected_with_the_config_block():
    with pytest.raises(ContextCorpusError, match=r"corpora.train"):
        ContextCorpus(Path("x"), -1, 0)
    with pytest.raises(ContextCorpusError, match=r"training.batcher"):
        create_batch_by_words_sorted(0)


def test_batches_hold_every_item_once_within_the_word_budget():
    vocab = spacy.blank("en").vocab
    items = [Doc(vocab, words=["w"] * n) for n in [3, 40, 7, 7, 25, 1, 90, 12] * 20]
    batches = list(batch_by_words_sorted(items, size=60, buffer=32))
    assert Counter(id(d) for batch in batches for d in batch) == Counter(id(d) for d in items)
    for batch in batches:
        assert sum(len(d) for d in batch) <= 60 or len(batch) == 1


def test_sentences_and_chunks_take_steps_of_about_the_same_words(corpora):
    batcher = create_batch_by_words_sorted(size=120, buffer=256)
    means = {}
    for mode, max_tokens in ((DocMode.sentence, 0), (DocMode.document, 48)):
        batches = list(batcher(read(corpora[mode], max_tokens)))
        # The fixture fits one buffer, whose remainder is the smallest batch (batches are shuffled: not the last).
        full = sorted(sum(len(eg) for eg in batch) for batch in batches)[1:]
        means[mode] = sum(full) / len(full)
    assert means[DocMode.sentence] == pytest.approx(means[DocMode.document], rel=0.25)


@pytest.mark.parametrize("config_name", ["minilm_cpu", "bert_ner"])
def test_configs_read_training_data_through_the_context_reader(config_name, corpora):
    train = str(corpora[DocMode.document] / "train.spacy")
    config = load_config(CONFIGS / f"{config_name}.cfg", overrides={"paths.train": train}, interpolate=True)
    resolved = registry.resolve({"corpus": config["corpora"]["train"], "batcher": config["training"]["batcher"]})
    examples = list(resolved["corpus"](spacy.blank("en")))
    assert trained_sentences(examples) == gold_sentences(corpora[DocMode.document])
    assert len(examples) == 4  # the fixture's documents are all under 128 tokens
    assert [len(batch) for batch in resolved["batcher"](examples)]
