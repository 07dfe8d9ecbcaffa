"""Any labelled NER data to spaCy DocBins: train.spacy, dev.spacy, test.spacy and the manifest corpus.json.

Sources: a folder whose train, dev (or valid) and test files are in one of the formats below, chosen by
extension or content, or a Hugging Face hub dataset (CoNLL-2003 by default). Labels are whatever the
training data holds; dev and test may not use a label that train lacks. When only train (and dev)
are given, the rest is split off with a fixed seed. Everything is read and checked before anything
is written, so bad data leaves the output folder as it was.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from spacy.tokens import Doc, DocBin
from spacy.vocab import Vocab

from scripts.lib.atomic import atomic_target
from scripts.lib.conll import (
    ENTITY_ORIGINS,
    HF_DATASET,
    HF_REVISION,
    HF_SENTENCES_PER_DOC,
    SPLITS,
    CorpusError,
    DocMode,
    Document,
    entity_counts,
    entity_origins,
    make_docs,
    read_conll,
)
from scripts.lib.corpus_manifest import CorpusManifest, SplitSummary, manifest_path, manifest_text
from scripts.lib.dataset_source import load_hub_dataset, load_local_dataset, read_dataset_splits
from scripts.lib.labels import CONLL_LABELS, label_order
from scripts.lib.span_records import detect_span_format, pipeline_tokenizer, read_span_file
from scripts.lib.tag_schemes import Scheme, TagError, detect_scheme, parse_scheme


class DataFormat(str, Enum):
    auto = "auto"
    columns = "columns"
    docbin = "docbin"
    # spaCy / Prodigy JSONL with character spans
    spans = "spans"
    doccano = "doccano"
    label_studio = "label-studio"
    datasets = "datasets"


class Misaligned(str, Enum):
    error = "error"
    expand = "expand"
    contract = "contract"


# File stems of each split, then the names of CoNLL-2003's original release (eng.testa is dev).
SPLIT_STEMS = {"train": ("train",), "dev": ("dev", "valid", "validation"), "test": ("test",)}
ORIGINAL_NAMES = {"train": "eng.train", "dev": "eng.testa", "test": "eng.testb"}
# sha256 of the CoNLL-2003 files HF serves: only CoNLL-2003 itself carries its research-only notice.
CONLL2003_SHA256 = {
    "c99b26852dabf57ca9d30a0e892b84544cc8962003151e14a71077c55dc66db5",
    "f1f6469322876887de1d04acd43c59b02f59d5b02acf42c027132fa1bf349cb2",
    "82e0c72d262f86ad3e78b15c5d980bbf87cb205aa4bf6d2d97643f463f8d7ff7",
}
TOKEN_FORMATS = (DataFormat.columns, DataFormat.datasets)
# One tokenizer per config in a process: building one imports every spaCy entry point (seconds).
TOKENIZERS: dict[Path, Any] = {}
SPAN_FORMATS = (DataFormat.spans, DataFormat.doccano, DataFormat.label_studio)


@dataclass
class CorpusOptions:
    """How to read the source; the defaults read CoNLL-2003 and most column files as they are."""

    data_format: DataFormat = DataFormat.auto
    scheme: str = "auto"
    token_column: int = 0
    tag_column: int = -1
    tokens_column: str = "tokens"
    tags_column: str = "ner_tags"
    misaligned: Misaligned = Misaligned.error
    # The training config whose tokenizer cuts text with character spans: the cuts nlp(text) makes.
    tokenizer_config: Path | None = None
    # Split files by name inside the data folder, for names other than train.*, dev.*, test.*.
    split_files: dict[str, str] = field(default_factory=dict)
    dev_fraction: float = 0.1
    test_fraction: float = 0.1
    split_seed: int = 0


@dataclass
class SplitSource:
    split: str
    path: Path | None
    data_format: DataFormat
    documents: list[Document] = field(default_factory=list)
    docs: list[Doc] = field(default_factory=list)
    # Spans snapped to token bounds (misaligned expand/contract).
    moved: int = 0


def named_split_files(data_dir: Path, names: dict[str, str]) -> dict[str, Path]:
    """Split files named by the user (train_file, dev_file, test_file), inside `data_dir`."""
    if "train" not in names:
        raise CorpusError("dev_file or test_file given without train_file: name the training file too.")
    files = {split: data_dir / name for split, name in names.items()}
    for split, path in files.items():
        if not path.is_file():
            raise CorpusError(f"{path}: no such file (the {split} file). Check data_dir and {split}_file.")
    return files


def find_split_files(data_dir: Path, names: dict[str, str] | None = None) -> dict[str, Path]:
    """The file of each split present in `data_dir`; train is required, dev and test are split off when absent."""
    if not data_dir.is_dir():
        raise CorpusError(
            f"{data_dir}: not a folder. Set data_dir to the folder that holds train.* (and dev.* or valid.*, test.*)."
        )
    if names:
        return named_split_files(data_dir, names)
    found: dict[str, Path] = {}
    for split in SPLITS:
        candidates = [
            path
            for stem in SPLIT_STEMS[split]
            for path in sorted(data_dir.glob(f"{stem}.*"))
            if path.is_file() and not path.name.startswith(".")
        ]
        original = data_dir / ORIGINAL_NAMES[split]
        if original.is_file():
            candidates.append(original)
        if len(candidates) > 1:
            raise CorpusError(
                f"{data_dir}: more than one {split} file ({', '.join(path.name for path in candidates)}). "
                "Keep one file a split in the folder."
            )
        if candidates:
            found[split] = candidates[0]
    if "train" not in found:
        raise CorpusError(
            f"{data_dir}: no training file: expected train.<ext> (e.g. train.txt, train.jsonl, train.spacy) "
            "or eng.train in that folder, or name the files (project vars train_file, dev_file, test_file)."
        )
    return found


def first_json_line(path: Path) -> str:
    with path.open(encoding="utf-8", errors="replace") as lines:
        return next((line for line in lines if line.strip()), "")


def detect_format(path: Path, options: CorpusOptions) -> DataFormat:
    """The format of one split file: by extension, and for JSON by what its first record holds."""
    suffix = path.suffix.lower()
    if suffix == ".spacy":
        return DataFormat.docbin
    if suffix in (".parquet", ".csv"):
        return DataFormat.datasets
    if suffix in (".json", ".jsonl", ".ndjson"):
        head = first_json_line(path)
        if suffix != ".json" and f'"{options.tokens_column}"' in head and '"text"' not in head:
            return DataFormat.datasets
        try:
            return DataFormat(detect_span_format(path))
        except CorpusError:
            if suffix == ".json" or f'"{options.tokens_column}"' in head:
                return DataFormat.datasets
            raise
    return DataFormat.columns


def split_schemes(sources: Sequence[SplitSource], forced: Scheme | None) -> dict[str, Scheme]:
    """The scheme of each token-tagged split, detected unless forced.

    IOB1 and IOB2 splits may meet (each decodes by its own, to the same kind of entities); IOBES or
    BILOU beside anything else is an error. A split without entity tags takes the others' scheme.
    """
    detected: dict[str, Scheme] = {}
    for source in sources:
        sentences = [sentence for document in source.documents for sentence in document]
        if forced is not None or not any(tag != "O" for sentence in sentences for tag in sentence.tags):
            continue
        try:
            detected[source.split] = detect_scheme((s.tags, s.origins) for s in sentences)
        except TagError as err:
            raise CorpusError(str(err)) from None
    families = {Scheme.iob2 if scheme == Scheme.iob1 else scheme for scheme in detected.values()}
    if len(families) > 1:
        where = {source.split: str(source.path or source.split) for source in sources}
        listing = ", ".join(f"{where[split]}: {scheme.value}" for split, scheme in detected.items())
        raise CorpusError(
            f"the splits use different tagging schemes ({listing}). Convert them to one scheme, "
            "or set the scheme (project var scheme) if the detection is wrong."
        )
    fallback = forced or next(iter(detected.values()), Scheme.iob2)
    return {source.split: detected.get(source.split, fallback) for source in sources}


def scheme_summary(schemes: dict[str, Scheme]) -> str:
    """ "BILOU", or each split's scheme where IOB1 and IOB2 splits meet."""
    if len(set(schemes.values())) <= 1:
        return next(iter(schemes.values())).value if schemes else ""
    return ", ".join(f"{split} {scheme.value}" for split, scheme in schemes.items())


