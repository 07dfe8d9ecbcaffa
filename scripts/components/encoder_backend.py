"""The encoder's backend as a load option of the pipeline: the `encoder_backend` component.

The component sits in the pipeline and does nothing at inference. Its one setting, `backend`,
chooses at load time what runs the fine-tuned encoder (the bulk of the work on a CPU):

    nlp = spacy.load("en_bert_ner", config={"components.encoder_backend.backend": "onnx"})

- `torch` (default): PyTorch in fp32, as trained.
- `torch-int8`: PyTorch with the encoder's linear layers quantized to int8 as the pipeline loads
  (`torch.ao.quantization.quantize_dynamic`, per-channel weights), except those in `keep_fp32`.
- `onnx`: ONNX Runtime in fp32, on an ONNX graph exported from the loaded weights.
- `onnx-int8`: ONNX Runtime on that graph with its linear layers quantized to int8
  (`onnxruntime.quantization.quantize_dynamic`, per-channel), except those in `keep_fp32`.

Every backend stands in for the HF torch module inside spacy-transformers' shim and returns the
same output (same type, names, shapes), so the alignment to spaCy tokens and the NER on top are
untouched; training always runs in PyTorch. All but `torch` run on the CPU only, and a pipeline
loaded with one refuses `to_disk` (it would write weights that are not the trained ones).

On a CPU, with any backend, the component also batches the inference around the encoder
(`batched_inference`, default true; see install_batched_inference): spacy-transformers'
tokenization, alignment and pooling once per batch in numpy, and the NER's greedy decoding with
the GIL held; the encoder in calls of at most `encoder_batch_wordpieces` padded wordpieces, rows
sorted by length (see predict_in_calls). Same entities; `doc._.trf_data` only with
`keep_trf_data = true`. `onnx_spinning` says whether ONNX Runtime's pool threads busy-wait between
parallel sections (its default) or sleep.

The ONNX graphs are made on first use, from the weights just loaded, and cached under
`cache_dir` (default: $EN_BERT_NER_ONNX_CACHE, else en_bert_ner/onnx under $XDG_CACHE_HOME or
~/.cache), named by a hash
of the weights and the versions that made them: later loads read the cached file. ONNX Runtime
and onnx come with the `onnx` extra (see ONNX_INSTALL).

`spacy package --code scripts/components/encoder_backend.py` ships this file inside the wheel, so the
installed package offers the option without this project. Because the package imports this file
as it loads, it is also where the pipeline is made safe for `nlp.pipe(texts, n_process=N)` with
Linux's default start method, fork (see `install_fork_handlers`).

Pipelines trained before this component existed carry `encoder_int8` (settings `enabled`,
`transformer`, `keep_fp32`): that factory is registered here too, as the same component, so they
load as before, `enabled = true` still means `torch-int8`, and `backend` works on them as well.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy
import srsly
import torch
from spacy.language import Language
from spacy.pipeline import EntityRecognizer
from spacy.tokens import Doc

FACTORY = "encoder_backend"
LEGACY_FACTORY = "encoder_int8"
BACKEND_SETTING = f"components.{FACTORY}.backend"
LEGACY_ENABLED_SETTING = f"components.{LEGACY_FACTORY}.enabled"
TORCH, TORCH_INT8, ONNX, ONNX_INT8 = "torch", "torch-int8", "onnx", "onnx-int8"
BACKENDS = (TORCH, TORCH_INT8, ONNX, ONNX_INT8)
ONNX_BACKENDS = (ONNX, ONNX_INT8)
# The exact versions the project tests; also the `onnx` extra of pyproject.toml.
ONNX_INSTALL = "pip install onnxruntime==1.32.0 onnx==1.23.2"
# Part of every cached graph's name: raise it when the export changes, so that old graphs are not reused.
EXPORT_FORMAT = "1"
ONNX_OPSET = 17
TOKENIZERS_PARALLELISM = "TOKENIZERS_PARALLELISM"
# Padded wordpieces per encoder call at inference on a CPU (see predict_in_calls); docs/benchmarks.md has the
# sweep that chose it.
DEFAULT_ENCODER_BATCH_WORDPIECES = 1024
# Overrides the default cache folder of the ONNX graphs (a component's cache_dir setting overrides both).
CACHE_VARIABLE = "EN_BERT_NER_ONNX_CACHE"


class EncoderBackendError(ValueError):
    """The backend cannot be used: the message says why and what to do instead."""


# --- torch int8 ------------------------------------------------------------------


def quantize_linear_int8(torch_model: Any, keep_fp32: Sequence[str] = ()) -> Any:
    """A copy of the module with its nn.Linear layers quantized to int8, except those named in keep_fp32.

    Weights are quantized ahead, per output channel (per-tensor scales cost about twice the F1
    on CoNLL); activations are quantized per batch as they come.
    """
    from torch.ao.quantization import per_channel_dynamic_qconfig

    check_keep_fp32(torch_model, keep_fp32)
    linear = linear_layer_names(torch_model)
    qconfig = {name: per_channel_dynamic_qconfig for name in linear if name not in keep_fp32}
    # torch warns that its quantization API moves to torchao; the pinned torch still ships and supports it.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"torch\.(ao\.quantization|quantize_per_tensor)")
        return torch.ao.quantization.quantize_dynamic(torch_model, qconfig)


def linear_layer_names(torch_model: Any) -> list[str]:
    return [name for name, module in torch_model.named_modules() if isinstance(module, torch.nn.Linear)]


def check_keep_fp32(torch_model: Any, keep_fp32: Sequence[str]) -> None:
    linear = linear_layer_names(torch_model)
    unknown = sorted(set(keep_fp32) - set(linear))
    if unknown:
        raise EncoderBackendError(
            f"keep_fp32 names {', '.join(unknown)}, which the encoder has no linear layer of that name for. "
            f"Its linear layers are named like {linear[0]!r} ... {linear[-1]!r}."
        )


# --- ONNX export -----------------------------------------------------------------

# What spacy-transformers passes to the encoder (layers/transformer_model.py,
# _convert_transformer_inputs): token_type_ids only where the tokenizer makes them.
ENCODER_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
SAMPLE_TEXTS = ["Peter Blackburn reported from Brussels .", "EU rejects German call to boycott British lamb ."]


def require_onnx_packages() -> None:
    missing = [name for name in ("onnxruntime", "onnx") if not module_available(name)]
    if missing:
        raise EncoderBackendError(
            f"The ONNX Runtime backends need {' and '.join(missing)}, which is not installed: `{ONNX_INSTALL}` "
            "(in this project: `pip install -e '.[onnx]'`). Or load with backend 'torch' or 'torch-int8'."
        )


def module_available(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def keyword_encoder(torch_model: Any, input_names: Sequence[str], output_names: Sequence[str]) -> Any:
    """The encoder with positional inputs and a tuple of outputs, which torch.onnx traces; HF takes keywords."""

    class PositionalEncoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = torch_model

        def forward(self, *tensors: Any) -> tuple[Any, ...]:
            output = self.encoder(**dict(zip(input_names, tensors, strict=True)), return_dict=True)
            return tuple(output[name] for name in output_names)

    return PositionalEncoder()


def export_onnx(torch_model: Any, tokenizer: Any, path: Path) -> None:
    """The encoder as an ONNX graph at `path`, with dynamic batch and sequence axes; checked against torch."""

    sample = tokenizer(SAMPLE_TEXTS, padding=True, return_tensors="pt")
    input_names = [name for name in ENCODER_INPUTS if name in sample]
    inputs = tuple(sample[name] for name in input_names)
    torch_model = torch_model.eval()
    with torch.inference_mode():
        reference = torch_model(**dict(zip(input_names, inputs, strict=True)), return_dict=True)
    not_tensors = [name for name, value in reference.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise EncoderBackendError(
            f"the encoder returns {', '.join(not_tensors)} as tuples of tensors, which the ONNX backends do not "
            "carry. Remove output_hidden_states / output_attentions from the transformer's transformer_config."
        )
    output_names = list(reference.keys())
    dynamic_axes = {name: {0: "batch", 1: "sequence"} for name in input_names}
    for name in output_names:
        dynamic_axes[name] = {0: "batch", 1: "sequence"} if reference[name].dim() >= 3 else {0: "batch"}
    wrapper = keyword_encoder(torch_model, input_names, output_names)
    # The pinned torch's TorchScript exporter (dynamo=False: the torch.export-based one would need
    # onnxscript) says it is deprecated and notes traced constants; neither is for the user to act on.
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            inputs,
            str(path),
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=dynamic_axes,
            opset_version=ONNX_OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    session = make_session(path, threads=1)
    feeds = {name: tensor.numpy() for name, tensor in zip(input_names, inputs, strict=True)}
    produced = session.run(output_names, feeds)
    for name, array in zip(output_names, produced, strict=True):
        difference = float(numpy.abs(array - reference[name].numpy()).max())
        if difference > 1e-3:
            raise EncoderBackendError(
                f"the exported ONNX graph's {name} differs from PyTorch's by {difference:.3g}: the export is wrong. "
                "Load with backend 'torch' and report this."
            )


def quantize_onnx_int8(fp32_path: Path, int8_path: Path, keep_fp32: Sequence[str]) -> None:
    """int8 copy of the graph: linear layers' MatMuls with per-channel int8 weights, activations quantized per batch.

    keep_fp32 holds torch module names (encoder.layer.0.output.dense); the exporter names each
    layer's MatMul after its module path (/encoder/encoder/layer.0/output/dense/MatMul), so the
    MatMuls under a kept module stay fp32.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(fp32_path), load_external_data=False)
    kept = [node.name for node in graph.graph.node if node.op_type == "MatMul" and module_path(node.name) in keep_fp32]
    # quantize_dynamic logs a suggestion to pre-process the graph on the root logger; measured, it changes nothing here.
    logging.disable(logging.WARNING)
    try:
        quantize_dynamic(
            str(fp32_path), str(int8_path), per_channel=True, weight_type=QuantType.QInt8, nodes_to_exclude=kept
        )
    finally:
        logging.disable(logging.NOTSET)


