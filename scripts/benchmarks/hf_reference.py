"""The Hugging Face Trainer recipe that this project is measured against.

The token-classification notebook recipe: AutoModelForTokenClassification on the
encoder, every sub-token labelled with its word's tag (-100 only on special
tokens), learning rate 2e-5, batch 16, 3 epochs, weight decay 0.01, linear
schedule, `transformers.Trainer`. Scored like our pipeline: seqeval on word-level
tags (each word's first sub-token), strict IOB2 and default mode; and on raw text, as its
users run it: the saved model in `pipeline("ner")` over each test sentence's text, with each
aggregation strategy that yields entities, scored by exact character span as scripts.lib.raw_text
scores ours.
It reads the same DocBins as the spaCy pipeline, so both see the same sentences.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from spacy.tokens import DocBin
from spacy.vocab import Vocab
from wasabi import msg

from scripts.lib.atomic import write_text_atomic
from scripts.lib.calibration import span_calibration
from scripts.lib.cli import fail
from scripts.lib.labels import label_order
from scripts.lib.preflight import PreflightError, resolve_encoder
from scripts.lib.raw_text import GoldText, gold_texts, score_texts
from scripts.lib.scoring import LabelledSpan, score_iob2, sentence_iob2_tags

IGNORED = -100  # the label index the loss skips
# The HF pipeline's aggregation strategies that return entities. "none" returns a tag per sub-token;
# joining those into entities is what "simple" does, so "simple" stands for it.
AGGREGATIONS = ("simple", "first", "average", "max")
HF_PIPELINE_BATCH = 32


class RecipeError(Exception):
    """A missing input: the message names it and the fix."""


@dataclass
class Recipe:
    learning_rate: float = 2e-5
    batch_size: int = 16
    epochs: float = 3.0
    weight_decay: float = 0.01
    seed: int = 0
    # 0: every sentence; tests train on a slice.
    max_train_sentences: int = 0


def read_sentences(path: Path, limit: int = 0) -> tuple[list[list[str]], list[list[str]]]:
    """Words and IOB2 tags per gold sentence of a DocBin (document-mode Docs are split)."""
    if not path.is_file():
        raise RecipeError(f"{path}: no such DocBin. Build the corpus with `spacy project run corpus`.")
    words, tags = [], []
    for doc in DocBin().from_disk(path).get_docs(Vocab()):
        for sentence, sentence_tags in zip(doc.sents, sentence_iob2_tags(doc), strict=True):
            words.append([token.text for token in sentence])
            tags.append(sentence_tags)
    return (words[:limit], tags[:limit]) if limit else (words, tags)


def read_gold_texts(path: Path) -> list[GoldText]:
    """The raw text of each gold sentence of a DocBin, with its entities' character spans."""
    if not path.is_file():
        raise RecipeError(f"{path}: no such DocBin. Build the corpus with `spacy project run corpus`.")
    return gold_texts(list(DocBin().from_disk(path).get_docs(Vocab())), per_sentence=True)


def scored_hf_spans(entities: list[dict[str, Any]]) -> list[tuple[LabelledSpan, dict[str, Any]]]:
    """Each entity an aggregating HF pipeline returns for one text, as (start_char, end_char, type), with itself."""
    return [((int(entity["start"]), int(entity["end"]), str(entity["entity_group"])), entity) for entity in entities]


def hf_char_spans(entities: list[dict[str, Any]]) -> set[LabelledSpan]:
    """(start_char, end_char, type) of the entities an aggregating HF pipeline returns for one text."""
    return {span for span, _ in scored_hf_spans(entities)}


