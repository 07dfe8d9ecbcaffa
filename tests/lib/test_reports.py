"""scripts.lib.reports: tables and the machine a figure comes from."""

from __future__ import annotations

import json
from pathlib import Path

from scripts.lib.reports import (
    SPEED_FLAGS,
    SPEED_PACKAGES,
    machine_description,
    md_table,
    package_versions,
    percent,
    write_json_and_markdown,
)


def test_the_machine_names_its_cpu_flags_and_cores():
    description = machine_description()
    assert "CPU cores" in description and "(flags: " in description
    named = description.split("(flags: ", 1)[1].split(")", 1)[0].removeprefix("none of ").split()
    assert named and set(named) <= set(SPEED_FLAGS)
    assert {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8"} <= set(SPEED_FLAGS)


def test_the_machine_names_the_versions_that_decide_the_speed():
    import importlib.metadata

    description = machine_description()
    for package in ("torch", "onnxruntime", "spacy"):
        assert package in SPEED_PACKAGES
    assert f"torch {importlib.metadata.version('torch')}" in description
    assert f"spacy {importlib.metadata.version('spacy')}" in description
    assert "Python 3." in description
    assert package_versions(["torch", "no-such-package-here"]).endswith("no-such-package-here not installed")


def test_tables_and_percentages():
    assert percent(0.85423) == "85.42"
    assert md_table(["name", "F1"], [["a|b", "1.00"]]).splitlines() == [
        "| name | F1 |",
        "| --- | --: |",
        "| a|b | 1.00 |",
    ]


def test_json_and_markdown_beside_it(tmp_path: Path):
    output = tmp_path / "metrics" / "benchmark.json"
    write_json_and_markdown(output, {"words_per_second": 1.5}, "| a |\n")
    assert json.loads(output.read_text()) == {"words_per_second": 1.5}
    assert output.with_suffix(".md").read_text() == "| a |\n"
