"""Every use of spaCy's, spacy-transformers' and thinc's internals by the runtime, and the check that they are there.

The batched inference replaces a layer's forward function (`Model._func`), the transformer's
`set_annotations` and the pipeline's NER component (`Language._components`); the backends swap the
encoder module inside spacy-transformers' shim (`_model`, `_hfmodel`); the greedy NER and the entity
scores step spaCy's parser from Python (`moves.init_batch`, `transition_states`,
`_ensure_labels_are_added`). None of that is public API, so a new release may move it. Each use goes
through a function of this module, and `check_internals` (run as the pipeline loads, by the
encoder_backend and entity_scores components) confirms that everything listed here is where
and what it was in the tested versions: if not, the load stops with a message naming the versions
and the fix, rather than an AttributeError mid-pipe or a silent fallback.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import Any

from .backends import EncoderBackendError

# The versions the runtime was written against and is tested with (pyproject.toml pins the same).
TESTED_VERSIONS = {"spacy": ">=3.8.18,<3.9", "spacy-transformers": "==1.4.0", "thinc": ">=8.3,<8.4"}
# The key under which spaCy keeps the value of doc._.trf_data (spacy.tokens.underscore.Underscore).
TRF_DATA_KEY = ("._.", "trf_data", None, None)

# Functions looked up by module and name each time they are called, so that a wrapper put in their
# module (the profile's stage timers) sees the runtime's calls too: name -> (module, attribute, parameters).
FUNCTIONS = {
    "transformer_forward": ("spacy_transformers.layers.transformer_model", "forward", ("model", "docs", "is_train")),
    "trfs2arrays_forward": ("spacy_transformers.layers.trfs2arrays", "forward", ("model", "trf_datas", "is_train")),
    "chain_forward": ("thinc.layers.chain", "forward", ("model", "X", "is_train")),
    "truncate_oversize_splits": (
        "spacy_transformers.truncate",
        "truncate_oversize_splits",
        ("wordpieces", "align", "max_length"),
    ),
}
# Attributes of classes the runtime reads or replaces: (module, class, attributes).
CLASS_ATTRIBUTES = (
    ("thinc.model", "Model", ("_func", "attrs", "layers", "shims", "walk")),
    (
        "spacy.pipeline",
        "EntityRecognizer",
        ("moves", "cfg", "model", "transition_states", "_ensure_labels_are_added", "_multitasks", "_rehearsal_model"),
    ),
    (
        "spacy.pipeline._parser_internals.transition_system",
        "TransitionSystem",
        ("init_batch", "get_class_name", "n_moves"),
    ),
    ("spacy_transformers.pipeline_component", "Transformer", ("set_annotations", "listeners", "listening_components")),
    ("spacy_transformers.data_classes", "WordpieceBatch", ("empty",)),
)
# Fields of spacy-transformers' data classes that the runtime builds itself.
DATACLASS_FIELDS = (
    ("spacy_transformers.data_classes", "WordpieceBatch", ("strings", "input_ids", "attention_mask", "lengths")),
    ("spacy_transformers.data_classes", "FullTransformerBatch", ("spans", "wordpieces", "model_output", "align")),
)
# Instance attributes of spacy-transformers' shim, set in its __init__ (no class attribute to look up).
SHIM_ATTRIBUTES = ("_model", "_hfmodel")


def installed_versions() -> dict[str, str]:
    versions = {}
    for package in TESTED_VERSIONS:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def resolve(module: str, attribute: str) -> Any:
    return getattr(importlib.import_module(module), attribute)


def missing_internals(nlp: Any = None) -> list[str]:
    """What of the internals listed here this environment lacks, each as `where: what is wrong`; empty if none.

    nlp: a pipeline to check too (Language keeps its components in an instance attribute).
    """
    import dataclasses

    problems = []
    if nlp is not None and not isinstance(getattr(nlp, "_components", None), list):
        problems.append("spacy.language.Language._components: not a list of (name, component)")
    for module, attribute, parameters in FUNCTIONS.values():
        where = f"{module}.{attribute}"
        try:
            function = resolve(module, attribute)
        except (ImportError, AttributeError):
            problems.append(f"{where}: missing")
            continue
        found = tuple(inspect.signature(function).parameters)
        if found[: len(parameters)] != parameters:
            problems.append(f"{where}: takes ({', '.join(found)}), not ({', '.join(parameters)})")
    for module, name, attributes in CLASS_ATTRIBUTES:
        try:
            owner = resolve(module, name)
        except (ImportError, AttributeError):
            problems.append(f"{module}.{name}: missing")
            continue
        absent = [attribute for attribute in attributes if not hasattr(owner, attribute)]
        problems += [f"{module}.{name}.{attribute}: missing" for attribute in absent]
    for module, name, expected in DATACLASS_FIELDS:
        try:
            fields = {field.name for field in dataclasses.fields(resolve(module, name))}
        except (ImportError, AttributeError, TypeError):
            problems.append(f"{module}.{name}: missing or not a dataclass")
            continue
        problems += [f"{module}.{name}.{field}: missing field" for field in expected if field not in fields]
    problems += trf_data_key_problems()
    return problems


def trf_data_key_problems() -> list[str]:
    """Whether doc._.trf_data lives in doc.user_data under TRF_DATA_KEY (the batched annotations drop it there)."""
    from spacy.tokens import Doc
    from spacy.vocab import Vocab

    try:
        resolve("spacy_transformers.pipeline_component", "install_extensions")()
    except (ImportError, AttributeError):
        return ["spacy_transformers.pipeline_component.install_extensions: missing"]
    doc = Doc(Vocab(), words=["probe"])
    if not Doc.has_extension("trf_data"):
        return ["Doc._.trf_data: not registered by spacy_transformers"]
    marker = object()
    doc._.trf_data = marker
    if doc.user_data.get(TRF_DATA_KEY) is not marker:
        return [f"Doc._.trf_data: not stored in doc.user_data under {TRF_DATA_KEY}"]
    return []


def check_internals(component: str, nlp: Any) -> None:
    """Stop the load, with the versions and the fix, when this environment's internals are not the tested ones."""
    problems = missing_internals(nlp)
    if problems:
        found = ", ".join(f"{package} {version}" for package, version in installed_versions().items())
        tested = " ".join(f"'{package}{spec}'" for package, spec in TESTED_VERSIONS.items())
        raise EncoderBackendError(
            f"{component}: this pipeline's runtime relies on internals of spaCy and spacy-transformers that "
            f"differ in the installed versions ({found}): {'; '.join(problems)}. Install the versions it was "
            f"built and tested with: pip install {tested}"
        )