def module_path(node_name: str) -> str:
    """'/encoder/encoder/layer.0/output/dense/MatMul' -> 'encoder.layer.0.output.dense' (no wrapper prefix)."""
    scopes = node_name.strip("/").split("/")[:-1]
    return ".".join(scopes[1:])


def default_cache_dir() -> Path:
    if os.environ.get(CACHE_VARIABLE):
        return Path(os.environ[CACHE_VARIABLE]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "en_bert_ner" / "onnx"


def weights_digest(torch_model: Any, *context: str) -> str:
    """A hash of the weights and of what the graph depends on besides them: the cache file's name."""
    hasher = hashlib.sha256("\0".join(context).encode())
    for name, tensor in torch_model.state_dict().items():
        hasher.update(name.encode())
        hasher.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return hasher.hexdigest()[:24]


def onnx_graph(
    torch_model: Any, tokenizer: Any, backend: str, keep_fp32: Sequence[str], cache_dir: str
) -> Path | bytes:
    """The backend's graph of these weights: a cached file, made now if missing; bytes if no cache can be written."""
    import onnxruntime

    variant = "fp32" if backend == ONNX else "int8-keep-" + ",".join(sorted(keep_fp32))
    digest = weights_digest(
        torch_model,
        EXPORT_FORMAT,
        torch.__version__,
        onnxruntime.__version__,
        variant,
        torch_model.config.to_json_string(),
    )
    folder = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    path = folder / f"{digest}-{'fp32' if backend == ONNX else 'int8'}.onnx"
    if path.is_file():
        return path
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder, prefix=".export-") as work:
            made = build_graph(torch_model, tokenizer, backend, keep_fp32, Path(work))
            os.replace(made, path)  # atomic: a concurrent load sees the whole file or none
        return path
    except OSError as err:
        warnings.warn(
            f"Cannot write the ONNX graph to {folder} ({err.strerror or err}): exporting it in memory, which "
            f"every load repeats. Set [components.{FACTORY}] cache_dir to a folder you can write to.",
            stacklevel=2,
        )
    with tempfile.TemporaryDirectory(prefix="en_bert_ner-onnx-") as work:
        return build_graph(torch_model, tokenizer, backend, keep_fp32, Path(work)).read_bytes()


def build_graph(torch_model: Any, tokenizer: Any, backend: str, keep_fp32: Sequence[str], folder: Path) -> Path:
    fp32 = folder / "fp32.onnx"
    export_onnx(torch_model, tokenizer, fp32)
    if backend == ONNX:
        return fp32
    int8 = folder / "int8.onnx"
    quantize_onnx_int8(fp32, int8, keep_fp32)
    return int8


# --- ONNX Runtime in the torch module's place ---------------------------------------------

# Sessions made in a parent process before it forked. Their thread pools' threads were not copied
# into the child, so a child never frees them (freeing one joins those threads): it keeps them here.
_sessions_from_before_fork: list[Any] = []


