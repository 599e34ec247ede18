"""Reliability: a trace leaves no trace in the model, bad input is one clear line, Ctrl-C stops cleanly.

Every guarantee here is listed in docs/RELIABILITY.md with the test that proves it. Tests
marked xfail(strict=True) state the behaviour the guarantee needs and fail today; each reason
names the cause.
"""

from __future__ import annotations

import dataclasses
import gc
import importlib
import json
import os
import re
import subprocess
import sys
import textwrap
import warnings
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner, Result
from torch import nn
from torch.nn.modules import module as module_module

from shapetrace import Trace, errors, trace
from shapetrace.cli import main
from shapetrace.cli import trace_target as custom
from shapetrace.cli.types import TensorSpec
from shapetrace.errors import ShapetraceError, TargetError, TraceFileError, UsageError
from shapetrace.render.dot import trace_dot
from shapetrace.render.table import title, trace_report
from shapetrace.render.tree import trace_tree
from shapetrace.tracing import targets
from tests.conftest import render, trace_unet

EXIT_INTERRUPTED = 130
"""128 + SIGINT: what shells and Python report for a run stopped by Ctrl-C."""

# --- a model with every kind of state a trace could disturb ------------------------------


class Tripwire(nn.Module):
    """Raises `exception` when called, if one is set: a forward that fails half-way."""

    def __init__(self) -> None:
        super().__init__()
        self.exception: BaseException | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.exception is not None:
            raise self.exception
        return x


class Subject(nn.Module):
    """Conv, BatchNorm (train mode: running stats a real forward would update), Dropout in eval,
    a ModuleList, a down-up path whose skip is concatenated: an odd input size breaks it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(3, 4, 3, padding=1)
        self.norm = nn.BatchNorm2d(4)
        self.dropout = nn.Dropout(0.5)
        self.dropout.eval()  # mixed training flags must come back exactly
        self.blocks = nn.ModuleList([nn.Conv2d(4, 4, 3, padding=1), Tripwire()])
        self.down = nn.AvgPool2d(2)
        self.up = nn.Upsample(scale_factor=2)
        self.conv_out = nn.Conv2d(8, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.dropout(self.norm(self.conv_in(x)))
        h = self.blocks[1](self.blocks[0](skip))
        h = self.up(self.down(h))
        output: torch.Tensor = self.conv_out(torch.cat([h, skip], dim=1))
        return output


def _identity_and_bytes(tensor: torch.Tensor) -> tuple[int, str, bytes, bool]:
    """Object identity, device, raw bytes (none on meta) and requires_grad."""
    data = b"" if tensor.is_meta else tensor.detach().cpu().contiguous().numpy().tobytes()
    return id(tensor), tensor.device.type, data, tensor.requires_grad


def _global_dicts(wanted: Callable[[str], bool]) -> dict[str, dict[Any, Any]]:
    return {
        name: dict(value)
        for name, value in vars(module_module).items()
        if name.startswith("_global_") and isinstance(value, dict) and wanted(name)
    }


_HOOK_DICTS = [name for name in vars(nn.Conv2d(1, 1, 1)) if name.endswith("hooks") or "_hooks_" in name]


@dataclasses.dataclass
class Snapshot:
    """Everything about a model and torch's global state that a trace must leave as it was."""

    hooks: list[dict[str, dict[Any, Any]]]
    global_hooks: dict[str, dict[Any, Any]]
    """torch's registries of global module hooks (register_module_forward_hook and the like)."""
    training: list[bool]
    tensors: dict[str, tuple[int, str, bytes, bool]]
    grad_enabled: bool
    inference: bool
    default_dtype: torch.dtype
    default_device: torch.device

    @classmethod
    def of(cls, model: nn.Module) -> Snapshot:
        named = [*model.named_parameters(), *model.named_buffers()]
        return cls(
            hooks=[{name: dict(getattr(module, name)) for name in _HOOK_DICTS} for module in model.modules()],
            global_hooks=_global_dicts(lambda name: name.endswith("hooks")),
            training=[module.training for module in model.modules()],
            # Identity, bytes and requires_grad of every parameter and buffer: bit-identical, not close.
            tensors={name: _identity_and_bytes(tensor) for name, tensor in named},
            grad_enabled=torch.is_grad_enabled(),
            inference=torch.is_inference_mode_enabled(),
            default_dtype=torch.get_default_dtype(),
            default_device=torch.get_default_device(),
        )


