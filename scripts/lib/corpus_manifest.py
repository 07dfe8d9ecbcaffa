"""corpus/corpus.json, the corpus step's account of the DocBins beside it: source, labels, splits.

The steps after the corpus read the labels and the data's identity here rather than guess them from
the DocBins: packaging, for one, gives CoNLL-2003 its research-only licence and sources, and other
data a description built from its own labels and source. Shape:

    {"source": "eriktks/conll2003", "format": "columns", "scheme": "IOB2",
     "labels": ["LOC", "MISC", "ORG", "PER"], "conll2003": true, "split_seed": 0,
     "splits": {"train": {"docs": 14041, "tokens": 203621, "entities": {"PER": 6600, ...},
                          "origin": "data/train.txt"},
                "dev": {...}, "test": {...}}}

`conll2003` is true only when the data is CoNLL-2003 itself. Fields this module does not know are
ignored on reading, so the corpus step may record more without breaking older readers.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from scripts.lib.atomic import write_text_atomic

MANIFEST_NAME = "corpus.json"
REBUILD = "Run `spacy project run corpus` to write it again."


class ManifestError(Exception):
    """A missing or malformed manifest: the message names the file, the field and the fix."""


@dataclass
class SplitSummary:
    """One split's DocBin: its size, its gold entities per label, and where it came from."""

    docs: int
    tokens: int
    entities: dict[str, int]
    # The file the split was read from, or how the corpus step made it ("split off data/train.txt (seed 0)").
    origin: str


@dataclass
class CorpusManifest:
    source: str  # a path or a hub dataset name
    format: str
    scheme: str  # the tag scheme the source was read in
    labels: list[str]
    conll2003: bool
    split_seed: int | None
    splits: dict[str, SplitSummary] = field(default_factory=dict)


def manifest_path(corpus_dir: Path) -> Path:
    return corpus_dir / MANIFEST_NAME


def manifest_text(manifest: CorpusManifest) -> str:
    return json.dumps(asdict(manifest), indent=2, ensure_ascii=False) + "\n"


def write_manifest(corpus_dir: Path, manifest: CorpusManifest) -> Path:
    """corpus_dir/corpus.json, written whole or not at all; returns its path."""
    path = manifest_path(corpus_dir)
    write_text_atomic(path, manifest_text(manifest))
    return path


def read_manifest(corpus_dir: Path) -> CorpusManifest:
    """The manifest in corpus_dir; ManifestError naming the file, the field and the fix when it is missing or bad."""
    path = manifest_path(corpus_dir)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ManifestError(
            f"{path}: no such file: the corpus step writes it beside the DocBins. Run `spacy project run corpus`."
        ) from None
    except json.JSONDecodeError as err:
        raise ManifestError(f"{path}:{err.lineno}: not valid JSON ({err.msg}). {REBUILD}") from None
    except UnicodeDecodeError:
        raise ManifestError(f"{path}: not UTF-8 text. {REBUILD}") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: must hold a JSON object, not {type(data).__name__}. {REBUILD}")
    where = str(path)
    labels = checked(data, "labels", list, where)
    if not labels or not all(isinstance(label, str) and label for label in labels):
        raise ManifestError(f"{where}: field 'labels' must be a non-empty list of non-empty strings. {REBUILD}")
    if len(set(labels)) != len(labels):
        raise ManifestError(f"{where}: field 'labels' names a label twice. {REBUILD}")
    seed = data.get("split_seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ManifestError(f"{where}: field 'split_seed' must be an integer or null, not {seed!r}. {REBUILD}")
    splits = checked(data, "splits", dict, where)
    return CorpusManifest(
        source=checked(data, "source", str, where),
        format=checked(data, "format", str, where),
        scheme=checked(data, "scheme", str, where),
        labels=list(labels),
        conll2003=checked(data, "conll2003", bool, where),
        split_seed=seed,
        splits={name: read_split(summary, f"{where}: splits.{name}") for name, summary in splits.items()},
    )


def read_split(data: Any, where: str) -> SplitSummary:
    if not isinstance(data, dict):
        raise ManifestError(f"{where} must be a JSON object, not {type(data).__name__}. {REBUILD}")
    entities = checked(data, "entities", dict, where)
    if not all(isinstance(count, int) and not isinstance(count, bool) for count in entities.values()):
        raise ManifestError(f"{where}: field 'entities' must map each label to a count. {REBUILD}")
    return SplitSummary(
        docs=checked(data, "docs", int, where),
        tokens=checked(data, "tokens", int, where),
        entities=dict(entities),
        origin=checked(data, "origin", str, where),
    )


def checked(data: dict[str, Any], name: str, kind: type, where: str) -> Any:
    """data[name] when it is a `kind` (a bool is no int here), else ManifestError naming the field."""
    if name not in data:
        raise ManifestError(f"{where}: missing field '{name}'. {REBUILD}")
    value = data[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        wrong = type(value).__name__
        raise ManifestError(f"{where}: field '{name}' must be of type {kind.__name__}, not {wrong}. {REBUILD}")
    return value
