"""Usage mistakes are usage errors (exit 2, one line), and nothing prints a traceback without --debug.

Each model here is small and written for one mistake: a forward that takes (x, t), one that
takes x alone, one that takes keywords only, one that takes anything.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from torch import nn

import shapetrace
from shapetrace.cli import main
from shapetrace.errors import UsageError

MODELS = '''
import torch
from torch import nn


class TimeNet(nn.Module):
    """forward(x, t): an image and its timesteps."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.embed = nn.Linear(1, 4)

    def forward(self, x, t):
        return self.conv(x) + self.embed(t.float()[:, None])[:, :, None, None]


class ImageNet(nn.Module):
    """forward(x): an image alone."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        return self.conv(x)


class KeywordOnly(nn.Module):
    """forward(*, sample): keywords only."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, *, sample):
        return self.conv(sample)


class OptionalContext(nn.Module):
    """forward(x, context=None): the context is optional."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x, context=None):
        return self.conv(x)


class Anything(nn.Module):
    """forward(*args, **kwargs): takes whatever it is given."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, *args, **kwargs):
        return self.conv(args[0] if args else next(iter(kwargs.values())))


def _blend(a, b):
    return a + b


class DeepTypeError(nn.Module):
    """forward(x) whose own code calls a helper with too few arguments: a bug of the model."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        return _blend(self.conv(x))


class HalfOnly(nn.Module):
    """forward(x) that refuses weights or inputs of any dtype but bfloat16: a trace that runs shows the cast."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        if self.conv.weight.dtype != torch.bfloat16 or x.dtype != torch.bfloat16:
            raise ValueError(f"weights {self.conv.weight.dtype}, input {x.dtype}: expected bfloat16")
        return self.conv(x)
