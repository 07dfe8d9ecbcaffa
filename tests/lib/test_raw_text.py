"""scripts.lib.raw_text: gold texts rebuilt from tokens, entities scored by character span, worked out by hand."""

from __future__ import annotations

import pytest
import spacy
from spacy.tokens import Doc, Span

from scripts.lib.conll import DocMode, make_docs, read_conll
from scripts.lib.raw_text import char_spans, evaluate_raw_text, gold_text, gold_texts
from scripts.lib.scoring import score_iob2, score_span_sets, strict_spans

# Two sentences of one document. CoNLL keeps "AL-AIN" and "6-4" as one token each; spaCy's
# English tokenizer cuts both at the hyphen.
SENTENCES = [
    (["John", "Smith", "won", "6-4", "in", "AL-AIN", "."], [(0, 2, "PER"), (5, 6, "LOC")]),
    (["Acme", "Corp", "hired", "Mary", "."], [(0, 2, "ORG"), (3, 4, "PER")]),
]
TEXTS = ["John Smith won 6-4 in AL-AIN .", "Acme Corp hired Mary ."]
# Character spans of the gold entities: "John Smith", "AL-AIN"; "Acme Corp", "Mary".
GOLD_SPANS = [{(0, 10, "PER"), (22, 28, "LOC")}, {(0, 9, "ORG"), (16, 20, "PER")}]


def gold_doc(sentences, vocab) -> Doc:
    words = [word for sentence_words, _ in sentences for word in sentence_words]
    starts = [i == 0 for sentence_words, _ in sentences for i in range(len(sentence_words))]
    doc = Doc(vocab, words=words, sent_starts=starts)
    offset, ents = 0, []
    for sentence_words, entities in sentences:
        ents += [Span(doc, offset + start, offset + end, label) for start, end, label in entities]
        offset += len(sentence_words)
    doc.ents = ents
    return doc


@pytest.fixture
def nlp() -> spacy.language.Language:
    """A fixed "model" on spaCy's tokenizer. Against the gold: AL-AIN right although the tokenizer cut it
    in three; "Smith" a wrong boundary (gold "John Smith"); "Acme Corp" right; Mary missed; "hired" spurious."""
    pipeline = spacy.blank("en")
    ruler = pipeline.add_pipe("entity_ruler")
    ruler.add_patterns(
        [
            {"label": "LOC", "pattern": [{"TEXT": "AL"}, {"TEXT": "-"}, {"TEXT": "AIN"}]},
            {"label": "PER", "pattern": "Smith"},
            {"label": "ORG", "pattern": "Acme Corp"},
            {"label": "MISC", "pattern": "hired"},
        ]
    )
    return pipeline


def test_the_text_is_the_tokens_joined_by_spaces_with_entities_at_their_characters(nlp):
    golds = [gold_text(gold_doc([sentence], nlp.vocab)) for sentence in SENTENCES]
    assert [g.text for g in golds] == TEXTS
    assert [g.entities for g in golds] == GOLD_SPANS
    assert {golds[0].text[start:end] for start, end, _ in golds[0].entities} == {"John Smith", "AL-AIN"}


def test_a_document_is_one_text_or_one_text_per_sentence(nlp):
    doc = gold_doc(SENTENCES, nlp.vocab)
    (whole,) = gold_texts([doc])
    assert whole.text == " ".join(TEXTS)
    assert whole.entities == GOLD_SPANS[0] | {(start + 31, end + 31, label) for start, end, label in GOLD_SPANS[1]}
    per_sentence = gold_texts([doc], per_sentence=True)
    assert [(g.text, g.entities) for g in per_sentence] == list(zip(TEXTS, GOLD_SPANS, strict=True))


def test_a_doc_cut_from_text_keeps_its_text_newlines_and_double_spaces_included(nlp):
    """Annotation tools' text: the tokenizer makes whitespace tokens, and the gold text is that text again."""
    text = "Aspirin 100 mg.\nTake  daily in Paris."
    doc = nlp.make_doc(text)
    doc.ents = [doc.char_span(31, 36, label="LOC")]
    (gold,) = gold_texts([doc])
    assert gold.text == text and gold.entities == {(31, 36, "LOC")}
    assert gold_text(doc[3:]).text == text[doc[3].idx :]