def upstream(name: str) -> Callable[..., Any]:
    """The function FUNCTIONS names, as its module holds it now."""
    module, attribute, _ = FUNCTIONS[name]
    return resolve(module, attribute)


def truncate_oversize_splits(wordpieces: Any, align: Any, max_length: int) -> tuple[Any, Any]:
    return upstream("truncate_oversize_splits")(wordpieces, align, max_length)


# --- thinc models: their forward function ------------------------------------------------


def forward_of(model: Any) -> Callable[..., Any]:
    return model._func


def replace_forward(model: Any, forward: Callable[..., Any]) -> None:
    model._func = forward


# --- spacy-transformers' shim: the HF encoder module inside it ------------------------------


def encoder_module(shim: Any) -> Any:
    return shim._model


def replace_encoder_module(shim: Any, module: Any) -> None:
    shim._model = module


def hf_tokenizer(shim: Any) -> Any:
    return shim._hfmodel.tokenizer


def hf_config(transformer_model: Any) -> Any:
    """The HF configuration of a TransformerModel's encoder."""
    return transformer_model.layers[0].shims[0]._hfmodel.transformer.config


def encoder_shims(model: Any) -> list[Any]:
    """The shims of a model's layers that hold an encoder module, checked for the attributes the backends use."""
    shims = [shim for node in model.walk() for shim in node.shims]
    for shim in shims:
        missing = [attribute for attribute in SHIM_ATTRIBUTES if not hasattr(shim, attribute)]
        if missing:
            found = ", ".join(f"{package} {version}" for package, version in installed_versions().items())
            raise EncoderBackendError(
                f"spacy-transformers' {type(shim).__name__} has no {', '.join(missing)} here ({found}): install "
                f"spacy-transformers{TESTED_VERSIONS['spacy-transformers']}."
            )
    return shims


# --- the transformer component's annotations ---------------------------------------------------


def replace_set_annotations(transformer: Any, set_annotations: Callable[..., Any]) -> None:
    transformer.set_annotations = set_annotations


def upstream_set_annotations(transformer: Any, docs: Sequence[Any], predictions: Any) -> None:
    type(transformer).set_annotations(transformer, docs, predictions)


# --- the pipeline's components ------------------------------------------------------------


def pipeline_components(nlp: Any) -> list[tuple[str, Any]]:
    return list(nlp._components)


def replace_component(nlp: Any, name: str, component: Any) -> None:
    """The pipeline's component `name` replaced in place: same name, config and position (a subclass of it)."""
    for index, (each, _) in enumerate(nlp._components):
        if each == name:
            nlp._components[index] = (name, component)
            return
    raise KeyError(name)


# --- spaCy's transition-based parser, stepped from Python ------------------------------------


def ensure_labels(parser: Any, docs: Sequence[Any]) -> None:
    parser._ensure_labels_are_added(docs)


def parser_state(parser: Any) -> dict[str, Any]:
    """What a parser keeps besides its constructor's arguments, for a copy of it to carry over."""
    return {"_multitasks": parser._multitasks, "_rehearsal_model": parser._rehearsal_model}


def init_states(parser: Any, docs: Sequence[Any]) -> list[Any]:
    return parser.moves.init_batch(list(docs))


def step(parser: Any, states: Sequence[Any], scores: Any) -> list[Any]:
    """The parser's transition of each state by its best valid action in `scores`; the states not final yet."""
    return parser.transition_states(states, scores)
