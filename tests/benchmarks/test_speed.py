from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

from scripts.benchmarks import speed as speed_benchmark
from scripts.benchmarks import speed_configurations
from scripts.benchmarks.harness import WARM_UP_TEXTS, sentence_texts, timed_passes
from scripts.benchmarks.speed_configurations import (
    BY_NAME,
    CONFIGURATIONS,
    QUANTIZATION_CONFIG,
    RecordedCalls,
    Runner,
    UnsupportedCpuError,
    optimum_int8_config,
    this_cpus_int8_config,
)
from tests.benchmarks.test_hf_reference import train_reference_on_fixture
from tests.conftest import PROJECT_DIR, WorkflowRun, flat, run

ONNX_ROWS = {
    "spacy_onnx",
    "spacy_onnx_int8",
    "encoder_forward_onnx",
    "encoder_forward_onnx_int8",
    "encoder_calls_onnx",
    "encoder_calls_onnx_int8",
}
OPTIMUM_ROWS = {"optimum_onnx", "optimum_onnx_int8"}


@pytest.fixture(scope="module")
def recipe(tmp_path_factory, tiny_bert) -> Path:
    """The HF recipe's model on the fixture corpus, and that corpus: what the HF rows run."""
    folder = tmp_path_factory.mktemp("recipe")
    train_reference_on_fixture(tiny_bert, folder / "corpus", folder / "hf", 16)
    return folder


def speed_command(workflow: WorkflowRun, recipe: Path, encoder: Path, output: Path, *options: str) -> list[str]:
    return [
        "-m", "scripts.benchmarks.speed", str(workflow.model_best), str(recipe / "hf" / "model"), str(encoder),
        str(recipe / "corpus" / "test.spacy"), str(output), "--reference", str(recipe / "hf" / "reference.json"),
        *options,
    ]  # fmt: skip


def hide_modules(monkeypatch, *hidden: str) -> None:
    """importlib.util.find_spec as on an install without these packages (a missing parent raises, as it does)."""
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args):
        if name.split(".")[0] in hidden:
            if "." in name:
                raise ModuleNotFoundError(f"No module named {name.split('.')[0]!r}")
            return None
        return real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_without_onnx_runtime_its_rows_are_skipped_with_the_extra_named(monkeypatch):
    hide_modules(monkeypatch, "onnxruntime")
    skipped = speed_benchmark.skipped_configurations()
    assert set(skipped) == ONNX_ROWS | OPTIMUM_ROWS
    assert all("onnxruntime not installed: the onnx extra brings it" in skipped[name] for name in ONNX_ROWS)
    # With onnxruntime hidden, the optimum rows name it too (and optimum, where that is absent as well).
    assert all(
        "onnxruntime" in skipped[name] and "not installed: the optimum extra brings" in skipped[name]
        for name in OPTIMUM_ROWS
    )
    assert {each.name for each in CONFIGURATIONS if not each.modules} == {
        each.name for each in CONFIGURATIONS
    } - ONNX_ROWS - OPTIMUM_ROWS


def test_without_optimum_only_its_rows_are_skipped(monkeypatch):
    hide_modules(monkeypatch, "optimum")
    skipped = speed_benchmark.skipped_configurations()
    assert set(skipped) == OPTIMUM_ROWS
    assert all(
        "optimum.onnxruntime not installed: the optimum extra brings it (`pip install -e '.[optimum]'`)" in reason
        for reason in skipped.values()
    )