def score_hf_pipeline_on_raw_text(model_dir: Path, golds: list[GoldText], gpu_id: int = -1) -> dict[str, Any]:
    """The saved model in HF's `pipeline("ner")` over the gold texts, with every strategy of AGGREGATIONS.

    The best strategy is chosen on these same texts, which favours the HF side.
    """
    from transformers import pipeline

    tagger = pipeline("ner", model=str(model_dir), device=gpu_id if gpu_id >= 0 else -1)
    texts, gold = [g.text for g in golds], [g.entities for g in golds]
    by_aggregation = {}
    for strategy in AGGREGATIONS:
        outputs = tagger(texts, aggregation_strategy=strategy, batch_size=HF_PIPELINE_BATCH)
        by_aggregation[strategy] = score_texts(texts, gold, [hf_char_spans(entities) for entities in outputs])
        # Its `score` per entity, held against the gold as our entity scores are (scripts.lib.calibration).
        by_aggregation[strategy]["calibration"] = span_calibration(
            gold, [[(*span, float(entity["score"])) for span, entity in scored_hf_spans(e)] for e in outputs]
        )
    best = max(AGGREGATIONS, key=lambda strategy: by_aggregation[strategy]["f1"])
    return {"best_aggregation": best, "f1": by_aggregation[best]["f1"], "by_aggregation": by_aggregation}


def corpus_labels(*splits: Iterable[Sequence[str]]) -> list[str]:
    """The entity labels of IOB2 tag lists, in label_order: CoNLL's four first in their order, any other by name."""
    return label_order(tag[2:] for sentences in splits for tags in sentences for tag in tags if tag != "O")


def tag_set(labels: Iterable[str]) -> list[str]:
    """The classifier's tags: O, then B- and I- of each label in label_order.

    On CoNLL-2003 that is O, B-PER, I-PER, B-ORG, ..., I-MISC, the ids the recipe has always used,
    so its figures do not move; on other data, whatever labels the corpus holds.
    """
    return ["O"] + [f"{prefix}-{label}" for label in label_order(labels) for prefix in "BI"]


def align_labels(word_ids: list[int | None], word_tags: list[str], tag_ids: Mapping[str, int]) -> list[int]:
    """Each sub-token gets its word's tag id; special tokens (no word) are ignored by the loss."""
    return [IGNORED if word is None else tag_ids[word_tags[word]] for word in word_ids]


def first_subtoken_tags(
    word_ids: list[int | None], predicted: list[int], n_words: int, tags: Sequence[str]
) -> list[str]:
    """Word-level tags from the prediction (tag ids) on each word's first sub-token; cut-off words get O."""
    word_tags = ["O"] * n_words
    seen = set()
    for position, word in enumerate(word_ids):
        if word is not None and word not in seen:
            seen.add(word)
            word_tags[word] = tags[predicted[position]]
    return word_tags


def encode(
    tokenizer: Any, words: list[list[str]], tags: list[list[str]], tag_ids: Mapping[str, int]
) -> list[dict[str, Any]]:
    encoded = tokenizer(words, is_split_into_words=True, truncation=True)
    return [
        {
            "input_ids": encoded["input_ids"][i],
            "attention_mask": encoded["attention_mask"][i],
            "labels": align_labels(encoded.word_ids(i), tags[i], tag_ids),
        }
        for i in range(len(words))
    ]


def predict_tags(
    trainer: Any, tokenizer: Any, words: list[list[str]], tags: list[list[str]], tag_list: Sequence[str]
) -> list[list[str]]:
    import numpy

    output = trainer.predict(encode(tokenizer, words, tags, {tag: i for i, tag in enumerate(tag_list)}))
    predicted = numpy.argmax(output.predictions, axis=-1)
    encoded = tokenizer(words, is_split_into_words=True, truncation=True)
    return [
        first_subtoken_tags(encoded.word_ids(i), predicted[i].tolist(), len(words[i]), tag_list)
        for i in range(len(words))
    ]