def read_docbin_split(path: Path, vocab: Vocab) -> list[Doc]:
    """A DocBin as it is, checked: readable, not empty, every entity with a label."""
    try:
        docs = list(DocBin().from_disk(path).get_docs(vocab))
    except Exception as err:  # DocBin raises ValueError, KeyError, msgpack errors on a bad file
        raise CorpusError(f"{path}: not a readable spaCy DocBin ({type(err).__name__}: {err}).") from None
    if not docs:
        raise CorpusError(f"{path}: the DocBin holds no documents.")
    for number, doc in enumerate(docs):
        origin = f"{path} doc {number}"
        if not len(doc):
            raise CorpusError(f"{origin}: an empty Doc. Remove it from the DocBin.")
        for ent in doc.ents:
            if not ent.label_.strip() or ent.label_ != ent.label_.strip():
                raise CorpusError(f"{origin}: the entity {ent.text!r} has the label {ent.label_!r}. Give it a label.")
        doc.user_data[ENTITY_ORIGINS] = [origin] * len(doc.ents)
    return docs


def check_labels(docs: dict[str, list[Doc]], sources: dict[str, str]) -> list[str]:
    """The labels of train; a dev or test label that train lacks is an error naming it and where it is."""
    labels = entity_counts(docs["train"])
    if not labels:
        raise CorpusError(f"{sources['train']}: the training data has no entities. Annotate some, or check the tags.")
    for split in ("dev", "test"):
        for doc in docs[split]:
            for ent, origin in zip(doc.ents, entity_origins(doc), strict=True):
                if ent.label_ not in labels:
                    raise CorpusError(
                        f"{origin}: the label '{ent.label_}' ({split}, {sources[split]}) is not in the training data "
                        f"({sources['train']}: {', '.join(sorted(labels))}). The model cannot learn it: relabel it, "
                        "or add training examples of it (with split-off data: another split_seed)."
                    )
    return label_order(labels)