@pytest.mark.slow
def test_speed_benchmark_without_the_onnx_extra_runs_the_other_rows(tmp_path, tiny_bert, recipe, workflow):
    """As on an install without the onnx extra (onnxruntime and onnx hidden): the run ends, naming what it skipped."""
    output = tmp_path / "benchmark_speed.json"
    # Every process of the run (the benchmark spawns one per configuration) starts without them.
    hiding = tmp_path / "without_onnx"
    hiding.mkdir()
    (hiding / "sitecustomize.py").write_text("import sys\nsys.modules['onnxruntime'] = sys.modules['onnx'] = None\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hiding), str(PROJECT_DIR)])}
    command = speed_command(workflow, recipe, tiny_bert, output, "--repetitions", "1", "--limit", "6")
    printed = run([sys.executable, *command], PROJECT_DIR, env)
    speed = json.loads(output.read_text())
    assert set(speed["skipped"]) == ONNX_ROWS | OPTIMUM_ROWS and not ONNX_ROWS & set(speed["runs"])
    assert speed["spacy_words_per_s"] > 0 and "ratio_onnx_vs_hf_bs32" not in speed
    assert "spacy_onnx: skipped, onnxruntime and onnx not installed: the onnx extra brings them" in flat(printed)
    table = output.with_suffix(".md").read_text()
    assert "| spaCy pipeline, ONNX Runtime fp32 (backend onnx) | skipped: onnxruntime and onnx not installed" in table


@pytest.mark.slow
def test_speed_benchmark_runs_every_configuration_on_a_slice(tmp_path, tiny_bert, recipe, workflow: WorkflowRun):
    output = tmp_path / "benchmark_speed.json"
    run(
        [sys.executable, *speed_command(workflow, recipe, tiny_bert, output, "--repetitions", "2", "--limit", "12")],
        PROJECT_DIR,
    )
    speed = json.loads(output.read_text())
    for key in (
        "spacy_words_per_s",
        "spacy_scores_off_words_per_s",
        "spacy_int8_words_per_s",
        "spacy_onnx_words_per_s",
        "spacy_onnx_int8_words_per_s",
        "hf_pipeline_bs1_words_per_s",
        "hf_pipeline_bs32_words_per_s",
        "encoder_forward_words_per_s",
        "encoder_forward_int8_words_per_s",
        "encoder_forward_onnx_words_per_s",
        "encoder_forward_onnx_int8_words_per_s",
        "encoder_calls_onnx_words_per_s",
        "encoder_calls_onnx_int8_words_per_s",
        "encoder_calls_words_per_s",
        "encoder_calls_int8_words_per_s",
        "optimum_onnx_words_per_s",
        "optimum_onnx_int8_words_per_s",
    ):
        assert speed[key] > 0, key
    assert speed["ratio_vs_hf_bs32"] == pytest.approx(
        speed["spacy_words_per_s"] / speed["hf_pipeline_bs32_words_per_s"]
    )
    # Entity scores cost time, never entities: the same test F1 with them on and off.
    assert speed["ratio_scores_on_vs_off"] == pytest.approx(
        speed["spacy_words_per_s"] / speed["spacy_scores_off_words_per_s"]
    )
    assert speed["test_f1_strict"]["spacy"] == speed["test_f1_strict"]["spacy_scores_off"]
    assert speed["ratio_int8_vs_encoder_int8"] == pytest.approx(
        speed["spacy_int8_words_per_s"] / speed["encoder_forward_int8_words_per_s"]
    )
    assert speed["ratio_onnx_int8_vs_hf_bs32"] == pytest.approx(
        speed["spacy_onnx_int8_words_per_s"] / speed["hf_pipeline_bs32_words_per_s"]
    )
    assert speed["ratio_onnx_vs_encoder_onnx"] == pytest.approx(
        speed["spacy_onnx_words_per_s"] / speed["encoder_forward_onnx_words_per_s"]
    )
    assert speed["ratio_onnx_int8_vs_optimum_onnx_int8"] == pytest.approx(
        speed["spacy_onnx_int8_words_per_s"] / speed["optimum_onnx_int8_words_per_s"]
    )
    assert speed["ratio_onnx_vs_encoder_calls_onnx"] == pytest.approx(
        speed["spacy_onnx_words_per_s"] / speed["encoder_calls_onnx_words_per_s"]
    )
    for name in OPTIMUM_ROWS:
        raw_text = speed["runs"][name]["test_f1_raw_text"]
        assert raw_text["best_aggregation"] in {"simple", "first", "average", "max"}
        assert raw_text["f1"] == max(raw_text["by_aggregation"].values()) and 0.0 <= raw_text["f1"] <= 1.0
    assert speed["n_texts"] == 12 and "CPU cores" in speed["machine"] and speed["skipped"] == {}
    assert all(len(run["seconds"]) == 2 and run["peak_rss_mb"] > 0 for run in speed["runs"].values())
    reference = json.loads((recipe / "hf" / "reference.json").read_text())
    assert set(speed["test_f1_strict"]) == {
        "spacy",
        "spacy_scores_off",
        "spacy_int8",
        "spacy_onnx",
        "spacy_onnx_int8",
        "hf_pipeline_bs1",
        "hf_pipeline_bs32",
    }
    # The ONNX Runtime fp32 pipeline tags like the PyTorch one.
    assert speed["test_f1_strict"]["spacy_onnx"] == pytest.approx(speed["test_f1_strict"]["spacy"], abs=1e-9)
    assert speed["test_f1_strict"]["hf_pipeline_bs32"] == reference["test"]["seqeval_strict"]["f1"]
    table = output.with_suffix(".md").read_text()
    assert "| spaCy pipeline, ONNX Runtime int8 (backend onnx-int8) |" in table and "Share of the ceiling" in table
    assert "| bare encoder forward, ONNX Runtime fp32, length-sorted batches of 32 (ceiling) |" in table
    assert "| bare encoder forward, ONNX Runtime int8, pre-tokenized, in the pipeline's encoder calls |" in table
    chosen = this_cpus_int8_config()
    assert speed["runs"]["optimum_onnx_int8"][QUANTIZATION_CONFIG] == chosen
    optimum_int8_row = f"| HF optimum pipeline, ONNX Runtime dynamic int8 (per channel), batch 32, optimum's {chosen} "
    assert optimum_int8_row in table
    assert "against HF optimum's pipeline of the same precision: ONNX Runtime fp32" in table
    assert "entity scores on, against off (PyTorch fp32): " in table
    assert "onnxruntime 1.32.0" in speed["machine"] and "torch " in speed["machine"]


def test_the_encoder_alone_is_timed_on_the_pipelines_calls(workflow: WorkflowRun):
    """Every text's wordpieces once, in the pipeline's calls: at most the budget's padded wordpieces, or one a batch."""
    from scripts.benchmarks.speed_configurations import recorded_encoder_calls
    from scripts.lib.pipeline_loading import load_pipeline

    texts = sentence_texts(workflow.project / "corpus" / "test.spacy", 40)
    tokenizer = load_pipeline(str(workflow.model_best)).get_pipe("transformer").model.tokenizer
    expected = sorted(tokenizer(texts)["input_ids"])

    def real_rows(calls):
        rows = []
        for call in calls:
            real = call["attention_mask"].astype(bool)
            assert real[:, -1].any()  # each call is cut to its longest row
            rows += [row[mask].tolist() for row, mask in zip(call["input_ids"], real, strict=True)]
        return sorted(rows)

    calls, first_ten = recorded_encoder_calls(str(workflow.model_best), [texts, texts[:10]], 64)
    assert real_rows(first_ten) == sorted(tokenizer(texts[:10])["input_ids"])
    assert len(calls) > 3 and all(call["input_ids"].size <= 64 or len(call["input_ids"]) == 1 for call in calls)
    assert real_rows(calls) == expected
    (one_a_batch,) = recorded_encoder_calls(str(workflow.model_best), [texts], 0)
    assert len(one_a_batch) < len(calls) and real_rows(one_a_batch) == expected
    assert any(call["input_ids"].size > 64 for call in one_a_batch)


# benchmark_speed.json's keys as the hand-written table of speed_configurations.py made them (before its rows
# were generated per backend): the docs, gpu_report and earlier runs read these names.
TABLE_ORDER = [
    "spacy", "spacy_int8", "spacy_onnx", "spacy_onnx_int8", "spacy_scores_off", "hf_pipeline_bs1", "hf_pipeline_bs32",
    "optimum_onnx", "optimum_onnx_int8", "encoder_forward", "encoder_calls", "encoder_forward_int8",
    "encoder_calls_int8", "encoder_forward_onnx", "encoder_calls_onnx", "encoder_forward_onnx_int8",
    "encoder_calls_onnx_int8",
]  # fmt: skip
# ratio key: (the configuration over, the configuration under)
RATIOS = {
    "ratio_vs_hf_bs32": ("spacy", "hf_pipeline_bs32"),
    "ratio_vs_encoder": ("spacy", "encoder_forward"),
    "ratio_vs_encoder_calls": ("spacy", "encoder_calls"),
    "ratio_int8_vs_hf_bs32": ("spacy_int8", "hf_pipeline_bs32"),
    "ratio_int8_vs_encoder_int8": ("spacy_int8", "encoder_forward_int8"),
    "ratio_int8_vs_encoder_calls_int8": ("spacy_int8", "encoder_calls_int8"),
    "ratio_onnx_vs_hf_bs32": ("spacy_onnx", "hf_pipeline_bs32"),
    "ratio_onnx_vs_encoder_onnx": ("spacy_onnx", "encoder_forward_onnx"),
    "ratio_onnx_vs_encoder_calls_onnx": ("spacy_onnx", "encoder_calls_onnx"),
    "ratio_onnx_vs_optimum_onnx": ("spacy_onnx", "optimum_onnx"),
    "ratio_onnx_int8_vs_hf_bs32": ("spacy_onnx_int8", "hf_pipeline_bs32"),
    "ratio_onnx_int8_vs_encoder_onnx_int8": ("spacy_onnx_int8", "encoder_forward_onnx_int8"),
    "ratio_onnx_int8_vs_encoder_calls_onnx_int8": ("spacy_onnx_int8", "encoder_calls_onnx_int8"),
    "ratio_onnx_int8_vs_optimum_onnx_int8": ("spacy_onnx_int8", "optimum_onnx_int8"),
    "ratio_scores_on_vs_off": ("spacy", "spacy_scores_off"),
}
RESULT_KEYS = {
    "test_f1_strict",
    "runs",
    "skipped",
    "n_texts",
    "n_words",
    "threads",
    "repetitions",
    "machine",
    "options",
}
GENERATED_LABELS = {
    "spacy": "spaCy pipeline, PyTorch fp32 (this project)",
    "spacy_int8": "spaCy pipeline, PyTorch int8 (backend torch-int8)",
    "spacy_onnx": "spaCy pipeline, ONNX Runtime fp32 (backend onnx)",
    "spacy_onnx_int8": "spaCy pipeline, ONNX Runtime int8 (backend onnx-int8)",
    "encoder_forward": "bare encoder forward, PyTorch fp32, length-sorted batches of 32 (ceiling)",
    "encoder_calls": "bare encoder forward, PyTorch fp32, pre-tokenized, in the pipeline's encoder calls",
    "encoder_forward_int8": "bare encoder forward, PyTorch int8, length-sorted batches of 32 (ceiling)",
    "encoder_calls_int8": "bare encoder forward, PyTorch int8, pre-tokenized, in the pipeline's encoder calls",
    "encoder_forward_onnx": "bare encoder forward, ONNX Runtime fp32, length-sorted batches of 32 (ceiling)",
    "encoder_calls_onnx": "bare encoder forward, ONNX Runtime fp32, pre-tokenized, in the pipeline's encoder calls",
    "encoder_forward_onnx_int8": "bare encoder forward, ONNX Runtime int8, length-sorted batches of 32 (ceiling)",
    "encoder_calls_onnx_int8": (
        "bare encoder forward, ONNX Runtime int8, pre-tokenized, in the pipeline's encoder calls"
    ),
}


def test_the_json_keeps_the_keys_and_ratios_of_the_hand_written_table(monkeypatch):
    """Every configuration measured (faked, each at its own speed): the keys and ratios of the hand-written table."""
    speeds = {name: 1000.0 + 37 * i for i, name in enumerate(TABLE_ORDER)}

    def measured(name, function, *args, expected=()):
        return {"words_per_second": speeds[name], "test_f1_strict": None, "peak_rss_mb": 1.0}

    monkeypatch.setattr(speed_benchmark, "in_fresh_process", measured)
    monkeypatch.setattr(speed_benchmark, "skipped_configurations", dict)
    monkeypatch.setattr(speed_benchmark, "machine_description", lambda: "test machine")
    result = speed_benchmark.benchmark({}, ["EU rejects German call ."], 1, 1, None)
    assert [each.name for each in CONFIGURATIONS] == TABLE_ORDER == list(result["runs"])
    assert set(result) == {f"{name}_words_per_s" for name in TABLE_ORDER} | set(RATIOS) | RESULT_KEYS
    for key, (over, under) in RATIOS.items():
        assert result[key] == pytest.approx(speeds[over] / speeds[under]), key
    assert {name: BY_NAME[name].label for name in GENERATED_LABELS} == GENERATED_LABELS
    table = speed_benchmark.markdown(result)
    assert all(f"| {BY_NAME[name].label} | {speeds[name]:,.0f} |" in table for name in TABLE_ORDER)


def test_the_warm_up_replays_recorded_calls_as_the_timed_passes_do(monkeypatch):
    """measure's warm-up runs the first texts, a new list: it must replay calls recorded for them, as the passes do."""
    import torch

    encoder_inputs = RecordedCalls(lambda text_lists: [[f"a call over {len(each)} texts"] for each in text_lists])
    replayed = []

    def run(texts):
        replayed.extend(encoder_inputs(texts))

    monkeypatch.setitem(
        speed_benchmark.RUNNERS, "encoder_calls", lambda options: Runner(run, prepare=encoder_inputs.prepare)
    )
    texts = [f"Sentence {i} ." for i in range(WARM_UP_TEXTS + 36)]
    speed_benchmark.measure("encoder_calls", {}, texts, 2, torch.get_num_threads())
    assert replayed == [f"a call over {WARM_UP_TEXTS} texts", *["a call over 100 texts"] * 2]
    with pytest.raises(RuntimeError, match="call prepare"):
        encoder_inputs(texts[1:])


def test_the_bare_encoder_warms_up_on_the_pipelines_calls_not_on_the_ceilings_path(monkeypatch, tiny_bert, workflow):
    """The encoder alone, warm-up and timed passes alike, replays the pipeline's recorded calls: never tokenizing."""
    import transformers

    from scripts.benchmarks.speed_configurations import encoder_runner

    def ceiling_path(*args, **kwargs):
        raise AssertionError("the encoder alone tokenized texts: the ceiling's path, not the pipeline's calls")

    forwards = []
    load_model = transformers.AutoModel.from_pretrained

    def counted_model(*args, **kwargs):
        model = load_model(*args, **kwargs)
        model.register_forward_hook(lambda module, inputs, output: forwards.append(module))
        return model

    # The calls are recorded in a fresh process, which these do not reach: they see only the runner's own passes.
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *args, **kwargs: ceiling_path)
    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", counted_model)
    sentences = sentence_texts(workflow.project / "corpus" / "test.spacy")
    texts = (sentences * (WARM_UP_TEXTS // len(sentences) + 2))[: WARM_UP_TEXTS + 16]
    runner = encoder_runner(str(tiny_bert), "torch", -1, str(workflow.model_best), pipeline_calls=True)
    runner.prepare(texts)
    timed_passes(runner.run, texts, 1)
    assert forwards


@pytest.mark.parametrize(
    ("flags", "machine", "config"),
    [
        ({"avx2", "avx512f", "avx512bw", "avx512_vnni"}, "x86_64", "avx512_vnni"),
        ({"avx2", "avx512f", "avx512bw"}, "x86_64", "avx512"),
        # AVX512F without BW (Xeon Phi): ONNX Runtime runs its AVX2 int8 kernels there.
        ({"avx2", "fma", "avx512f"}, "x86_64", "avx2"),
        ({"avx", "avx2", "fma"}, "x86_64", "avx2"),
        (set(), "aarch64", "arm64"),
        (set(), "arm64", "arm64"),  # macOS names it so, and has no /proc/cpuinfo
    ],
)
def test_optimum_int8_takes_the_configuration_of_the_cpus_flags(flags, machine, config):
    assert optimum_int8_config(flags, machine) == config


def test_a_cpu_that_no_int8_configuration_fits_skips_the_optimum_int8_row(monkeypatch):
    with pytest.raises(UnsupportedCpuError, match="no dynamic int8 configuration of optimum fits this CPU"):
        optimum_int8_config({"sse4_2", "avx"}, "x86_64")
    monkeypatch.setattr(speed_configurations, "module_available", lambda name: True)
    monkeypatch.setattr(speed_configurations, "cpu_flags", lambda: {"sse4_2", "avx"})
    monkeypatch.setattr(speed_configurations.platform, "machine", lambda: "x86_64")
    skipped = speed_benchmark.skipped_configurations()
    assert list(skipped) == ["optimum_onnx_int8"]
    assert skipped["optimum_onnx_int8"].startswith("no dynamic int8 configuration of optimum fits this CPU (x86_64")


def test_the_chosen_configuration_is_recorded_in_the_run_and_named_in_the_table(monkeypatch):
    import torch

    monkeypatch.setitem(
        speed_benchmark.RUNNERS,
        "optimum_onnx_int8",
        lambda options: Runner(lambda texts: None, details={QUANTIZATION_CONFIG: "avx2"}),
    )
    run = speed_benchmark.measure("optimum_onnx_int8", {}, ["EU rejects German call ."], 1, torch.get_num_threads())
    assert run[QUANTIZATION_CONFIG] == "avx2"
    assert speed_benchmark.row_label(BY_NAME["optimum_onnx_int8"], run) == (
        "HF optimum pipeline, ONNX Runtime dynamic int8 (per channel), batch 32, optimum's avx2 configuration"
    )
    assert speed_benchmark.row_label(BY_NAME["spacy"], run | {QUANTIZATION_CONFIG: None}) == BY_NAME["spacy"].label
