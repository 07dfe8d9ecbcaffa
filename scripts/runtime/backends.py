"""The encoder backends by name, the components' names and settings, and their error: no torch import here.

What runs the fine-tuned encoder is a load option of the pipeline, the `backend` setting of the
encoder_backend component (docs/encoder-backends.md):

- `torch` (default): PyTorch in fp32, as trained.
- `torch-int8`: PyTorch with the encoder's linear layers quantized to int8 as the pipeline loads.
- `onnx`: ONNX Runtime in fp32, on an ONNX graph exported from the loaded weights.
- `onnx-int8`: ONNX Runtime on that graph with its linear layers quantized to int8.

The project's CLIs list these names without loading torch (scripts/lib/cli.py).
"""

from __future__ import annotations

FACTORY = "encoder_backend"
BACKEND_SETTING = f"components.{FACTORY}.backend"
TORCH, TORCH_INT8, ONNX, ONNX_INT8 = "torch", "torch-int8", "onnx", "onnx-int8"
BACKENDS = (TORCH, TORCH_INT8, ONNX, ONNX_INT8)
ONNX_BACKENDS = (ONNX, ONNX_INT8)
INT8_BACKENDS = (TORCH_INT8, ONNX_INT8)
# The exact versions the project tests; also the `onnx` extra of pyproject.toml.
ONNX_INSTALL = "pip install onnxruntime==1.32.0 onnx==1.23.2"
# Padded wordpieces per encoder call at inference on a CPU (see batched_inference.predict_in_calls);
# docs/benchmarks.md has the sweep that chose it.
DEFAULT_ENCODER_BATCH_WORDPIECES = 1024
# Overrides the default cache folder of the ONNX graphs (a component's cache_dir setting overrides both).
CACHE_VARIABLE = "EN_BERT_NER_ONNX_CACHE"


class EncoderBackendError(ValueError):
    """The backend cannot be used: the message says why and what to do instead."""
