"""scripts.lib.pipeline_loading: the errors that say how to get a pipeline."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.lib.pipeline_loading import PipelineLoadError, load_pipeline


def test_a_missing_model_folder_says_how_to_get_one(tmp_path: Path):
    with pytest.raises(PipelineLoadError) as err:
        load_pipeline(str(tmp_path / "training" / "model-best"))
    message = str(err.value)
    assert f"No pipeline at {tmp_path / 'training' / 'model-best'}" in message
    assert "spacy project run train" in message and "pip install" in message


def test_an_unknown_package_name_says_how_to_get_one():
    with pytest.raises(PipelineLoadError) as err:
        load_pipeline("en_no_such_pipeline")
    message = str(err.value)
    assert "'en_no_such_pipeline'" in message and "neither a folder nor an installed Python package" in message
    assert "spacy project run train" in message and "pip install" in message


def test_a_folder_that_is_not_a_pipeline(tmp_path: Path):
    with pytest.raises(PipelineLoadError, match="no config.cfg"):
        load_pipeline(str(tmp_path))
