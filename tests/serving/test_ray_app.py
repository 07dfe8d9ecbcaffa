"""scripts.serving.ray_app: the Ray Serve config file builds the deployment, and a failed replica is named."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from scripts.serving.ray_app import last_error_line, ray_app
from scripts.serving.settings import ServeError, ServeSettings
from tests.conftest import PROJECT_DIR

SERVE_CONFIG = PROJECT_DIR / "configs" / "serve.yaml"


def test_the_serve_config_file_is_a_valid_ray_serve_config_that_builds():
    from ray.serve.schema import ServeDeploySchema

    config = yaml.safe_load(SERVE_CONFIG.read_text())
    schema = ServeDeploySchema.model_validate(config) if hasattr(ServeDeploySchema, "model_validate") else None
    schema = schema or ServeDeploySchema.parse_obj(config)
    [application] = schema.applications
    assert application.import_path == "scripts.serving.ray_app:ray_app"
    assert schema.http_options.host == "127.0.0.1"
    built = ray_app(application.args)
    deployment = built._bound_deployment
    assert deployment.name == "NerReplica"
    [settings] = built._bound_deployment.init_args
    assert settings.model == application.args["model"] and settings.torch_threads >= 1


def test_a_failed_replica_is_reported_by_the_last_line_of_its_error():
    quoted = (
        "The deployment failed to start 3 times in a row.\nTraceback (most recent call last):\n  File x\n"
        "scripts.lib.pipeline_loading.PipelineLoadError: No pipeline at /m: there is no such folder.\n\n"
    )
    assert last_error_line(quoted) == "scripts.lib.pipeline_loading.PipelineLoadError: No pipeline at /m: there is " \
                                      "no such folder."  # fmt: skip
    assert last_error_line("") == ""


def test_the_ray_builder_names_a_wrong_setting():
    with pytest.raises(ServeError, match="max_bach_size"):
        ray_app({"model": "en_bert_ner", "max_bach_size": 8})


def test_the_config_file_names_only_existing_settings():
    config = yaml.safe_load(Path(SERVE_CONFIG).read_text())
    args = dict(config["applications"][0]["args"])
    args.pop("replicas", None)
    ServeSettings.from_mapping(args)
