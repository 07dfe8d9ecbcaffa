"""Random BERT encoders built offline in seconds, for end-to-end tests without the hub.

`build_tiny_bert`: 2 layers, 64 wide, a cased WordPiece vocabulary trained on the given
texts (the CPU tests). `build_bert_base_shaped`: bert-base's shape (12 layers, 768 wide,
12 heads, 110 M parameters) with a cased vocabulary of bert-base-cased's size (the GPU tests, where
memory and speed depend on the shape, not on what the weights have learned).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

# BERT's position limit, stated in the saved tokenizer as bert-base-cased states it.
MAX_WORDPIECES = 512
BERT_BASE_CASED_VOCAB_SIZE = 28_996


@dataclass(frozen=True)
class BertShape:
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int


TINY_SHAPE = BertShape(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)
BERT_BASE_SHAPE = BertShape(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)


def save_random_bert(output_dir: Path, vocab_size: int, shape: BertShape, seed: int = 0) -> Path:
    """A randomly initialised BertModel of this shape, saved as safetensors beside the tokenizer files."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=shape.hidden_size,
        num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads,
        intermediate_size=shape.intermediate_size,
        max_position_embeddings=MAX_WORDPIECES,
    )
    BertModel(config).save_pretrained(output_dir)
    return output_dir


def train_cased_tokenizer(output_dir: Path, texts: Iterable[str], vocab_size: int) -> int:
    """Train a cased WordPiece vocabulary on TEXTS and save it as a BERT fast tokenizer; return its size."""
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertTokenizerFast

    output_dir.mkdir(parents=True, exist_ok=True)
    wordpiece = BertWordPieceTokenizer(lowercase=False, strip_accents=False)
    wordpiece.train_from_iterator(list(texts), vocab_size=vocab_size, min_frequency=1)
    wordpiece.save_model(str(output_dir))
    BertTokenizerFast(
        vocab_file=str(output_dir / "vocab.txt"), do_lower_case=False, model_max_length=MAX_WORDPIECES
    ).save_pretrained(output_dir)
    return wordpiece.get_vocab_size()


def build_tiny_bert(output_dir: Path, texts: Iterable[str], vocab_size: int = 2000, seed: int = 0) -> Path:
    """Save a randomly initialised 2-layer BERT and its cased WordPiece tokenizer."""
    return save_random_bert(output_dir, train_cased_tokenizer(output_dir, texts, vocab_size), TINY_SHAPE, seed)


def build_bert_base_shaped(output_dir: Path, texts: Iterable[str], seed: int = 0) -> Path:
    """bert-base-cased's shape with random weights and a cased vocabulary of its size, offline.

    The vocabulary is trained on TEXTS (CoNLL-2003's training sentences reach bert-base-cased's
    28,996 entries), so the embedding matrix, memory and speed are bert-base-cased's; the
    wordpieces per word come out a little fewer than the real vocabulary's, which was trained on
    other text. These checks are about the GPU path, not about F1.
    """
    vocab_size = train_cased_tokenizer(output_dir, texts, BERT_BASE_CASED_VOCAB_SIZE)
    return save_random_bert(output_dir, vocab_size, BERT_BASE_SHAPE, seed)