'''


@pytest.fixture
def models(tmp_path: Path) -> Path:
    path = tmp_path / "usage_models.py"
    path.write_text(MODELS, encoding="utf-8")
    return path


def _trace(runner: CliRunner, models: Path, name: str, *arguments: str) -> Any:
    return runner.invoke(main, ["trace", f"{models}:{name}", *arguments])


def _one_error_line(result: Any) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    (line,) = result.output.splitlines()
    assert line.startswith("Error: "), line
    return str(line)


# --- item 6: the inputs are bound to forward's signature before any tracing -------------------


@pytest.mark.parametrize(
    ("name", "arguments", "expected"),
    [
        (
            "TimeNet",
            ["--input", "1,3,8,8"],
            "forward(x, t) takes 2 positional inputs but got 1: add --timestep, or --input for t",
        ),
        (
            "ImageNet",
            ["--input", "1,3,8,8", "--timestep"],
            "forward(x) takes 1 positional input but got 2: drop --timestep",
        ),
        (
            "ImageNet",
            ["--input", "1,3,8,8", "--input", "1,3,8,8"],
            "forward(x) takes 1 positional input but got 2: drop the --input after the first",
        ),
        ("TimeNet", ["--input", "1,3,8,8", "--timestep", "--kw", "mask=1,8"], "forward(x, t) has no argument 'mask'"),
        (
            "KeywordOnly",
            ["--input", "1,3,8,8"],
            "forward(*, sample) takes keywords only but got 1 positional input: give --kw sample=SHAPE instead",
        ),
        ("KeywordOnly", ["--kw", "x=1,3,8,8"], "forward(*, sample) has no argument 'x'"),
        ("TimeNet", ["--input", "1,3,8,8", "--kw", "x=1,3,8,8"], "forward(x, t) got x twice"),
    ],
    ids=["missing-timestep", "extra-timestep", "extra-input", "unknown-kw", "keyword-only", "unknown-kw-only", "twice"],
)
def test_a_call_forward_cannot_take_is_a_usage_error(
    runner: CliRunner, models: Path, name: str, arguments: list[str], expected: str
) -> None:
    line = _one_error_line(_trace(runner, models, name, *arguments))
    assert expected in line, line


def test_the_unknown_keyword_message_lists_what_forward_takes(runner: CliRunner, models: Path) -> None:
    line = _one_error_line(_trace(runner, models, "TimeNet", "--input", "1,3,8,8", "--timestep", "--kw", "mask=1,8"))
    assert "--kw mask" in line and "expected one of x, t" in line, line


@pytest.mark.parametrize(
    ("name", "arguments"),
    [
        ("TimeNet", ["--input", "1,3,8,8", "--timestep"]),
        ("TimeNet", ["--input", "1,3,8,8", "--kw", "t=1:int64"]),
        ("KeywordOnly", ["--kw", "sample=1,3,8,8"]),
        ("OptionalContext", ["--input", "1,3,8,8"]),
        ("OptionalContext", ["--input", "1,3,8,8", "--kw", "context=1,4"]),
        ("Anything", ["--input", "1,3,8,8", "--timestep", "--kw", "whatever=1,4"]),
    ],
    ids=["time", "t-by-keyword", "keyword-only", "default-left-out", "default-given", "var-args"],
)
def test_a_call_forward_takes_is_traced(runner: CliRunner, models: Path, name: str, arguments: list[str]) -> None:
    result = _trace(runner, models, name, *arguments, "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["outputs"] == [[1, 4, 8, 8]]


def test_a_type_error_inside_the_forward_is_still_a_break(runner: CliRunner, models: Path) -> None:
    result = _trace(runner, models, "DeepTypeError", "--input", "1,3,8,8", "--format", "json")
    assert result.exit_code == 1, result.output
    (brk,) = json.loads(result.output)["breaks"]
    assert "TypeError" in brk["message"] and "_blend" in brk["message"]


class _TimeNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.conv(x) * t.float()[:, None, None, None]
        return out


def _meta_time_net() -> nn.Module:
    with torch.device("meta"):
        return _TimeNet()


def test_trace_sizes_names_the_missing_argument() -> None:
    with pytest.raises(UsageError, match=r"forward\(x, t\) is missing t: it takes 2 positional inputs but got 1"):
        shapetrace.trace_sizes(_meta_time_net(), [(1, 3, 8, 8)])
    assert shapetrace.trace_sizes(_meta_time_net(), [(1, 3, 8, 8)], timestep=True).ok


def test_trace_names_an_unknown_keyword_and_an_extra_input() -> None:
    x = torch.empty(1, 3, 8, 8, device="meta")
    t = torch.empty(1, dtype=torch.long, device="meta")
    with pytest.raises(UsageError, match=r"forward\(x, t\) has no argument 'mask': expected one of x, t"):
        shapetrace.trace(_meta_time_net(), x, t, mask=x)
    with pytest.raises(UsageError, match=r"forward\(x, t\) takes 2 positional inputs but got 3"):
        shapetrace.trace(_meta_time_net(), x, t, t)
    assert shapetrace.trace(_meta_time_net(), x, t=t).ok


def test_size_rule_names_a_missing_argument() -> None:
    with pytest.raises(UsageError, match=r"forward\(x, t\) is missing t"):
        shapetrace.size_rule(_meta_time_net(), torch.empty(1, 3, 8, 8, device="meta"))


def test_a_model_with_a_pre_hook_is_not_second_guessed() -> None:
    # A forward pre-hook may supply arguments the call leaves out: binding is left to the call.
    model = _meta_time_net()
    model.register_forward_pre_hook(lambda _, args: (*args, torch.empty(1, dtype=torch.long, device="meta")))
    assert shapetrace.trace(model, torch.empty(1, 3, 8, 8, device="meta")).ok


# --- item 6: a floating input dtype, or --dtype, sets the dtype of a copy of the model ------------


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
def test_a_floating_input_dtype_casts_the_model(runner: CliRunner, models: Path, dtype: str) -> None:
    result = _trace(runner, models, "ImageNet", "--input", f"1,3,8,8:{dtype}", "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["outputs"] == [[1, 4, 8, 8]]


@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_dtype_option_sets_the_model_and_unnamed_inputs(runner: CliRunner, models: Path, device: str) -> None:
    result = _trace(runner, models, "HalfOnly", "--input", "1,3,8,8", "--dtype", "bfloat16", "--device", device)
    assert result.exit_code == 0, result.output
    without = _trace(runner, models, "HalfOnly", "--input", "1,3,8,8", "--device", device, "--format", "json")
    assert without.exit_code == 1, without.output
    assert "weights torch.float32, input torch.float32: expected bfloat16" in without.output
    assert _trace(runner, models, "HalfOnly", "--input", "1,3,8,8:bfloat16", "--device", device).exit_code == 0


def test_dtype_and_a_different_named_input_dtype_break_as_torch_would(runner: CliRunner, models: Path) -> None:
    result = _trace(runner, models, "ImageNet", "--input", "1,3,8,8:float64", "--dtype", "float16", "--device", "cpu")
    assert result.exit_code == 1, result.output  # the user named both: each is kept as asked


def test_an_integer_input_keeps_the_model_dtype(runner: CliRunner, tmp_path: Path) -> None:
    target = tmp_path / "tokens.py"
    target.write_text(
        "import torch\n"
        "class Tokens(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.embed = torch.nn.Embedding(10, 4)\n"
        "    def forward(self, ids):\n"
        "        assert self.embed.weight.dtype == torch.float32, self.embed.weight.dtype\n"
        "        return self.embed(ids)\n",
        encoding="utf-8",
    )
    result = runner.invoke(main, ["trace", f"{target}:Tokens", "--input", "2,5:int64", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["outputs"] == [[2, 5, 4]]


def test_a_bad_dtype_option_is_a_click_invalid_value(runner: CliRunner, models: Path) -> None:
    result = _trace(runner, models, "ImageNet", "--input", "1,3,8,8", "--dtype", "int64")
    assert result.exit_code == 2
    assert "Error: Invalid value for '--dtype': 'int64' is not one of" in result.output


def test_trace_sizes_casts_a_copy_never_the_model() -> None:
    model = _meta_time_net()
    trace = shapetrace.trace_sizes(model, [(1, 3, 8, 8)], timestep=True, dtypes=[torch.float16])
    assert trace.ok, trace.breaks
    assert all(parameter.dtype == torch.float32 for parameter in model.parameters())


def test_unet_dtype_option(runner: CliRunner) -> None:
    result = runner.invoke(main, ["unet", "--size", "16", "--chs", "1,2", "--n-channels", "8", "--dtype", "float16"])
    assert result.exit_code == 0, result.output


# --- item 7: an allocation that fails on the CPU is a usage error naming the size ----------------

CPU_ALLOCATOR_MESSAGE = (
    "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
    "you tried to allocate 240000000000 bytes. Error code 12 (Cannot allocate memory)"
)


def _cpu_allocator_failure() -> BaseException:
    # What torch 2.13 raises on the CPU when malloc fails: a plain RuntimeError from c10's enforce.
    return RuntimeError(CPU_ALLOCATOR_MESSAGE)


@pytest.mark.parametrize(
    "failure",
    [_cpu_allocator_failure, lambda: torch.OutOfMemoryError("out of memory"), MemoryError],
    ids=["cpu-allocator", "torch-out-of-memory", "memory-error"],
)
def test_an_input_that_cannot_be_allocated_is_a_usage_error(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch, failure: Any
) -> None:
    def refuse(*_: Any, **__: Any) -> torch.Tensor:
        raise failure()

    monkeypatch.setattr(torch, "randn", refuse)
    line = _one_error_line(runner.invoke(main, ["unet", "--device", "cpu", "--size", "100000"]))
    assert "cannot allocate" in line and "[2, 3, 100000, 100000]" in line and "--device meta" in line, line


def test_a_real_allocation_failure_on_the_cpu_is_a_usage_error(runner: CliRunner) -> None:
    # 64 x 3 x 2**20 x 2**20 float32 values are 768 TiB, more than a 64-bit address space holds:
    # malloc refuses at once, however the kernel overcommits, and nothing is touched.
    size = str(1 << 20)
    line = _one_error_line(runner.invoke(main, ["unet", "--device", "cpu", "--size", size, "--batch", "64"]))
    assert f"[64, 3, {size}, {size}]" in line and "--device meta" in line, line


def test_a_trace_input_that_cannot_be_allocated_is_a_usage_error(runner: CliRunner, models: Path) -> None:
    shape = f"64,3,{1 << 20},{1 << 20}"  # 768 TiB: beyond any address space
    line = _one_error_line(_trace(runner, models, "ImageNet", "--input", shape, "--device", "cpu"))
    assert f"[64, 3, {1 << 20}, {1 << 20}]" in line and "--device meta" in line, line


def test_weights_that_cannot_be_allocated_suggest_meta(runner: CliRunner, tmp_path: Path) -> None:
    target = tmp_path / "wide.py"
    target.write_text(
        "import torch\n"
        "class Wide(torch.nn.Module):\n"
        "    def __init__(self, width, fan_out):\n"
        "        super().__init__()\n"
        "        self.linear = torch.nn.Linear(width, fan_out)\n"
        "    def forward(self, x):\n"
        "        return self.linear(x)\n",
        encoding="utf-8",
    )
    # 10**6 x 10**8 float32 weights are 400 TB: beyond any address space.
    init = '{"width": 1000000, "fan_out": 100000000}'
    arguments = ["trace", f"{target}:Wide", "--init", init, "--input", "1,1000000"]
    line = _one_error_line(runner.invoke(main, [*arguments, "--device", "cpu"]))
    assert "cannot allocate" in line and "--device meta" in line, line
    assert runner.invoke(main, [*arguments, "--device", "meta"]).exit_code == 0


def test_an_allocation_failure_inside_the_forward_is_a_usage_error(runner: CliRunner, tmp_path: Path) -> None:
    target = tmp_path / "grows.py"
    target.write_text(
        "import torch\n"
        "class Grows(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.conv = torch.nn.Conv2d(3, 4, 1)\n"
        "        self.up = torch.nn.Upsample(scale_factor=100000)\n"
        "    def forward(self, x):\n"
        "        return self.up(self.conv(x))\n",
        encoding="utf-8",
    )
    arguments = ["trace", f"{target}:Grows", "--input", "1,3,64,64"]  # the upsampled output: 655 TB
    line = _one_error_line(runner.invoke(main, [*arguments, "--device", "cpu"]))
    assert "cannot allocate" in line and "up (Upsample)" in line and "--device meta" in line, line
    assert runner.invoke(main, [*arguments, "--device", "meta"]).exit_code == 0


# --- item 7: an output that cannot be written is a usage error naming the path -------------------


@pytest.mark.parametrize("suffix", ["svg", "png", "pdf", "json", "html", "dot", "txt"])
def test_an_output_under_a_file_is_a_usage_error(runner: CliRunner, tmp_path: Path, suffix: str) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("", encoding="utf-8")
    destination = blocker / f"trace.{suffix}"
    line = _one_error_line(runner.invoke(main, ["unet", "--size", "16", "--chs", "1,2", "-o", str(destination)]))
    assert f"cannot write {str(destination)!r}" in line, line


@pytest.mark.parametrize("suffix", ["svg", "png", "pdf", "json", "html"])
def test_an_output_in_a_missing_directory_is_a_usage_error(runner: CliRunner, tmp_path: Path, suffix: str) -> None:
    destination = tmp_path / "nonexistent" / "dir" / f"x.{suffix}"
    line = _one_error_line(runner.invoke(main, ["unet", "--size", "16", "--chs", "1,2", "-o", str(destination)]))
    assert f"cannot write {str(destination)!r}" in line and "does not exist" in line, line


def test_an_image_that_cannot_be_written_is_a_usage_error(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A directory that refuses writes (as root, permissions cannot show it): the write itself fails.
    def refuse(self: Path, _: bytes) -> int:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "write_bytes", refuse)
    destination = tmp_path / "x.png"
    line = _one_error_line(runner.invoke(main, ["unet", "--size", "16", "--chs", "1,2", "-o", str(destination)]))
    assert line == f"Error: cannot write {str(destination)!r}: Permission denied", line


@pytest.mark.parametrize("failure", [MemoryError, _cpu_allocator_failure], ids=["memory-error", "cpu-allocator"])
def test_running_out_of_memory_anywhere_is_a_usage_error(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch, failure: Any
) -> None:
    # Past the tracer (here, rendering a large table): the machine's memory, not a bug of shapetrace.
    def refuse(*_: Any, **__: Any) -> None:
        raise failure()

    monkeypatch.setattr("shapetrace.render.table.trace_report", refuse)
    line = _one_error_line(runner.invoke(main, ["unet", "--size", "16", "--chs", "1,2"]))
    assert line.startswith("Error: out of memory") and "--device meta" in line, line