def split_off(docs: list[Doc], missing: Sequence[str], options: CorpusOptions) -> dict[str, list[Doc]]:
    """Train's Docs shuffled with the seed and cut: each missing split takes its fraction, train keeps the rest."""
    fractions = {"dev": options.dev_fraction, "test": options.test_fraction}
    for split in missing:
        if not 0 < fractions[split] < 1:
            raise CorpusError(f"{split}_fraction must lie between 0 and 1 (got {fractions[split]}).")
    if sum(fractions[split] for split in missing) >= 1:
        raise CorpusError(
            f"{' and '.join(f'{split}_fraction' for split in missing)} leave nothing to train on "
            f"({' + '.join(str(fractions[split]) for split in missing)} >= 1). Make them smaller."
        )
    order = list(range(len(docs)))
    random.Random(options.split_seed).shuffle(order)
    taken: dict[str, list[Doc]] = {}
    at = 0
    for split in missing:
        size = max(1, round(len(docs) * fractions[split]))
        taken[split] = [docs[i] for i in sorted(order[at : at + size])]
        at += size
    if at >= len(docs):
        raise CorpusError(
            f"the training data has {len(docs)} documents: too few to split off {', '.join(missing)}. "
            "Give dev and test files, or more training data."
        )
    taken["train"] = [docs[i] for i in sorted(order[at:])]
    return taken


def is_conll2003(files: dict[str, Path], labels: list[str]) -> bool:
    """The files HF serves (by checksum), or the original release's files (by name) with CoNLL's four labels."""
    if {path.name for path in files.values()} == set(ORIGINAL_NAMES.values()):
        return set(labels) == set(CONLL_LABELS)
    return len(files) == 3 and all(
        hashlib.sha256(path.read_bytes()).hexdigest() in CONLL2003_SHA256 for path in files.values()
    )


def tokenizer(options: CorpusOptions) -> Any:
    """The pipeline's tokenizer, built once for all splits (one vocab)."""
    if options.tokenizer_config is None:
        raise CorpusError(
            "text with character spans needs the pipeline's tokenizer: "
            "pass the training config (--tokenizer-config configs/minilm_cpu.cfg)."
        )
    if options.tokenizer_config not in TOKENIZERS:
        TOKENIZERS[options.tokenizer_config] = pipeline_tokenizer(options.tokenizer_config)
    return TOKENIZERS[options.tokenizer_config]


def read_file_sources(data_dir: Path, options: CorpusOptions, vocab: Vocab) -> list[SplitSource]:
    files = find_split_files(data_dir, options.split_files)
    sources = [SplitSource(split, path, DataFormat(options.data_format)) for split, path in files.items()]
    for source in sources:
        if source.data_format == DataFormat.auto:
            source.data_format = detect_format(source.path, options)
    tabular = {source.split: source.path for source in sources if source.data_format == DataFormat.datasets}
    if tabular:
        dataset_dict = load_local_dataset(tabular)
        read = read_dataset_splits(
            dataset_dict, str(data_dir), options.tokens_column, options.tags_column, required=tuple(tabular)
        )
    for source in sources:
        if source.data_format == DataFormat.columns:
            source.documents = read_conll(source.path, options.token_column, options.tag_column)
        elif source.data_format == DataFormat.datasets:
            source.documents = read[source.split]
        elif source.data_format == DataFormat.docbin:
            source.docs = read_docbin_split(source.path, vocab)
        else:
            records = read_span_file(
                source.path, tokenizer(options), source.data_format.value, Misaligned(options.misaligned).value
            )
            source.docs, source.moved = records.docs, records.moved
        if source.data_format not in TOKEN_FORMATS and not source.docs:
            raise CorpusError(f"{source.path}: no annotated records to train or score on (all skipped or empty).")
    return sources


