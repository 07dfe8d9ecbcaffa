"""The ONNX backends' graphs: exported from the loaded weights, checked against PyTorch, int8 copies, and their cache.

The graphs are made on first use and cached under `cache_dir` (default: $EN_BERT_NER_ONNX_CACHE,
else en_bert_ner/onnx under $XDG_CACHE_HOME or ~/.cache), named by a hash of the weights and the
versions that made them: later loads read the cached file.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy
import torch

from .backends import CACHE_VARIABLE, FACTORY, ONNX, ONNX_INSTALL, EncoderBackendError
from .onnx_encoder import ENCODER_INPUTS, SAMPLE_TEXTS, make_session

# Part of every cached graph's name: raise it when the export changes, so that old graphs are not reused.
EXPORT_FORMAT = "1"
ONNX_OPSET = 17


def require_onnx_packages() -> None:
    missing = [name for name in ("onnxruntime", "onnx") if importlib.util.find_spec(name) is None]
    if missing:
        raise EncoderBackendError(
            f"The ONNX Runtime backends need {' and '.join(missing)}, which is not installed: `{ONNX_INSTALL}` "
            "(in this project: `pip install -e '.[onnx]'`). Or load with backend 'torch' or 'torch-int8'."
        )


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
