"""The training configs are complete: spaCy validates them without downloading anything."""

from __future__ import annotations

import os
import sys

import pytest
from spacy import util

from tests.conftest import PROJECT_DIR, flat, run

CONFIGS = sorted((PROJECT_DIR / "configs").glob("*.cfg"))
# What the README and tests rely on to shorten a run.
SCHEDULE_KEYS = ("warmup_steps", "total_steps", "initial_rate")
# The spaCy CLI with the project's registered functions (the configs name them) imported first.
SPACY_CLI = "import scripts.encoder_backend, scripts.training_logger; from spacy.cli import setup_cli; setup_cli()"


def test_both_configs_exist():
    assert [path.name for path in CONFIGS] == ["bert_ner.cfg", "minilm_cpu.cfg"]


@pytest.mark.parametrize("config_path", CONFIGS, ids=lambda path: path.stem)
def test_debug_config_passes_offline(config_path, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    output = run([sys.executable, "-c", SPACY_CLI, "debug", "config", str(config_path)], PROJECT_DIR, env, timeout=300)
    assert "Config is valid" in flat(output)


@pytest.mark.parametrize("config_path", CONFIGS, ids=lambda path: path.stem)
def test_schedule_is_warmup_linear_and_overridable(config_path):
    config = util.load_config(config_path, interpolate=False)
    schedule = config["training"]["optimizer"]["learn_rate"]
    assert schedule["@schedules"] == "warmup_linear.v1"
    assert all(key in schedule for key in SCHEDULE_KEYS)
    assert schedule["total_steps"] <= config["training"]["max_steps"]
    assert schedule["warmup_steps"] < schedule["total_steps"]


def test_gpu_config_is_bert_base_cased_with_mixed_precision():
    model = util.load_config(PROJECT_DIR / "configs" / "bert_ner.cfg")["components"]["transformer"]["model"]
    assert (model["name"], model["mixed_precision"]) == ("bert-base-cased", True)
    assert model["get_spans"]["window"] <= 128 < 512  # spaCy tokens per window, far below 512 wordpieces
