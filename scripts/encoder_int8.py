"""An int8 encoder as a load option of the pipeline: the `encoder_int8` component.

The component sits in the pipeline and does nothing until it is enabled at load time:

    nlp = spacy.load("en_bert_ner", config={"components.encoder_int8.enabled": True})

Then, once the transformer's weights are loaded, the linear layers of its encoder (the
bulk of the work on a CPU) are replaced by dynamically quantized int8 ones
(`torch.ao.quantization.quantize_dynamic`, per-channel weights), except the layers
listed in `keep_fp32`. CPU only; the saved weights stay fp32.
`spacy package --code scripts/encoder_int8.py` ships this file inside the wheel, so
the installed package offers the option without this project.

Because the package imports this file as it loads, it is also where the pipeline is made
safe for `nlp.pipe(texts, n_process=N)` with Linux's default start method, fork (see
`install_fork_handlers`).
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from spacy.language import Language
from spacy.tokens import Doc

FACTORY = "encoder_int8"
TOKENIZERS_PARALLELISM = "TOKENIZERS_PARALLELISM"
ENABLED_SETTING = f"components.{FACTORY}.enabled"


class EncoderInt8Error(ValueError):
    """The option cannot be applied: the message says why and what to do instead."""


def quantize_linear_int8(torch_model: Any, keep_fp32: Sequence[str] = ()) -> Any:
    """A copy of the module with its nn.Linear layers quantized to int8, except those named in keep_fp32.

    Weights are quantized ahead, per output channel (per-tensor scales cost about twice the F1
    on CoNLL); activations are quantized per batch as they come.
    """
    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig

    linear = [name for name, module in torch_model.named_modules() if isinstance(module, torch.nn.Linear)]
    unknown = sorted(set(keep_fp32) - set(linear))
    if unknown:
        raise EncoderInt8Error(
            f"keep_fp32 names {', '.join(unknown)}, which the encoder has no linear layer of that name for. "
            f"Its linear layers are named like {linear[0]!r} ... {linear[-1]!r}."
        )
    qconfig = {name: per_channel_dynamic_qconfig for name in linear if name not in keep_fp32}
    # torch warns that its quantization API moves to torchao; the pinned torch still ships and supports it.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"torch\.(ao\.quantization|quantize_per_tensor)")
        return torch.ao.quantization.quantize_dynamic(torch_model, qconfig)


class EncoderInt8:
    """No-op at inference; when enabled, quantizes the named transformer's encoder as the pipeline loads."""

    def __init__(self, nlp: Language, name: str, enabled: bool, transformer: str, keep_fp32: list[str]) -> None:
        self.nlp = nlp
        self.name = name
        self.enabled = enabled
        self.transformer = transformer
        self.keep_fp32 = keep_fp32
        self.quantized = False

    def __call__(self, doc: Doc) -> Doc:
        return doc

    def pipe(self, docs: Iterable[Doc], batch_size: int = 128) -> Iterator[Doc]:
        yield from docs

    def quantize(self) -> None:
        if self.transformer not in self.nlp.component_names:
            raise EncoderInt8Error(
                f"{self.name}: the pipeline has no component '{self.transformer}' to quantize "
                f"(components: {', '.join(self.nlp.component_names)}). Set [components.{self.name}] transformer."
            )
        shims = [shim for node in self.nlp.get_pipe(self.transformer).model.walk() for shim in node.shims]
        for shim in shims:
            device = next(shim._model.parameters()).device
            if device.type != "cpu":
                raise EncoderInt8Error(
                    f"{self.name}: int8 quantization runs on the CPU only, but the encoder is on {device}. "
                    "On a GPU, load the pipeline without the int8 option."
                )
            try:
                shim._model = quantize_linear_int8(shim._model, self.keep_fp32)
            except EncoderInt8Error as err:
                raise EncoderInt8Error(f"{self.name}: {err} Fix [components.{self.name}] keep_fp32.") from None
        self.quantized = True

    # The transformer deserializes before this component (pipeline order), so its weights are in place here.
    def from_disk(self, path: Path, *, exclude: Iterable[str] = ()) -> EncoderInt8:
        if self.enabled and not self.quantized:
            self.quantize()
        return self

    def from_bytes(self, bytes_data: bytes, *, exclude: Iterable[str] = ()) -> EncoderInt8:
        return self.from_disk(Path(), exclude=exclude)

    # Nothing of its own to save: the option is a setting in config.cfg.
    def to_disk(self, path: Path, *, exclude: Iterable[str] = ()) -> None:
        if self.quantized:
            raise EncoderInt8Error(
                f"{self.name}: this pipeline was loaded with int8 weights, which would overwrite the fp32 ones. "
                "Load it without the int8 option to save it."
            )

    def to_bytes(self, *, exclude: Iterable[str] = ()) -> bytes:
        self.to_disk(Path(), exclude=exclude)
        return b""


def make_encoder_int8(nlp: Language, name: str, enabled: bool, transformer: str, keep_fp32: list[str]) -> EncoderInt8:
    return EncoderInt8(nlp, name, enabled, transformer, keep_fp32)


def use_one_torch_thread_in_forked_child() -> None:
    """A forked child inherits the parent's OpenMP state but not its worker threads.

    PyTorch's CPU kernels run on GNU OpenMP, whose thread pool does not survive fork: a child
    whose first forward pass asks for more than one thread waits forever for threads that do
    not exist (that is how `nlp.pipe(n_process=2)` hung). With one thread, OpenMP runs the
    work inline and never touches the pool. spaCy's workers are meant to be one per core
    anyway, so one thread each is also the right share of the CPU.
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


# This file is imported both as scripts.encoder_int8 (the project) and from inside the installed
# wheel; registering the same factory twice from two files is an error in spaCy, so the first wins.
if not Language.has_factory(FACTORY):
    install_fork_handlers()
    Language.factory(FACTORY, default_config={"enabled": False, "transformer": "transformer", "keep_fp32": []})(
        make_encoder_int8
    )
