"""Token-tagged NER data read through Hugging Face `datasets`: a hub dataset, or local parquet, JSON or CSV files.

Each row holds a list of tokens and a list of tags (column names are options). Tags are ClassLabel
indices, mapped by name (mirrors order the labels differently, so an index means nothing without
its name), or tag strings. Rows carry no document boundaries: each split is one document.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from scripts.lib.conll import HF_DATASET, SPLITS, CorpusError, Document, Sentence

HF_SPLIT_NAMES = {"train": "train", "dev": "validation", "test": "test"}
# Other names a dataset may give its dev split.
DEV_SPLIT_NAMES = ("validation", "valid", "dev")
TOKENS_COLUMN = "tokens"
TAGS_COLUMN = "ner_tags"
# `datasets` builder names by file extension.
BUILDERS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv"}
STRING_DTYPES = ("string", "large_string", "string_view")


def tag_names(dataset: Any, tags_column: str, where: str) -> list[str] | None:
    """The ClassLabel names of the tags column; None when the column holds tag strings."""
    if tags_column not in dataset.features:
        raise CorpusError(
            f"{where}: no '{tags_column}' column (columns: {', '.join(dataset.features)}). "
            "Name the tags column with the project var tags_column (--tags-column)."
        )
    feature = getattr(dataset.features[tags_column], "feature", None)
    names = getattr(feature, "names", None)
    if names is not None:
        return list(names)
    # Arrow's large_string is what polars (and pandas with Arrow strings) write to parquet.
    if getattr(feature, "dtype", "string") not in STRING_DTYPES:
        raise CorpusError(
            f"{where}: the '{tags_column}' column holds numbers without ClassLabel names, so they cannot be "
            "read as tags. Store the tags as strings (B-PER) or give the column ClassLabel features."
        )
    return None


def as_list(value: Any, column: str, origin: str) -> list[Any]:
    """A list column; CSV stores lists as strings: JSON lists or whitespace-separated items."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                raise CorpusError(f"{origin}: '{column}' is not a JSON list: {text[:80]!r}.") from None
        else:
            value = text.split()
    if not isinstance(value, list | tuple):
        raise CorpusError(f"{origin}: '{column}' is not a list (got {type(value).__name__}).")
    return list(value)


def read_split(dataset: Any, where: str, tokens_column: str, tags_column: str) -> Document:
    if tokens_column not in dataset.features:
        raise CorpusError(
            f"{where}: no '{tokens_column}' column (columns: {', '.join(dataset.features)}). "
            "Name the tokens column with the project var tokens_column (--tokens-column)."
        )
    names = tag_names(dataset, tags_column, where)
    sentences = []
    for row_number, row in enumerate(dataset):
        origin = f"{where} row {row_number}"
        words = [str(word) for word in as_list(row[tokens_column], tokens_column, origin)]
        tags = as_list(row[tags_column], tags_column, origin)
        if names is not None:
            tags = [names[index] for index in tags]
        if len(words) != len(tags):
            raise CorpusError(f"{origin}: {len(words)} tokens but {len(tags)} {tags_column}. Give every token a tag.")
        if words:
            sentences.append(Sentence(words, [str(tag).strip() for tag in tags], [origin] * len(words)))
    if not sentences:
        raise CorpusError(f"{where}: the split is empty.")
    return sentences


def read_dataset_splits(
    dataset_dict: Any,
    name: str = HF_DATASET,
    tokens_column: str = TOKENS_COLUMN,
    tags_column: str = TAGS_COLUMN,
    required: tuple[str, ...] = SPLITS,
) -> dict[str, list[Document]]:
    """Sentences of each split of a `datasets.DatasetDict`; dev and test may be absent unless `required`."""
    splits: dict[str, list[Document]] = {}
    for split in SPLITS:
        candidates = DEV_SPLIT_NAMES if split == "dev" else (split,)
        found = next((candidate for candidate in candidates if candidate in dataset_dict), None)
        if found is None:
            if split in required:
                raise CorpusError(f"{name}: no '{HF_SPLIT_NAMES[split]}' split (found: {', '.join(dataset_dict)}).")
            continue
        splits[split] = [read_split(dataset_dict[found], f"{name} [{found}]", tokens_column, tags_column)]
    return splits


def load_local_dataset(files: dict[str, Path]) -> Any:
    """A DatasetDict from local files by split, read by the `datasets` builder their extension names."""
    import datasets

    builders = {BUILDERS.get(path.suffix.lower()) for path in files.values()}
    if len(builders) != 1 or None in builders:
        raise CorpusError(
            f"{', '.join(map(str, files.values()))}: datasets reads parquet, JSON (lines) or CSV files of one kind; "
            "give every split the same extension."
        )
    (builder,) = builders
    hf_names = {split: HF_SPLIT_NAMES[split] for split in files}
    try:
        return datasets.load_dataset(
            builder, data_files={hf_names[split]: str(path) for split, path in files.items()}, keep_in_memory=True
        )
    except Exception as err:  # datasets raises many types for unreadable files
        reason = str(err).splitlines()[0][:300] if str(err) else ""
        raise CorpusError(
            f"{', '.join(map(str, files.values()))}: datasets could not read the files as {builder}: "
            f"{type(err).__name__}: {reason}. Check that each row has a list of tokens and a list of tags."
        ) from None


def load_hub_dataset(name: str, revision: str) -> Any:
    """The DatasetDict of a hub dataset (for CoNLL-2003, its parquet conversion); a clear stop when unreachable."""
    import datasets
    from huggingface_hub import HfApi, constants

    try:
        if not constants.HF_HUB_OFFLINE:
            # One quick request: load_dataset alone retries for half a minute when offline.
            HfApi().dataset_info(name, revision=revision, timeout=10)
        return datasets.load_dataset(name, revision=revision)
    except Exception as err:  # hub and datasets raise many types for "cannot reach the hub"
        reason = str(err).splitlines()[0][:200] if str(err) else ""
        raise CorpusError(
            f"Could not load {name} (revision {revision}) from the Hugging Face hub: "
            f"{type(err).__name__}: {reason}\n"
            "Offline? Point at local files instead: "
            "`spacy project run corpus . --vars.data_dir DIR`, where DIR holds "
            "train.txt, valid.txt and test.txt (or eng.train, eng.testa, eng.testb)."
        ) from None