def train_reference(
    encoder: str, corpus_dir: Path, output_dir: Path, recipe: Recipe, gpu_id: int = -1
) -> dict[str, Any]:
    """Train and score the recipe; the model and tokenizer go to output_dir/model."""
    from transformers import (
        AutoModelForTokenClassification,
        AutoTokenizer,
        DataCollatorForTokenClassification,
        Trainer,
        TrainingArguments,
    )

    splits = {split: read_sentences(corpus_dir / f"{split}.spacy") for split in ("dev", "test")}
    test_texts = read_gold_texts(corpus_dir / "test.spacy")
    train_words, train_tags = read_sentences(corpus_dir / "train.spacy", recipe.max_train_sentences)
    # Every split's labels: a label that only dev or test holds still needs a tag id to be encoded and scored.
    labels = corpus_labels(train_tags, *(tags for _, tags in splits.values()))
    if not labels:
        raise RecipeError(
            f"{corpus_dir}: no split holds a gold entity. Build the corpus with `spacy project run corpus`."
        )
    tags = tag_set(labels)
    tag_ids = {tag: i for i, tag in enumerate(tags)}
    tokenizer = AutoTokenizer.from_pretrained(encoder)
    model = AutoModelForTokenClassification.from_pretrained(
        encoder, num_labels=len(tags), id2label=dict(enumerate(tags)), label2id=tag_ids
    )
    arguments = TrainingArguments(
        output_dir=str(output_dir / "trainer"),
        learning_rate=recipe.learning_rate,
        per_device_train_batch_size=recipe.batch_size,
        per_device_eval_batch_size=32,
        num_train_epochs=recipe.epochs,
        weight_decay=recipe.weight_decay,
        lr_scheduler_type="linear",
        seed=recipe.seed,
        save_strategy="no",
        report_to=[],
        logging_steps=100,
        use_cpu=gpu_id < 0,
        disable_tqdm=False,
    )
    trainer = Trainer(
        model=model,
        args=arguments,
        train_dataset=encode(tokenizer, train_words, train_tags, tag_ids),
        data_collator=DataCollatorForTokenClassification(tokenizer),
    )
    started = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - started
    trainer.save_model(str(output_dir / "model"))
    tokenizer.save_pretrained(str(output_dir / "model"))
    results: dict[str, Any] = {
        "recipe": vars(recipe),
        "encoder": encoder,
        "labels": labels,
        "train_sentences": len(train_words),
        "train_seconds": train_seconds,
        "train_words_per_second": sum(map(len, train_words)) * recipe.epochs / train_seconds,
    }
    for split, (words, gold) in splits.items():
        predicted = predict_tags(trainer, tokenizer, words, gold, tags)
        results[split] = {
            "seqeval_strict": score_iob2(gold, predicted, strict=True),
            "seqeval_default": score_iob2(gold, predicted, strict=False),
            "n_sentences": len(words),
        }
    results["test"]["raw_text"] = score_hf_pipeline_on_raw_text(output_dir / "model", test_texts, gpu_id)
    return results


def main(
    encoder: str = typer.Argument(..., help="Encoder folder or HF name (the same one the spaCy pipeline uses)"),
    corpus_dir: Path = typer.Argument(..., help="Folder with train.spacy, dev.spacy, test.spacy"),
    output_dir: Path = typer.Argument(..., help="Where the model and reference.json go"),
    epochs: float = typer.Option(3.0, help="Training epochs (the recipe: 3)"),
    max_train_sentences: int = typer.Option(0, help="Train on the first N sentences only (0: all)"),
    model_revision: str = typer.Option("", help="Hub commit of the encoder when it is a hub name"),
    gpu_id: int = typer.Option(-1, help="CUDA device, -1 for the CPU"),
) -> None:
    recipe = Recipe(epochs=epochs, max_train_sentences=max_train_sentences)
    try:
        results = train_reference(resolve_encoder(encoder, model_revision), corpus_dir, output_dir, recipe, gpu_id)
    except (RecipeError, PreflightError) as err:
        fail("Cannot run the reference recipe", str(err))
    write_text_atomic(output_dir / "reference.json", json.dumps(results, indent=2) + "\n")
    raw = results["test"]["raw_text"]
    msg.good(
        f"Reference recipe: test F1 {100 * results['test']['seqeval_strict']['f1']:.2f} (strict), "
        f"{100 * raw['f1']:.2f} on raw text (pipeline aggregation '{raw['best_aggregation']}'), "
        f"trained in {results['train_seconds'] / 60:.1f} min"
    )


if __name__ == "__main__":
    typer.run(main)
