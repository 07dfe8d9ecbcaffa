"""Loading a trained pipeline, a folder or an installed package, for the project's CLIs.

scripts.evaluate, scripts.annotate and scripts.benchmark_speed load pipelines through
`load_pipeline`: one place for the load options and for the errors that say how to get a
pipeline when there is none.
"""

from __future__ import annotations

import os
from pathlib import Path

import spacy
from confection import ConfigValidationError
from spacy.language import Language

from scripts.encoder_int8 import ENABLED_SETTING, FACTORY, EncoderInt8Error


class PipelineLoadError(Exception):
    """No pipeline could be loaded: the message says how to get one, or which option to change."""


def load_pipeline(model: str, gpu_id: int = -1, int8: bool = False) -> Language:
    """A pipeline from a folder or an installed package; PipelineLoadError says how to get one.

    int8: load with the encoder's linear layers quantized to int8 (the encoder_int8 option; CPU only).
    """
    if gpu_id >= 0:
        try:
            spacy.require_gpu(gpu_id)
        except Exception as err:  # thinc raises ValueError without cupy, CUDA errors for a bad id
            raise PipelineLoadError(
                f'GPU {gpu_id} is not usable ({err}). Install the GPU extra (`pip install -e ".[cuda12x]"`) '
                "or pass --gpu-id -1 to run on the CPU."
            ) from None
    how_to_get_one = (
        "Train a pipeline first (`spacy project run train`) and pass its folder, e.g. training/model-best, "
        "or build and install the wheel (`spacy project run package`, then "
        "`pip install packages/en_bert_ner-<version>/dist/en_bert_ner-<version>-py3-none-any.whl`) "
        "and pass the package name, en_bert_ner."
    )
    path = Path(model)
    names_a_path = path.exists() or "/" in model or os.sep in model or model.startswith(".")
    if names_a_path and not path.is_dir():
        raise PipelineLoadError(f"No pipeline at {model}: there is no such folder. {how_to_get_one}")
    if names_a_path and not (path / "config.cfg").is_file():
        raise PipelineLoadError(
            f"{model} is a folder but not a spaCy pipeline: it has no config.cfg. Pass a pipeline folder "
            "such as training/model-best (not the training folder above it)."
        )
    try:
        nlp = spacy.load(model, config={ENABLED_SETTING: True} if int8 else {})
    except OSError as err:
        if "[E050]" not in str(err):  # E050: neither a folder nor an installed package
            raise
        raise PipelineLoadError(
            f"Can't find the pipeline '{model}': it is neither a folder nor an installed Python package. "
            f"{how_to_get_one}"
        ) from None
    except EncoderInt8Error as err:
        raise PipelineLoadError(str(err)) from None
    except ConfigValidationError:
        if not int8:
            raise
        raise PipelineLoadError(
            f"{model} has no {FACTORY} component, so it has no int8 option: it was trained before the option "
            "existed. Retrain with the project's configs, or load it without int8."
        ) from None
    return nlp
