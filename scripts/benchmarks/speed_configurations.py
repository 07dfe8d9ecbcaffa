"""The configurations of the speed benchmark (scripts.benchmarks.speed), in one table, and what runs them.

Each row names a configuration: the key of its figures in benchmark_speed.json, its row in the
Markdown table (and in gpu_report's), how to load it, whether it runs on the GPU, and, for the
spaCy pipelines, the ratios the benchmark reports: against the HF pipeline at batch 32, against
the bare encoder of the same backend (its ceiling: tokenizing, in batches of 32), against that
encoder alone on the very calls the pipeline makes (pre-tokenized: what is left is spaCy's own
work), and against HF optimum's pipeline of the same precision.

Each backend of scripts/runtime/backends.py gets three rows made alike: the spaCy pipeline, its
ceiling and the encoder alone, keyed by `speed_key(kind, backend)`; the other rows (the HF
pipelines, HF optimum's, the pipeline without its entity scores) are listed.

Nothing heavy is imported here: gpu_report reads the labels without torch; a runner imports what
it needs when it is made, in the measuring process.
"""

from __future__ import annotations

import platform
import tempfile
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy

from scripts.benchmarks.harness import WARM_UP_TEXTS, in_fresh_process
from scripts.lib.packages import module_available
from scripts.runtime.backends import BACKENDS, INT8_BACKENDS, ONNX_BACKENDS, TORCH, TORCH_INT8

ENCODER_BATCH = 32
# The configuration every spaCy pipeline is compared with ("vs HF batch 32").
HF_BASELINE = "hf_pipeline_bs32"


@dataclass
class Runner:
    """One configuration, loaded: `run` processes the texts; `test_f1`, if it can score, is its test F1 (strict).

    `prepare`, where there is one, gets the texts before the timed passes (what must stay out of them);
    `raw_text_f1`, where there is one, scores the configuration on the test sentences' raw text;
    `details`: what it chose for this machine, recorded with its figures.
    """

    run: Callable[[list[str]], None]
    test_f1: Callable[[], float] | None = None
    prepare: Callable[[list[str]], None] | None = None
    raw_text_f1: Callable[[], dict[str, Any]] | None = None
    details: dict[str, Any] = field(default_factory=dict)


def spacy_runner(model: str, backend: str, gpu_id: int, test_docbin: str, exclude: tuple[str, ...] = ()) -> Runner:
    from scripts.lib.pipeline_loading import load_pipeline
    from scripts.lib.scoring import evaluate, load_gold_docs

    nlp = load_pipeline(model, gpu_id, backend, exclude=exclude)

    def run(texts: list[str]) -> None:
        for _ in nlp.pipe(texts):
            pass

    def test_f1() -> float:
        gold_docs = load_gold_docs(Path(test_docbin), nlp.vocab)
        return evaluate(nlp, gold_docs, nlp.batch_size).results["seqeval_strict"]["f1"]

    return Runner(run, test_f1)


def hf_pipeline_runner(model: str, batch_size: int, gpu_id: int) -> Runner:
    from transformers import pipeline

    tagger = pipeline("token-classification", model=model, aggregation_strategy="simple", device=gpu_id)

    def run(texts: list[str]) -> None:
        for _ in tagger(texts, batch_size=batch_size):
            pass

    return Runner(run)