@dataclass
class BuiltCorpus:
    docs: dict[str, list[Doc]]
    manifest: CorpusManifest
    moved: int


def build_corpus(
    data_dir: Path | None,
    doc_mode: DocMode = DocMode.sentence,
    options: CorpusOptions | None = None,
    hf_dataset: str = HF_DATASET,
    hf_revision: str = HF_REVISION,
    hf_sentences_per_doc: int = HF_SENTENCES_PER_DOC,
    dataset_dict: Any = None,
    progress: Callable[[str], None] = lambda _: None,
) -> BuiltCorpus:
    """Read and check every split, in memory; `dataset_dict` stands in for the hub download (tests)."""
    options = options or CorpusOptions()
    doc_mode = DocMode(doc_mode)
    vocab = Vocab()
    try:
        forced = parse_scheme(options.scheme)
    except TagError as err:
        raise CorpusError(str(err)) from None
    if data_dir is not None:
        sources = read_file_sources(data_dir, options, vocab)
        source_name = str(data_dir)
        files = {source.split: source.path for source in sources}
    else:
        if dataset_dict is None:
            dataset_dict = load_hub_dataset(hf_dataset, hf_revision)
        read = read_dataset_splits(dataset_dict, hf_dataset, options.tokens_column, options.tags_column)
        sources = [SplitSource(split, None, DataFormat.datasets, documents) for split, documents in read.items()]
        source_name = f"{hf_dataset}@{hf_revision}"
        files = {}
    progress(f"Read {', '.join(f'{s.split} ({s.data_format.value})' for s in sources)} from {source_name}")
    token_sources = [source for source in sources if source.data_format in TOKEN_FORMATS]
    schemes = split_schemes(token_sources, forced)
    for source in token_sources:
        # Rows of a dataset carry no document boundaries: document mode groups them.
        per_doc = hf_sentences_per_doc if source.data_format == DataFormat.datasets else 0
        source.docs = make_docs(vocab, source.documents, doc_mode, per_doc, schemes[source.split])
    docs = {source.split: source.docs for source in sources}
    where = {source.split: str(source.path or f"{source_name} [{source.split}]") for source in sources}
    missing = [split for split in ("dev", "test") if split not in docs]
    if missing:
        docs.update(split_off(docs["train"], missing, options))
        for split in missing:
            where[split] = f"split off {where['train']} (seed {options.split_seed})"
        progress(
            f"Split off {', '.join(missing)} from {where['train']} (seed {options.split_seed}): "
            + ", ".join(f"{split} {len(docs[split]):,}" for split in SPLITS)
        )
    labels = check_labels(docs, where)
    conll2003 = is_conll2003(files, labels) if files else hf_dataset == HF_DATASET
    manifest = CorpusManifest(
        source=source_name,
        format=", ".join(sorted({source.data_format.value for source in sources})),
        scheme=scheme_summary(schemes),
        labels=labels,
        conll2003=conll2003,
        split_seed=options.split_seed,
        splits={
            split: SplitSummary(
                docs=len(docs[split]),
                tokens=sum(len(doc) for doc in docs[split]),
                entities={label: entity_counts(docs[split])[label] for label in labels},
                origin=where[split],
            )
            for split in SPLITS
        },
    )
    return BuiltCorpus(docs, manifest, sum(source.moved for source in sources))


def write_corpus(corpus: BuiltCorpus, output_dir: Path) -> None:
    """The three DocBins and the manifest, all or none: each to a temporary file, renamed once all are written."""
    targets = [output_dir / f"{split}.spacy" for split in SPLITS] + [manifest_path(output_dir)]
    try:
        with ExitStack() as renames:
            temporary = [renames.enter_context(atomic_target(path)) for path in targets]
            for split, path in zip(SPLITS, temporary, strict=False):
                DocBin(docs=corpus.docs[split], store_user_data=False).to_disk(path)
            temporary[-1].write_text(manifest_text(corpus.manifest), encoding="utf-8")
    except OSError as err:
        raise CorpusError(
            f"{output_dir}: could not write the corpus ({err.strerror or err}); nothing was replaced. "
            "Free some disk space, or point the output at a writable folder."
        ) from None


def convert(output_dir: Path, data_dir: Path | None = None, doc_mode: DocMode = DocMode.sentence, **kwargs: Any):
    """Build and write the corpus; returns the manifest (its splits hold the counts)."""
    corpus = build_corpus(data_dir, doc_mode, **kwargs)
    write_corpus(corpus, output_dir)
    return corpus.manifest