def assert_untouched(model: nn.Module, before: Snapshot) -> None:
    after = Snapshot.of(model)
    assert after.hooks == before.hooks, "a hook was left on (or taken off) a module"
    assert after.global_hooks == before.global_hooks, "a global module hook was left registered"
    assert torch._C._is_torch_function_mode_enabled() is False
    assert torch._C._len_torch_function_stack() == 0, "a TorchFunctionMode is still active"
    assert torch._C._len_torch_dispatch_stack() == 0
    assert after.training == before.training
    assert after.tensors == before.tensors, "a parameter or buffer changed"
    assert all(parameter.grad is None for parameter in model.parameters())
    assert (after.grad_enabled, after.inference) == (before.grad_enabled, before.inference)
    assert (after.default_dtype, after.default_device) == (before.default_dtype, before.default_device)


def _raise_keyboard_interrupt(*_: Any) -> None:
    raise KeyboardInterrupt


@dataclasses.dataclass(frozen=True)
class Scenario:
    """One way a trace can go: its input size, what the model does, and the break it gives."""

    size: int
    break_kind: str | None
    arm: Callable[[Subject], object] = lambda model: None


SCENARIOS = {
    "clean": Scenario(8, None),
    "size break": Scenario(9, "size"),
    "non-shape exception in forward": Scenario(
        8, "error", lambda model: setattr(model.blocks[1], "exception", ValueError("the forward gave up"))
    ),
    "KeyboardInterrupt in forward": Scenario(
        8, "interrupted", lambda model: setattr(model.blocks[1], "exception", KeyboardInterrupt())
    ),
    "KeyboardInterrupt in a user's forward hook": Scenario(
        8, "interrupted", lambda model: model.down.register_forward_hook(_raise_keyboard_interrupt)
    ),
    "KeyboardInterrupt in a user's pre-hook on a child": Scenario(
        8, "interrupted", lambda model: model.up.register_forward_pre_hook(_raise_keyboard_interrupt)
    ),
}


def _armed(scenario: Scenario) -> Subject:
    torch.manual_seed(0)
    model = Subject()
    model.norm.train()
    scenario.arm(model)
    return model


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_a_trace_leaves_the_model_and_torch_as_it_found_them(name: str) -> None:
    scenario = SCENARIOS[name]
    model = _armed(scenario)
    before = Snapshot.of(model)
    traced = trace(model, torch.randn(2, 3, scenario.size, scenario.size))
    assert_untouched(model, before)
    assert [brk.kind for brk in traced.breaks][-1:] == ([scenario.break_kind] if scenario.break_kind else [])


def test_the_snapshot_sees_what_a_real_forward_changes() -> None:
    """The check above can fail: a plain forward in train mode updates BatchNorm's statistics."""
    model = _armed(SCENARIOS["clean"])
    before = Snapshot.of(model)
    with torch.no_grad():
        model(torch.randn(2, 3, 8, 8))
    with pytest.raises(AssertionError, match="a parameter or buffer changed"):
        assert_untouched(model, before)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_the_trace_keeps_no_reference_to_the_model_or_its_tensors(name: str) -> None:
    scenario = SCENARIOS[name]

    def traced() -> tuple[Trace, weakref.ref[nn.Module], weakref.ref[torch.Tensor]]:
        model = _armed(scenario)
        x = torch.randn(2, 3, scenario.size, scenario.size)
        return trace(model, x), weakref.ref(model), weakref.ref(x)

    result, model_ref, input_ref = traced()
    gc.collect()
    assert model_ref() is None, "something still holds the model"
    assert input_ref() is None, "something still holds the input tensor"
    assert result.layers  # the Trace itself is alive and complete