def encoder_runner(
    encoder: str, backend: str, gpu_id: int, spacy_model: str = "", pipeline_calls: bool = False
) -> Runner:
    """The bare encoder: every linear layer in int8 for the int8 backends (a bound for the pipeline's options).

    By default it tokenizes the texts, sorted by length, in batches of ENCODER_BATCH: the ceiling.
    pipeline_calls: the passes, the warm-up's included, run the encoder on the very inputs that the spaCy
    pipeline `spacy_model` gives it for their texts (RecordedCalls, before the passes; one call a
    transformer batch on a GPU, as there): the encoder alone, as the pipeline calls it.
    """
    import torch
    from transformers import AutoModel, AutoTokenizer

    from scripts.runtime.onnx_encoder import OnnxRuntimeEncoder, output_signature
    from scripts.runtime.onnx_export import build_graph, require_onnx_packages
    from scripts.runtime.torch_int8 import quantize_linear_int8

    device = torch.device(f"cuda:{gpu_id}" if gpu_id >= 0 else "cpu")
    tokenizer = AutoTokenizer.from_pretrained(encoder)
    model = AutoModel.from_pretrained(encoder).eval().to(device)
    if backend == TORCH_INT8:
        model = quantize_linear_int8(model)
    elif backend in ONNX_BACKENDS:
        require_onnx_packages()
        with tempfile.TemporaryDirectory(prefix="benchmark-onnx-") as folder:
            graph = build_graph(model, tokenizer, backend, [], Path(folder)).read_bytes()
        model = OnnxRuntimeEncoder(graph, *output_signature(model, tokenizer))

    def batches(texts: list[str]) -> Iterator[Any]:
        ordered = sorted(texts, key=len)
        for start in range(0, len(ordered), ENCODER_BATCH):
            yield tokenizer(ordered[start : start + ENCODER_BATCH], padding=True, return_tensors="pt").to(device)

    def record(text_lists: list[list[str]]) -> list[list[dict[str, Any]]]:
        # Recorded in a process of its own, so that this one's peak memory stays the encoder's.
        one_call = 0 if device.type != "cpu" else None
        recorded = in_fresh_process("encoder calls", recorded_encoder_calls, spacy_model, text_lists, one_call)
        return [
            [{name: torch.from_numpy(array).to(device) for name, array in inputs.items()} for inputs in calls]
            for calls in recorded
        ]

    # One path for the warm-up and the timed passes alike, chosen here: no falling back to the other.
    encoder_inputs = RecordedCalls(record) if pipeline_calls else batches

    def run(texts: list[str]) -> None:
        with torch.inference_mode():
            for inputs in encoder_inputs(texts):
                model(**inputs)

    return Runner(run, prepare=encoder_inputs.prepare if pipeline_calls else None)


class RecordedCalls:
    """The encoder's inputs, call by call, recorded for each list of texts prepared: what the passes replay.

    harness.timed_passes warms up on the first WARM_UP_TEXTS texts: their calls are recorded with the
    texts', in the same process, so that the warm-up replays recorded calls as the timed passes do.
    Texts that were not prepared are an error, never another path.
    """

    def __init__(self, record: Callable[[list[list[str]]], list[list[Any]]]) -> None:
        self.record = record
        # Keyed by the texts themselves: the warm-up's slice is a new list, with an id of its own.
        self.calls: dict[tuple[str, ...], list[Any]] = {}

    def prepare(self, texts: list[str]) -> None:
        text_lists = list({tuple(each): each for each in (texts[:WARM_UP_TEXTS], texts)}.values())
        for each, calls in zip(text_lists, self.record(text_lists), strict=True):
            self.calls[tuple(each)] = calls

    def __call__(self, texts: list[str]) -> list[Any]:
        calls = self.calls.get(tuple(texts))
        if calls is None:
            raise RuntimeError(
                f"No encoder calls recorded for these {len(texts)} texts: call prepare(texts) before the passes "
                f"(it records the texts' calls and those of their first {WARM_UP_TEXTS}, the warm-up's)."
            )
        return calls


def recorded_encoder_calls(
    spacy_model: str, text_lists: list[list[str]], encoder_batch_wordpieces: int | None = None
) -> list[list[dict[str, numpy.ndarray]]]:
    """The encoder's inputs, call by call, as the spaCy pipeline `spacy_model` makes them on the CPU, per list of texts.

    The pipeline, loaded once, runs over each list with a recorder around its encoder's forward: its
    batches, the transformer's sub-batches by length, its windows and its calls of at most
    `encoder_batch_wordpieces` padded wordpieces (None: the pipeline's own setting; 0: one call a
    transformer batch, as on a GPU) are all its own.
    """
    from scripts.lib.pipeline_loading import load_pipeline

    overrides = {} if encoder_batch_wordpieces is None else {"encoder_batch_wordpieces": encoder_batch_wordpieces}
    nlp = load_pipeline(spacy_model, backend_settings=overrides)
    encoder = nlp.get_pipe("transformer").model.layers[0]
    forward = encoder._func
    recorded: list[list[dict[str, numpy.ndarray]]] = []

    def recording_forward(model: Any, wordpieces: Any, is_train: bool) -> Any:
        inputs = {"input_ids": wordpieces.input_ids, "attention_mask": wordpieces.attention_mask}
        if wordpieces.token_type_ids is not None:
            inputs["token_type_ids"] = wordpieces.token_type_ids
        recorded[-1].append({name: numpy.array(array, dtype=numpy.int64) for name, array in inputs.items()})
        return forward(model, wordpieces, is_train)

    encoder._func = recording_forward
    for texts in text_lists:
        recorded.append([])
        for _ in nlp.pipe(texts):
            pass
    return recorded


