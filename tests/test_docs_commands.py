"""Every command shown in README.md and docs/guide.md runs as written.

Each doc's ```bash blocks run in order in a fresh folder, as a reader would type them:
`shapetrace ...` (and `python -m shapetrace ...`) through the CLI, shell steps that make a
file (a heredoc) through bash. A command exits 0 unless its comment says `# exit status N`.
Installing packages and running this suite are the only steps left out.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from shapetrace.cli import main

ROOT = Path(__file__).parent.parent
DOCS = [ROOT / "README.md", ROOT / "docs" / "guide.md"]

_FENCE = re.compile(r"^```(\w*)[ \t]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
_HEREDOC = re.compile(r"<<-?\s*'?\"?(\w+)'?\"?\s*$")
_EXIT_STATUS = re.compile(r"#.*\bexit status (\d+)")
_SHELL_LANGUAGES = {"bash", "sh", "shell", "console"}


@dataclass(frozen=True)
class Step:
    """One thing a reader of the docs runs."""

    kind: str
    """'shapetrace' (run through the CLI), 'shell' (run through bash) or 'skipped' (installs, the suite)."""
    text: str
    """As written in the doc."""
    arguments: tuple[str, ...] = ()
    """shapetrace's arguments, for a 'shapetrace' step."""
    status: int = 0
    """The exit status the doc promises."""


def steps_in(markdown: str) -> list[Step]:
    """Every step of every shell block in `markdown`, in order."""
    steps: list[Step] = []
    for language, body in _FENCE.findall(markdown):
        if language in _SHELL_LANGUAGES:
            for line in _logical_lines(body):
                steps.extend(_steps_of(line))
    return steps


def _logical_lines(body: str) -> list[str]:
    """Lines as the shell reads them: continuations joined, a heredoc kept with its command."""
    lines, pending = [], body.splitlines()
    while pending:
        line = pending.pop(0)
        while line.endswith("\\") and pending:
            line = line[:-1] + " " + pending.pop(0).strip()
        heredoc = _HEREDOC.search(line)
        if heredoc is not None:
            terminator = pending.index(heredoc.group(1))
            line = "\n".join([line, *pending[: terminator + 1]])
            del pending[: terminator + 1]
        if line.strip():
            lines.append(line)
    return lines


def _steps_of(line: str) -> list[Step]:
    if _HEREDOC.search(line.splitlines()[0]):
        return [Step("shell", line)]
    status = _EXIT_STATUS.search(line)
    segments = _split_on_and(line)
    steps = []
    for position, tokens in enumerate(segments):
        text = shlex.join(tokens)
        promised = int(status.group(1)) if status is not None and position == len(segments) - 1 else 0
        if tokens[0] == "shapetrace":
            steps.append(Step("shapetrace", text, tuple(tokens[1:]), promised))
        elif tokens[:3] == ["python", "-m", "shapetrace"]:
            steps.append(Step("shapetrace", text, tuple(tokens[3:]), promised))
        elif tokens[0] in ("pip", "apt-get") or tokens[:3] == ["python", "-m", "pytest"]:
            steps.append(Step("skipped", text))
        else:
            steps.append(Step("shell", text, status=promised))
    return steps


def _split_on_and(line: str) -> list[list[str]]:
    """The commands of `a && b`, comments dropped."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    segments: list[list[str]] = [[]]
    for token in lexer:
        if token == "&&":
            segments.append([])
        else:
            segments[-1].append(token)
    return [segment for segment in segments if segment]


def _run(step: Step, runner: CliRunner, folder: Path) -> tuple[int, str]:
    if step.kind == "shell":
        completed = subprocess.run(
            ["bash", "-c", step.text], cwd=folder, capture_output=True, text=True, check=False, timeout=60
        )
        return completed.returncode, completed.stdout + completed.stderr
    result = runner.invoke(main, list(step.arguments), prog_name="shapetrace")
    return result.exit_code, result.output


@pytest.mark.parametrize("doc", DOCS, ids=lambda path: path.name)
def test_every_command_in_the_docs_runs_as_written(
    doc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runner: CliRunner
) -> None:
    if shutil.which("dot") is None:
        pytest.skip("Graphviz's dot is not installed: the docs draw diagrams")
    steps = steps_in(doc.read_text(encoding="utf-8"))
    assert any(step.kind == "shapetrace" for step in steps), f"{doc.name} shows no shapetrace command"
    unknown = [step.text for step in steps if step.kind == "shell" and not _HEREDOC.search(step.text.splitlines()[0])]
    assert not unknown, f"{doc.name} shows commands this test does not know: {unknown}"
    monkeypatch.chdir(tmp_path)  # files a doc writes (a.json, unet.svg) land in a fresh folder
    failures = []
    for step in steps:
        if step.kind == "skipped":
            continue
        status, output = _run(step, runner, tmp_path)
        if status != step.status or "Traceback" in output or "Error:" in output:
            failures.append(f"$ {step.text}\n(exit status {status}, the doc promises {step.status})\n{output}")
    assert not failures, f"{doc.name}: commands that do not run as written:\n" + "\n".join(failures)


def test_the_reader_of_the_docs_finds_every_kind_of_step() -> None:
    markdown = (
        "text `shapetrace unet` in a sentence is not a block\n"
        "```bash\n"
        "pip install -e . && shapetrace unet --size 225   # exit status 1\n"
        "cat > m.py <<'EOF'\n"
        "x = 1  # && not a command\n"
        "EOF\n"
        "shapetrace trace m.py:M --init '{\"dim\": 64}' \\\n"
        "    --input 1,3,8,8\n"
        "python -m shapetrace diff a.json b.json\n"
        "```\n"
        "```python\nshapetrace.trace(model)\n```\n"
    )
    assert steps_in(markdown) == [
        Step("skipped", "pip install -e ."),
        Step("shapetrace", "shapetrace unet --size 225", ("unet", "--size", "225"), 1),
        Step("shell", "cat > m.py <<'EOF'\nx = 1  # && not a command\nEOF"),
        Step(
            "shapetrace",
            "shapetrace trace m.py:M --init '{\"dim\": 64}' --input 1,3,8,8",
            ("trace", "m.py:M", "--init", '{"dim": 64}', "--input", "1,3,8,8"),
        ),
        Step("shapetrace", "python -m shapetrace diff a.json b.json", ("diff", "a.json", "b.json")),
    ]


def _inline_commands(markdown: str) -> list[str]:
    """`shapetrace ...` in running text (code spans outside the blocks)."""
    text = _FENCE.sub("", markdown)
    spans = re.findall(r"`([^`]+)`", text)
    return [" ".join(span.split()) for span in spans if re.match(r"(python -m )?shapetrace\s", span)]


@pytest.mark.parametrize("doc", DOCS, ids=lambda path: path.name)
def test_commands_in_running_text_name_commands_and_options_that_exist(doc: Path) -> None:
    commands = _inline_commands(doc.read_text(encoding="utf-8"))
    assert commands, f"{doc.name} mentions no shapetrace command in its text"
    for command in commands:
        arguments = shlex.split(command.removeprefix("python -m "))[1:]
        context = click.Context(main, info_name="shapetrace")
        subcommand = main.get_command(context, arguments[0])
        assert subcommand is not None, f"{doc.name}: {command!r} names no command"
        subcommand.make_context(arguments[0], arguments[1:], parent=context)  # a click.UsageError if it does not parse