def test_an_exception_inside_a_renderer_leaves_the_model_untouched(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _armed(SCENARIOS["size break"])
    before = Snapshot.of(model)
    traced = trace(model, torch.randn(2, 3, 9, 9))

    def broken_renderer(*_: Any, **__: Any) -> None:
        raise RuntimeError("renderer bug")

    monkeypatch.setattr("shapetrace.render.table.trace_table", broken_renderer)
    with pytest.raises(RuntimeError, match="renderer bug"):
        trace_report(traced)
    assert_untouched(model, before)


def test_a_trace_leaves_no_global_hook_bookkeeping_behind() -> None:
    before = _global_dicts(lambda name: True)
    trace(_armed(SCENARIOS["clean"]), torch.randn(2, 3, 8, 8))
    trace(_armed(SCENARIOS["non-shape exception in forward"]), torch.randn(2, 3, 8, 8))
    assert _global_dicts(lambda name: True) == before


# --- Ctrl-C ---------------------------------------------------------------------------------


def test_keyboard_interrupt_returns_the_partial_trace() -> None:
    model = _armed(SCENARIOS["KeyboardInterrupt in forward"])
    traced = trace(model, torch.randn(2, 3, 8, 8))
    names = [layer.name for layer in traced.layers]
    # What ran before the interrupt is kept, with its shapes; nothing after it was called.
    assert names == ["", "conv_in", "norm", "dropout", "blocks.0", "blocks.1"]
    assert traced.layers[1].outputs == ((2, 4, 8, 8),)
    (brk,) = traced.breaks
    assert brk.kind == "interrupted"
    assert traced.layers[brk.leaf].name == "blocks.1"
    assert brk.message == "interrupted in blocks.1 (Tripwire)"
    assert traced.outputs == ()
    assert Trace.from_json(traced.to_json()) == traced
    assert "interrupted" in render(trace_report(traced))


# Ctrl-C lands wherever the interpreter is: also inside shapetrace's own hooks and function mode.
# Looked up when a test runs (a rename fails that test, not the module's collection).
_TRACER_ENTRY_POINTS = {
    "begin": ("shapetrace.tracing.recorder", "Recorder.begin"),
    "end": ("shapetrace.tracing.recorder", "Recorder.end"),
    "concatenate": ("shapetrace.tracing.observer", "Observer._concatenate"),
    "function mode": ("shapetrace.tracing.observer", "Observer.__torch_function__"),
    "leaf leaves the mode": ("shapetrace.tracing.observer", "Observer._suspend"),
    "leaf returns to the mode": ("shapetrace.tracing.observer", "Observer._resume"),
}
_POSITIONS = ("first", "second", "middle", "last")


def _interrupt_cases() -> Iterator[Any]:
    for entry in _TRACER_ENTRY_POINTS:
        for position in _POSITIONS:
            yield pytest.param(entry, position, id=f"{entry}-{position}")


def _breaks_name_layers(traced: Trace) -> bool:
    """Every break names a recorded call; -1 only when none was recorded (stopped before the first)."""
    count = len(traced.layers)
    return all(0 <= brk.layer < count or (count == 0 and brk.layer == brk.leaf == -1) for brk in traced.breaks)


def _counting(monkeypatch: pytest.MonkeyPatch, entry: str, interrupt_at: int | None) -> list[int]:
    """Wrap an entry point: count its calls, and raise KeyboardInterrupt at call `interrupt_at`."""
    module_name, qualified = _TRACER_ENTRY_POINTS[entry]
    owner: Any = importlib.import_module(module_name)
    *owners, attribute = qualified.split(".")
    for name in owners:
        owner = getattr(owner, name)
    original = getattr(owner, attribute)
    calls = [0]

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == interrupt_at:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, attribute, wrapped)
    return calls


