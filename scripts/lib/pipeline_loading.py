"""Loading a trained pipeline, a folder or an installed package, for the project's CLIs.

The CLIs that run a pipeline (evaluate, annotate, annotate_ray, the benchmarks) load it through
`load_pipeline`: one place for the load options (the device, the encoder's backend) and for the
errors that say how to get a pipeline when there is none.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import spacy
from spacy.language import Language

from scripts.runtime.backends import BACKENDS, FACTORY, TORCH, EncoderBackendError


class PipelineLoadError(Exception):
    """No pipeline could be loaded: the message says how to get one, or which option to change."""


def load_pipeline(
    model: str,
    gpu_id: int = -1,
    backend: str = TORCH,
    needs: Sequence[str] = (),
    exclude: Sequence[str] = (),
    backend_settings: dict[str, Any] | None = None,
) -> Language:
    """A pipeline from a folder or an installed package; PipelineLoadError says how to get one.

    backend: what runs the encoder (scripts.runtime.encoder_backend): torch, torch-int8, onnx or onnx-int8;
    all but torch run on the CPU only. needs: components the caller cannot work without (e.g. ner).
    exclude: components not to load, as spacy.load's exclude.
    backend_settings: other settings of the backend component (e.g. {"encoder_batch_wordpieces": 0}).
    """
    backend = getattr(backend, "value", backend)
    if backend not in BACKENDS:
        raise PipelineLoadError(f"Unknown backend {backend!r}: use one of {', '.join(BACKENDS)}.")
    if gpu_id >= 0 and backend != TORCH:
        raise PipelineLoadError(
            f"Backend {backend} runs on the CPU only, and GPU {gpu_id} was asked for. On a GPU use --backend "
            f"{TORCH} (fp16 through mixed precision); for {backend} pass --gpu-id -1."
        )
    if gpu_id >= 0:
        try:
            spacy.require_gpu(gpu_id)
        except Exception as err:  # thinc raises ValueError without cupy, CUDA errors for a bad id
            raise PipelineLoadError(
                f'GPU {gpu_id} is not usable ({err}). Install the GPU extra (`pip install -e ".[gpu]"`) '
                "or pass --gpu-id -1 to run on the CPU."
            ) from None
    try:
        location = pipeline_location(model)
        nlp = spacy.load(
            location, config=backend_overrides(model, location, backend, backend_settings), exclude=list(exclude)
        )
    except EncoderBackendError as err:
        raise PipelineLoadError(str(err)) from None
    missing = [name for name in needs if name not in nlp.pipe_names]
    if missing:
        raise PipelineLoadError(
            f"The model {model!r} has no {' or '.join(missing)} component (pipeline: {', '.join(nlp.pipe_names)})."
        )
    return nlp


HOW_TO_GET_ONE = (
    "Train a pipeline first (`spacy project run train`) and pass its folder, e.g. training/model-best, "
    "or build and install the wheel (`spacy project run package`, then "
    "`pip install packages/en_bert_ner-<version>/dist/en_bert_ner-<version>-py3-none-any.whl`) "
    "and pass the package name, en_bert_ner."
)


def pipeline_location(model: str) -> str | Path:
    """What spacy.load takes for MODEL: a pipeline folder, or an installed package's name.

    The folder pip installed a package into (meta.json, the pipeline one level down) means the
    pipeline inside it. PipelineLoadError, with how to get a pipeline, when MODEL names none.
    """
    path = Path(model)
    names_a_path = path.exists() or "/" in model or os.sep in model or model.startswith(".")
    if not names_a_path:
        if not spacy.util.is_package(model):
            raise PipelineLoadError(
                f"Can't find the pipeline '{model}': it is neither a folder nor an installed Python package. "
                f"{HOW_TO_GET_ONE}"
            )
        return model
    if not path.is_dir():
        raise PipelineLoadError(f"No pipeline at {model}: there is no such folder. {HOW_TO_GET_ONE}")
    folder = pipeline_folder(path)
    if folder == path or (folder is not None and (path / "meta.json").is_file()):
        return folder
    raise PipelineLoadError(
        f"{model} is a folder but not a spaCy pipeline: it has no config.cfg. Pass a pipeline folder "
        "such as training/model-best (not the training folder above it)."
    )


def backend_overrides(
    model: str, location: str | Path, backend: str, settings: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The config overrides that ask the pipeline's backend component for `backend` and its other `settings`.

    Pipelines trained before the encoder_backend component have no way to change the backend.
    """
    if backend == TORCH and not settings:
        return {}
    folder = location if isinstance(location, Path) else installed_pipeline_folder(location)
    config = spacy.util.load_config(folder / "config.cfg")
    names = [name for name, block in config["components"].items() if block.get("factory") == FACTORY]
    if not names:
        raise PipelineLoadError(
            f"{model} has no {FACTORY} component, so it has no backend option: "
            f"it was trained before the option existed. Retrain with the project's configs, or load it with "
            f"--backend {TORCH}."
        )
    return {f"components.{names[0]}.{name}": value for name, value in {"backend": backend, **(settings or {})}.items()}


def installed_pipeline_folder(package: str) -> Path:
    """The folder with config.cfg inside an installed pipeline package."""
    root = spacy.util.get_package_path(package)
    folder = pipeline_folder(root)
    if folder is None:
        raise PipelineLoadError(f"The package {package} at {root} holds no single pipeline folder with a config.cfg.")
    return folder


def pipeline_folder(root: Path) -> Path | None:
    """The folder with config.cfg: `root` itself, or its one subfolder with one (as pip installs a package)."""
    if (root / "config.cfg").is_file():
        return root
    inner = [child for child in root.iterdir() if (child / "config.cfg").is_file()]
    return inner[0] if len(inner) == 1 else None
