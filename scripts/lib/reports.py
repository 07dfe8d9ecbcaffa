"""Reports the workflow and the benchmarks write: numbers as text, Markdown tables, the machine a figure comes from."""

from __future__ import annotations

import json
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scripts.lib.atomic import write_text_atomic
from scripts.lib.machine import available_cpus


def percent(fraction: float) -> str:
    return f"{100 * fraction:.2f}"


def md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("`", "\\`")


def md_table(header: Sequence[str], rows: Sequence[Sequence[Any]], numeric: Sequence[int] | None = None) -> str:
    """A Markdown table; `numeric` columns (by default all but the first) are right-aligned."""
    numeric = range(1, len(header)) if numeric is None else numeric
    aligns = ["--:" if i in numeric else "---" for i in range(len(header))]
    lines = [header, aligns, *rows]
    return "\n".join("| " + " | ".join(str(cell) for cell in line) + " |" for line in lines)


# The vector instructions that decide how fast int8 and fp32 kernels run: two CPUs sold under one model
# name ("AMD EPYC") can differ in them, and ONNX Runtime's speed with them.
SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")


# The packages whose versions decide the speed figures, as pip names them.
SPEED_PACKAGES = ("torch", "onnxruntime", "spacy", "spacy-transformers", "transformers", "thinc", "numpy")


def package_versions(packages: Sequence[str] = SPEED_PACKAGES) -> str:
    """'torch 2.13.0+cpu, onnxruntime 1.32.0, ...' (from the installed metadata; nothing is imported)."""
    from importlib.metadata import PackageNotFoundError, version

    versions = []
    for package in packages:
        try:
            versions.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            versions.append(f"{package} not installed")
    return ", ".join(versions)


def machine_description() -> str:
    """CPU model and its vector instructions (Linux), cores, platform and the versions that decide the speed.

    The speeds mean little without them: two CPUs sold under one model name can differ in the
    instructions that ONNX Runtime's and PyTorch's kernels use, and so in speed.
    """
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    names = [line for line in lines if line.startswith("model name")]
    cpu = names[0].split(":", 1)[1].strip() if names else platform.machine()
    flag_lines = [line for line in lines if line.startswith("flags")]
    present = set(flag_lines[0].split(":", 1)[1].split()) if flag_lines else set()
    flags = " ".join(flag for flag in SPEED_FLAGS if flag in present) or "none of " + " ".join(SPEED_FLAGS)
    return (
        f"{cpu} (flags: {flags}), {available_cpus()} CPU cores, {platform.platform()}; "
        f"Python {platform.python_version()}, {package_versions()}"
    )


def write_json_and_markdown(output: Path, result: dict[str, Any], markdown: str) -> None:
    """The result as JSON at `output` and its Markdown beside it (same name, .md), each written atomically."""
    write_text_atomic(output, json.dumps(result, indent=2) + "\n")
    write_text_atomic(output.with_suffix(".md"), markdown)