@pytest.mark.parametrize(("entry", "position"), list(_interrupt_cases()))
def test_ctrl_c_inside_the_tracer_itself_still_gives_a_usable_trace(
    monkeypatch: pytest.MonkeyPatch, entry: str, position: str
) -> None:
    x = torch.randn(2, 3, 9, 9)  # a merge and a break, so that every entry point runs
    calls = _counting(monkeypatch, entry, None)
    trace(_armed(SCENARIOS["size break"]), x)
    monkeypatch.undo()
    total = calls[0]
    assert total >= 1
    nth = min({"first": 1, "second": 2, "middle": (total + 1) // 2, "last": total}[position], total)
    model = _armed(SCENARIOS["size break"])
    before = Snapshot.of(model)
    _counting(monkeypatch, entry, nth)
    traced = trace(model, x)
    monkeypatch.undo()
    assert_untouched(model, before)
    assert "interrupted" in [brk.kind for brk in traced.breaks]
    assert _breaks_name_layers(traced)
    assert Trace.from_json(traced.to_json()) == traced
    render(trace_report(traced))


@pytest.mark.parametrize("exception", [KeyboardInterrupt, ValueError])
def test_a_pre_hook_on_the_model_that_raises_still_gives_a_usable_trace(exception: type[BaseException]) -> None:
    model = _armed(SCENARIOS["clean"])

    def refuse(*_: Any) -> None:
        raise exception("refused")

    model.register_forward_pre_hook(refuse)
    before = Snapshot.of(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns when an always_call hook raises
        traced = trace(model, torch.randn(2, 3, 8, 8))
    assert_untouched(model, before)
    assert _breaks_name_layers(traced)
    assert Trace.from_json(traced.to_json()) == traced
    render(trace_report(traced))


# --- TARGET files ---------------------------------------------------------------------------

MODELS = textwrap.dedent(
    '''
    """Models the reliability tests trace through `shapetrace trace FILE:ATTR`."""
    import torch
    from torch import nn

    NUMBER = 3


    class Small(nn.Module):
        def __init__(self, width=4):
            super().__init__()
            self.conv = nn.Conv2d(3, width, 1)
            self.norm = nn.BatchNorm2d(width)

        def forward(self, x):
            return self.norm(self.conv(x))


    def make_small():
        torch.manual_seed(0)
        return Small()


    def not_a_module():
        return 42


    def exploding():
        raise RuntimeError("constructor exploded")


    class Interrupting(Small):
        """Ctrl-C arrives after two layers ran."""

        def forward(self, x):
            x = self.norm(self.conv(x))
            raise KeyboardInterrupt


    class ReadsItem(Small):
        def forward(self, x):
            h = self.norm(self.conv(x))
            return h * (1 + int(h.mean().item() > 100))


    class ReadsList(Small):
        def forward(self, x):
            h = self.norm(self.conv(x))
            first = h.flatten()[:2].tolist()
            return h + first[0] * 0


    class Branches(Small):
        def forward(self, x):
            h = self.norm(self.conv(x))
            if h.sum() > 0:
                return h
            return -h


    class MasksByValue(Small):
        def forward(self, x):
            h = self.norm(self.conv(x))
            return h[h > 0]


    class UsesNumpy(Small):
        def forward(self, x):
            h = self.norm(self.conv(x))
            return h + torch.from_numpy(h.detach().numpy())


    INSTANCE = ReadsItem()
    '''
)
VALUE_READERS = {"ReadsItem": ".item()", "ReadsList": ".tolist()", "Branches": "if h.sum() > 0"}


@pytest.fixture(scope="module")
def models_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("targets") / "reliability_models.py"
    path.write_text(MODELS, encoding="utf-8")
    return path


@pytest.fixture
def models_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The same models as an importable module (package.module:attr), removed again afterwards."""
    name = "reliability_models_module"
    (tmp_path / f"{name}.py").write_text(MODELS, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    yield name
    sys.modules.pop(name, None)


def _one_error_line(result: Result) -> str:
    """The output must be exactly one line, `Error: ...`, and no traceback."""
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error: ")
    return lines[0].removeprefix("Error: ")


def _assert_usage_error(
    runner: CliRunner, arguments: list[str], pattern: str, error: type[ShapetraceError] = UsageError
) -> None:
    """Exit 2 with one line matching `pattern`; with --debug the same line and status, after the traceback."""
    result = runner.invoke(main, arguments)
    assert result.exit_code == 2, result.output
    assert re.fullmatch(pattern, _one_error_line(result)), result.output
    for debug_arguments in (["--debug", *arguments], [*arguments, "--debug"]):  # the group's and the command's
        debug = runner.invoke(main, debug_arguments)
        assert debug.exit_code == 2, debug.output
        assert debug.output.startswith("Traceback (most recent call last):"), debug.output
        raised = re.search(r"^shapetrace\.errors\.(\w+): ", debug.output, re.MULTILINE)  # the traceback's last line
        assert raised is not None and issubclass(getattr(errors, raised.group(1)), error), debug.output
        assert re.fullmatch(pattern, debug.output.strip().splitlines()[-1].removeprefix("Error: ")), debug.output


# --- bad input ------------------------------------------------------------------------------


TARGET_CASES = [
    # (id, TARGET, source of broken.py, message pattern)
    (
        "no colon",
        "nocolon",
        None,
        r"TARGET 'nocolon' is malformed: expected package\.module:attr or path/to/file\.py:attr",
    ),
    ("no attribute", "{file}:", None, r"TARGET '.*reliability_models\.py:' is malformed: expected .*"),
    ("not an identifier", "{file}:bad-name", None, r"TARGET '.*:bad-name' is malformed: expected .*"),
    ("not importable", "no_such_module_xyz:Model", None, r"cannot import 'no_such_module_xyz': No module named .*"),
    ("missing file", "{missing}:Model", None, r"cannot import '.*missing\.py': no such file"),
    (
        "raises at import",
        "{broken}:Model",
        "raise RuntimeError('half-written module')",
        r"importing '.*broken\.py' raised RuntimeError: half-written module",
    ),
    ("syntax error", "{broken}:Model", "def forward(:\n", r"importing '.*broken\.py' raised SyntaxError: .*"),
    (
        "missing attribute",
        "{file}:Missing",
        None,
        r"TARGET '.*:Missing': .*reliability_models\.py has no attribute 'Missing'",
    ),
    (
        "not callable",
        "{file}:NUMBER",
        None,
        r"TARGET '.*:NUMBER' is an? int, expected an nn\.Module class, factory or instance",
    ),
    (
        "factory of a non-Module",
        "{file}:not_a_module",
        None,
        r"TARGET '.*:not_a_module' returned an? int, expected an nn\.Module",
    ),
    (
        "constructor raises",
        "{file}:exploding",
        None,
        r"building '.*:exploding' raised RuntimeError: constructor exploded",
    ),
]


@pytest.mark.parametrize(
    ("target", "broken_source", "pattern"), [pytest.param(*case[1:], id=case[0]) for case in TARGET_CASES]
)
def test_bad_target_is_one_line_and_exit_2(
    runner: CliRunner, models_file: Path, tmp_path: Path, target: str, broken_source: str | None, pattern: str
) -> None:
    broken = tmp_path / "broken.py"
    if broken_source is not None:
        broken.write_text(broken_source, encoding="utf-8")
    target = target.format(file=models_file, missing=tmp_path / "missing.py", broken=broken)
    _assert_usage_error(runner, ["trace", target, "--input", "2,3,8,8"], pattern, TargetError)


OPTION_CASES = [  # options click parses are checked in test_cli.py; these fail once the model is known
    (
        ["--input", "2,3,8,8", "--init", '{"depth": 3}'],
        r"--init does not fit '.*:Small': got an unexpected keyword argument 'depth'",
    ),
    ([], r"no inputs given: expected --input SHAPE .*"),
    (["--kw", "x=2,3", "--kw", "x=2,4"], r"--kw 'x' is given twice: expected each keyword tensor once"),
]


@pytest.mark.parametrize(
    ("options", "pattern"), [pytest.param(*case, id=" ".join(case[0])[:30] or "none") for case in OPTION_CASES]
)
def test_bad_trace_options_are_one_line_and_exit_2(
    runner: CliRunner, models_file: Path, options: list[str], pattern: str
) -> None:
    _assert_usage_error(runner, ["trace", f"{models_file}:Small", *options], pattern)


# --- trace files for `diff` and Trace.from_json ----------------------------------------------


@pytest.fixture(scope="module")
def good_json() -> str:
    return trace_unet(16, (1, 2), 8).to_json()


def _replace_first_params(text: str, number: str) -> str:
    return re.sub(r'"params": \d+', f'"params": {number}', text, count=1)


def _hostile(name: str, make: Callable[[str], str], pattern: str) -> Any:
    """A bad trace file made from the good one's text, and the message it must give."""
    return pytest.param(make, pattern, id=name)


def _with(**fields: Any) -> Callable[[str], str]:
    return lambda good: json.dumps({**json.loads(good), **fields})


HOSTILE_FILES = [
    _hostile("truncated", lambda good: good[: len(good) // 2], r"trace file is not valid JSON: .* at line \d+"),
    _hostile("empty", lambda good: "", r"trace file is not valid JSON: Expecting value at line 1"),
    _hostile("control characters", lambda good: "\x00\x01\x02", r"trace file is not valid JSON: .*"),
    _hostile("schema 3", _with(schema=3), "trace file has schema 3, expected 1 or 2"),
    _hostile("schema as text", _with(schema="1"), "trace field 'schema' is '1', expected an integer"),
    _hostile("no schema", lambda good: json.dumps({"model": "UNet"}), "trace has no field 'schema'"),
    _hostile("not an object", lambda good: "[1, 2, 3]", "trace must be a JSON object, got list"),
    _hostile(
        "1e400", lambda good: _replace_first_params(good, "1e400"), r"layer field 'params' is inf, expected an integer"
    ),
    _hostile(
        "10**30",
        lambda good: _replace_first_params(good, str(10**30)),
        r"layer field 'params' is 1\.000e\+30, expected at most \d+",
    ),
    _hostile(
        "10**30 extent",
        _with(inputs=[[10**30]]),
        r"trace field 'inputs' has extent 1000000000000000000000000000000, expected an integer from 0 to \d+",
    ),
    _hostile(
        "5000 digits",
        lambda good: _replace_first_params(good, "9" * 5000),
        r"trace file holds a value shapetrace cannot read: .*",
    ),
    _hostile("nested 100000 deep", lambda good: "[" * 100_000 + "]" * 100_000, "trace file is nested too deeply.*"),
    _hostile(
        "nested 100000 deep in a field",
        lambda good: good.replace('"warnings": []', '"warnings": ' + "[" * 100_000 + "]" * 100_000, 1),
        "trace file is nested too deeply.*",
    ),
    _hostile(
        "50 MB string",
        _with(model="M" * 50_000_000),
        r"trace file too large: \d+ characters, expected at most \d+",
    ),
]


@pytest.mark.parametrize(("make", "pattern"), HOSTILE_FILES)
def test_from_json_rejects_bad_and_hostile_files(good_json: str, make: Callable[[str], str], pattern: str) -> None:
    text = make(good_json)
    with pytest.raises(TraceFileError, match=f"^{pattern}$"):
        Trace.from_json(text)


def test_an_oversized_file_is_refused_before_it_is_parsed(good_json: str, monkeypatch: pytest.MonkeyPatch) -> None:
    text = _with(model="M" * 50_000_000)(good_json)

    def parse(*_: Any, **__: Any) -> None:
        raise AssertionError("a 50 MB file reached the JSON parser")

    monkeypatch.setattr("shapetrace.jsonio.json.loads", parse)
    with pytest.raises(TraceFileError, match=r"^trace file too large"):
        Trace.from_json(text)


@pytest.mark.parametrize(("make", "pattern"), HOSTILE_FILES)
def test_diff_rejects_bad_and_hostile_files(
    runner: CliRunner, tmp_path: Path, good_json: str, make: Callable[[str], str], pattern: str
) -> None:
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(good_json, encoding="utf-8")
    bad.write_text(make(good_json), encoding="utf-8")
    _assert_usage_error(runner, ["diff", str(good), str(bad)], rf".*bad\.json: {pattern}", TraceFileError)


def test_diff_of_unreadable_files(runner: CliRunner, tmp_path: Path, good_json: str) -> None:
    good = tmp_path / "good.json"
    good.write_text(good_json, encoding="utf-8")
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00 not utf-8")
    missing = tmp_path / "missing.json"
    _assert_usage_error(
        runner, ["diff", str(good), str(binary)], r"cannot read trace '.*binary\.json': 'utf-8' codec .*"
    )
    _assert_usage_error(runner, ["diff", str(missing), str(good)], r"cannot read trace '.*missing\.json': no such file")


def test_diff_names_the_bad_file(runner: CliRunner, tmp_path: Path, good_json: str) -> None:
    good, bad = tmp_path / "before.json", tmp_path / "after.json"
    good.write_text(good_json, encoding="utf-8")
    bad.write_text(good_json[:100], encoding="utf-8")
    result = runner.invoke(main, ["diff", str(good), str(bad)])
    assert result.exit_code == 2
    assert "after.json" in _one_error_line(result)


@pytest.mark.parametrize("field", ["parent cycle", "index out of order", "depth inconsistent"])
def test_from_json_rejects_inconsistent_layers(good_json: str, field: str) -> None:
    data = json.loads(good_json)
    layer = data["layers"][3]
    if field == "parent cycle":
        layer["parent"], layer["depth"] = 3, 5
    elif field == "index out of order":
        layer["index"] = 7
    else:
        layer["depth"] = 9
    with pytest.raises(TraceFileError, match=r"^layer (3|at position 3) has (parent|index|depth) \d+, expected .*"):
        Trace.from_json(json.dumps(data))


# --- models the meta device cannot run --------------------------------------------------------


def _trace_on_meta(models_file: Path, attribute: str) -> Trace:
    """`shapetrace trace MODELS:attribute --input 2,3,8,8`, through the library."""
    return custom.trace_target(
        f"{models_file}:{attribute}",
        init={},
        inputs=[TensorSpec((2, 3, 8, 8))],
        keywords={},
        timestep=None,
        device="meta",
    )


@pytest.mark.parametrize("attribute", list(VALUE_READERS))
def test_small_models_that_read_values_fall_back_to_cpu(runner: CliRunner, models_file: Path, attribute: str) -> None:
    traced = _trace_on_meta(models_file, attribute)
    assert traced.ok and traced.device == "cpu"
    assert dict(traced.config)["fell back to cpu"] == "the forward reads tensor values, which meta tensors lack"
    assert "fell back to cpu" in title(traced)
    result = runner.invoke(main, ["trace", f"{models_file}:{attribute}", "--input", "2,3,8,8"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "fell back to cpu" in result.output


@pytest.mark.parametrize("attribute", list(VALUE_READERS))
def test_large_models_that_read_values_get_a_meta_break_offering_device_cpu(
    runner: CliRunner, models_file: Path, monkeypatch: pytest.MonkeyPatch, attribute: str
) -> None:
    monkeypatch.setattr(custom, "CPU_FALLBACK_PARAMS", 0)
    result = runner.invoke(main, ["trace", f"{models_file}:{attribute}", "--input", "2,3,8,8", "--format", "json"])
    assert result.exit_code == 1, result.output
    data = json.loads(result.output)
    assert data["device"] == "meta" and "fell back to cpu" not in dict(data["config"])
    (brk,) = data["breaks"]
    assert brk["kind"] == "meta"
    assert "reads tensor values" in brk["cause"]
    assert "--device cpu" in brk["fix"]
    assert [layer["name"] for layer in data["layers"]] == ["", "conv", "norm"]  # what ran is kept
    table = runner.invoke(main, ["trace", f"{models_file}:{attribute}", "--input", "2,3,8,8"], terminal_width=200)
    assert table.exit_code == 1 and "--device cpu" in table.output


@pytest.mark.parametrize("attribute", ["MasksByValue", "UsesNumpy"])
def test_other_value_reads_fall_back_to_cpu_too(models_file: Path, attribute: str) -> None:
    traced = _trace_on_meta(models_file, attribute)
    assert traced.ok and traced.device == "cpu"
    assert "fell back to cpu" in dict(traced.config)


def test_a_module_instance_target_falls_back_to_cpu(runner: CliRunner, models_module: str) -> None:
    result = runner.invoke(main, ["trace", f"{models_module}:INSTANCE", "--input", "2,3,8,8"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "fell back to cpu" in result.output


def test_tracing_a_module_instance_leaves_it_untouched(runner: CliRunner, models_module: str) -> None:
    instance = __import__(models_module).INSTANCE
    before = Snapshot.of(instance)
    result = runner.invoke(main, ["trace", f"{models_module}:INSTANCE", "--input", "2,3,8,8", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert_untouched(instance, before)


# --- the CLI under failure ----------------------------------------------------------------------


def test_cli_renderer_exception_is_an_internal_error_and_leaves_the_models_untouched(
    runner: CliRunner, models_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[nn.Module] = []
    build_model = targets.build_model

    def recording(*args: Any) -> nn.Module:
        built.append(build_model(*args))
        return built[-1]

    def broken_renderer(*_: Any, **__: Any) -> None:
        raise RuntimeError("renderer bug")

    monkeypatch.setattr("shapetrace.cli.trace_target.build_model", recording)
    monkeypatch.setattr("shapetrace.render.table.trace_report", broken_renderer)
    global_hooks = Snapshot.of(nn.Identity()).global_hooks
    result = runner.invoke(main, ["trace", f"{models_file}:make_small", "--input", "2,3,8,8", "--device", "cpu"])
    # a bug of ours is neither disguised as a usage error nor blamed on the model
    assert result.exit_code == 3, result.output
    assert "internal error in shapetrace (please report): RuntimeError: renderer bug" in result.output
    assert Snapshot.of(nn.Identity()).global_hooks == global_hooks
    assert torch._C._len_torch_function_stack() == 0
    assert len(built) == 2  # the cpu model, and its meta twin for probing sizes
    for model in built:
        assert not any(getattr(module, name) for module in model.modules() for name in _HOOK_DICTS)
        assert all(module.training for module in model.modules())
    cpu_model = next(model for model in built if not next(model.parameters()).is_meta)
    torch.manual_seed(0)
    fresh = type(cpu_model)()  # what make_small built, untouched
    assert Snapshot.of(cpu_model).tensors.keys() == Snapshot.of(fresh).tensors.keys()
    for name, tensor in cpu_model.state_dict().items():
        assert _identity_and_bytes(tensor)[1:] == _identity_and_bytes(fresh.state_dict()[name])[1:], name


def test_ctrl_c_in_the_cli_prints_what_was_traced(runner: CliRunner, models_file: Path) -> None:
    result = runner.invoke(
        main, ["trace", f"{models_file}:Interrupting", "--input", "2,3,8,8", "--device", "cpu"], terminal_width=200
    )
    assert "Traceback" not in result.output and "Aborted" not in result.output
    assert "conv" in result.output and "norm" in result.output  # the layers that ran
    assert "break 1 (interrupted)" in result.output
    assert "interrupted in Interrupting (Interrupting)" in result.output


def test_ctrl_c_in_the_cli_exits_130(runner: CliRunner, models_file: Path) -> None:
    result = runner.invoke(main, ["trace", f"{models_file}:Interrupting", "--input", "2,3,8,8", "--device", "cpu"])
    assert result.exit_code == EXIT_INTERRUPTED


def test_ctrl_c_during_the_size_search_still_prints_the_trace(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shapetrace.size_search

    probe = shapetrace.size_search.observe  # type: ignore[attr-defined]  # the name the search calls
    probes = 0

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        nonlocal probes
        probes += 1
        if probes == 2:
            raise KeyboardInterrupt
        return probe(*args, **kwargs)

    monkeypatch.setattr(shapetrace.size_search, "observe", interrupted)
    result = runner.invoke(main, ["unet", "--size", "225", "--chs", "1,2"], terminal_width=200)
    assert probes == 2  # the search was interrupted ...
    assert "Aborted!" not in result.output  # ... and the trace still printed, saying so
    assert "break 1 (size) at ups.3" in result.output
    assert result.exit_code == 130


# --- fresh processes: real SIGINT, and the memory of a huge trace on meta ----------------------

SIGNALLING = textwrap.dedent(
    """
    import os, signal, time
    import torch
    from torch import nn


    class SignalsItself(nn.Module):
        '''A long CPU trace the user stops: a real SIGINT after three layers, then more work.'''

        def __init__(self):
            super().__init__()
            self.convs = nn.ModuleList(nn.Conv2d(4, 4, 1) for _ in range(50))

        def forward(self, x):
            for index, conv in enumerate(self.convs):
                x = conv(x)
                if index == 2:
                    os.kill(os.getpid(), signal.SIGINT)
                    time.sleep(5)  # the signal interrupts this
            return x
    """
)


@dataclasses.dataclass
class Finished:
    exit_code: int
    stdout: str
    stderr: str
    max_rss_kib: int


_PROCESSES = pytest.StashKey["Background"]()


class Background:
    """Command lines run at once in fresh interpreters, each measured with os.wait4 (Linux, macOS)."""

    def __init__(self, commands: dict[str, list[str]], directory: Path) -> None:
        self.directory = directory
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        for name, arguments in commands.items():
            with (directory / f"{name}.out").open("wb") as out, (directory / f"{name}.err").open("wb") as err:
                self.processes[name] = subprocess.Popen(  # the child keeps its own copies of the files
                    [sys.executable, "-m", "shapetrace", *arguments],
                    stdout=out,
                    stderr=err,
                    cwd=Path(__file__).parent.parent,
                )
        self.results: dict[str, Finished] = {}

    def result(self, name: str) -> Finished:
        if name not in self.results:
            process = self.processes[name]
            _, status, usage = os.wait4(process.pid, 0)
            process.returncode = os.waitstatus_to_exitcode(status)  # so that Popen does not wait again
            self.results[name] = Finished(
                process.returncode,
                (self.directory / f"{name}.out").read_text(encoding="utf-8"),
                (self.directory / f"{name}.err").read_text(encoding="utf-8"),
                usage.ru_maxrss,  # KiB on Linux
            )
        return self.results[name]


@pytest.fixture(scope="module", autouse=True)
def _started_early(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Start the fresh processes with the module's first test, if a selected test needs them:
    they run (about 10 s, mostly importing torch) while the other tests do."""
    selected = [item for item in request.session.items if getattr(item, "module", None) is request.module]
    if not any("processes" in getattr(item, "fixturenames", ()) for item in selected):
        yield
        return
    directory = tmp_path_factory.mktemp("processes")
    (directory / "signalling.py").write_text(SIGNALLING, encoding="utf-8")
    runs = Background(
        {
            "small": ["unet", "--size", "64", "--batch", "2", "--format", "json"],
            "huge": ["unet", "--size", "65536", "--batch", "4096", "--format", "json"],
            "sigint": [
                "trace",
                f"{directory / 'signalling.py'}:SignalsItself",
                "--input",
                "1,4,8,8",
                "--device",
                "cpu",
                "--format",
                "json",
            ],
        },
        directory,
    )
    request.config.stash[_PROCESSES] = runs
    yield
    for name in runs.processes:
        runs.result(name)  # reap every child, even those no test looked at


@pytest.fixture
def processes(request: pytest.FixtureRequest) -> Background:
    return request.config.stash[_PROCESSES]


def test_a_huge_input_on_meta_allocates_nothing(processes: Background) -> None:
    small, huge = processes.result("small"), processes.result("huge")
    assert small.exit_code == huge.exit_code == 0, huge.stderr
    data = json.loads(huge.stdout)
    assert data["inputs"] == [[4096, 3, 65536, 65536], [4096]]
    assert data["outputs"] == [[4096, 3, 65536, 65536]]  # 5e13 floats: 200 TB if it were real
    assert huge.max_rss_kib <= small.max_rss_kib * 1.10, (huge.max_rss_kib, small.max_rss_kib)


def test_a_real_sigint_stops_the_trace_and_prints_what_ran(processes: Background) -> None:
    finished = processes.result("sigint")
    assert "Traceback" not in finished.stderr, finished.stderr
    data = json.loads(finished.stdout)
    assert [layer["name"] for layer in data["layers"]] == ["", "convs.0", "convs.1", "convs.2"]
    assert data["breaks"][-1]["kind"] == "interrupted"


def test_a_real_sigint_exits_130(processes: Background) -> None:
    assert processes.result("sigint").exit_code == EXIT_INTERRUPTED


# --- renderers on interrupted traces ------------------------------------------------------------


def test_every_renderer_accepts_an_interrupted_trace() -> None:
    traced = trace(_armed(SCENARIOS["KeyboardInterrupt in forward"]), torch.randn(2, 3, 8, 8))
    render(trace_report(traced, 3))
    render(trace_tree(traced, 3))
    assert "interrupted in blocks.1" in trace_dot(traced)
