"""The encoder's backend as a load option of the pipeline: the `encoder_backend` component.

The component sits in the pipeline and does nothing at inference but release what the batched
inference left on each Doc. Its setting `backend` chooses at load time what runs the fine-tuned
encoder (the bulk of the work on a CPU; backends.py lists them):

    nlp = spacy.load("en_bert_ner", config={"components.encoder_backend.backend": "onnx"})

Every backend stands in for the HF torch module inside spacy-transformers' shim and returns the
same output (same type, names, shapes), so the alignment to spaCy tokens and the NER on top are
untouched; training always runs in PyTorch. All but `torch` run on the CPU only, and a pipeline
loaded with one refuses `to_disk` (it would write weights that are not the trained ones).

On a CPU, with any backend, the component also batches the inference around the encoder
(`batched_inference`, default true; see batched_inference.py) and runs the NER's greedy decoding
with the GIL held (greedy_ner.py). `keep_trf_data` keeps `doc._.trf_data`; `onnx_spinning` says
whether ONNX Runtime's pool threads busy-wait between parallel sections or sleep;
`encoder_batch_wordpieces` caps the padded wordpieces of one encoder call.

As the pipeline loads, the component checks that spaCy's and spacy-transformers' internals are the
ones the runtime was tested with (internals.py).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import srsly
from spacy.language import Language
from spacy.tokens import Doc

from . import internals
from .backends import (
    BACKENDS,
    DEFAULT_ENCODER_BATCH_WORDPIECES,
    FACTORY,
    INT8_BACKENDS,
    TORCH,
    TORCH_INT8,
    EncoderBackendError,
)
from .batched_inference import forget_batch, install_batched_inference, serialize_batch_place
from .fork_safety import install_fork_handlers
from .registration import first_copy_in_process, register_factory
from .torch_int8 import check_keep_fp32, quantize_linear_int8

# The component of pipelines trained before encoder_backend existed; they load no more (see retired_encoder_int8).
RETIRED_FACTORY = "encoder_int8"
# What the component declares to spaCy (nlp.analyze_pipes): it releases, in doc.user_data, the Doc's place in the
# transformer's batch and the NER's score rows, which the transformer's output put there.
ASSIGNS = ["doc.user_data"]
REQUIRES = ["doc._.trf_data"]


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
        internals.check_internals(name, nlp)
        self.applied = False
        self.batched = False

    @property
    def quantized(self) -> bool:
        """Whether the encoder now runs in int8."""
        return self.applied and self.backend in INT8_BACKENDS

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
        return internals.encoder_shims(self.nlp.get_pipe(self.transformer).model)

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
                check_keep_fp32(internals.encoder_module(shim), self.keep_fp32)
            except EncoderBackendError as err:
                raise EncoderBackendError(f"{self.name}: {err} Fix [components.{self.name}] keep_fp32.") from None
            try:
                if self.backend == TORCH_INT8:
                    module = quantize_linear_int8(internals.encoder_module(shim), self.keep_fp32)
                else:
                    module = self.onnx_module(shim)
                internals.replace_encoder_module(shim, module)
            except EncoderBackendError as err:
                raise EncoderBackendError(f"{self.name}: {err}") from None
        self.applied = True

    def check_cpu(self, shim: Any) -> None:
        from thinc.api import NumpyOps, get_current_ops

        device = next(internals.encoder_module(shim).parameters()).device
        if device.type != "cpu" or not isinstance(get_current_ops(), NumpyOps):
            on_gpu = "on a GPU" if device.type == "cpu" else f"on {device}"
            raise EncoderBackendError(
                f"{self.name}: backend {self.backend!r} runs on the CPU only, but the encoder is {on_gpu}. "
                f"On a GPU, load with backend 'torch' (mixed precision: fp16), or load on the CPU."
            )

    def onnx_module(self, shim: Any) -> Any:
        from .onnx_encoder import OnnxRuntimeEncoder, output_signature
        from .onnx_export import onnx_graph, require_onnx_packages

        require_onnx_packages()
        torch_model, tokenizer = internals.encoder_module(shim), internals.hf_tokenizer(shim)
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


DEFAULT_CONFIG = {
    "backend": TORCH,
    "transformer": "transformer",
    "keep_fp32": [],
    "cache_dir": "",
    "batched_inference": True,
    "keep_trf_data": False,
    # Sleeping pool threads: inside the pipeline, spaCy's work runs between encoder calls on the same cores.
    "onnx_spinning": False,
    "encoder_batch_wordpieces": DEFAULT_ENCODER_BATCH_WORDPIECES,
}
# The copy of the runtime that registers the factories also makes the process fork-safe (at the end of the file).
FIRST_COPY_IN_PROCESS = first_copy_in_process()


@register_factory(FACTORY, default_config=DEFAULT_CONFIG, assigns=ASSIGNS, requires=REQUIRES)
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


# Every setting the retired component took, so that the config's validation lets the load reach the message.
@register_factory(RETIRED_FACTORY, default_config={"enabled": False, **DEFAULT_CONFIG})
def retired_encoder_int8(
    nlp: Language,
    name: str,
    enabled: bool,
    backend: str,
    transformer: str,
    keep_fp32: list[str],
    cache_dir: str,
    batched_inference: bool,
    keep_trf_data: bool,
    onnx_spinning: bool,
    encoder_batch_wordpieces: int,
) -> Any:
    """A pipeline that still names the factory the encoder_backend component replaced: the error with the fix."""
    raise EncoderBackendError(
        f"{name}: the pipeline's config.cfg names the factory '{RETIRED_FACTORY}', which en_bert_ner no longer has. "
        f'In config.cfg, under [components.{name}], set factory = "{FACTORY}", delete the line `enabled = ...`, '
        f'and set backend = "{TORCH_INT8}" where enabled was true (else "{TORCH}"); or retrain with the '
        "project's configs."
    )


if FIRST_COPY_IN_PROCESS:
    install_fork_handlers()
    srsly.msgpack_encoders.register("en_bert_ner.BatchPlace", func=serialize_batch_place)
