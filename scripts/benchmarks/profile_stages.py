"""Where the time of `nlp.pipe` goes, stage by stage, with spacy-transformers' inference and with ours.

For each backend asked for (by default PyTorch fp32 and ONNX Runtime int8), one fresh process
loads the pipeline twice: as spacy-transformers runs it (`batched_inference = false` on the
encoder_backend component) and as the pipeline loads by default (batched, scripts/runtime/
batched_inference.py). It times passes of `nlp.pipe` over the test texts, one of each variant in
turn, so that both see the same load on the machine, with a timer around the function of every
stage: spaCy's tokenizer, the span getter, the span texts, the HF tokenization, the alignment, the
encoder, the transformer's annotations (the output split per Doc), the listener's alignment and
pooling, the NER and its setting of the entities. A stage's time leaves out the stages it calls;
what no stage covers (spaCy's own loop between components, the batching) is "other". Then one
pass of each variant runs under cProfile, whose busiest functions the report lists too.

A third variant, batched with `keep_trf_data = true`, prices the per-Doc `doc._.trf_data` that
the batched pipeline drops by default: in time, and in the memory that the Docs of one pass hold
through it when they are all kept (`list(nlp.pipe(texts))`). A fourth runs the encoder in one
call a batch (`encoder_batch_wordpieces = 0`), as spacy-transformers does, to price the calls of
at most 1,024 padded wordpieces.
"""

from __future__ import annotations

import cProfile
import importlib
import io
import pstats
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from wasabi import msg

from scripts.benchmarks.harness import (
    WARM_UP_TEXTS,
    count_words,
    in_fresh_process,
    require_docbin,
    sentence_texts,
)
from scripts.lib.cli import fail
from scripts.lib.machine import use_torch_threads
from scripts.lib.pipeline_loading import PipelineLoadError, load_pipeline
from scripts.lib.reports import machine_description, md_table, write_json_and_markdown

DEFAULT_BACKENDS = ("torch", "onnx-int8")
COMPONENT = "encoder_backend"
TRANSFORMER, NER = "transformer", "ner"
# name: the encoder_backend settings that make it
VARIANTS: dict[str, dict[str, Any]] = {
    "spacy_transformers": {"batched_inference": False},
    "batched": {"batched_inference": True, "keep_trf_data": False},
    "batched_keep_trf_data": {"batched_inference": True, "keep_trf_data": True},
    "batched_one_encoder_call": {"batched_inference": True, "keep_trf_data": False, "encoder_batch_wordpieces": 0},
}
# The ONNX Runtime backends also run with the other onnx_spinning than the default.
OTHER_SPINNING = "batched_other_spinning"
VARIANT_LABELS = {
    "spacy_transformers": "spacy-transformers",
    "batched": "batched (default)",
    "batched_keep_trf_data": "batched, keep_trf_data",
    "batched_one_encoder_call": "batched, one encoder call a batch (encoder_batch_wordpieces 0)",
    OTHER_SPINNING: "batched, onnx_spinning {spinning}",
}
ONNX_BACKENDS = ("onnx", "onnx-int8")


def backend_variants(backend: str, default_spinning: bool) -> dict[str, dict[str, Any]]:
    """The variants a backend runs in: the four above, and for ONNX Runtime the other spinning setting too."""
    if backend not in ONNX_BACKENDS:
        return VARIANTS
    return {**VARIANTS, OTHER_SPINNING: {**VARIANTS["batched"], "onnx_spinning": not default_spinning}}


def variant_label(name: str, settings: dict[str, Any]) -> str:
    return VARIANT_LABELS[name].format(spinning=str(settings.get("onnx_spinning", "")).lower())


# The stages, in pipeline order: name -> label in the table.
STAGES = {
    "tokenizer": "spaCy tokenizer",
    "span_getter": "span getter (windows)",
    "span_texts": "span texts",
    "hf_tokenization": "HF tokenization, to arrays",
    "alignment": "alignment of wordpieces to tokens",
    "encoder": "encoder",
    "transformer": "transformer, rest (batching by length, span lists)",
    "split_by_doc": "output split per Doc (for doc._.trf_data)",
    "set_annotations": "transformer annotations, rest",
    "listener": "listener: outputs per Doc",
    "listener_alignment": "listener: wordpieces to tokens per Doc",
    "pooling": "listener: pooling (reduce_mean)",
    "ner": "NER: parser and setting the entities",
    "entity_scores": "entity scores (the ner's action probabilities, calibrated)",
    "encoder_backend": "encoder_backend (releases the batch)",
    "other": "other (nlp.pipe's loop)",
}
TOP_FUNCTIONS = 15
BEFORE, AFTER = "spacy_transformers", "batched"


