"""The whole workflow, the way a user runs it: `spacy project run all`, then pip install the wheel.

Runs in a temporary copy of the project with a tiny random cased BERT, on the CPU,
with a short schedule (the project var train_overrides), on the real corpus where present.
"""

from __future__ import annotations

import json
import os
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
    PROJECT_DIR,
    VERSION,
    WorkflowRun,
    copy_project,
    flat,
    run,
    workflow_command,
    workflow_env,
    workflow_wheel,
)

pytestmark = pytest.mark.slow

RUNTIME_MODULES = sorted((PROJECT_DIR / "scripts" / "runtime").glob("*.py"))

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
    "scores": [e._.score for e in doc.ents],
    "n_docs": len(docs),
    "pipe_labels": sorted({e.label_ for d in docs for e in d.ents}),
    "pipeline": nlp.pipe_names,
    "module": spacy.util.get_package_path("en_bert_ner").as_posix(),
    "backend": nlp.get_pipe("encoder_backend").backend,
    "encoder": type(nlp.get_pipe("transformer").model.layers[0].shims[0]._model).__name__,
    "quantized": nlp.get_pipe("encoder_backend").quantized,
    "assigns": {name: attrs["assigns"] for name, attrs in nlp.analyze_pipes()["summary"].items()},
    "shipped_modules": sorted(path.stem for path in spacy.util.get_package_path("en_bert_ner").glob("*.py")),
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


# The project's own install (dist-info with its spaCy entry points, editable-install hooks).
PROJECT_DISTRIBUTION = "en_bert_ner_project"


def site_packages_without_the_project(destination: Path) -> Path:
    """A folder of links to this interpreter's installed packages, all but this project's own install.

    A user's app environment has spaCy and torch but not this project: with the project's entry
    points visible, spaCy would import `scripts.*` from it and hide whether the wheel stands alone.
    """
    destination.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if PROJECT_DISTRIBUTION not in entry.name:
            (destination / entry.name).symlink_to(entry)
    return destination


@pytest.fixture(scope="module")
def wheel_python(workflow: WorkflowRun, tmp_path_factory) -> Path:
    """The interpreter of a fresh virtualenv with the wheel installed, and spaCy but not this project."""
    folder = tmp_path_factory.mktemp("wheel_venv")
    venv = folder / "venv"
    # No bundled pip or setuptools: they would shadow the reused packages with older versions.
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], folder)
    python = venv / "bin" / "python"
    venv_site = Path(
        run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], folder).strip()
    )
    # Reuse the installed packages; --no-index proves the wheel asks for nothing else.
    reused = site_packages_without_the_project(folder / "reused_site_packages")
    (venv_site / "reuse_test_environment.pth").write_text(f"{reused}\n")
    pip = [sys.executable, "-m", "pip", "--python", str(python)]
    run([*pip, "install", "--no-index", "--quiet", str(workflow.wheel)], folder)
    return python


def app_environment(tmp_path: Path) -> dict[str, str]:
    """An app's environment: none of the project's settings, the hub offline."""
    left_out = ("PYTHONPATH", "SPACY_CONFIG_OVERRIDES", "EN_BERT_NER_ONNX_CACHE")
    env = {key: value for key, value in os.environ.items() if key not in left_out}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(tmp_path / "empty_hf_home"))
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")  # where the ONNX backends keep their graphs
    return env