def optimum_runner(hf_model: str, precision: str, test_docbin: str) -> Runner:
    """The HF recipe's model as a new user speeds it up on a CPU: HF optimum's ONNX Runtime model, HF's pipeline.

    fp32: the model exported by optimum (ORTModelForTokenClassification, export=True); int8: that
    export through optimum's dynamic quantization, per channel, in its configuration for this CPU
    (optimum_int8_config, recorded in the run under QUANTIZATION_CONFIG). ONNX Runtime gets torch's
    thread count, as the project's backends do. Its raw-text F1 is scored with each aggregation
    strategy of the HF pipeline, the best reported.
    """
    import onnxruntime
    import torch
    from optimum.onnxruntime import AutoQuantizationConfig, ORTModelForTokenClassification, ORTQuantizer, pipeline
    from transformers import AutoTokenizer

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    folder = tempfile.TemporaryDirectory(prefix="benchmark-optimum-")
    details = {}
    with quiet_export():
        model = ORTModelForTokenClassification.from_pretrained(hf_model, export=True, session_options=options)
        if precision == "int8":
            model.save_pretrained(folder.name)
            quantizer = ORTQuantizer.from_pretrained(folder.name)
            details[QUANTIZATION_CONFIG] = this_cpus_int8_config()
            config = getattr(AutoQuantizationConfig, details[QUANTIZATION_CONFIG])(is_static=False, per_channel=True)
            quantizer.quantize(save_dir=Path(folder.name) / "int8", quantization_config=config)
            model = ORTModelForTokenClassification.from_pretrained(
                Path(folder.name) / "int8", file_name="model_quantized.onnx", session_options=options
            )
    tokenizer = AutoTokenizer.from_pretrained(hf_model)
    tagger = pipeline("token-classification", model=model, tokenizer=tokenizer, device=-1)

    def run(texts: list[str]) -> None:
        for _ in tagger(texts, aggregation_strategy=SPEED_AGGREGATION, batch_size=ENCODER_BATCH):
            pass

    def raw_text_f1() -> dict[str, Any]:
        from scripts.benchmarks.hf_reference import AGGREGATIONS, hf_char_spans, read_gold_texts
        from scripts.lib.raw_text import score_texts

        golds = read_gold_texts(Path(test_docbin))
        texts, gold = [each.text for each in golds], [each.entities for each in golds]
        scores = {
            strategy: score_texts(
                texts,
                gold,
                [
                    hf_char_spans(entities)
                    for entities in tagger(texts, aggregation_strategy=strategy, batch_size=ENCODER_BATCH)
                ],
            )["f1"]
            for strategy in AGGREGATIONS
        }
        best = max(scores, key=scores.__getitem__)
        folder.cleanup()
        return {"f1": scores[best], "best_aggregation": best, "by_aggregation": scores}

    return Runner(run, raw_text_f1=raw_text_f1, details=details)


class UnsupportedCpuError(ValueError):
    """This CPU cannot run a configuration: the message says what it lacks."""


# optimum's dynamic int8 configurations (AutoQuantizationConfig's methods) for x86, best first, with the
# /proc/cpuinfo flags each needs. ONNX Runtime's AVX-512 int8 kernels need AVX512BW beside AVX512F: without
# it they fall back to AVX2's, which the avx2 configuration (uint8 weights) suits.
OPTIMUM_X86_INT8_CONFIGS = (
    ("avx512_vnni", {"avx512_vnni"}),
    ("avx512", {"avx512f", "avx512bw"}),
    ("avx2", {"avx2"}),
)
ARM64_MACHINES = {"aarch64", "arm64"}  # platform.machine() on Linux, on macOS
# The key of the run that records the configuration optimum_int8_config chose.
QUANTIZATION_CONFIG = "quantization_config"


def optimum_int8_config(flags: Collection[str], machine: str) -> str:
    """optimum's dynamic int8 configuration for a CPU with these /proc/cpuinfo flags and this platform.machine().

    The name of its AutoQuantizationConfig method: avx512_vnni, avx512 or avx2 on x86, by the flags;
    arm64 on ARM64. UnsupportedCpuError where none fits (an x86 CPU without AVX2).
    """
    for name, needed in OPTIMUM_X86_INT8_CONFIGS:
        if needed <= set(flags):
            return name
    if machine.lower() in ARM64_MACHINES:
        return "arm64"
    raise UnsupportedCpuError(
        f"no dynamic int8 configuration of optimum fits this CPU ({machine or 'unknown machine'} without avx2; "
        "optimum has them for avx512_vnni, avx512, avx2 and arm64): run the benchmark on such a CPU for this row"
    )


