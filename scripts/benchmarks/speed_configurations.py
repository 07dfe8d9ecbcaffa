"""The configurations of the speed benchmark (scripts.benchmarks.speed), in one table, and what runs them.

Each row names a configuration: the key of its figures in benchmark_speed.json, its row in the
Markdown table (and in gpu_report's), how to load it, whether it runs on the GPU, and, for the
spaCy pipelines, the ratios the benchmark reports: against the HF pipeline at batch 32, against
the bare encoder of the same backend (its ceiling: tokenizing, in batches of 32), against that
encoder alone on the very calls the pipeline makes (pre-tokenized: what is left is spaCy's own
work), and against HF optimum's pipeline of the same precision.

Nothing heavy is imported here: gpu_report reads the labels without torch; a runner imports what
it needs when it is made, in the measuring process.
"""

from __future__ import annotations

import importlib.util
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy

ENCODER_BATCH = 32
# The configuration every spaCy pipeline is compared with ("vs HF batch 32").
HF_BASELINE = "hf_pipeline_bs32"


@dataclass
class Runner:
    """One configuration, loaded: `run` processes the texts; `test_f1`, if it can score, is its test F1 (strict).

    `prepare`, where there is one, gets the texts before the timed passes (what must stay out of them);
    `raw_text_f1`, where there is one, scores the configuration on the test sentences' raw text.
    """

    run: Callable[[list[str]], None]
    test_f1: Callable[[], float] | None = None
    prepare: Callable[[list[str]], None] | None = None
    raw_text_f1: Callable[[], dict[str, Any]] | None = None


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
    pipeline_calls: the timed passes run the encoder on the very inputs that the spaCy pipeline
    `spacy_model` gives it for these texts (recorded_encoder_calls, before the passes; one call a
    transformer batch on a GPU, as there): the encoder alone, as the pipeline calls it.
    """
    import torch
    from transformers import AutoModel, AutoTokenizer

    from scripts.benchmarks.harness import in_fresh_process
    from scripts.components.encoder_backend import (
        ONNX,
        ONNX_INT8,
        TORCH_INT8,
        OnnxRuntimeEncoder,
        build_graph,
        output_signature,
        quantize_linear_int8,
        require_onnx_packages,
    )

    device = torch.device(f"cuda:{gpu_id}" if gpu_id >= 0 else "cpu")
    tokenizer = AutoTokenizer.from_pretrained(encoder)
    model = AutoModel.from_pretrained(encoder).eval().to(device)
    if backend == TORCH_INT8:
        model = quantize_linear_int8(model)
    elif backend in (ONNX, ONNX_INT8):
        require_onnx_packages()
        with tempfile.TemporaryDirectory(prefix="benchmark-onnx-") as folder:
            graph = build_graph(model, tokenizer, backend, [], Path(folder)).read_bytes()
        model = OnnxRuntimeEncoder(graph, *output_signature(model, tokenizer))

    def batches(texts: list[str]) -> Iterator[Any]:
        ordered = sorted(texts, key=len)
        for start in range(0, len(ordered), ENCODER_BATCH):
            yield tokenizer(ordered[start : start + ENCODER_BATCH], padding=True, return_tensors="pt").to(device)

    def calls(texts: list[str]) -> Iterator[dict[str, Any]]:
        # Recorded in a process of its own, so that this one's peak memory stays the encoder's.
        one_call = 0 if device.type != "cpu" else None
        recorded = in_fresh_process("encoder calls", recorded_encoder_calls, spacy_model, texts, one_call)
        for inputs in recorded:
            yield {name: torch.from_numpy(array).to(device) for name, array in inputs.items()}

    prepared: dict[int, list[Any]] = {}  # id of the texts' list -> its encoder inputs, made before the passes

    def prepare(texts: list[str]) -> None:
        prepared[id(texts)] = list(calls(texts))

    def run(texts: list[str]) -> None:
        with torch.inference_mode():
            for inputs in prepared.get(id(texts)) or batches(texts):
                model(**inputs)

    return Runner(run, prepare=prepare if pipeline_calls else None)


def recorded_encoder_calls(
    spacy_model: str, texts: list[str], encoder_batch_wordpieces: int | None = None
) -> list[dict[str, numpy.ndarray]]:
    """The encoder's inputs, call by call, as the spaCy pipeline `spacy_model` makes them for `texts` on the CPU.

    The pipeline runs over the texts with a recorder around its encoder's forward: its batches,
    the transformer's sub-batches by length, its windows and its calls of at most
    `encoder_batch_wordpieces` padded wordpieces (None: the pipeline's own setting; 0: one call a
    transformer batch, as on a GPU) are all its own.
    """
    from scripts.lib.pipeline_loading import load_pipeline

    overrides = {} if encoder_batch_wordpieces is None else {"encoder_batch_wordpieces": encoder_batch_wordpieces}
    nlp = load_pipeline(spacy_model, backend_settings=overrides)
    encoder = nlp.get_pipe("transformer").model.layers[0]
    forward = encoder._func
    calls: list[dict[str, numpy.ndarray]] = []

    def recording_forward(model: Any, wordpieces: Any, is_train: bool) -> Any:
        inputs = {"input_ids": wordpieces.input_ids, "attention_mask": wordpieces.attention_mask}
        if wordpieces.token_type_ids is not None:
            inputs["token_type_ids"] = wordpieces.token_type_ids
        calls.append({name: numpy.array(array, dtype=numpy.int64) for name, array in inputs.items()})
        return forward(model, wordpieces, is_train)

    encoder._func = recording_forward
    for _ in nlp.pipe(texts):
        pass
    return calls


def optimum_runner(hf_model: str, precision: str, test_docbin: str) -> Runner:
    """The HF recipe's model as a new user speeds it up on a CPU: HF optimum's ONNX Runtime model, HF's pipeline.

    fp32: the model exported by optimum (ORTModelForTokenClassification, export=True); int8: that
    export through optimum's dynamic quantization, its avx512_vnni configuration, per channel.
    ONNX Runtime gets torch's thread count, as the project's backends do. Its raw-text F1 is
    scored with each aggregation strategy of the HF pipeline, the best reported.
    """
    import onnxruntime
    import torch
    from optimum.onnxruntime import AutoQuantizationConfig, ORTModelForTokenClassification, ORTQuantizer, pipeline
    from transformers import AutoTokenizer

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    folder = tempfile.TemporaryDirectory(prefix="benchmark-optimum-")
    with quiet_export():
        model = ORTModelForTokenClassification.from_pretrained(hf_model, export=True, session_options=options)
        if precision == "int8":
            model.save_pretrained(folder.name)
            quantizer = ORTQuantizer.from_pretrained(folder.name)
            config = AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=True)
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

    return Runner(run, raw_text_f1=raw_text_f1)


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


# The backends are spelled out as scripts/components/encoder_backend.py names them (TORCH, TORCH_INT8, ONNX,
# ONNX_INT8): importing that module here would import torch.
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

    def load(self, options: dict[str, Any]) -> Runner:
        return self.runner(options, options["gpu_id"] if self.on_gpu else -1)

    def missing_modules(self) -> list[str]:
        return [name for name in self.modules if not module_installed(name)]


def module_installed(name: str) -> bool:
    """Whether `name` (dotted or not) can be imported; a missing parent package means no."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ModuleNotFoundError, ValueError):
        return False