def make_session(graph: Path | bytes, threads: int, spinning: bool = True) -> Any:
    """An ONNX Runtime session on the CPU with `threads` intra-op threads, whose idle pool threads spin or sleep.

    Spinning (ONNX Runtime's default) keeps the pool threads busy-waiting for the next parallel
    section: less latency per operator, but a core taken from the rest of the pipeline (and from
    other processes) between encoder calls. `spinning` is the encoder_backend component's
    onnx_spinning setting; docs/benchmarks.md has the measurement that chose its default.
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return onnxruntime.InferenceSession(
        graph if isinstance(graph, bytes) else str(graph), options, providers=["CPUExecutionProvider"]
    )


class OnnxRuntimeEncoder(torch.nn.Module):
    """Runs an ONNX graph in ONNX Runtime and answers like the HF encoder it stands in for.

    Its session is made on first use in each process, with torch's thread count. Per process: a
    session's thread pool does not survive fork (see _sessions_from_before_fork); torch's threads:
    they are what the user set (torch.set_num_threads, OMP_NUM_THREADS), and 1 in a forked worker
    (see use_one_torch_thread_in_forked_child).
    """

    def __init__(
        self, graph: Path | bytes, output_type: type, output_names: Sequence[str], spinning: bool = True
    ) -> None:
        super().__init__()
        self.graph = graph
        self.output_type = output_type
        self.output_names = list(output_names)
        self.spinning = spinning
        self._session: Any = None
        self._session_key: tuple[int, int] | None = None

    def session(self) -> Any:
        key = (os.getpid(), torch.get_num_threads())
        if self._session_key != key:
            if self._session is not None and self._session_key[0] != key[0]:
                _sessions_from_before_fork.append(self._session)
            self._session = make_session(self.graph, key[1], self.spinning)
            self._session_key = key
        return self._session

    def forward(self, **inputs: Any) -> Any:
        session = self.session()
        feeds = {}
        for expected in session.get_inputs():
            dtype = numpy.float32 if expected.type == "tensor(float)" else numpy.int64
            given = inputs.get(expected.name)
            if given is None:  # token_type_ids of a tokenizer that makes none: BERT's default, zeros
                feeds[expected.name] = numpy.zeros(tuple(inputs["input_ids"].shape), dtype=dtype)
            else:
                feeds[expected.name] = given.detach().cpu().numpy().astype(dtype, copy=False)
        outputs = session.run(self.output_names, feeds)
        tensors = {name: torch.from_numpy(array) for name, array in zip(self.output_names, outputs, strict=True)}
        return self.output_type(**tensors)

    # Pickled into spawned workers (nlp.pipe with the spawn start method): the graph travels, the session not.
    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_session": None, "_session_key": None}


def output_signature(torch_model: Any, tokenizer: Any) -> tuple[type, list[str]]:
    """The type and tensor names of the encoder's output, as spacy-transformers receives them."""

    sample = tokenizer(SAMPLE_TEXTS[:1], return_tensors="pt")
    with torch.inference_mode():
        output = torch_model(**{name: sample[name] for name in ENCODER_INPUTS if name in sample}, return_dict=True)
    return type(output), list(output.keys())


# --- spaCy's work around the encoder, batch by batch -------------------------------------------
#
# At inference spacy-transformers spends about as much time around the encoder as a fast encoder
# spends in it: a Python conversion of every tokenizer output, a Token object for every token at
# each of several steps (span texts, alignment, the split of the output per Doc), and, in every
# listener, an alignment and a pooling call per Doc. `install_batched_inference` replaces those
# steps at inference with the same computations done once per batch in numpy: the same
# wordpieces, alignment and pooled rows, so the same entities. Training goes through
# spacy-transformers' own code.

# Where a Doc keeps its place in the transformer's batch, from the transformer to its listeners: a
# user_data key of its own, not a doc._ extension.
BATCH_KEY = ("en_bert_ner", "transformer_batch")
# The greedy NER's score rows of each Doc (ActionScoreRecorder); entity_scores.py names the same key.
ACTION_SCORES_KEY = ("en_bert_ner", "ner_action_scores")
# The key under which spaCy keeps the value of doc._.trf_data.
TRF_DATA_KEY = ("._.", "trf_data", None, None)


class BatchPlace:
    """A Doc's place in the FullTransformerBatch it was encoded in, which the listeners pool from.

    It stays in doc.user_data until the encoder_backend component, after the listeners, removes it.
    Doc.copy() shares the batch; a pickled, deep-copied or msgpack-serialized Doc carries None in
    its place (the batch holds the encoder's output for every Doc of the batch).
    """

    __slots__ = ("batch", "index")

    def __init__(self, batch: Any, index: int) -> None:
        self.batch = batch
        self.index = index

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return (type(None), ())

    def __deepcopy__(self, memo: dict[int, Any]) -> BatchPlace:
        return self


def serialize_batch_place(obj: Any, chain: Callable[[Any], Any] | None = None) -> Any:
    """srsly's msgpack encoder for BatchPlace: None (Doc.to_bytes and DocBin write user_data)."""
    if isinstance(obj, BatchPlace):
        return None
    return obj if chain is None else chain(obj)


def span_texts(spans: Sequence[Any]) -> list[str]:
    """Each span's text, as Span.text gives it, cut from its Doc's text (Span.text makes a Token per token)."""
    texts: list[str] = []
    doc_texts: dict[int, str] = {}
    for span in spans:
        if not len(span):
            texts.append("")
            continue
        doc = span.doc
        text = doc_texts.get(id(doc))
        if text is None:
            text = doc_texts[id(doc)] = doc.text
        texts.append(text[span.start_char : span.end_char])
    return texts