class StageClock:
    """Wall time per stage, each stage's own: while a stage runs another, the time goes to the inner one.

    Beside the wall time, the CPU time of the calling thread: on a machine that other jobs share,
    it shows the work of the single-threaded stages without the waits for a core.
    """

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self.cpu_totals: dict[str, float] = {}
        self.stack: list[str] = []
        self.since = self.cpu_since = 0.0

    def switch(self) -> None:
        """Charge the time since the last switch to the running stage."""
        now, cpu_now = time.perf_counter(), time.thread_time()
        if self.stack:
            stage = self.stack[-1]
            self.totals[stage] = self.totals.get(stage, 0.0) + now - self.since
            self.cpu_totals[stage] = self.cpu_totals.get(stage, 0.0) + cpu_now - self.cpu_since
        self.since, self.cpu_since = now, cpu_now

    def enter(self, stage: str) -> None:
        self.switch()
        self.stack.append(stage)

    def leave(self) -> None:
        self.switch()
        self.stack.pop()

    def timed(self, stage: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def timed_function(*args: Any, **kwargs: Any) -> Any:
            self.enter(stage)
            try:
                return function(*args, **kwargs)
            finally:
                self.leave()

        timed_function.__wrapped__ = function  # type: ignore[attr-defined]
        return timed_function

    @contextmanager
    def measuring(self) -> Iterator[dict[str, dict[str, float]]]:
        """Times one pass: its stages' wall and CPU seconds, "other" for the rest, "total" for all of it."""
        self.totals, self.cpu_totals = {}, {}
        self.enter("other")
        started, cpu_started = self.since, self.cpu_since
        seconds: dict[str, dict[str, float]] = {}
        try:
            yield seconds
        finally:
            self.leave()
            seconds["wall"] = {**self.totals, "total": self.since - started}
            seconds["cpu"] = {**self.cpu_totals, "total": self.cpu_since - cpu_started}


@dataclass
class Patch:
    owner: Any
    attribute: str
    original: Any
    is_key: bool = False

    def undo(self) -> None:
        if self.is_key:
            self.owner[self.attribute] = self.original
        else:
            setattr(self.owner, self.attribute, self.original)


def wrap_attribute(clock: StageClock, owner: Any, attribute: str, stage: str, patches: list[Patch]) -> None:
    """owner.attribute (a function, or a classmethod / staticmethod of a class) timed as `stage`."""
    descriptor = owner.__dict__.get(attribute) if isinstance(owner, type) else None
    patches.append(Patch(owner, attribute, descriptor if descriptor is not None else getattr(owner, attribute)))
    timed = clock.timed(stage, getattr(owner, attribute))
    setattr(owner, attribute, staticmethod(timed) if isinstance(descriptor, (classmethod, staticmethod)) else timed)


def wrap_modules(clock: StageClock, batched_module: Any) -> tuple[list[Patch], list[str]]:
    """The stage timers that sit in modules (spaCy, spacy-transformers, the batched steps), shared by all pipelines.

    batched_module: the runtime's batched_inference module, where the batched steps are looked up as they run.
    Also returns the functions that were not found where they are wrapped (module.name): their stage's time
    then goes to the stage around them, and the report says so.
    """
    import spacy.language
    import spacy_transformers.layers.transformer_model as transformer_model
    from spacy_transformers.data_classes import FullTransformerBatch, WordpieceBatch

    # Not `import spacy_transformers.layers.trfs2arrays as ...`: that name is the package's trfs2arrays function.
    trfs2arrays = importlib.import_module("spacy_transformers.layers.trfs2arrays")
    patches = [Patch(spacy.language, "_pipe", spacy.language._pipe)]
    untimed: list[str] = []
    spacy.language._pipe = timed_components(clock, spacy.language._pipe)
    for owner, attribute, stage in (
        (transformer_model, "huggingface_tokenize", "hf_tokenization"),
        (WordpieceBatch, "from_batch_encoding", "hf_tokenization"),
        (transformer_model, "get_alignment_via_offset_mapping", "alignment"),
        (transformer_model, "truncate_oversize_splits", "alignment"),
        (FullTransformerBatch, "split_by_doc", "split_by_doc"),
        (trfs2arrays, "apply_alignment", "listener_alignment"),
        (batched_module, "span_texts", "span_texts"),
        (batched_module, "tokenize", "hf_tokenization"),
        (batched_module, "align_wordpieces", "alignment"),
        (batched_module, "truncate_oversize_splits", "alignment"),
    ):
        if hasattr(owner, attribute):
            wrap_attribute(clock, owner, attribute, stage, patches)
        else:
            untimed.append(f"{getattr(owner, '__name__', owner)}.{attribute}")
    return patches, untimed


def timed_components(clock: StageClock, run_component: Callable[..., Any]) -> Callable[..., Any]:
    """spaCy's _pipe, which runs one component of nlp.pipe over the Docs, timed batch by batch as that component.

    The Docs are taken in batches of the batch size the component gets, so that its time leaves out
    the components before it, which make its Docs as it asks for them; it batches them the same way.
    """
    from spacy.util import minibatch

    def run_timed(docs: Any, proc: Any, name: str, default_error_handler: Any, kwargs: Any) -> Iterator[Any]:
        for batch in minibatch(docs, kwargs["batch_size"]):
            clock.enter(name if name in STAGES else "other")
            try:
                done = list(run_component(batch, proc, name, default_error_handler, kwargs))
            finally:
                clock.leave()
            yield from done

    return run_timed


def wrap_pipeline(clock: StageClock, nlp: Any) -> None:
    """The stage timers that sit on this pipeline's objects: its tokenizer, components and layers."""
    from spacy_transformers.layers.listener import TransformerListener

    patches: list[Patch] = []
    transformer, ner = nlp.get_pipe(TRANSFORMER), nlp.get_pipe(NER)
    wrap_attribute(clock, nlp, "tokenizer", "tokenizer", patches)
    wrap_attribute(clock, transformer, "set_annotations", "set_annotations", patches)
    transformer.model.attrs["get_spans"] = clock.timed("span_getter", transformer.model.attrs["get_spans"])
    encoder = transformer.model.layers[0]
    encoder._func = clock.timed("encoder", encoder._func)
    for node in ner.model.walk():
        if len(node.layers) == 2 and isinstance(node.layers[0], TransformerListener):
            node._func = clock.timed("listener", node._func)
            pooling = node.layers[1].layers[0]
            pooling._func = clock.timed("pooling", pooling._func)


def batched_inference_module(component: Any) -> Any:
    """The batched_inference module beside the encoder_backend component's (the project's runtime, or the wheel's)."""
    package = type(component).__module__.rpartition(".")[0]
    return importlib.import_module(f"{package}.batched_inference")


def load_variant(model: str, backend: str, settings: dict[str, Any]) -> Any:
    return load_pipeline(model, backend=backend, backend_settings=settings)


def pipe_all(nlp: Any, texts: list[str]) -> None:
    for _ in nlp.pipe(texts):
        pass


def profile_backend(model: str, backend: str, texts: list[str], repetitions: int, threads: int) -> dict[str, Any]:
    """Runs in its own process: the variants' stage times over alternate passes, then a cProfile pass of each."""
    use_torch_threads(threads)
    # The errors with their fix, the ONNX graph made before anything is timed, the component's defaults.
    component = load_pipeline(model, -1, backend).get_pipe(COMPONENT)
    variants = backend_variants(backend, component.onnx_spinning)
    clock = StageClock()
    pipelines = {name: load_variant(model, backend, settings) for name, settings in variants.items()}
    patches, untimed = wrap_modules(clock, batched_inference_module(component))
    for nlp in pipelines.values():
        wrap_pipeline(clock, nlp)
        pipe_all(nlp, texts[:WARM_UP_TEXTS])
    passes: dict[str, list[dict[str, dict[str, float]]]] = {name: [] for name in pipelines}
    for _ in range(repetitions):
        for name, nlp in pipelines.items():
            with clock.measuring() as seconds:
                pipe_all(nlp, texts)
            passes[name].append(seconds)
    profiles = {name: busiest_functions(nlp, texts) for name, nlp in pipelines.items()}
    held, entities = {}, {}
    for name, nlp in pipelines.items():
        docs = list(nlp.pipe(texts))
        held[name] = bytes_held(docs) / 1024**2
        entities[name] = [[(ent.start, ent.end, ent.label_) for ent in doc.ents] for doc in docs]
    for patch in reversed(patches):
        patch.undo()
    words = count_words(texts)
    return {
        name: {
            "label": variant_label(name, variants[name]),
            "settings": variants[name],
            "words_per_second": words / statistics.median(each["wall"]["total"] for each in passes[name]),
            "us_per_word": per_word(passes[name], "wall", words),
            "cpu_us_per_word": per_word(passes[name], "cpu", words),
            "passes": passes[name],
            "busiest_functions": profiles[name],
            "kept_docs_hold_mb": held[name],
            "n_entities": sum(len(each) for each in entities[name]),
            # Sentences whose entities differ from those of spacy-transformers' inference.
            "differing_sentences": sum(a != b for a, b in zip(entities[name], entities[BEFORE], strict=True)),
            "untimed_functions": untimed,
        }
        for name in pipelines
    }


def per_word(passes: list[dict[str, dict[str, float]]], clock: str, words: int) -> dict[str, float]:
    """Each stage's mean microseconds per word over the passes, by the wall or the CPU clock."""
    return {
        stage: 1e6 * statistics.mean(each[clock].get(stage, 0.0) for each in passes) / words
        for stage in [*STAGES, "total"]
    }


def busiest_functions(nlp: Any, texts: list[str]) -> list[dict[str, Any]]:
    """One pass under cProfile: the functions with the most time of their own (profiler overhead included)."""
    profiler = cProfile.Profile()
    profiler.enable()
    pipe_all(nlp, texts)
    profiler.disable()
    stats = pstats.Stats(profiler, stream=io.StringIO())
    rows = []
    for (filename, line, function), (_, calls, own, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        where = function if filename == "~" else f"{short_path(filename)}:{line}({function})"
        rows.append({"function": where, "calls": calls, "own_s": own, "cumulative_s": cumulative})
    return sorted(rows, key=lambda row: -row["own_s"])[:TOP_FUNCTIONS]


def short_path(filename: str) -> str:
    """A source path from its package down (site-packages/spacy/language.py -> spacy/language.py)."""
    parts = Path(filename).parts
    for marker in ("site-packages", "dist-packages"):
        if marker in parts:
            return "/".join(parts[parts.index(marker) + 1 :])
    return "/".join(parts[-2:])


def bytes_held(docs: list[Any]) -> int:
    """Bytes that the Docs keep alive beyond their own tokens, through doc.user_data (doc._.trf_data and the like).

    Everything reachable from the user_data values, each object once, torch storages by their
    size; spaCy's own objects (Docs, Spans, the vocabulary) are not followed.
    """
    import gc
    import types

    import numpy
    import torch
    from spacy.tokens import Doc, Span, Token
    from spacy.vocab import Vocab

    not_followed = (Doc, Span, Token, Vocab, type, types.ModuleType, types.FunctionType, types.MethodType)
    seen: set[int] = set()
    storages: set[int] = set()
    total = 0
    pending = [value for doc in docs for value in doc.user_data.values()]
    while pending:
        obj = pending.pop()
        if id(obj) in seen or isinstance(obj, not_followed):
            continue
        seen.add(id(obj))
        if isinstance(obj, torch.Tensor):
            storage = obj.untyped_storage()
            if storage.data_ptr() not in storages:
                storages.add(storage.data_ptr())
                total += storage.nbytes()
            continue
        if isinstance(obj, numpy.ndarray):  # numpy does not report a view's base to gc
            if obj.base is not None:
                pending.append(obj.base)
            elif obj.ctypes.data not in storages:
                storages.add(obj.ctypes.data)
                total += obj.nbytes
            continue
        total += sys.getsizeof(obj)
        pending.extend(gc.get_referents(obj))
    return total


def stage_table(variants: dict[str, Any]) -> str:
    """Each stage's µs per word (wall, and the calling thread's CPU) and share of the pass, before and after."""
    before, after = variants[BEFORE], variants[AFTER]
    header = ["stage"]
    for variant in (before, after):
        header += [f"{variant['label']} µs/word", "CPU µs/word", "share"]
    rows = []
    for stage, label in STAGES.items():
        if not (before["us_per_word"][stage] or after["us_per_word"][stage]):
            continue
        cells = []
        for variant in (before, after):
            wall, cpu = variant["us_per_word"][stage], variant["cpu_us_per_word"][stage]
            share = f"{100 * wall / variant['us_per_word']['total']:.0f}%"
            cells += [f"{wall:.1f}", f"{cpu:.1f}", share] if wall else ["", "", ""]
        rows.append([label, *cells])
    around = ["**all but the encoder**"]
    totals = ["**total**"]
    speeds = ["words/s (median pass)"]
    for variant in (before, after):
        wall, cpu = variant["us_per_word"], variant["cpu_us_per_word"]
        around += [
            f"**{wall['total'] - wall['encoder']:.1f}**",
            f"**{cpu['total'] - cpu['encoder']:.1f}**",
            f"{100 * (wall['total'] - wall['encoder']) / wall['total']:.0f}%",
        ]
        totals += [f"**{wall['total']:.1f}**", f"{cpu['total']:.1f}", ""]
        speeds += [f"{variant['words_per_second']:,.0f}", "", ""]
    return md_table(header, [*rows, around, totals, speeds])


def variant_table(variants: dict[str, Any]) -> str:
    """Every variant's speed and the memory its kept Docs hold."""
    rows = [
        [
            variant["label"],
            f"{variant['words_per_second']:,.0f}",
            f"{variant['us_per_word']['total']:.1f}",
            f"{variant['kept_docs_hold_mb']:,.1f}",
            f"{variant['n_entities']:,}",
            f"{variant['differing_sentences']:,}",
        ]
        for variant in variants.values()
    ]
    header = [
        "variant",
        "words/s (median pass)",
        "µs/word",
        "MB the Docs of a pass hold, all kept",
        "entities",
        f"sentences whose entities differ from {variants[BEFORE]['label']}",
    ]
    return md_table(header, rows)


def functions_table(variant: dict[str, Any], top: int = 10) -> str:
    rows = [
        [f"`{row['function']}`", f"{row['calls']:,}", f"{row['own_s']:.3f}", f"{row['cumulative_s']:.3f}"]
        for row in variant["busiest_functions"][:top]
    ]
    return md_table(["function", "calls", "own s", "cumulative s"], rows)


def untimed_note(variants: dict[str, Any]) -> list[str]:
    untimed = sorted({name for variant in variants.values() for name in variant.get("untimed_functions", [])})
    if not untimed:
        return []
    names = ", ".join(f"`{name}`" for name in untimed)
    return [f"Not timed (not found where the profile wraps them): {names}; their time is in the stage that calls them."]


def markdown(result: dict[str, Any]) -> str:
    sections = [
        f"{result['n_texts']:,} CoNLL test sentences ({result['n_words']:,} words), {result['threads']} threads, "
        f"mean of {result['repetitions']} passes per variant, the variants' passes alternating; "
        f"{result['machine']}."
    ]
    for backend, variants in result["backends"].items():
        sections += [
            f"### Backend `{backend}`",
            stage_table(variants),
            *untimed_note(variants),
            variant_table(variants),
            *[
                f"Busiest functions under cProfile, {variants[name]['label']} (own time, profiler overhead included):"
                f"\n\n{functions_table(variants[name])}"
                for name in (BEFORE, AFTER)
            ],
        ]
    return "\n\n".join(sections) + "\n"


def main(
    spacy_model: str = typer.Argument(..., help="Trained spaCy pipeline (folder or package)"),
    test_docbin: Path = typer.Argument(..., help="corpus/test.spacy"),
    output: Path = typer.Argument(..., help="metrics/benchmark_profile.json"),
    backend: list[str] = typer.Option(list(DEFAULT_BACKENDS), help="Encoder backends to profile (repeat the option)"),
    repetitions: int = typer.Option(3, help="Timed passes per variant (alternating)"),
    threads: int = typer.Option(2, help="torch threads (ONNX Runtime takes torch's)"),
    limit: int = typer.Option(0, help="Only the first N test sentences (0: all)"),
) -> None:
    from scripts.runtime.backends import BACKENDS

    require_docbin(test_docbin)
    unknown = [name for name in backend if name not in BACKENDS]
    if unknown:
        fail(f"Unknown backend {', '.join(unknown)}", f"Use --backend with one of {', '.join(BACKENDS)}.")
    texts = sentence_texts(test_docbin, limit)
    result: dict[str, Any] = {"backends": {}}
    try:
        for name in backend:
            msg.info(f"{name}: {len(texts):,} texts x {repetitions} passes per variant")
            result["backends"][name] = in_fresh_process(
                name, profile_backend, spacy_model, name, texts, repetitions, threads, expected=(PipelineLoadError,)
            )
            speeds = ", ".join(
                f"{run['label']} {run['words_per_second']:,.0f}" for v, run in result["backends"][name].items()
            )
            msg.text(f"  words/s: {speeds}")
    except PipelineLoadError as err:
        fail("Cannot load the spaCy pipeline", str(err))
    result.update(
        {
            "n_texts": len(texts),
            "n_words": count_words(texts),
            "repetitions": repetitions,
            "threads": threads,
            "machine": machine_description(),
            "options": {"spacy_model": spacy_model, "test_docbin": str(test_docbin), "backends": list(backend)},
        }
    )
    write_json_and_markdown(output, result, markdown(result))
    msg.good(f"Wrote {output} and its .md")


if __name__ == "__main__":
    typer.run(main)
