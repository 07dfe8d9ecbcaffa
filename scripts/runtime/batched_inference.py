"""spaCy's work around the encoder, batch by batch, at inference on a CPU.

At inference spacy-transformers spends about as much time around the encoder as a fast encoder
spends in it: a Python conversion of every tokenizer output, a Token object for every token at
each of several steps (span texts, alignment, the split of the output per Doc), and, in every
listener, an alignment and a pooling call per Doc. `install_batched_inference` replaces those
steps at inference with the same computations done once per batch in numpy: the same
wordpieces, alignment and pooled rows, so the same entities. Training goes through
spacy-transformers' own code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy
import torch
from spacy.language import Language
from spacy.tokens import Doc

from . import internals
from .action_scores import forget_action_scores
from .backends import EncoderBackendError
from .greedy_ner import install_greedy_decoding
from .internals import truncate_oversize_splits
from .wordpieces import align_wordpieces, span_texts, tokenize

# Where a Doc keeps its place in the transformer's batch, from the transformer to its listeners: a
# user_data key of its own, not a doc._ extension.
BATCH_KEY = ("en_bert_ner", "transformer_batch")


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

    if is_train or "logger" in model.attrs:
        return internals.upstream("transformer_forward")(model, docs, is_train)
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
            internals.upstream_set_annotations(self.transformer, docs, predictions)
        else:
            for doc in docs:
                doc.user_data.pop(internals.TRF_DATA_KEY, None)
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
    chain_forward = internals.upstream("chain_forward")
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
    trfs2arrays_forward = internals.upstream("trfs2arrays_forward")
    chain_forward = internals.upstream("chain_forward")
    listeners = transformer.listeners
    chains = []
    for name in transformer.listening_components:
        for node in nlp.get_pipe(name).model.walk():
            if (
                internals.forward_of(node) in (chain_forward, batched_listener_forward)
                and len(node.layers) == 2
                and any(node.layers[0] is listener for listener in listeners)
                and internals.forward_of(node.layers[1]) is trfs2arrays_forward
            ):
                chains.append(node)
    return chains, len(listeners)


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

    from thinc.api import NumpyOps, get_current_ops

    if not isinstance(get_current_ops(), NumpyOps):
        return False
    transformer = nlp.get_pipe(transformer_name)
    model = transformer.model
    tokenizer = model.tokenizer
    changed = False
    upstream_forward = internals.forward_of(model) is internals.upstream("transformer_forward")
    if upstream_forward and getattr(tokenizer, "is_fast", False) and tokenizer.pad_token is not None:
        if tokenizer.padding_side != "right" or returns_tensor_tuples(model):
            encoder_batch_wordpieces = 0
        forward = partial(batched_transformer_forward, encoder_batch_wordpieces=encoder_batch_wordpieces)
        internals.replace_forward(model, forward)
        changed = True
    chains, n_listeners = listener_chains(nlp, transformer)
    if chains:
        for chain in chains:
            internals.replace_forward(chain, batched_listener_forward)
        annotations = BatchAnnotations(transformer, keep_trf_data or len(chains) < n_listeners)
        internals.replace_set_annotations(transformer, annotations)
        changed = True
    return install_greedy_decoding(nlp) or changed


def returns_tensor_tuples(transformer_model: Any) -> bool:
    """Whether the HF encoder also returns each layer's states or attentions (tuples of tensors)."""
    config = internals.hf_config(transformer_model)
    return bool(getattr(config, "output_hidden_states", False) or getattr(config, "output_attentions", False))


def forget_batch(doc: Doc) -> Doc:
    """What batched inference left on the Doc for later components: its batch place, the ner's score rows."""
    doc.user_data.pop(BATCH_KEY, None)
    forget_action_scores(doc)
    return doc
