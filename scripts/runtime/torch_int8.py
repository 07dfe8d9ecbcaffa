"""The `torch-int8` backend: the encoder's linear layers quantized to int8 in PyTorch as the pipeline loads."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch

from .backends import EncoderBackendError


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