def tokenize(tokenizer: Any, texts: list[str]) -> tuple[Any, numpy.ndarray]:
    """What spacy-transformers' huggingface_tokenize and WordpieceBatch.from_batch_encoding make, and the offsets.

    The same arrays as transformers makes them for that call (padding to the longest text, no
    truncation), but the Rust tokenizer encodes without padding and its encodings are read into
    arrays directly: transformers converts each padded encoding to Python lists and dicts, which cost
    more than the tokenization itself.
    """
    from spacy_transformers.data_classes import WordpieceBatch
    from transformers.tokenization_utils_base import TruncationStrategy
    from transformers.utils import PaddingStrategy

    tokenizer.set_truncation_and_padding(
        PaddingStrategy.DO_NOT_PAD, TruncationStrategy.DO_NOT_TRUNCATE, None, 0, None, None
    )
    encodings = tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=True, is_pretokenized=False)
    if not encodings:
        return WordpieceBatch.empty(), numpy.zeros((0, 0, 2), dtype=numpy.int64)
    rows = len(encodings)
    sizes = numpy.fromiter((len(encoding) for encoding in encodings), dtype=numpy.int64, count=rows)
    width, total = int(sizes.max()), int(sizes.sum())
    real = numpy.arange(width) < sizes[:, None]  # row-major, as the encodings' wordpieces follow one another
    chain = itertools.chain.from_iterable

    def padded(values: Iterable[int], pad: int) -> numpy.ndarray:
        array = numpy.full((rows, width), pad, dtype=numpy.int64)
        array[real] = numpy.fromiter(values, dtype=numpy.int64, count=total)
        return array

    input_ids = padded(chain(encoding.ids for encoding in encodings), tokenizer.pad_token_id)
    offsets = numpy.zeros((rows, width, 2), dtype=numpy.int64)
    flat_offsets = chain(chain(encoding.offsets for encoding in encodings))
    offsets[real] = numpy.fromiter(flat_offsets, dtype=numpy.int64, count=2 * total).reshape(-1, 2)
    token_type_ids = None
    if "token_type_ids" in tokenizer.model_input_names:
        token_type_ids = padded(chain(encoding.type_ids for encoding in encodings), tokenizer.pad_token_type_id)
    pad_token = tokenizer.pad_token
    wordpieces = WordpieceBatch(
        strings=[encoding.tokens + [pad_token] * (width - len(encoding)) for encoding in encodings],
        input_ids=input_ids,
        attention_mask=real.astype(numpy.float32),
        lengths=(input_ids != tokenizer.pad_token_id).sum(axis=1).tolist(),
        token_type_ids=token_type_ids,
    )
    return wordpieces, offsets


def expand_ranges(starts: numpy.ndarray, lengths: numpy.ndarray) -> numpy.ndarray:
    """[starts[0], starts[0] + 1, ..., starts[0] + lengths[0] - 1, starts[1], ...] (the ranges one after another)."""
    total = int(lengths.sum())
    ends = numpy.cumsum(lengths)
    return numpy.arange(total, dtype=numpy.int64) + numpy.repeat(starts - (ends - lengths), lengths)


