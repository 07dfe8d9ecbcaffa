"""A tiny random cased BERT, built in seconds, for end-to-end tests without the hub."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


def build_tiny_bert(output_dir: Path, texts: Iterable[str], vocab_size: int = 2000, seed: int = 0) -> Path:
    """Save a randomly initialised 2-layer BERT and its cased WordPiece tokenizer."""
    import torch
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    output_dir.mkdir(parents=True, exist_ok=True)
    wordpiece = BertWordPieceTokenizer(lowercase=False, strip_accents=False)
    wordpiece.train_from_iterator(list(texts), vocab_size=vocab_size, min_frequency=1)
    wordpiece.save_model(str(output_dir))
    BertTokenizerFast(vocab_file=str(output_dir / "vocab.txt"), do_lower_case=False).save_pretrained(output_dir)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=wordpiece.get_vocab_size(),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=512,
    )
    BertModel(config).save_pretrained(output_dir)
    return output_dir