def cpu_flags() -> set[str]:
    """This CPU's flags as /proc/cpuinfo lists them (Linux); none elsewhere."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    return next((set(line.split(":", 1)[1].split()) for line in lines if line.startswith("flags")), set())


def this_cpus_int8_config() -> str:
    return optimum_int8_config(cpu_flags(), platform.machine())


@contextmanager
def quiet_export() -> Iterator[None]:
    """optimum's export and quantization log and warn about what is not for the benchmark's reader to act on."""
    import logging
    import warnings

    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(logging.NOTSET)


# (the benchmark's options, the CUDA device or -1) -> the loaded configuration
RunnerFactory = Callable[[dict[str, Any], int], Runner]


def spacy_pipeline(backend: str, exclude: tuple[str, ...] = ()) -> RunnerFactory:
    return lambda options, gpu_id: spacy_runner(
        options["spacy_model"], backend, gpu_id, options["test_docbin"], exclude
    )


def hf_pipeline(batch_size: int) -> RunnerFactory:
    return lambda options, gpu_id: hf_pipeline_runner(options["hf_model"], batch_size, gpu_id)


def bare_encoder(backend: str, pipeline_calls: bool = False) -> RunnerFactory:
    return lambda options, gpu_id: encoder_runner(
        options["encoder"], backend, gpu_id, options["spacy_model"], pipeline_calls
    )


def optimum_pipeline(precision: str) -> RunnerFactory:
    return lambda options, gpu_id: optimum_runner(options["hf_model"], precision, options["test_docbin"])


@dataclass(frozen=True)
class SpeedConfiguration:
    name: str
    label: str
    runner: RunnerFactory
    # On the benchmark's gpu_id: the PyTorch fp32 configurations; int8 and ONNX Runtime run on the CPU whatever it says.
    on_gpu: bool = False
    # The HF pipelines run the recipe's model: their test F1 is the one scripts.benchmarks.hf_reference measured.
    f1_from_reference: bool = False
    # The spaCy pipelines: the backend in words, and the keys of words/s over HF_BASELINE's and over the ceiling's,
    # over the encoder alone on pre-tokenized batches, and over HF optimum's pipeline of the same precision.
    engine: str = ""
    ratio_vs_hf: str = ""
    ceiling: str = ""
    ratio_vs_ceiling: str = ""
    encoder_alone: str = ""
    ratio_vs_encoder_alone: str = ""
    peer: str = ""
    ratio_vs_peer: str = ""
    # The optional extra of pyproject.toml that brings what it runs on, and the modules it checks for.
    extra: str = ""
    modules: tuple[str, ...] = ()
    # What it needs of the CPU, where it needs something: raises UnsupportedCpuError on a CPU without it.
    cpu_check: Callable[[], object] | None = None

    def load(self, options: dict[str, Any]) -> Runner:
        return self.runner(options, options["gpu_id"] if self.on_gpu else -1)

    def missing_modules(self) -> list[str]:
        return [name for name in self.modules if not module_available(name)]

    def unsupported_cpu(self) -> str:
        """Why this CPU cannot run it; empty when it can."""
        try:
            if self.cpu_check:
                self.cpu_check()
        except UnsupportedCpuError as err:
            return str(err)
        return ""


ONNX_RUNTIME = {"extra": "onnx", "modules": ("onnxruntime", "onnx")}
OPTIMUM = {"extra": "optimum", "modules": ("optimum.onnxruntime", "onnxruntime", "onnx")}
# The aggregation of the HF pipeline rows' timed passes (each is scored with all of them).
SPEED_AGGREGATION = "simple"
# The PyTorch fp32 pipeline (SCORES_ON) against itself loaded without its entity_scores component: what the
# scores cost, as words/s with them over words/s without (SCORES_RATIO).
SCORES_ON, SCORES_OFF = "spacy", "spacy_scores_off"
SCORES_RATIO = "ratio_scores_on_vs_off"


# The keys of a backend's rows in benchmark_speed.json, by the SpeedConfiguration field of its spaCy pipeline's row
# that holds each. {backend} is "" for torch, the default, else the backend's name without "torch-" (ONNX Runtime is
# named, PyTorch is not), in snake case: spacy, ratio_vs_hf_bs32, encoder_calls_onnx_int8, ratio_int8_vs_encoder_int8.
BACKEND_KEYS = {
    "name": "spacy{backend}",
    "ratio_vs_hf": "ratio{backend}_vs_hf_bs32",
    "ceiling": "encoder_forward{backend}",
    "ratio_vs_ceiling": "ratio{backend}_vs_encoder{backend}",
    "encoder_alone": "encoder_calls{backend}",
    "ratio_vs_encoder_alone": "ratio{backend}_vs_encoder_calls{backend}",
    "peer": "optimum{backend}",
    "ratio_vs_peer": "ratio{backend}_vs_optimum{backend}",
}
# HF optimum's pipelines run on ONNX Runtime: the peers of the ONNX Runtime backends only.
PEER_KINDS = ("peer", "ratio_vs_peer")
# The bare encoder's two rows per backend: the kind of its key, the end of its label, whether it replays the
# pipeline's calls.
BARE_ENCODER_ROWS = (
    ("ceiling", f"length-sorted batches of {ENCODER_BATCH} (ceiling)", False),
    ("encoder_alone", "pre-tokenized, in the pipeline's encoder calls", True),
)


def speed_key(kind: str, backend: str) -> str:
    """The key of `kind` (one of BACKEND_KEYS) for `backend`.

    speed_key("name", "torch") is spacy; speed_key("ratio_vs_peer", "onnx-int8") is
    ratio_onnx_int8_vs_optimum_onnx_int8.
    """
    suffix = "" if backend == TORCH else "_" + backend.removeprefix(f"{TORCH}-").replace("-", "_")
    return BACKEND_KEYS[kind].format(backend=suffix)


def engine(backend: str) -> str:
    """The backend in words: its runtime and precision."""
    runtime = "ONNX Runtime" if backend in ONNX_BACKENDS else "PyTorch"
    return f"{runtime} {'int8' if backend in INT8_BACKENDS else 'fp32'}"


def where_it_runs(backend: str) -> dict[str, Any]:
    """PyTorch fp32 runs on the benchmark's gpu_id; the ONNX Runtime backends need the onnx extra."""
    return {"on_gpu": backend == TORCH, **(ONNX_RUNTIME if backend in ONNX_BACKENDS else {})}


