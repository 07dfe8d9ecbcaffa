from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest
from huggingface_hub import constants

from scripts.lib.preflight import PreflightError, check_gpu, resolve_encoder
from scripts.workflow.train import MIXED_PRECISION_SETTING, setting_pairs, training_overrides
from tests.conftest import PROJECT_DIR


def test_no_cupy_stops_with_the_three_ways_out(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy now raises ImportError
    with pytest.raises(PreflightError) as error:
        check_gpu(0)
    for hint in ("cupy is not installed", "[gpu]", "[cuda12x]", "--vars.gpu_id -1", "make demo"):
        assert hint in str(error.value)


def test_cpu_needs_no_gpu_check(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)
    check_gpu(-1)


def test_local_encoder_folder_is_used_as_is(tiny_bert):
    assert resolve_encoder(str(tiny_bert), "some-revision") == str(tiny_bert)


def test_folder_without_config_is_rejected(tmp_path):
    with pytest.raises(PreflightError, match="no config.json in this folder"):
        resolve_encoder(str(tmp_path))


def test_uncached_hub_name_offline_suggests_a_local_folder(monkeypatch, tmp_path):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(PreflightError) as error:
        resolve_encoder("no-such-org/no-such-encoder", "0123abc")
    message = str(error.value)
    assert "no-such-org/no-such-encoder" in message and "0123abc" in message
    assert "--vars.model /path/to/encoder" in message


def test_mixed_precision_is_switched_off_on_cpu_only():
    assert training_overrides("enc", -1, {})[MIXED_PRECISION_SETTING] is False
    assert MIXED_PRECISION_SETTING not in training_overrides("enc", 0, {})
    overrides = training_overrides("enc", 0, {"training.max_steps": 5}, Path("out/train_log.jsonl"))
    assert overrides == {
        "components.transformer.model.name": "enc",
        "training.logger.output_file": "out/train_log.jsonl",
        "training.max_steps": 5,
    }


def cuda_available() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["--gpu-id", "0"], "gpu_id is 0"),
        (["--model", "/nonexistent/encoder-folder", "--gpu-id", "-1"], "no such folder"),
        (["--model", "no-such-org/no-such-encoder", "--gpu-id", "-1"], "cannot be fetched from the hub"),
    ],
    ids=["gpu-without-cuda", "missing-folder", "unknown-hub-name"],
)
def test_cli_stops_before_training(tmp_path, arguments, expected):
    if arguments == ["--gpu-id", "0"] and cuda_available():
        pytest.skip("this machine has a usable GPU")
    env = {"PATH": "/usr/bin:/bin", "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "0"}
    result = subprocess.run(
        [sys.executable, "-m", "scripts.workflow.train", "configs/bert_ner.cfg", str(tmp_path / "out"), *arguments],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Cannot start training" in result.stdout and expected in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "out").exists()


def test_a_cpu_build_of_torch_beside_cupy_is_caught(monkeypatch):
    """cupy sees a GPU but torch cannot use it: training would fail later, inside the allocator."""
    import torch

    fake_cupy = types.SimpleNamespace(
        cuda=types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: 1))
    )
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(PreflightError) as error:
        check_gpu(0)
    message = str(error.value)
    assert "cupy sees 1 CUDA device(s), but torch" in message and "CUDA build of torch" in message


def test_cupy_without_a_device_names_the_machine_not_an_install(monkeypatch):
    """The gpu extra is installed but the machine has no usable GPU: installing again would not help."""

    def no_driver() -> int:
        raise RuntimeError("cudaErrorInsufficientDriver: CUDA driver version is insufficient")

    fake_cupy = types.SimpleNamespace(
        cuda=types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=no_driver))
    )
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy)
    with pytest.raises(PreflightError) as error:
        check_gpu(0)
    message = str(error.value)
    assert "no CUDA device is usable (cudaErrorInsufficientDriver" in message
    assert "driver for CUDA 13 (580 or newer" in message and "make demo" in message
    assert "Install the GPU extra" not in message


def test_setting_pairs_become_spacy_arguments():
    pairs = "training.max_steps=200 training.optimizer.learn_rate.total_steps=200 training.logger.progress_bar=false"
    assert setting_pairs(pairs) == [
        "--training.max_steps",
        "200",
        "--training.optimizer.learn_rate.total_steps",
        "200",
        "--training.logger.progress_bar",
        "false",
    ]
    assert setting_pairs("") == []


@pytest.mark.parametrize("bad", ["training.max_steps", "--training.max_steps=5", "max_steps=5"])
def test_a_bad_setting_pair_names_itself_and_the_form(bad: str):
    with pytest.raises(PreflightError, match="is not a 'section.key=value' pair") as error:
        setting_pairs(f"training.patience=0 {bad}")
    assert repr(bad) in str(error.value)


# --- the schedule sized to the corpus ------------------------------------------


@pytest.fixture(scope="module")
def fixture_train_docbin(tmp_path_factory) -> Path:
    from scripts.lib.corpus_build import convert
    from tests.conftest import FIXTURE_CONLL_DIR

    output = tmp_path_factory.mktemp("corpus")
    convert(output, FIXTURE_CONLL_DIR)
    return output / "train.spacy"


def test_epochs_size_the_schedule_to_the_corpus(fixture_train_docbin: Path, capsys):
    from scripts.lib.schedule import corpus_words
    from scripts.workflow.train import corpus_schedule

    words = corpus_words(fixture_train_docbin)
    config = PROJECT_DIR / "configs" / "minilm_cpu.cfg"
    schedule = corpus_schedule(config, {"paths.train": str(fixture_train_docbin), "training.batcher.size": 100}, 4)
    steps = -(-4 * words // 100)
    assert schedule["training.max_steps"] == schedule["training.optimizer.learn_rate.total_steps"] == steps
    assert schedule["training.optimizer.learn_rate.warmup_steps"] == round(steps / 10)
    assert f"4 epochs of {words:,} training words" in capsys.readouterr().out


def test_the_configs_schedule_is_kept_and_its_epochs_said(fixture_train_docbin: Path, capsys):
    from scripts.workflow.train import corpus_schedule

    config = PROJECT_DIR / "configs" / "minilm_cpu.cfg"
    assert corpus_schedule(config, {"paths.train": str(fixture_train_docbin)}, 0) == {}
    output = capsys.readouterr().out
    # The fixture is tiny: CoNLL's 330 steps are hundreds of its epochs, and the step says so.
    assert "The config's 330 steps" in output and "train_epochs" in output