def test_entities_match_by_characters_whatever_the_tokens(nlp):
    docs = [gold_doc([sentence], nlp.vocab) for sentence in SENTENCES]
    results = evaluate_raw_text(nlp, gold_texts(docs))
    # AL-AIN and Acme Corp right of 4 predicted and 4 gold.
    assert (results["precision"], results["recall"], results["f1"]) == (0.5, 0.5, 0.5)
    assert results["per_type"]["LOC"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}
    assert results["per_type"]["PER"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    assert results["per_type"]["MISC"]["support"] == 0 and list(results["per_type"]) == ["PER", "ORG", "LOC", "MISC"]
    assert (results["n_texts"], results["n_predicted_entities"], results["support"]) == (2, 4, 4)
    assert results["retokenized_texts"] == 1  # "6-4" and "AL-AIN" cut at their hyphens; sentence 2 as in the gold
    missed = {(e["text"], e["label"]) for e in results["errors"]["false_negatives"]}
    spurious = {(e["text"], e["label"]) for e in results["errors"]["false_positives"]}
    assert missed == {("John Smith", "PER"), ("Mary", "PER")} and spurious == {("Smith", "PER"), ("hired", "MISC")}


def test_a_document_scores_as_its_sentences_do(nlp):
    sentences = evaluate_raw_text(nlp, gold_texts([gold_doc([sentence], nlp.vocab) for sentence in SENTENCES]))
    document = evaluate_raw_text(nlp, gold_texts([gold_doc(SENTENCES, nlp.vocab)]))
    assert document["f1"] == sentences["f1"] and document["per_type"] == sentences["per_type"]


def test_predicted_spans_are_character_offsets(nlp):
    doc = nlp(TEXTS[0])
    assert char_spans(doc) == {(22, 28, "LOC"), (5, 10, "PER")}


def test_span_sets_score_as_seqeval_strict_does():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O", "B-MISC", "I-MISC"], ["O", "O", "O", "O"]]
    # PER right, LOC as ORG, a leading I- (no entity in strict mode), MISC right, a spurious LOC: 2 of 4 right.
    predicted = [["B-PER", "I-PER", "O", "B-ORG"], ["I-ORG", "O", "B-MISC", "I-MISC"], ["B-LOC", "O", "O", "O"]]
    by_spans = score_span_sets(strict_spans(gold), strict_spans(predicted))
    by_seqeval = score_iob2(gold, predicted, strict=True)
    assert rounded(by_spans) == rounded(by_seqeval) and by_spans["f1"] == 0.5


def rounded(scores: dict) -> dict:
    return {key: rounded(value) if isinstance(value, dict) else round(value, 9) for key, value in scores.items()}


def test_span_sets_without_predictions_score_zero_and_pairs_must_match():
    assert score_span_sets([{(0, 4, "PER")}], [set()])["f1"] == 0.0
    assert score_span_sets([set()], [set()])["per_type"] == {}
    with pytest.raises(ValueError, match="2 gold units against 1 predicted"):
        score_span_sets([set(), set()], [set()])


def test_every_real_test_sentence_rebuilds_and_both_modes_score_alike(conll2003_dir):
    nlp = spacy.blank("en")
    nlp.add_pipe("entity_ruler").add_patterns(
        [{"label": "LOC", "pattern": name} for name in ("Germany", "Japan", "China", "U.S.", "Britain")]
        + [{"label": "ORG", "pattern": name} for name in ("Reuters", "EU", "NATO")]
    )
    documents = read_conll(conll2003_dir / "test.txt")
    by_mode = {mode: make_docs(nlp.vocab, documents, mode) for mode in DocMode}
    sentences = gold_texts(by_mode[DocMode.sentence])
    assert len(sentences) == 3453 and sum(len(g.entities) for g in sentences) == 5648
    for gold, doc in zip(sentences, by_mode[DocMode.sentence], strict=True):
        assert sorted(gold.text[start:end] for start, end, _ in gold.entities) == sorted(e.text for e in doc.ents)
    # The texts of a document, split at its sentences, are the sentence-mode texts.
    assert [(g.text, g.entities) for g in gold_texts(by_mode[DocMode.document], per_sentence=True)] == [
        (g.text, g.entities) for g in sentences
    ]
    # One-token patterns cannot cross a sentence start, so both modes must score alike.
    results = {mode: evaluate_raw_text(nlp, gold_texts(docs)) for mode, docs in by_mode.items()}
    for key in ("precision", "recall", "f1", "per_type", "n_predicted_entities"):
        assert results[DocMode.sentence][key] == results[DocMode.document][key]
    assert results[DocMode.sentence]["precision"] > 0.5 and results[DocMode.document]["n_texts"] == len(documents)
