"""Convert CoNLL-2003 into spaCy DocBins: train.spacy, dev.spacy, test.spacy (the `corpus` step).

The reading and writing is scripts.lib.conll: the Hugging Face dataset `eriktks/conll2003` from
the hub's parquet conversion (remote code is never trusted), or a folder with the original
four-column files (IOB1 or IOB2).
"""

from __future__ import annotations

import time
from pathlib import Path

import typer
from wasabi import msg

from scripts.lib.cli import fail
from scripts.lib.conll import (
    HF_DATASET,
    HF_REVISION,
    HF_SENTENCES_PER_DOC,
    LABELS,
    SPLITS,
    CorpusError,
    DocMode,
    convert,
)


def main(
    output_dir: Path = typer.Argument(..., help="Folder for train.spacy, dev.spacy, test.spacy"),
    conll_dir: str = typer.Option("", help="Folder with train.txt/valid.txt/test.txt; empty: the HF hub"),
    doc_mode: DocMode = typer.Option(DocMode.sentence, help="One Doc per sentence, or per -DOCSTART- document"),
    hf_dataset: str = typer.Option(HF_DATASET, help="HF dataset name"),
    hf_revision: str = typer.Option(HF_REVISION, help="HF revision: the parquet branch or a commit hash"),
    hf_sentences_per_doc: int = typer.Option(HF_SENTENCES_PER_DOC, help="Document mode on HF rows: sentences per Doc"),
) -> None:
    source = conll_dir or f"{hf_dataset}@{hf_revision}"
    msg.info(f"Reading CoNLL-2003 from {source} ({doc_mode.value} mode)")
    if not conll_dir and doc_mode == DocMode.document:
        msg.warn(
            f"HF rows have no document boundaries: grouping every {hf_sentences_per_doc} "
            "consecutive sentences into one Doc, as `spacy convert -n` does."
        )
    started = time.perf_counter()
    try:
        summary = convert(
            output_dir, Path(conll_dir) if conll_dir else None, doc_mode, hf_dataset, hf_revision, hf_sentences_per_doc
        )
    except CorpusError as err:
        fail("Corpus conversion failed", str(err))
    header = ["split", "docs", "tokens", *LABELS]
    rows = [[split, *(f"{value:,}" for value in counts.values())] for split, counts in summary.items()]
    msg.table(rows, header=header, aligns=["l"] + ["r"] * (len(header) - 1), divider=True)
    msg.good(f"Wrote {', '.join(f'{s}.spacy' for s in SPLITS)} to {output_dir} in {time.perf_counter() - started:.1f}s")


if __name__ == "__main__":
    typer.run(main)
