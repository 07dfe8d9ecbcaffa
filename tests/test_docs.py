"""The commands in README.md and docs/ against the code: every make target, project command and var, CLI
module and `--flag`, extra and path they name must exist, so the docs cannot drift from the code.

Commands are read from ```bash blocks and from inline code that starts like a command.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import subprocess
import sys

import pytest
import srsly
import tomllib

from tests.conftest import PROJECT_DIR

DOCS = [PROJECT_DIR / "README.md", *sorted((PROJECT_DIR / "docs").glob("*.md"))]
# What the workflow writes: a documented path under these need not exist in a clone.
GENERATED = ("corpus/", "training/", "metrics/", "packages/", "assets/", "gpu-check/", ".venv/", ".gpu/")
REPOSITORY_PREFIXES = ("scripts/", "configs/", "tests/", "docs/", ".ci/")
INLINE_COMMAND = re.compile(r"`((?:make|python -m|python3 -m|spacy project run|pip install) [^`]+)`")
PROJECT = srsly.read_yaml(PROJECT_DIR / "project.yml")
PROJECT_NAMES = {command["name"] for command in PROJECT["commands"]} | set(PROJECT.get("workflows", {}))
EXTRAS = set(tomllib.loads((PROJECT_DIR / "pyproject.toml").read_text())["project"]["optional-dependencies"])
MAKE_TARGETS = set(re.findall(r"^([a-zA-Z][\w-]*):", (PROJECT_DIR / "Makefile").read_text(), re.M))
MAKE_VARIABLES = set(re.findall(r"^([A-Z_]+) \??:?=", (PROJECT_DIR / "Makefile").read_text(), re.M))


def bash_lines(text: str) -> list[str]:
    """The command lines of the ```bash blocks, continuations joined, comments dropped."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def documented_commands() -> list[tuple[str, str]]:
    """(where, command) for every command in the docs; a generated command section is read like the rest."""
    found = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        where = path.relative_to(PROJECT_DIR).as_posix()
        found += [(where, line) for line in bash_lines(text)]
        outside_blocks = re.sub(r"```.*?```", "", text, flags=re.S)
        found += [(where, match) for match in INLINE_COMMAND.findall(outside_blocks)]
    return found


def simple_commands(line: str) -> list[list[str]]:
    """The line split into commands at ; && || and |, each as words; leading VAR=value words kept."""
    try:
        words = shlex.split(line, comments=True)
    except ValueError:  # an unbalanced quote in an inline example: read it word by word
        words = line.split()
    commands, current = [], []
    for word in words:
        if word in (";", "&&", "||", "|"):
            commands.append(current)
            current = []
        else:
            current.append(word.rstrip(";"))
    return [command for command in [*commands, current] if command]


@functools.cache
def cli_help(module: str, subcommand: str = "") -> str:
    command = [sys.executable, "-m", module, *([subcommand] if subcommand else []), "--help"]
    result = subprocess.run(
        command, cwd=PROJECT_DIR, capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "300"}
    )
    assert result.returncode == 0, f"`{' '.join(command)}` failed: {result.stderr[-2000:]}"
    return result.stdout


def flags(words: list[str]) -> list[str]:
    return [word.split("=", 1)[0] for word in words if word.startswith("--")]


def problems_of(command: list[str]) -> list[str]:
    problems = []
    while command and re.match(r"^[A-Z_][A-Z0-9_]*=", command[0]):
        command = command[1:]  # VAR=value before the command
    if not command:
        return problems
    for word in command:
        if word.startswith(REPOSITORY_PREFIXES) and not word.startswith(GENERATED):
            path = word.split(":")[0].rstrip(".,)")
            if not (PROJECT_DIR / path).exists() and "<" not in path and "*" not in path:
                problems.append(f"no such path {path}")
    if command[0] == "make":
        for word in command[1:]:
            if "=" in word:
                name, value = word.split("=", 1)
                if name not in MAKE_VARIABLES:
                    problems.append(f"the Makefile has no variable {name}")
                if name == "EXTRAS":
                    problems += [f"no extra {extra}" for extra in value.split(",") if extra not in EXTRAS]
                if name == "ARGS":
                    problems += vars_problems(shlex.split(value))
            elif not word.startswith("-") and word not in MAKE_TARGETS:
                problems.append(f"the Makefile has no target {word}")
    if "project" in command and "run" in command:
        at = command.index("run")
        if at + 1 < len(command) and command[at + 1] not in PROJECT_NAMES:
            problems.append(f"project.yml has no command or workflow {command[at + 1]}")
        problems += vars_problems(command[at + 1 :])
    if "-m" in command and command.index("-m") + 1 < len(command):
        module, *arguments = command[command.index("-m") + 1 :]
        if module.startswith("scripts."):
            problems += cli_problems(module, arguments)
    if command[:2] == ["pip", "install"] or command[1:3] == ["pip", "install"] or "pip" in command[:3]:
        for word in command:
            for extras in re.findall(r"\.\[([\w,-]+)\]", word):
                problems += [f"no extra {extra}" for extra in extras.split(",") if extra not in EXTRAS]
    return problems


def vars_problems(words: list[str]) -> list[str]:
    return [
        f"project.yml has no var {flag.removeprefix('--vars.')}"
        for flag in flags(words)
        if flag.startswith("--vars.") and flag.removeprefix("--vars.") not in PROJECT["vars"]
    ]


def cli_problems(module: str, arguments: list[str]) -> list[str]:
    if not (PROJECT_DIR / (module.replace(".", "/") + ".py")).is_file():
        return [f"no module {module}"]
    text = cli_help(module)
    subcommand = ""
    if "Commands" in text and arguments and not arguments[0].startswith("-"):
        subcommand = arguments[0]
        text = cli_help(module, subcommand)
    return [
        f"{module} {subcommand} has no option {flag}".replace("  ", " ")
        for flag in flags(arguments)
        if flag not in text
    ]


COMMANDS = documented_commands()


def test_the_docs_have_commands_to_check():
    assert len(COMMANDS) > 30
    assert any("make all" in command for _, command in COMMANDS)


@pytest.mark.parametrize(("where", "line"), COMMANDS, ids=[f"{where}:{line[:60]}" for where, line in COMMANDS])
def test_documented_command_matches_the_code(where: str, line: str):
    problems = [problem for command in simple_commands(line) for problem in problems_of(command)]
    assert not problems, f"{where}: `{line}`: {'; '.join(problems)}"


def test_local_links_lead_somewhere():
    missing = []
    for path in DOCS:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text(encoding="utf-8")):
            if "://" not in target and not (path.parent / target).exists():
                missing.append(f"{path.relative_to(PROJECT_DIR)} -> {target}")
    assert not missing


def test_the_check_finds_what_has_drifted():
    """A renamed flag, target, var, extra, module or path is reported, so the checks above can fail."""
    drifted = {
        "python -m scripts.workflow.evaluate training/model-best corpus/test.spacy metrics --no-such-flag 1": "option",
        "make no-such-target": "no target",
        "make all EXTRAS=dev,no-such-extra": "no extra",
        'make all ARGS="--vars.no_such_var 1"': "no var",
        "python -m spacy project run no-such-command .": "no command",
        "python -m scripts.no_such_module": "no module",
        "cat configs/no_such.cfg": "no such path",
    }
    for line, problem in drifted.items():
        found = [each for command in simple_commands(line) for each in problems_of(command)]
        assert any(problem in each for each in found), (line, found)


def test_every_repository_path_the_docs_name_exists():
    """Prose too: a moved or renamed file leaves no stale path behind."""
    missing = []
    for path in DOCS:
        text = re.sub(r"https?://\S+", "", path.read_text(encoding="utf-8"))
        for named in set(re.findall(r"(?<![\w/.])((?:scripts|configs|tests|docs)/[\w./-]*\w)", text)):
            if not (PROJECT_DIR / named).exists() and "<" not in named:
                missing.append(f"{path.relative_to(PROJECT_DIR)}: {named}")
    assert not missing
