"""Labelled NER data into spaCy DocBins: train.spacy, dev.spacy, test.spacy and corpus.json (the `corpus` step).

The reading, checking and writing is scripts.lib.corpus_build: a folder of column files (CoNLL's
format, any scheme), DocBins, spaCy/Prodigy or doccano JSONL, a Label Studio export, or parquet/JSON/CSV
read through `datasets`; or a Hugging Face hub dataset, by default CoNLL-2003 from the hub's parquet
conversion (remote code is never trusted).
"""

from __future__ import annotations

import time
from pathlib import Path

import typer
from wasabi import msg

from scripts.lib.cli import fail
from scripts.lib.conll import HF_DATASET, HF_REVISION, HF_SENTENCES_PER_DOC, SPLITS, CorpusError, DocMode
from scripts.lib.corpus_build import CorpusOptions, DataFormat, Misaligned, build_corpus, write_corpus


def main(
    output_dir: Path = typer.Argument(..., help="Folder for train.spacy, dev.spacy, test.spacy and corpus.json"),
    data_dir: str = typer.Option("", help="Folder with train.* (and dev.*/valid.*, test.*); empty: the HF hub"),
    train_file: str = typer.Option("", help="The training file's name in data_dir; empty: train.*"),
    dev_file: str = typer.Option("", help="The dev file's name in data_dir; empty: dev.*, valid.* or split off"),
    test_file: str = typer.Option("", help="The test file's name in data_dir; empty: test.* or split off"),
    doc_mode: DocMode = typer.Option(DocMode.sentence, help="One Doc per sentence, or per -DOCSTART- document"),
    data_format: DataFormat = typer.Option(DataFormat.auto, help="Format of the files; auto: by extension and content"),
    scheme: str = typer.Option("auto", help="Tagging scheme of tagged tokens: auto, IOB1, IOB2, IOBES, BILOU"),
    token_column: int = typer.Option(0, help="Column files: the token's column (from 0; -1 is the last)"),
    tag_column: int = typer.Option(-1, help="Column files: the tag's column (from 0; -1 is the last)"),
    tokens_column: str = typer.Option("tokens", help="datasets: the column of token lists"),
    tags_column: str = typer.Option("ner_tags", help="datasets: the column of tag lists (ClassLabel or strings)"),
    misaligned: Misaligned = typer.Option(
        Misaligned.error, help="Character spans that cut a token: error, or expand/contract them to token bounds"
    ),
    tokenizer_config: Path = typer.Option(
        None, help="Training config whose tokenizer cuts text with character spans (the cuts of nlp(text))"
    ),
    dev_fraction: float = typer.Option(0.1, help="Without a dev file: the share of train split off as dev"),
    test_fraction: float = typer.Option(0.1, help="Without a test file: the share of train split off as test"),
    split_seed: int = typer.Option(0, help="Seed of the shuffle that splits dev and test off train"),
    hf_dataset: str = typer.Option(HF_DATASET, help="HF dataset name, read when data_dir is empty"),
    hf_revision: str = typer.Option(HF_REVISION, help="HF revision: the parquet branch or a commit hash"),
    hf_sentences_per_doc: int = typer.Option(HF_SENTENCES_PER_DOC, help="Document mode on dataset rows: rows per Doc"),
) -> None:
    source = data_dir or f"{hf_dataset}@{hf_revision}"
    msg.info(f"Reading {source} ({doc_mode.value} mode)")
    options = CorpusOptions(
        data_format=data_format,
        scheme=scheme,
        token_column=token_column,
        tag_column=tag_column,
        tokens_column=tokens_column,
        tags_column=tags_column,
        misaligned=misaligned,
        tokenizer_config=tokenizer_config,
        split_files={
            split: name for split, name in (("train", train_file), ("dev", dev_file), ("test", test_file)) if name
        },
        dev_fraction=dev_fraction,
        test_fraction=test_fraction,
        split_seed=split_seed,
    )
    started = time.perf_counter()
    try:
        corpus = build_corpus(
            Path(data_dir) if data_dir else None,
            doc_mode,
            options,
            hf_dataset,
            hf_revision,
            hf_sentences_per_doc,
            progress=msg.info,
        )
        write_corpus(corpus, output_dir)
    except CorpusError as err:
        fail("Corpus conversion failed", str(err))
    manifest = corpus.manifest
    if manifest.scheme:
        msg.info(f"Tagging scheme: {manifest.scheme} ({'set' if scheme.lower() != 'auto' else 'detected'})")
    if corpus.moved:
        msg.warn(
            f"{corpus.moved:,} character spans {misaligned.value}ed to token bounds (misaligned={misaligned.value})"
        )
    if doc_mode == DocMode.document and not data_dir:
        msg.info(f"Dataset rows have no document boundaries: every {hf_sentences_per_doc} rows make one Doc")
    msg.info(f"Labels, from the training data: {', '.join(manifest.labels)}")
    header = ["split", "docs", "tokens", *manifest.labels, "from"]
    rows = [
        [
            split,
            f"{counts.docs:,}",
            f"{counts.tokens:,}",
            *(f"{counts.entities[label]:,}" for label in manifest.labels),
            counts.origin,
        ]
        for split, counts in manifest.splits.items()
    ]
    msg.table(rows, header=header, aligns=["l"] + ["r"] * (len(header) - 2) + ["l"], divider=True)
    msg.good(
        f"Wrote {', '.join(f'{s}.spacy' for s in SPLITS)} and corpus.json to {output_dir} "
        f"in {time.perf_counter() - started:.1f}s"
    )


if __name__ == "__main__":
    typer.run(main)