def align_wordpieces(spans: Sequence[Any], offsets: numpy.ndarray) -> Any:
    """spacy-transformers' get_alignment_via_offset_mapping, for the whole batch at once.

    As there, tokens are numbered Doc after Doc (each Doc's tokens, all of them, in the order of
    its first span); a token aligns to every wordpiece whose characters include one of its own or
    the one character after it (the following token's own characters win); wordpieces are numbered
    over the padded rows; each token's wordpieces are listed once, in order.
    """
    from spacy.attrs import IDX, LENGTH
    from thinc.types import Ragged

    n_rows, row_length = offsets.shape[:2]
    first_token: dict[int, int] = {}  # id(doc) -> number of its first token
    first_char: dict[int, int] = {}  # id(doc) -> its first character in the batch's characters
    token_starts, token_lengths = [], []
    n_tokens = n_chars = 0
    span_start = numpy.zeros(n_rows, dtype=numpy.int64)  # first and one-past-last character of each span
    span_end = numpy.zeros(n_rows, dtype=numpy.int64)
    span_last_token = numpy.zeros(n_rows, dtype=numpy.int64)
    for row, span in enumerate(spans):
        doc = span.doc
        key = id(doc)
        if key not in first_token:
            first_token[key], first_char[key] = n_tokens, n_chars
            extents = doc.to_array([IDX, LENGTH]).astype(numpy.int64).reshape(-1, 2)
            token_starts.append(extents[:, 0] + n_chars)
            token_lengths.append(extents[:, 1])
            n_tokens += len(doc)
            n_chars += int(extents[-1].sum()) + 1 if len(doc) else 0
        if len(span):
            span_start[row] = first_char[key] + span.start_char
            span_end[row] = first_char[key] + span.end_char
            span_last_token[row] = first_token[key] + span.end - 1
    token_of_char = numpy.full(n_chars + 1, -1, dtype=numpy.int64)
    if token_starts:
        starts, lengths = numpy.concatenate(token_starts), numpy.concatenate(token_lengths)
        tokens = numpy.arange(n_tokens, dtype=numpy.int64)
        token_of_char[starts + lengths] = tokens  # the character after each token ...
        token_of_char[expand_ranges(starts, lengths)] = numpy.repeat(tokens, lengths)  # ... unless a token's own
    # Each wordpiece's characters, as characters of the batch.
    wordpiece_starts = offsets[:, :, 0] + span_start[:, None]
    wordpiece_lengths = numpy.maximum(offsets[:, :, 1] - offsets[:, :, 0], 0)
    wordpiece_lengths[span_end == span_start] = 0  # empty spans align to nothing
    chars = expand_ranges(wordpiece_starts.ravel(), wordpiece_lengths.ravel())
    wordpiece_of_char = numpy.repeat(numpy.arange(n_rows * row_length, dtype=numpy.int64), wordpiece_lengths.ravel())
    row_of_char = wordpiece_of_char // max(row_length, 1)
    inside = chars <= span_end[row_of_char]  # a span's text and the one character after it, as in the original
    chars, wordpiece_of_char, row_of_char = chars[inside], wordpiece_of_char[inside], row_of_char[inside]
    token_of = token_of_char[chars]
    # The character after a span is its last token's, whatever follows it in the Doc.
    after = chars == span_end[row_of_char]
    token_of[after] = span_last_token[row_of_char[after]]
    aligned = token_of >= 0
    pairs = numpy.unique(token_of[aligned] * (n_rows * row_length) + wordpiece_of_char[aligned])
    data = (pairs % max(n_rows * row_length, 1)).astype(numpy.int32)
    lengths = numpy.bincount(pairs // max(n_rows * row_length, 1), minlength=n_tokens).astype(numpy.int32)
    return Ragged(data, lengths)


def refuse_backprop(gradient: Any) -> Any:
    raise EncoderBackendError(
        "this output came from the inference path (is_train=False), which keeps nothing to backpropagate."
    )


def batched_transformer_forward(
    model: Any, docs: list[Doc], is_train: bool, encoder_batch_wordpieces: int = 0
) -> tuple[Any, Callable[..., Any]]:
    """spacy-transformers' TransformerModel forward; at inference, with batched tokenization and alignment,
    and the encoder run in calls of at most `encoder_batch_wordpieces` padded wordpieces (predict_in_calls)."""
    from spacy_transformers.data_classes import FullTransformerBatch
    from spacy_transformers.layers.transformer_model import forward as upstream_forward
    from spacy_transformers.truncate import truncate_oversize_splits

    if is_train or "logger" in model.attrs:
        return upstream_forward(model, docs, is_train)
    tokenizer = model.tokenizer
    nested_spans = model.attrs["get_spans"](docs)
    flat_spans = [span for doc_spans in nested_spans for span in doc_spans]
    wordpieces, offsets = tokenize(tokenizer, span_texts(flat_spans))
    align = align_wordpieces(flat_spans, offsets)
    wordpieces, align = truncate_oversize_splits(wordpieces, align, tokenizer.model_max_length)
    model_output = predict_in_calls(model.layers[0], wordpieces, encoder_batch_wordpieces)
    batch = FullTransformerBatch(spans=nested_spans, wordpieces=wordpieces, model_output=model_output, align=align)
    return batch, refuse_backprop


def encoder_calls(lengths: Sequence[int], budget: int) -> list[numpy.ndarray]:
    """The rows of one encoder call each: sorted by length, as many as fit `budget` padded wordpieces (at least one)."""
    order = numpy.argsort(numpy.asarray(lengths, dtype=numpy.int64), kind="stable")
    calls: list[numpy.ndarray] = []
    start = 0
    for end in range(1, len(order) + 1):
        # Sorted ascending: the row just added is the longest of the call, so its padded size is its length x rows.
        if end == len(order) or max(int(lengths[order[end]]), 1) * (end + 1 - start) > budget:
            calls.append(order[start:end])
            start = end
    return calls


def predict_in_calls(encoder: Any, wordpieces: Any, budget: int) -> Any:
    """The encoder's output for the padded batch, computed in calls of at most `budget` padded wordpieces.

    Each call takes rows of similar length, cut to the longest of them, so the encoder computes
    little padding, on inputs small enough for the CPU's caches; the outputs are put back in the
    batch's rows and padded width (at padding: what the call computed there, or zeros past its cut;
    nothing reads them). budget 0: one call, as spacy-transformers makes it.
    """
    from spacy_transformers.data_classes import WordpieceBatch

    n_rows, width = wordpieces.input_ids.shape if len(wordpieces) else (0, 0)
    if budget <= 0 or n_rows * width <= budget:
        return encoder.predict(wordpieces)
    lengths = numpy.asarray(wordpieces.lengths, dtype=numpy.int64)
    output_type, merged = None, {}
    for rows in encoder_calls(lengths, budget):
        cut = max(int(lengths[rows].max()), 1)
        part = WordpieceBatch(
            strings=[wordpieces.strings[row] for row in rows],
            input_ids=wordpieces.input_ids[rows, :cut],
            attention_mask=wordpieces.attention_mask[rows, :cut],
            lengths=lengths[rows].tolist(),
            token_type_ids=None if wordpieces.token_type_ids is None else wordpieces.token_type_ids[rows, :cut],
        )
        output = encoder.predict(part)
        output_type = type(output)
        for name, tensor in output.items():
            array = tensor.numpy()
            if name not in merged:  # (rows, wordpieces, ...) or (rows, ...): padded to the batch's rows and width
                shape = (n_rows, width, *array.shape[2:]) if array.ndim >= 3 else (n_rows, *array.shape[1:])
                merged[name] = numpy.zeros(shape, dtype=array.dtype)
            if array.ndim >= 3:
                merged[name][rows, :cut] = array
            else:
                merged[name][rows] = array
    return output_type(**{name: torch.from_numpy(array) for name, array in merged.items()})


class BatchAnnotations:
    """The transformer's set_annotations at inference: each Doc's BatchPlace, and doc._.trf_data only if kept.

    doc._.trf_data, spacy-transformers' per-Doc view of the batch, costs a split of the output per
    Doc and keeps the batch's encoder output alive as long as any of its Docs: it is made only with
    keep_trf_data (or when a listener reads it). Without it, a Doc's trf_data is None.
    """

    def __init__(self, transformer: Any, keep_trf_data: bool) -> None:
        self.transformer = transformer
        self.keep_trf_data = keep_trf_data

    def __call__(self, docs: Iterable[Doc], predictions: Any) -> None:
        docs = list(docs)
        encoded = "last_hidden_state" in predictions.model_output  # not when every Doc of the batch is empty
        if self.keep_trf_data or not encoded:
            type(self.transformer).set_annotations(self.transformer, docs, predictions)
        else:
            for doc in docs:
                doc.user_data.pop(TRF_DATA_KEY, None)
            self.transformer.set_extra_annotations(docs, predictions)
        if encoded:
            for index, doc in enumerate(docs):
                doc.user_data[BATCH_KEY] = BatchPlace(predictions, index)


def doc_token_ranges(batch: Any) -> list[tuple[int, int] | None]:
    """Each Doc's first and one-past-last token in the batch's alignment, as split_by_doc finds them."""
    first_token: dict[int, int] = {}
    n_tokens = 0
    for doc_spans in batch.spans:
        for span in doc_spans:
            if id(span.doc) not in first_token:
                first_token[id(span.doc)] = n_tokens
                n_tokens += len(span.doc)
    ranges: list[tuple[int, int] | None] = []
    for doc_spans in batch.spans:
        if not doc_spans or not len(doc_spans[0]):
            ranges.append(None)
        else:
            first, last = doc_spans[0], doc_spans[-1]
            ranges.append((first_token[id(first.doc)] + first.start, first_token[id(last.doc)] + last.end))
    return ranges


def pooled_rows(batch: Any, pooling: Any) -> list[Any]:
    """Each Doc's token vectors, pooled from its wordpieces by `pooling` for the whole batch at once (cached on it).

    The same rows as spacy-transformers' trfs2arrays makes Doc by Doc: each token's vector is
    reduced from the same wordpiece rows, in the same order.
    """
    from thinc.api import torch2xp
    from thinc.types import Ragged

    cache = batch.__dict__.setdefault("_en_bert_ner_pooled", {})
    if id(pooling) not in cache:
        hidden = batch.model_output.last_hidden_state
        array = torch2xp(hidden) if isinstance(hidden, torch.Tensor) else hidden
        rows = pooling.ops.reshape2f(array, -1, array.shape[-1])
        align = batch.align
        pooled = pooling.predict(Ragged(rows[align.dataXd], pooling.ops.asarray(align.lengths)))
        if not len(align.dataXd):
            # thinc pools a batch without one aligned wordpiece (whitespace-only text) into zero columns; a
            # token without wordpieces is a zero vector of the encoder's width, as it is beside aligned ones.
            pooled = pooling.ops.alloc2f(len(align.lengths), array.shape[-1])
        empty = pooling.ops.alloc2f(0, 0)  # trfs2arrays' output for a Doc without spans
        cache[id(pooling)] = [
            empty if extent is None else pooled[extent[0] : extent[1]] for extent in doc_token_ranges(batch)
        ]
    return cache[id(pooling)]


def batched_listener_forward(model: Any, docs: list[Doc], is_train: bool) -> tuple[Any, Callable[..., Any]]:
    """The chain TransformerListener >> trfs2arrays; at inference, pooled batch by batch (see pooled_rows).

    A Doc without a BatchPlace (transformer disabled, or Docs made elsewhere) goes through the
    chain as before, which reads its doc._.trf_data.
    """
    from thinc.layers.chain import forward as chain_forward

    if is_train:
        return chain_forward(model, docs, is_train)
    pooling = model.layers[1].layers[0]
    outputs: list[Any] = [None] * len(docs)
    others = []
    for i, doc in enumerate(docs):
        place = doc.user_data.get(BATCH_KEY)
        if place is None:
            others.append(i)
        else:
            outputs[i] = pooled_rows(place.batch, pooling)[place.index]
    if others:
        rest, _ = chain_forward(model, [docs[i] for i in others], is_train)
        for i, output in zip(others, rest, strict=True):
            outputs[i] = output
    return outputs, refuse_backprop


def listener_chains(nlp: Language, transformer: Any) -> tuple[list[Any], int]:
    """The chains TransformerListener >> trfs2arrays of the transformer's listeners, and how many listeners it has."""
    from spacy_transformers.layers.trfs2arrays import forward as trfs2arrays_forward
    from thinc.layers.chain import forward as chain_forward

    listeners = transformer.listeners
    chains = []
    for name in transformer.listening_components:
        for node in nlp.get_pipe(name).model.walk():
            if (
                node._func in (chain_forward, batched_listener_forward)
                and len(node.layers) == 2
                and any(node.layers[0] is listener for listener in listeners)
                and node.layers[1]._func is trfs2arrays_forward
            ):
                chains.append(node)
    return chains, len(listeners)


class GreedyEntityRecognizer(EntityRecognizer):
    """spaCy's EntityRecognizer, whose greedy decoding at inference runs its steps from Python.

    spaCy's own greedy_parse releases the GIL and runs the whole decoding in C. On Python < 3.12,
    spaCy's extensions are compiled with Cython's profiling hooks, and in code that runs without
    the GIL every call of a small state function then takes and releases the GIL twice: the NER
    cost about 12 µs a word, most of it in those locks. Here the same steps run with the GIL held,
    through the parser's own methods (the step model's predict, which the beam search uses, and
    transition_states, which runs the same C transition code): the same scores and the same
    transitions, so the same entities, in 5 µs a word. Training is spaCy's, untouched.
    """

    # Set by a component that reads the action scores (entity_scores): each Doc then gets its steps' score rows.
    keep_action_scores = False

    def predict(self, docs: Any) -> Any:
        from thinc.api import NumpyOps, set_dropout_rate

        if isinstance(docs, Doc):
            docs = [docs]
        if self.cfg["beam_width"] != 1 or not isinstance(self.model.ops, NumpyOps) or not any(len(doc) for doc in docs):
            return super().predict(docs)
        self._ensure_labels_are_added(docs)
        set_dropout_rate(self.model, 0.0)
        batch = self.moves.init_batch(docs)
        step_model = self.model.predict(docs)
        states = [state for state in batch if not state.is_final()]
        recorder = ActionScoreRecorder(docs, batch, self.moves.n_moves) if self.keep_action_scores else None
        while states:
            scores = step_model.predict(states)
            if recorder is not None:
                recorder.add(states, scores)
            states = self.transition_states(states, scores)
        step_model.clear_memory()
        if recorder is not None:
            recorder.store()
        return batch


class ActionScoreRecorder:
    """The NER's score rows of one batch, step by step, kept on each Doc for entity_scores.

    Every BILUO action consumes one token, so step t of a Doc scores the actions at its token t.
    doc.user_data[ACTION_SCORES_KEY] gets an array (tokens x actions): the scores the greedy
    decoding chose from, so entity_scores reads the probabilities of the path without running the
    NER again. entity_scores takes the array out of the Doc as it reads it.
    """

    def __init__(self, docs: Sequence[Doc], batch: Sequence[Any], n_moves: int) -> None:
        self.docs = docs
        starts = numpy.cumsum([0] + [len(doc) for doc in docs])
        self.starts = starts[:-1]
        self.start_of = {id(state): int(start) for state, start in zip(batch, self.starts, strict=True)}
        self.rows = numpy.zeros((int(starts[-1]), n_moves), dtype="float32")
        self.step = 0

    def add(self, states: Sequence[Any], scores: Any) -> None:
        targets = numpy.fromiter((self.start_of[id(state)] for state in states), dtype=numpy.int64, count=len(states))
        self.rows[targets + self.step] = scores
        self.step += 1

    def store(self) -> None:
        for doc, start in zip(self.docs, self.starts, strict=True):
            doc.user_data[ACTION_SCORES_KEY] = self.rows[start : start + len(doc)]


# The settings of EntityRecognizer.__init__ that it keeps in its cfg.
ENTITY_RECOGNIZER_SETTINGS = (
    "update_with_oracle_cut_size",
    "beam_width",
    "beam_density",
    "beam_update_prob",
    "multitasks",
    "incorrect_spans_key",
)


def with_greedy_decoding(ner: Any) -> GreedyEntityRecognizer:
    """The same component (vocabulary, model, transition system, settings) as a GreedyEntityRecognizer."""
    settings = {name: ner.cfg[name] for name in ENTITY_RECOGNIZER_SETTINGS if name in ner.cfg}
    greedy = GreedyEntityRecognizer(ner.vocab, ner.model, ner.name, ner.moves, scorer=ner.scorer, **settings)
    greedy.cfg = ner.cfg
    greedy._multitasks = ner._multitasks
    greedy._rehearsal_model = ner._rehearsal_model
    return greedy


def install_greedy_decoding(nlp: Language) -> bool:
    """Every NER component of the pipeline (spaCy's EntityRecognizer, greedy) swapped for a GreedyEntityRecognizer.

    The pipeline keeps the same component under the same name, config and weights; only its
    class, a subclass, changes.
    """
    changed = False
    for index, (name, component) in enumerate(nlp._components):
        if type(component) is EntityRecognizer and component.cfg.get("beam_width", 1) == 1:
            nlp._components[index] = (name, with_greedy_decoding(component))
            changed = True
    return changed


def install_batched_inference(
    nlp: Language, transformer_name: str, keep_trf_data: bool, encoder_batch_wordpieces: int = 0
) -> bool:
    """Batch spacy-transformers' work at inference (see above); False where it does not apply and nothing changed.

    CPU pipelines only (the arrays are numpy's). The tokenization and alignment need a fast
    (Rust) tokenizer with a padding token; the pooling needs listeners that are the usual chain
    TransformerListener >> trfs2arrays: where one is not, doc._.trf_data is kept for it. Every
    greedy NER component becomes a GreedyEntityRecognizer (install_greedy_decoding). The encoder
    runs in calls of at most encoder_batch_wordpieces padded wordpieces (predict_in_calls) where
    its rows can be cut to their length: padding on the right, outputs all tensors.
    """
    from functools import partial

    from spacy_transformers.layers.transformer_model import forward as transformer_forward
    from thinc.api import NumpyOps, get_current_ops

    if not isinstance(get_current_ops(), NumpyOps):
        return False
    transformer = nlp.get_pipe(transformer_name)
    model = transformer.model
    tokenizer = model.tokenizer
    changed = False
    if model._func is transformer_forward and getattr(tokenizer, "is_fast", False) and tokenizer.pad_token is not None:
        if tokenizer.padding_side != "right" or returns_tensor_tuples(model):
            encoder_batch_wordpieces = 0
        model._func = partial(batched_transformer_forward, encoder_batch_wordpieces=encoder_batch_wordpieces)
        changed = True
    chains, n_listeners = listener_chains(nlp, transformer)
    if chains:
        for chain in chains:
            chain._func = batched_listener_forward
        transformer.set_annotations = BatchAnnotations(transformer, keep_trf_data or len(chains) < n_listeners)
        changed = True
    return install_greedy_decoding(nlp) or changed


def returns_tensor_tuples(transformer_model: Any) -> bool:
    """Whether the HF encoder also returns each layer's states or attentions (tuples of tensors)."""
    config = transformer_model.layers[0].shims[0]._hfmodel.transformer.config
    return bool(getattr(config, "output_hidden_states", False) or getattr(config, "output_attentions", False))


def forget_batch(doc: Doc) -> Doc:
    """What batched inference left on the Doc for later components: its batch place, the ner's score rows."""
    doc.user_data.pop(BATCH_KEY, None)
    doc.user_data.pop(ACTION_SCORES_KEY, None)
    return doc


# --- the component -----------------------------------------------------------------


class EncoderBackend:
    """As the pipeline loads, puts the chosen backend in place of the transformer's encoder and batches
    spacy-transformers' inference (install_batched_inference); at inference, last in the pipeline, it
    releases each Doc's place in its transformer batch."""

    def __init__(
        self,
        nlp: Language,
        name: str,
        backend: str,
        transformer: str,
        keep_fp32: list[str],
        cache_dir: str,
        batched_inference: bool = True,
        keep_trf_data: bool = False,
        onnx_spinning: bool = False,
        encoder_batch_wordpieces: int = DEFAULT_ENCODER_BATCH_WORDPIECES,
    ) -> None:
        if backend not in BACKENDS:
            raise EncoderBackendError(
                f"{name}: unknown backend {backend!r}. Set [components.{name}] backend to one of {', '.join(BACKENDS)}."
            )
        self.nlp = nlp
        self.name = name
        self.backend = backend
        self.transformer = transformer
        self.keep_fp32 = keep_fp32
        self.cache_dir = cache_dir
        self.batched_inference = batched_inference
        self.keep_trf_data = keep_trf_data
        self.onnx_spinning = onnx_spinning
        if encoder_batch_wordpieces < 0:
            raise EncoderBackendError(
                f"{name}: encoder_batch_wordpieces is {encoder_batch_wordpieces}. Set [components.{name}] "
                "encoder_batch_wordpieces to a number of padded wordpieces per encoder call, or 0 for one call a batch."
            )
        self.encoder_batch_wordpieces = encoder_batch_wordpieces
        self.applied = False
        self.batched = False

    @property
    def quantized(self) -> bool:
        """Whether the encoder now runs in int8 (the encoder_int8 component's attribute, kept for its users)."""
        return self.applied and self.backend in (TORCH_INT8, ONNX_INT8)

    def __call__(self, doc: Doc) -> Doc:
        return forget_batch(doc)

    def pipe(self, docs: Iterable[Doc], batch_size: int = 128) -> Iterator[Doc]:
        for doc in docs:
            yield forget_batch(doc)

    def shims(self) -> list[Any]:
        if self.transformer not in self.nlp.component_names:
            raise EncoderBackendError(
                f"{self.name}: the pipeline has no component '{self.transformer}' whose encoder to run "
                f"(components: {', '.join(self.nlp.component_names)}). Set [components.{self.name}] transformer."
            )
        return [shim for node in self.nlp.get_pipe(self.transformer).model.walk() for shim in node.shims]

    def apply(self) -> None:
        """Put the backend in place (`torch` leaves the encoder as it is), then batch the inference if asked."""
        if self.backend != TORCH:
            self.apply_backend()
        if self.batched_inference and self.listeners_come_first():
            self.batched = install_batched_inference(
                self.nlp, self.transformer, self.keep_trf_data, self.encoder_batch_wordpieces
            )

    def listeners_come_first(self) -> bool:
        """Whether the transformer's listeners run before this component, which releases the batch they pool from."""
        if self.transformer not in self.nlp.component_names:
            self.shims()  # raises the error that names the missing transformer
        order = self.nlp.component_names
        listening = self.nlp.get_pipe(self.transformer).listening_components
        late = [name for name in listening if order.index(name) > order.index(self.name)]
        if late:
            warnings.warn(
                f"{self.name}: {', '.join(late)} come after {self.name} in the pipeline, so the transformer's "
                f"inference runs unbatched (as spacy-transformers does it). Put {self.name} last in the pipeline "
                "to batch it.",
                stacklevel=2,
            )
        return not late

    def apply_backend(self) -> None:
        for shim in self.shims():
            self.check_cpu(shim)
            try:
                check_keep_fp32(shim._model, self.keep_fp32)
            except EncoderBackendError as err:
                raise EncoderBackendError(f"{self.name}: {err} Fix [components.{self.name}] keep_fp32.") from None
            try:
                if self.backend == TORCH_INT8:
                    shim._model = quantize_linear_int8(shim._model, self.keep_fp32)
                else:
                    shim._model = self.onnx_module(shim)
            except EncoderBackendError as err:
                raise EncoderBackendError(f"{self.name}: {err}") from None
        self.applied = True

    def check_cpu(self, shim: Any) -> None:
        from thinc.api import NumpyOps, get_current_ops

        device = next(shim._model.parameters()).device
        if device.type != "cpu" or not isinstance(get_current_ops(), NumpyOps):
            on_gpu = "on a GPU" if device.type == "cpu" else f"on {device}"
            raise EncoderBackendError(
                f"{self.name}: backend {self.backend!r} runs on the CPU only, but the encoder is {on_gpu}. "
                f"On a GPU, load with backend 'torch' (mixed precision: fp16), or load on the CPU."
            )

    def onnx_module(self, shim: Any) -> Any:
        require_onnx_packages()
        torch_model, tokenizer = shim._model, shim._hfmodel.tokenizer
        graph = onnx_graph(torch_model, tokenizer, self.backend, self.keep_fp32, self.cache_dir)
        return OnnxRuntimeEncoder(graph, *output_signature(torch_model, tokenizer), spinning=self.onnx_spinning)

    # The transformer deserializes before this component (pipeline order), so its weights are in place here.
    def from_disk(self, path: Path, *, exclude: Iterable[str] = ()) -> EncoderBackend:
        if not self.applied:
            self.apply()
        return self

    def from_bytes(self, bytes_data: bytes, *, exclude: Iterable[str] = ()) -> EncoderBackend:
        return self.from_disk(Path(), exclude=exclude)

    # Nothing of its own to save: the option is a setting in config.cfg.
    def to_disk(self, path: Path, *, exclude: Iterable[str] = ()) -> None:
        if self.applied:
            raise EncoderBackendError(
                f"{self.name}: this pipeline was loaded with backend {self.backend!r}, whose encoder would "
                "overwrite the trained fp32 weights. Load it with backend 'torch' to save it."
            )

    def to_bytes(self, *, exclude: Iterable[str] = ()) -> bytes:
        self.to_disk(Path(), exclude=exclude)
        return b""


def factory(name: str, default_config: dict[str, Any]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """`@Language.factory`, for a file that may load twice in one process.

    The project registers this file through its spacy_factories entry points, and `spacy package
    --code` ships a copy inside the wheel (en_bert_ner.encoder_backend). Where the project and the
    wheel are installed together, the second copy to load finds the factory taken, which spaCy
    refuses for a function from another file (E004): as the code is the same, it leaves the first.
    """

    def register(function: Callable[..., Any]) -> Callable[..., Any]:
        if Language.has_factory(name):
            return function
        return Language.factory(name, default_config=default_config)(function)

    return register


SHARED_DEFAULTS = {
    "transformer": "transformer",
    "keep_fp32": [],
    "cache_dir": "",
    "batched_inference": True,
    "keep_trf_data": False,
    # Sleeping pool threads: inside the pipeline, spaCy's work runs between encoder calls on the same cores.
    "onnx_spinning": False,
    "encoder_batch_wordpieces": DEFAULT_ENCODER_BATCH_WORDPIECES,
}
# The copy of this file that registers the factories also makes the process fork-safe (at the end of the file).
FIRST_COPY_IN_PROCESS = not Language.has_factory(FACTORY)


@factory(FACTORY, default_config={"backend": TORCH, **SHARED_DEFAULTS})
def make_encoder_backend(
    nlp: Language,
    name: str,
    backend: str,
    transformer: str,
    keep_fp32: list[str],
    cache_dir: str,
    batched_inference: bool,
    keep_trf_data: bool,
    onnx_spinning: bool,
    encoder_batch_wordpieces: int,
) -> EncoderBackend:
    return EncoderBackend(
        nlp,
        name,
        backend,
        transformer,
        keep_fp32,
        cache_dir,
        batched_inference,
        keep_trf_data,
        onnx_spinning,
        encoder_batch_wordpieces,
    )


@factory(LEGACY_FACTORY, default_config={"enabled": False, "backend": TORCH, **SHARED_DEFAULTS})
def make_encoder_int8(
    nlp: Language,
    name: str,
    enabled: bool,
    transformer: str,
    keep_fp32: list[str],
    backend: str,
    cache_dir: str,
    batched_inference: bool,
    keep_trf_data: bool,
    onnx_spinning: bool,
    encoder_batch_wordpieces: int,
) -> EncoderBackend:
    """The component of pipelines trained before encoder_backend: `enabled = true` asks for torch-int8."""
    if enabled and backend not in (TORCH, TORCH_INT8):
        raise EncoderBackendError(
            f"{name}: enabled = true asks for the torch-int8 backend, but backend is {backend!r}. "
            f"Set only [components.{name}] backend."
        )
    return EncoderBackend(
        nlp,
        name,
        TORCH_INT8 if enabled else backend,
        transformer,
        keep_fp32,
        cache_dir,
        batched_inference,
        keep_trf_data,
        onnx_spinning,
        encoder_batch_wordpieces,
    )


def use_one_torch_thread_in_forked_child() -> None:
    """A forked child inherits the parent's OpenMP state but not its worker threads.

    PyTorch's CPU kernels run on GNU OpenMP, whose thread pool does not survive fork: a child
    whose first forward pass asks for more than one thread waits forever for threads that do
    not exist (that is how `nlp.pipe(n_process=2)` hung). With one thread, OpenMP runs the
    work inline and never touches the pool. spaCy's workers are meant to be one per core
    anyway, so one thread each is also the right share of the CPU. The ONNX Runtime backends
    follow: their sessions take torch's thread count and are made again in each process.
    """
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


_tokenizers_parallelism_set_for_fork = False


def quiet_tokenizers_before_fork() -> None:
    """Set TOKENIZERS_PARALLELISM for the child to inherit; the parent gets its own value back after the fork.

    The Rust tokenizer's own fork handler runs in the child before any Python code can, and
    prints "The current process just got forked, after parallelism has already been used"
    unless the variable is set. It also turns the child's tokenizer parallelism off, which
    the variable's value, false, says too.
    """
    global _tokenizers_parallelism_set_for_fork
    if TOKENIZERS_PARALLELISM not in os.environ:
        os.environ[TOKENIZERS_PARALLELISM] = "false"
        _tokenizers_parallelism_set_for_fork = True


def restore_tokenizers_after_fork_in_parent() -> None:
    global _tokenizers_parallelism_set_for_fork
    if _tokenizers_parallelism_set_for_fork:
        os.environ.pop(TOKENIZERS_PARALLELISM, None)
        _tokenizers_parallelism_set_for_fork = False


def install_fork_handlers() -> None:
    """Make every fork of this process a safe spaCy worker, whoever forks (spaCy, multiprocessing, the app)."""
    os.register_at_fork(
        before=quiet_tokenizers_before_fork,
        after_in_parent=restore_tokenizers_after_fork_in_parent,
        after_in_child=use_one_torch_thread_in_forked_child,
    )


if FIRST_COPY_IN_PROCESS:
    install_fork_handlers()
    srsly.msgpack_encoders.register("en_bert_ner.BatchPlace", func=serialize_batch_place)
