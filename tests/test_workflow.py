"""The whole workflow, the way a user runs it: `spacy project run all`, then pip install the wheel.

Runs in a temporary copy of the project with a tiny random cased BERT, on the CPU,
with a short schedule (SPACY_CONFIG_OVERRIDES), on the real corpus where present.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.conftest import (
    FIXTURE_CONLL_DIR,
    LABELS,
    PACKAGE,
    VERSION,
    WorkflowRun,
    copy_project,
    run,
    workflow_command,
    workflow_env,
    workflow_wheel,
)

pytestmark = pytest.mark.slow

# Runs in the fresh virtualenv with every socket refused: the model must load from the wheel alone.
OFFLINE_PREDICT = """
import json, socket, sys

def refuse(*args, **kwargs):
    raise OSError("network access attempted by the offline test")

socket.socket.connect = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse

import spacy
backend = sys.argv[1] if len(sys.argv) > 1 else None
nlp = spacy.load("en_bert_ner", config={"components.encoder_backend.backend": backend} if backend else {})
doc = nlp("EU rejects German call to boycott British lamb . Peter Blackburn reported from Brussels .")
texts = [f"Talks between Germany and France resumed on day {i} in Paris ." for i in range(200)]
docs = list(nlp.pipe(texts, batch_size=32))
print(json.dumps({
    "ents": [[e.text, e.label_, e.start, e.end] for e in doc.ents],
    "n_docs": len(docs),
    "pipe_labels": sorted({e.label_ for d in docs for e in d.ents}),
    "pipeline": nlp.pipe_names,
    "module": spacy.util.get_package_path("en_bert_ner").as_posix(),
    "backend": nlp.get_pipe("encoder_backend").backend,
    "encoder": type(nlp.get_pipe("transformer").model.layers[0].shims[0]._model).__name__,
}))
"""


def test_all_writes_every_output(workflow: WorkflowRun):
    for split in ("train", "dev", "test"):
        assert (workflow.project / "corpus" / f"{split}.spacy").is_file()
    assert (workflow.model_best / "meta.json").is_file()
    log = [json.loads(line) for line in (workflow.project / "training" / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 200 and "ents_f" in log[-1]["scores"]
    assert log[-1]["words"] > log[0]["words"] >= 0 and log[-1]["seconds"] >= log[0]["seconds"] >= 0
    assert json.loads((workflow.project / "training" / "train_stats.json").read_text())["seconds"] > 0
    for name in ("dev.json", "test.json", "report.md", "test_per_type.png", "test_errors.md", "test_worst.html"):
        assert (workflow.project / "metrics" / name).is_file(), name
    assert workflow.wheel.is_file()


def test_seqeval_strict_equals_spacy_scorer_on_the_trained_pipeline(workflow: WorkflowRun):
    """Same tokens, same sentences, valid IOB2 predictions: the two scorers must agree."""
    for split in ("dev", "test"):
        metrics = json.loads((workflow.project / "metrics" / f"{split}.json").read_text())
        assert metrics["seqeval_strict"]["f1"] == pytest.approx(metrics["spacy"]["ents_f"], abs=1e-12)
        assert metrics["seqeval_strict"]["f1"] > 0


def test_second_run_skips_finished_steps(workflow: WorkflowRun):
    for step in ("corpus", "train", "evaluate", "package"):
        assert f"Skipping '{step}': nothing changed" in workflow.second_output
    assert "Training pipeline" not in workflow.second_output


def test_tiny_model_learns(workflow: WorkflowRun):
    """An untrained pipeline scores about 0.01 entity F1 on dev; a broken trainer stays there."""
    meta = json.loads((workflow.model_best / "meta.json").read_text())
    assert meta["performance"]["ents_f"] > 0.35


def test_model_card_shows_labels_and_scores(workflow: WorkflowRun):
    card = (workflow.project / "packages" / f"{PACKAGE}-{VERSION}" / "README.md").read_text()
    test_f1 = json.loads((workflow.project / "metrics" / "test.json").read_text())["seqeval_strict"]["f1"]
    for label in LABELS:
        assert f"`{label}`" in card and f"`ENTS_F_{label}`" in card
    assert f"| `ENTS_F` | {test_f1 * 100:.2f} |" in card
    assert "CoNLL-2003" in card


def installed_packages_but_this_project(folder: Path) -> Path:
    """This interpreter's site-packages as links, without this project's own installation.

    A user's environment has the wheel's dependencies, not this project: its entry points name
    the `scripts` package, which spaCy would then import whenever it makes a pipeline, and which
    only the project's editable install (a .pth file the reused folder does not run) can find.
    """
    folder.mkdir()
    site = Path(sysconfig.get_paths()["purelib"])
    project = re.compile(r"(__editable__[._])?en_bert_ner_project[-_]", re.IGNORECASE)
    for entry in site.iterdir():
        if not project.match(entry.name):
            (folder / entry.name).symlink_to(entry)
    return folder


def test_wheel_installs_and_loads_offline(workflow: WorkflowRun, tmp_path):
    venv = tmp_path / "venv"
    # No bundled pip or setuptools: they would shadow the reused packages with older versions.
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path)
    python = venv / "bin" / "python"
    venv_site = Path(
        run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path).strip()
    )
    # Reuse this interpreter's installed packages; --no-index proves the wheel asks for nothing else.
    dependencies = installed_packages_but_this_project(tmp_path / "dependencies")
    (venv_site / "reuse_test_environment.pth").write_text(f"{dependencies}\n")
    pip = [sys.executable, "-m", "pip", "--python", str(python)]
    run([*pip, "install", "--no-index", "--quiet", str(workflow.wheel)], tmp_path)
    left_out = ("PYTHONPATH", "SPACY_CONFIG_OVERRIDES", "EN_BERT_NER_ONNX_CACHE")
    env = {key: value for key, value in os.environ.items() if key not in left_out}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(tmp_path / "empty_hf_home"))
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")  # where the ONNX backends keep their graphs
    # Nothing the model was built from may be needed any more: hide training/ and the encoder.
    hidden = [(path, tmp_path / f"hidden_{path.name}") for path in (workflow.project / "training", workflow.encoder)]
    for path, hiding_place in hidden:
        path.rename(hiding_place)
    try:
        output = run([str(python), "-c", OFFLINE_PREDICT], tmp_path, env)
        # The ONNX Runtime backends, from the wheel alone: the graph is exported from the installed weights.
        by_backend = {
            backend: json.loads(run([str(python), "-c", OFFLINE_PREDICT, backend], tmp_path, env).splitlines()[-1])
            for backend in ("onnx", "onnx-int8")
        }
    finally:
        for path, hiding_place in hidden:
            hiding_place.rename(path)
    result = json.loads(output.strip().splitlines()[-1])
    assert result["pipeline"] == ["transformer", "ner", "encoder_backend"]
    assert result["module"].startswith(str(venv))
    assert result["n_docs"] == 200
    assert result["ents"], "the trained model found no entity in a sentence from its training data"
    for _text, label, start, end in result["ents"]:
        assert label in LABELS and 0 <= start < end
    assert set(result["pipe_labels"]) <= LABELS
    for backend, backend_result in by_backend.items():
        assert backend_result["backend"] == backend and backend_result["encoder"] == "OnnxRuntimeEncoder"
        assert backend_result["module"] == result["module"] and backend_result["n_docs"] == 200
    assert by_backend["onnx"]["ents"] == result["ents"]
    assert len(list((tmp_path / "cache" / "en_bert_ner" / "onnx").glob("*.onnx"))) == 2


def test_run_killed_during_training_recovers(tmp_path, tiny_bert):
    """SIGKILL half way through `train`; the next `all` retrains and finishes, nothing corrupt is kept."""
    project = copy_project(tmp_path / "project")
    command = workflow_command(project, tiny_bert, FIXTURE_CONLL_DIR)
    process = subprocess.Popen(
        command,
        cwd=project,
        env=workflow_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        for line in process.stdout:
            if "Training pipeline" in line:
                break
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
    assert not workflow_wheel(project).exists()
    assert not list(project.rglob("*.tmp")), "a temp file was left behind"
    output = run(command, project, workflow_env())
    assert "Skipping 'corpus': nothing changed" in output
    assert "Training pipeline" in output, "the killed train step must run again"
    assert workflow_wheel(project).is_file()