ONNX_RUNTIME = {"extra": "onnx", "modules": ("onnxruntime", "onnx")}
OPTIMUM = {"extra": "optimum", "modules": ("optimum.onnxruntime", "onnxruntime", "onnx")}
# The aggregation of the HF pipeline rows' timed passes (each is scored with all of them).
SPEED_AGGREGATION = "simple"
# The PyTorch fp32 pipeline (SCORES_ON) against itself loaded without its entity_scores component: what the
# scores cost, as words/s with them over words/s without (SCORES_RATIO).
SCORES_ON, SCORES_OFF = "spacy", "spacy_scores_off"
SCORES_RATIO = "ratio_scores_on_vs_off"


CONFIGURATIONS = (
    SpeedConfiguration(
        "spacy",
        "spaCy pipeline, PyTorch fp32 (this project)",
        spacy_pipeline("torch"),
        on_gpu=True,
        engine="PyTorch fp32",
        ratio_vs_hf="ratio_vs_hf_bs32",
        ceiling="encoder_forward",
        ratio_vs_ceiling="ratio_vs_encoder",
        encoder_alone="encoder_calls",
        ratio_vs_encoder_alone="ratio_vs_encoder_calls",
    ),
    SpeedConfiguration(
        "spacy_int8",
        "spaCy pipeline, PyTorch int8 (backend torch-int8)",
        spacy_pipeline("torch-int8"),
        engine="PyTorch int8",
        ratio_vs_hf="ratio_int8_vs_hf_bs32",
        ceiling="encoder_forward_int8",
        ratio_vs_ceiling="ratio_int8_vs_encoder_int8",
        encoder_alone="encoder_calls_int8",
        ratio_vs_encoder_alone="ratio_int8_vs_encoder_calls_int8",
    ),
    SpeedConfiguration(
        "spacy_onnx",
        "spaCy pipeline, ONNX Runtime fp32 (backend onnx)",
        spacy_pipeline("onnx"),
        engine="ONNX Runtime fp32",
        ratio_vs_hf="ratio_onnx_vs_hf_bs32",
        ceiling="encoder_forward_onnx",
        ratio_vs_ceiling="ratio_onnx_vs_encoder_onnx",
        encoder_alone="encoder_calls_onnx",
        ratio_vs_encoder_alone="ratio_onnx_vs_encoder_calls_onnx",
        peer="optimum_onnx",
        ratio_vs_peer="ratio_onnx_vs_optimum_onnx",
        **ONNX_RUNTIME,
    ),
    SpeedConfiguration(
        "spacy_onnx_int8",
        "spaCy pipeline, ONNX Runtime int8 (backend onnx-int8)",
        spacy_pipeline("onnx-int8"),
        engine="ONNX Runtime int8",
        ratio_vs_hf="ratio_onnx_int8_vs_hf_bs32",
        ceiling="encoder_forward_onnx_int8",
        ratio_vs_ceiling="ratio_onnx_int8_vs_encoder_onnx_int8",
        encoder_alone="encoder_calls_onnx_int8",
        ratio_vs_encoder_alone="ratio_onnx_int8_vs_encoder_calls_onnx_int8",
        peer="optimum_onnx_int8",
        ratio_vs_peer="ratio_onnx_int8_vs_optimum_onnx_int8",
        **ONNX_RUNTIME,
    ),
    SpeedConfiguration(
        SCORES_OFF,
        'spaCy pipeline, PyTorch fp32, entity scores off (loaded with exclude=["entity_scores"])',
        spacy_pipeline("torch", exclude=("entity_scores",)),
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
        "HF optimum pipeline, ONNX Runtime dynamic int8 (avx512_vnni, per channel), batch 32",
        optimum_pipeline("int8"),
        **OPTIMUM,
    ),
    SpeedConfiguration(
        "encoder_forward",
        "bare encoder forward, PyTorch fp32, length-sorted batches of 32 (ceiling)",
        bare_encoder("torch"),
        on_gpu=True,
    ),
    SpeedConfiguration(
        "encoder_calls",
        "bare encoder forward, PyTorch fp32, pre-tokenized, in the pipeline's encoder calls",
        bare_encoder("torch", pipeline_calls=True),
        on_gpu=True,
    ),
    SpeedConfiguration(
        "encoder_forward_int8",
        "bare encoder forward, PyTorch int8, length-sorted batches of 32 (ceiling)",
        bare_encoder("torch-int8"),
    ),
    SpeedConfiguration(
        "encoder_calls_int8",
        "bare encoder forward, PyTorch int8, pre-tokenized, in the pipeline's encoder calls",
        bare_encoder("torch-int8", pipeline_calls=True),
    ),
    SpeedConfiguration(
        "encoder_forward_onnx",
        "bare encoder forward, ONNX Runtime fp32, length-sorted batches of 32 (ceiling)",
        bare_encoder("onnx"),
        **ONNX_RUNTIME,
    ),
    SpeedConfiguration(
        "encoder_calls_onnx",
        "bare encoder forward, ONNX Runtime fp32, pre-tokenized, in the pipeline's encoder calls",
        bare_encoder("onnx", pipeline_calls=True),
        **ONNX_RUNTIME,
    ),
    SpeedConfiguration(
        "encoder_forward_onnx_int8",
        "bare encoder forward, ONNX Runtime int8, length-sorted batches of 32 (ceiling)",
        bare_encoder("onnx-int8"),
        **ONNX_RUNTIME,
    ),
    SpeedConfiguration(
        "encoder_calls_onnx_int8",
        "bare encoder forward, ONNX Runtime int8, pre-tokenized, in the pipeline's encoder calls",
        bare_encoder("onnx-int8", pipeline_calls=True),
        **ONNX_RUNTIME,
    ),
)
BY_NAME = {configuration.name: configuration for configuration in CONFIGURATIONS}
SPACY_PIPELINES = tuple(configuration for configuration in CONFIGURATIONS if configuration.ratio_vs_hf)
