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
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy
import torch
from spacy.language import Language
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


def make_session(graph: Path | bytes, threads: int) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    # ONNX Runtime's default, spinning pool threads, is kept: turning spinning off was twice as fast on a
    # 2-core machine busy with other jobs, but the bare encoder then ran at a quarter of the speed
    # measured with the defaults on the idle machine (docs/benchmarks.md). Not yet settled.
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

    def __init__(self, graph: Path | bytes, output_type: type, output_names: Sequence[str]) -> None:
        super().__init__()
        self.graph = graph
        self.output_type = output_type
        self.output_names = list(output_names)
        self._session: Any = None
        self._session_key: tuple[int, int] | None = None

    def session(self) -> Any:
        key = (os.getpid(), torch.get_num_threads())
        if self._session_key != key:
            if self._session is not None and self._session_key[0] != key[0]:
                _sessions_from_before_fork.append(self._session)
            self._session = make_session(self.graph, key[1])
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


# --- the component -----------------------------------------------------------------


class EncoderBackend:
    """No-op at inference; as the pipeline loads, puts the chosen backend in place of the transformer's encoder."""

    def __init__(
        self, nlp: Language, name: str, backend: str, transformer: str, keep_fp32: list[str], cache_dir: str
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
        self.applied = False

    @property
    def quantized(self) -> bool:
        """Whether the encoder now runs in int8 (the encoder_int8 component's attribute, kept for its users)."""
        return self.applied and self.backend in (TORCH_INT8, ONNX_INT8)

    def __call__(self, doc: Doc) -> Doc:
        return doc

    def pipe(self, docs: Iterable[Doc], batch_size: int = 128) -> Iterator[Doc]:
        yield from docs

    def shims(self) -> list[Any]:
        if self.transformer not in self.nlp.component_names:
            raise EncoderBackendError(
                f"{self.name}: the pipeline has no component '{self.transformer}' whose encoder to run "
                f"(components: {', '.join(self.nlp.component_names)}). Set [components.{self.name}] transformer."
            )
        return [shim for node in self.nlp.get_pipe(self.transformer).model.walk() for shim in node.shims]

    def apply(self) -> None:
        """Put the backend in place; `torch` leaves the encoder as it is."""
        if self.backend == TORCH:
            return
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
        return OnnxRuntimeEncoder(graph, *output_signature(torch_model, tokenizer))

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


SHARED_DEFAULTS = {"transformer": "transformer", "keep_fp32": [], "cache_dir": ""}
# The copy of this file that registers the factories also makes the process fork-safe (at the end of the file).
FIRST_COPY_IN_PROCESS = not Language.has_factory(FACTORY)


@factory(FACTORY, default_config={"backend": TORCH, **SHARED_DEFAULTS})
def make_encoder_backend(
    nlp: Language, name: str, backend: str, transformer: str, keep_fp32: list[str], cache_dir: str
) -> EncoderBackend:
    return EncoderBackend(nlp, name, backend, transformer, keep_fp32, cache_dir)


@factory(LEGACY_FACTORY, default_config={"enabled": False, "backend": TORCH, **SHARED_DEFAULTS})
def make_encoder_int8(
    nlp: Language, name: str, enabled: bool, transformer: str, keep_fp32: list[str], backend: str, cache_dir: str
) -> EncoderBackend:
    """The component of pipelines trained before encoder_backend: `enabled = true` asks for torch-int8."""
    if enabled and backend not in (TORCH, TORCH_INT8):
        raise EncoderBackendError(
            f"{name}: enabled = true asks for the torch-int8 backend, but backend is {backend!r}. "
            f"Set only [components.{name}] backend."
        )
    return EncoderBackend(nlp, name, TORCH_INT8 if enabled else backend, transformer, keep_fp32, cache_dir)


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