def test_wheel_installs_and_loads_offline(workflow: WorkflowRun, wheel_python: Path, tmp_path):
    env = app_environment(tmp_path)
    # Nothing the model was built from may be needed any more: hide training/ and the encoder.
    hidden = [(path, tmp_path / f"hidden_{path.name}") for path in (workflow.project / "training", workflow.encoder)]
    for path, hiding_place in hidden:
        path.rename(hiding_place)
    try:
        output = run([str(wheel_python), "-c", OFFLINE_PREDICT], tmp_path, env)
        # Every other backend, from the wheel alone (ONNX Runtime's graph is exported from the installed weights).
        by_backend = {
            backend: json.loads(
                run([str(wheel_python), "-c", OFFLINE_PREDICT, backend], tmp_path, env).splitlines()[-1]
            )
            for backend in ("torch-int8", "onnx", "onnx-int8")
        }
    finally:
        for path, hiding_place in hidden:
            hiding_place.rename(path)
    result = json.loads(output.strip().splitlines()[-1])
    assert result["pipeline"] == ["transformer", "ner", "entity_scores", "encoder_backend"]
    assert result["module"].startswith(str(wheel_python.parent.parent))
    assert result["n_docs"] == 200
    assert result["ents"], "the trained model found no entity in a sentence from its training data"
    for _text, label, start, end in result["ents"]:
        assert label in LABELS and 0 <= start < end
    # Every entity scored by the shipped entity_scores component, its calibration read from the wheel.
    assert len(result["scores"]) == len(result["ents"]) and all(0 < score <= 1 for score in result["scores"])
    assert set(result["pipe_labels"]) <= LABELS
    assert not result["quantized"]
    for backend, backend_result in by_backend.items():
        encoder = "OnnxRuntimeEncoder" if backend.startswith("onnx") else result["encoder"]
        assert backend_result["backend"] == backend and backend_result["encoder"] == encoder
        assert backend_result["quantized"] == backend.endswith("int8")
        assert backend_result["module"] == result["module"] and backend_result["n_docs"] == 200
    assert by_backend["onnx"]["ents"] == result["ents"]
    # nlp.analyze_pipes() on the wheel tells what the shipped components write.
    assert result["assigns"]["entity_scores"] == ["doc.spans", "span._.score", "doc.ents"]
    assert result["assigns"]["encoder_backend"] == ["doc.user_data"]
    # The runtime's modules, flat inside the package (scripts.workflow.package_runtime), none left behind.
    assert set(result["shipped_modules"]) == {"__init__"} | {path.stem for path in RUNTIME_MODULES} - {"__init__"}
    assert len(list((tmp_path / "cache" / "en_bert_ner" / "onnx").glob("*.onnx"))) == 2


# nlp.pipe(n_process=2) as an app calls it: Linux's default start method, fork, nothing set up.
PIPE_TWO_PROCESSES = """
import json, spacy
nlp = spacy.load("en_bert_ner")
texts = ["EU rejects German call to boycott British lamb ."] * 20
one = [[(e.start, e.end, e.label_) for e in doc.ents] for doc in nlp.pipe(texts)]
two = [[(e.start, e.end, e.label_) for e in doc.ents] for doc in nlp.pipe(texts, n_process=2)]
print(json.dumps({"one": one, "two": two}))
"""
PIPE_DEADLINE_S = 180


def test_wheel_pipe_with_two_processes_by_default(wheel_python: Path, tmp_path):
    """A hang (PyTorch's thread pool after fork) fails the test at the deadline instead of stalling it."""
    process = subprocess.Popen(
        [str(wheel_python), "-c", PIPE_TWO_PROCESSES],
        cwd=tmp_path,
        env=app_environment(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # so that the workers are killed with it
    )
    try:
        stdout, stderr = process.communicate(timeout=PIPE_DEADLINE_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(f"nlp.pipe(n_process=2) on the installed wheel did not finish in {PIPE_DEADLINE_S}s")
    assert process.returncode == 0, stderr[-4000:]
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result["two"] == result["one"] and any(result["one"])
    assert stderr.strip() == "", f"the run printed warnings:\n{stderr}"


def test_spacy_evaluate_on_model_best(workflow: WorkflowRun, tmp_path):
    """spaCy's own CLI on the folder the workflow wrote, no --code: the same F1 as scripts/workflow/evaluate.py."""
    scores = tmp_path / "scores.json"
    output = run(
        [sys.executable, "-m", "spacy", "evaluate", "training/model-best", "corpus/test.spacy", "--output", scores],
        workflow.project,
    )
    expected = json.loads((workflow.project / "metrics" / "test.json").read_text())["seqeval_strict"]["f1"]
    assert json.loads(scores.read_text())["ents_f"] == pytest.approx(expected, abs=1e-9)
    assert f"NER F {expected * 100:.2f}" in flat(output)


def test_spacy_benchmark_speed_on_model_best(workflow: WorkflowRun):
    output = run(
        [
            sys.executable,
            "-m",
            "spacy",
            "benchmark",
            "speed",
            "training/model-best",
            "corpus/test.spacy",
            "--batch-size",
            "32",
            "--batches",
            "30",
            "--warmup",
            "1",
        ],
        workflow.project,
    )
    assert "Outliers" in output and "words/s" in flat(output)


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
