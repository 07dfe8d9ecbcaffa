"""Does document context pay? The same config trained per doc mode and seed, scored per gold sentence.

Variants (all from one training config, only the corpus and the reader's settings differ):
- `sentence`: one Doc per sentence (`doc_mode=sentence`);
- `document`: documents cut into chunks of whole sentences up to 128 tokens (`doc_mode=document`);
- `flert`: one sentence per example, with `--context-tokens` tokens of its neighbours on each
  side as context that the ner is not trained on.
Each run trains with `scripts.workflow.train` and is scored with `scripts.workflow.evaluate` on dev and test in its
own doc mode, so a document-mode model sees whole test documents, as a user's running text.
Finished runs are kept (training/context/<variant>-seed<N>) and skipped on a rerun.
Writes metrics/benchmark_context.json and a Markdown table beside it.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from wasabi import msg

from scripts.lib.atomic import write_text_atomic
from scripts.lib.cli import fail
from scripts.lib.conll import CorpusError, DocMode
from scripts.lib.corpus_build import convert
from scripts.lib.reports import machine_description, md_table, percent, write_json_and_markdown
from scripts.lib.training_run import spacy_side

VARIANTS = ("sentence", "document", "flert")
# Test F1 gain over sentence mode, and training time ratio, that would make context the default.
WINNING_GAIN = 0.005
TIME_BUDGET = 1.2


@dataclass(frozen=True)
class Variant:
    name: str
    doc_mode: DocMode
    overrides: tuple[str, ...]


def variant(name: str, context_tokens: int) -> Variant:
    if name == "sentence":
        return Variant(name, DocMode.sentence, ())
    if name == "document":
        return Variant(name, DocMode.document, ())
    if name == "flert":
        overrides = ("--corpora.train.max_tokens", "0", "--corpora.train.context_tokens", str(context_tokens))
        return Variant(name, DocMode.document, overrides)
    raise typer.BadParameter(f"unknown variant '{name}': choose from {', '.join(VARIANTS)}", param_hint="--variants")


class RunError(Exception):
    """A training or evaluation step failed: the message names the command and its log."""


def run_step(command: list[str], log_path: Path) -> None:
    """Run one step with its output in `log_path`; the tail of the log in the error when it fails."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w", encoding="utf-8") as log:
        code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
    if code != 0:
        tail = "\n".join(log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-15:])
        raise RunError(f"`{' '.join(command)}` exited with {code}; full output in {log_path}:\n{tail}")


def make_corpora(work_dir: Path, data_dir: str, doc_modes: set[DocMode]) -> dict[DocMode, Path]:
    folders = {}
    for doc_mode in sorted(doc_modes):
        folders[doc_mode] = work_dir / f"corpus-{doc_mode.value}"
        if not (folders[doc_mode] / "test.spacy").is_file():
            msg.info(f"Writing the {doc_mode.value}-mode corpus to {folders[doc_mode]}")
            convert(folders[doc_mode], Path(data_dir) if data_dir else None, doc_mode=doc_mode)
    return folders


def train_and_score(
    run_dir: Path, corpus: Path, config: Path, model: str, seed: int, overrides: tuple[str, ...], gpu_id: int
) -> dict[str, Any]:
    """Train one model and score it; the scores are also written to run_dir/scores.json."""
    python = sys.executable
    training = run_dir / "training"
    train = [
        python,
        "-m",
        "scripts.workflow.train",
        str(config),
        str(training),
        "--model",
        model,
        "--gpu-id",
        str(gpu_id),
    ]
    train += ["--paths.train", str(corpus / "train.spacy"), "--paths.dev", str(corpus / "dev.spacy")]
    train += ["--system.seed", str(seed), *overrides]
    run_step(train, run_dir / "train.log")
    for split in ("dev", "test"):
        evaluate = [
            python,
            "-m",
            "scripts.workflow.evaluate",
            str(training / "model-best"),
            str(corpus / f"{split}.spacy"),
        ]
        evaluate += [str(run_dir / "metrics"), "--split", split, "--gpu-id", str(gpu_id), "--worst", "0"]
        run_step(evaluate, run_dir / f"evaluate_{split}.log")
    side = spacy_side(training, run_dir / "metrics")
    keys = ("dev_f1_strict", "dev_f1_default", "test_f1_strict", "test_f1_default")
    scores = {key: side[key] for key in (*keys, "train_seconds", "train_steps", "train_words")}
    # Logged at each evaluation: at step N, N + 1 batches have been trained on.
    scores["words_per_step"] = side["train_words"] / (side["train_steps"] + 1)
    write_text_atomic(run_dir / "scores.json", json.dumps(scores, indent=2) + "\n")
    return scores


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean per variant, and each variant's test gain and time ratio against sentence mode."""
    means: dict[str, dict[str, float]] = {}
    for name in dict.fromkeys(run["variant"] for run in runs):
        mine = [run for run in runs if run["variant"] == name]
        means[name] = {
            key: statistics.mean(run[key] for run in mine)
            for key in ("dev_f1_strict", "test_f1_strict", "test_f1_default", "train_seconds")
        }
        means[name]["seeds"] = len(mine)
    comparison = {}
    if "sentence" in means:
        base = means["sentence"]
        for name, mean in means.items():
            if name == "sentence":
                continue
            gain, ratio = mean["test_f1_strict"] - base["test_f1_strict"], mean["train_seconds"] / base["train_seconds"]
            comparison[name] = {
                "test_f1_strict_gain": gain,
                "train_time_ratio": ratio,
                "wins": gain >= WINNING_GAIN and ratio <= TIME_BUDGET,
            }
    return {"means": means, "against_sentence": comparison}


