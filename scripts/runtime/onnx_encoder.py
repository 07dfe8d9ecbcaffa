"""The ONNX backends' encoder: an ONNX Runtime session standing in for the HF torch module inside the shim."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy
import torch

# What spacy-transformers passes to the encoder (layers/transformer_model.py,
# _convert_transformer_inputs): token_type_ids only where the tokenizer makes them.
ENCODER_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
SAMPLE_TEXTS = ["Peter Blackburn reported from Brussels .", "EU rejects German call to boycott British lamb ."]

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