def spacy_pipeline_row(backend: str) -> SpeedConfiguration:
    keys = {
        kind: speed_key(kind, backend) for kind in BACKEND_KEYS if backend in ONNX_BACKENDS or kind not in PEER_KINDS
    }
    return SpeedConfiguration(
        label=f"spaCy pipeline, {engine(backend)} ({'this project' if backend == TORCH else f'backend {backend}'})",
        runner=spacy_pipeline(backend),
        engine=engine(backend),
        **keys,
        **where_it_runs(backend),
    )


def bare_encoder_rows(backend: str) -> list[SpeedConfiguration]:
    return [
        SpeedConfiguration(
            speed_key(kind, backend),
            f"bare encoder forward, {engine(backend)}, {label_end}",
            bare_encoder(backend, pipeline_calls),
            **where_it_runs(backend),
        )
        for kind, label_end, pipeline_calls in BARE_ENCODER_ROWS
    ]


# The table's order: the spaCy pipelines, the listed rows, then each backend's bare encoder rows.
CONFIGURATIONS = (
    *(spacy_pipeline_row(backend) for backend in BACKENDS),
    SpeedConfiguration(
        SCORES_OFF,
        'spaCy pipeline, PyTorch fp32, entity scores off (loaded with exclude=["entity_scores"])',
        spacy_pipeline(TORCH, exclude=("entity_scores",)),
        on_gpu=True,
    ),
    SpeedConfiguration("hf_pipeline_bs1", "HF pipeline, batch 1", hf_pipeline(1), on_gpu=True, f1_from_reference=True),
    SpeedConfiguration(HF_BASELINE, "HF pipeline, batch 32", hf_pipeline(32), on_gpu=True, f1_from_reference=True),
    SpeedConfiguration(
        "optimum_onnx",
        "HF optimum pipeline, ONNX Runtime fp32, batch 32",
        optimum_pipeline("fp32"),
        **OPTIMUM,
    ),
    SpeedConfiguration(
        "optimum_onnx_int8",
        "HF optimum pipeline, ONNX Runtime dynamic int8 (per channel), batch 32",
        optimum_pipeline("int8"),
        cpu_check=this_cpus_int8_config,
        **OPTIMUM,
    ),
    *(row for backend in BACKENDS for row in bare_encoder_rows(backend)),
)
BY_NAME = {configuration.name: configuration for configuration in CONFIGURATIONS}
SPACY_PIPELINES = tuple(configuration for configuration in CONFIGURATIONS if configuration.ratio_vs_hf)
