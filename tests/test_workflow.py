"""The whole workflow, the way a user runs it: `spacy project run all`, then pip install the wheel.

Runs in a temporary copy of the project with a tiny random cased BERT, on the CPU,
with a short schedule (SPACY_CONFIG_OVERRIDES), on the real corpus where present.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.conftest import PROJECT_DIR

pytestmark = pytest.mark.slow

PACKAGE = "en_bert_ner"
VERSION = "0.0.1"
LABELS = {"PER", "ORG", "LOC", "MISC"}
# 200 updates with warmup and decay scaled to them: about a minute on 2 cores.
SHORT_SCHEDULE = (
    "--training.max_steps 200 --training.eval_frequency 100 --training.patience 0 "
    "--training.optimizer.learn_rate.warmup_steps 20 --training.optimizer.learn_rate.total_steps 200 "
    "--training.optimizer.learn_rate.initial_rate 0.001 --training.logger.progress_bar false"
)
GENERATED = ("corpus", "training", "metrics", "packages", "assets", "project.lock")
# Runs in the fresh virtualenv with every socket refused: the model must load from the wheel alone.
OFFLINE_PREDICT = """
import json, socket, sys

def refuse(*args, **kwargs):
    raise OSError("network access attempted by the offline test")

socket.socket.connect = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse

import spacy
nlp = spacy.load("en_bert_ner")
doc = nlp("EU rejects German call to boycott British lamb . Peter Blackburn reported from Brussels .")
texts = [f"Talks between Germany and France resumed on day {i} in Paris ." for i in range(200)]
docs = list(nlp.pipe(texts, batch_size=32))
print(json.dumps({
    "ents": [[e.text, e.label_, e.start, e.end] for e in doc.ents],
    "n_docs": len(docs),
    "pipe_labels": sorted({e.label_ for d in docs for e in d.ents}),
    "pipeline": nlp.pipe_names,
    "module": spacy.util.get_package_path("en_bert_ner").as_posix(),
}))
"""


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 600) -> str:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{output[-6000:]}"
    return output


def copy_project(destination: Path) -> Path:
    ignore = shutil.ignore_patterns(".venv", ".git", "__pycache__", ".pytest_cache", ".ruff_cache", *GENERATED)
    shutil.copytree(PROJECT_DIR, destination, ignore=ignore)
    return destination


@pytest.fixture(scope="module")
def workflow(tmp_path_factory, tiny_bert, workflow_conll_dir):
    """Run `all` twice in a project copy; keep both outputs and the project folder."""
    project = copy_project(tmp_path_factory.mktemp("workflow") / "project")
    encoder = shutil.copytree(tiny_bert, project.parent / "encoder")
    env = {**os.environ, "SPACY_CONFIG_OVERRIDES": SHORT_SCHEDULE, "PYTHONPATH": str(project)}
    command = [
        sys.executable, "-m", "spacy", "project", "run", "all", str(project),
        "--vars.model", str(encoder), "--vars.gpu_id", "-1",
        "--vars.conll_dir", str(workflow_conll_dir), "--vars.version", VERSION,
    ]
    first = run(command, project, env)
    second = run(command, project, env)
    return {"project": project, "encoder": encoder, "first": first, "second": second}


def wheel_path(project: Path) -> Path:
    return project / "packages" / f"{PACKAGE}-{VERSION}" / "dist" / f"{PACKAGE}-{VERSION}-py3-none-any.whl"


def test_all_writes_every_output(workflow):
    project = workflow["project"]
    for split in ("train", "dev", "test"):
        assert (project / "corpus" / f"{split}.spacy").is_file()
    assert (project / "training" / "model-best" / "meta.json").is_file()
    assert (project / "metrics" / "test.json").is_file()
    assert wheel_path(project).is_file()


def test_second_run_skips_finished_steps(workflow):
    for step in ("corpus", "train", "evaluate", "package"):
        assert f"Skipping '{step}': nothing changed" in workflow["second"]
    assert "Training pipeline" not in workflow["second"]


def test_tiny_model_learns(workflow):
    """An untrained pipeline scores about 0.01 entity F1 on dev; a broken trainer stays there."""
    meta = json.loads((workflow["project"] / "training" / "model-best" / "meta.json").read_text())
    assert meta["performance"]["ents_f"] > 0.35


def test_model_card_shows_labels_and_scores(workflow):
    card = (workflow["project"] / "packages" / f"{PACKAGE}-{VERSION}" / "README.md").read_text()
    for label in LABELS:
        assert f"`{label}`" in card
    assert "ENTS_F" in card and "CoNLL-2003" in card


def test_wheel_installs_and_loads_offline(workflow, tmp_path):
    project = workflow["project"]
    venv = tmp_path / "venv"
    # No bundled pip or setuptools: they would shadow the reused packages with older versions.
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path)
    python = venv / "bin" / "python"
    venv_site = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path).strip())
    # Reuse this interpreter's installed packages; --no-index proves the wheel asks for nothing else.
    (venv_site / "reuse_test_environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = [sys.executable, "-m", "pip", "--python", str(python)]
    run([*pip, "install", "--no-index", "--quiet", str(wheel_path(project))], tmp_path)
    # Nothing the model was built from may be needed any more.
    shutil.rmtree(project / "training")
    shutil.rmtree(workflow["encoder"])
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "SPACY_CONFIG_OVERRIDES")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(tmp_path / "empty_hf_home"))
    result = json.loads(run([str(python), "-c", OFFLINE_PREDICT], tmp_path, env).strip().splitlines()[-1])
    assert result["pipeline"] == ["transformer", "ner"]
    assert result["module"].startswith(str(venv))
    assert result["n_docs"] == 200
    assert result["ents"], "the trained model found no entity in a sentence from its training data"
    for text, label, start, end in result["ents"]:
        assert label in LABELS and 0 <= start < end
    assert set(result["pipe_labels"]) <= LABELS