def markdown(result: dict[str, Any]) -> str:
    header = ["variant", "seed", "dev F1 strict", "test F1 strict", "test F1 default", "training min", "words/step"]
    rows = [
        [
            run["variant"],
            str(run["seed"]),
            *(percent(run[key]) for key in ("dev_f1_strict", "test_f1_strict", "test_f1_default")),
            f"{run['train_seconds'] / 60:.1f}",
            f"{run['words_per_step']:,.0f}",
        ]
        for run in result["runs"]
    ]
    for name, mean in result["summary"]["means"].items():
        keys = ("dev_f1_strict", "test_f1_strict", "test_f1_default")
        rows.append([f"**{name}**", "mean", *(percent(mean[k]) for k in keys), f"{mean['train_seconds'] / 60:.1f}", ""])
    lines = [
        f"Config `{result['config']}`, encoder `{result['model']}`, {result['machine']}. "
        "F1: seqeval, entity level, per gold sentence.",
        "",
        md_table(header, rows),
        "",
    ]
    for name, against in result["summary"]["against_sentence"].items():
        verdict = "wins" if against["wins"] else "does not win"
        lines.append(
            f"- {name} against sentence mode (means): test F1 {100 * against['test_f1_strict_gain']:+.2f} points, "
            f"training time {against['train_time_ratio']:.2f}x: {verdict} (needs +{100 * WINNING_GAIN:.1f} "
            f"within {TIME_BUDGET}x)."
        )
    return "\n".join(lines) + "\n"


def main(
    config: Path = typer.Argument(
        ..., exists=True, dir_okay=False, help="Training config, e.g. configs/minilm_cpu.cfg"
    ),
    output: Path = typer.Argument(..., help="metrics/benchmark_context.json; the .md goes beside it"),
    model: str = typer.Option(..., help="Encoder folder or hub name, as for the train command"),
    data_dir: str = typer.Option(
        "", help="Folder with the labelled data (as the corpus step reads it); empty: the HF hub"
    ),
    work_dir: Path = typer.Option(Path("training/context"), help="Where the corpora and the runs go"),
    variants: str = typer.Option("sentence,document", help=f"Comma-separated: {', '.join(VARIANTS)}"),
    seeds: str = typer.Option("0,1", help="Comma-separated training seeds"),
    context_tokens: int = typer.Option(32, min=1, help="flert: tokens of context on each side"),
    gpu_id: int = typer.Option(-1, help="CUDA device, -1 for the CPU"),
) -> None:
    chosen = [variant(name.strip(), context_tokens) for name in variants.split(",") if name.strip()]
    seed_list = [int(seed) for seed in seeds.split(",") if seed.strip()]
    try:
        corpora = make_corpora(work_dir, data_dir, {v.doc_mode for v in chosen})
    except CorpusError as err:
        fail("Cannot write the corpora", str(err))
    runs = []
    for seed in seed_list:
        for each in chosen:
            run_dir = work_dir / f"{each.name}-seed{seed}"
            done = run_dir / "scores.json"
            if done.is_file():
                msg.info(f"{run_dir.name}: finished before, reading {done}")
                scores = json.loads(done.read_text(encoding="utf-8"))
            else:
                msg.info(f"{run_dir.name}: training and scoring (logs in {run_dir})")
                try:
                    scores = train_and_score(
                        run_dir, corpora[each.doc_mode], config, model, seed, each.overrides, gpu_id
                    )
                except RunError as err:
                    fail(f"{run_dir.name} failed", str(err))
            msg.good(
                f"{run_dir.name}: test F1 {percent(scores['test_f1_strict'])}, dev {percent(scores['dev_f1_strict'])}, "
                f"{scores['train_seconds'] / 60:.1f} min"
            )
            runs.append({"variant": each.name, "seed": seed, **scores})
    result = {
        "config": str(config),
        "model": model,
        "machine": machine_description(),
        "runs": runs,
        "summary": summarize(runs),
    }
    write_json_and_markdown(output, result, markdown(result))
    msg.good(f"Wrote {output} and {output.with_suffix('.md').name}")
    print(markdown(result))


if __name__ == "__main__":
    typer.run(main)
