"""shapetrace's own bugs are never the model's break; a model's failure gets its kind from its type.

A bug is simulated where it would be: a function whose code lives in one of shapetrace's own
files raises, so its innermost traceback frame is there, as a real bug's would be.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import shapetrace
from shapetrace.errors import InternalError
from shapetrace.records import BreakKind, Trace
from shapetrace.tracing import failures, light_pass, light_sweep, metashapes, observer, recorder
from shapetrace.tracing.failures import FailedOp, failure_kind, is_internal
from shapetrace.tracing.metashapes import META_SHAPES, ShapeMismatch
from tests.test_reliability import Snapshot, Subject, assert_untouched

BUG = "bug inside shapetrace"
DEVICES = ["meta", "cpu"]


def bug_in(module: types.ModuleType) -> Callable[..., NoReturn]:
    """A function whose code is in `module`'s file and raises IndexError: a bug there, to a traceback."""
    namespace: dict[str, Any] = {}
    source = f"def bug(*args, **kwargs):\n    raise IndexError({BUG!r})\n"
    exec(compile(source, str(module.__file__), "exec"), namespace)
    bug: Callable[..., NoReturn] = namespace["bug"]
    return bug


def subject(device: str) -> tuple[nn.Module, torch.Tensor]:
    """A model with state to disturb (BatchNorm in train mode, mixed training flags) and a skip."""
    torch.manual_seed(0)
    with torch.device(device):
        model = Subject()
    model.norm.train()
    return model, torch.zeros(2, 3, 8, 8, device=device)


def failing_at(
    monkeypatch: pytest.MonkeyPatch, owner: Any, attribute: str, nth: int | None, bug: Callable[..., NoReturn]
) -> list[int]:
    """Replace `owner.attribute` by a wrapper that counts its calls, the `nth` of which runs into `bug`."""
    original = getattr(owner, attribute)
    calls = [0]

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == nth:
            bug()
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, attribute, wrapped)
    return calls


# --- shapetrace's own bugs -----------------------------------------------------------------

INJECTIONS: dict[str, tuple[Any, str, types.ModuleType]] = {
    "Recorder.begin": (recorder.Recorder, "begin", recorder),
    "Recorder.end": (recorder.Recorder, "end", recorder),
    "Observer.before": (observer.Observer, "before", observer),
    "Observer's function mode": (observer.Observer, "_dispatch", observer),
    "Observer._concatenate": (observer.Observer, "_concatenate", observer),
}


def _injection_cases() -> Iterator[Any]:
    for name in INJECTIONS:
        for device in DEVICES:
            for position in ("first", "last"):
                yield pytest.param(name, device, position, id=f"{name}-{device}-{position} call")


@pytest.mark.parametrize(("name", "device", "position"), list(_injection_cases()))
def test_a_bug_in_the_tracer_is_an_internal_error_and_the_model_is_left_as_found(
    monkeypatch: pytest.MonkeyPatch, name: str, device: str, position: str
) -> None:
    owner, attribute, module = INJECTIONS[name]
    calls = failing_at(monkeypatch, owner, attribute, None, bug_in(module))
    shapetrace.trace(*subject(device))
    monkeypatch.undo()
    assert calls[0] >= 1
    model, x = subject(device)
    before = Snapshot.of(model)
    failing_at(monkeypatch, owner, attribute, 1 if position == "first" else calls[0], bug_in(module))
    with pytest.raises(InternalError, match=f"^IndexError: {BUG}$") as raised:
        shapetrace.trace(model, x)
    assert isinstance(raised.value.__cause__, IndexError)
    assert_untouched(model, before)  # hooks removed, mode popped, training flags restored


def test_a_plain_bug_in_the_recorder_is_an_internal_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """No simulated frame: the Recorder's own `stack.pop()` fails on a stack emptied under it."""
    original = recorder.Recorder.end

    def emptied(self: recorder.Recorder, *args: Any) -> None:
        self.stack.clear()
        original(self, *args)

    monkeypatch.setattr(recorder.Recorder, "end", emptied)
    model, x = subject("meta")
    before = Snapshot.of(model)
    with pytest.raises(InternalError, match=r"^IndexError: pop from empty list$"):
        shapetrace.trace(model, x)
    assert_untouched(model, before)


def test_a_bug_in_a_shape_function_is_an_internal_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from shapetrace.tracing.metashapes import layers

    conv2d: Callable[..., Any] = torch.conv2d
    monkeypatch.setitem(META_SHAPES, conv2d, bug_in(layers))
    model, x = subject("meta")
    before = Snapshot.of(model)
    with pytest.raises(InternalError, match=f"^IndexError: {BUG}$"):
        shapetrace.trace(model, x)
    assert_untouched(model, before)


def test_a_bug_in_the_sweep_is_an_internal_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(light_pass.LightPass, "_concatenate", bug_in(light_pass))
    model, _ = subject("meta")
    before = Snapshot.of(model)
    with pytest.raises(InternalError, match=f"^IndexError: {BUG}$"):
        light_sweep.sweep(model, [(8, 8)], lambda h, w: ((torch.zeros(2, 3, h, w, device="meta"),), {}), workers=1)
    assert_untouched(model, before)


# --- the model's own failures --------------------------------------------------------------


class Raises(nn.Module):
    """A forward that raises `error` after its first layer, from the model's own code."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.error = error

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.conv(x)
        raise self.error


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "error",
    [IndexError(BUG), RuntimeError("shape mismatch: size 3 does not match dimension 4")],
    ids=["IndexError naming shapetrace", "RuntimeError naming sizes"],
)
def test_a_models_own_exception_is_an_error_break_whatever_its_words(device: str, error: Exception) -> None:
    with torch.device(device):
        model = Raises(error)
    traced = shapetrace.trace(model, torch.zeros(1, 3, 8, 8, device=device))
    (brk,) = traced.breaks
    assert (brk.kind, brk.op) == (BreakKind.ERROR, type(error).__name__)
    assert str(error) in brk.message


class _TooSmall(nn.Module):
    """Layers and functions that torch refuses on a map that has shrunk too far, or a sum that does not broadcast."""

    def __init__(self, failure: str) -> None:
        super().__init__()
        self.failure = failure
        self.down = nn.Conv2d(3, 4, 3, stride=4, padding=1)  # 8×8 -> 2×2
        self.wide = nn.Conv2d(4, 4, 5)  # a 5×5 kernel on 2×2
        self.norm = nn.GroupNorm(4, 4)  # one value per group at 1×1, batch 1
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h: torch.Tensor = self.down(x)
        if self.failure == "kernel larger than the map":
            return self.wide(h)  # type: ignore[no-any-return]
        if self.failure == "group norm of one value":
            return self.norm(self.pool(h))  # type: ignore[no-any-return]
        if self.failure == "functional pool to nothing":
            return F.max_pool2d(h, 4)
        return h + x[:, :1]  # "sum that does not broadcast": 2×2 and 8×8


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "failure",
    [
        "kernel larger than the map",
        "group norm of one value",
        "functional pool to nothing",
        "sum that does not broadcast",
    ],
)
def test_torchs_size_errors_are_size_breaks_on_meta_and_on_cpu(device: str, failure: str) -> None:
    with torch.device(device):
        model = _TooSmall(failure).eval()
    x = torch.zeros(1, 3, 8, 8, device=device)
    with pytest.raises((RuntimeError, ValueError)):
        model(x)  # torch refuses it
    traced = shapetrace.trace(model, x)
    assert [brk.kind for brk in traced.breaks] == [BreakKind.SIZE]


@pytest.mark.parametrize("failure", ["kernel larger than the map", "group norm of one value"])
def test_a_cpu_trace_names_the_same_size_break_as_a_meta_trace(failure: str) -> None:
    """On CPU these leaves run outside the function mode: the op is found by running the leaf again."""
    traces: list[Trace] = []
    for device in DEVICES:
        with torch.device(device):
            model = _TooSmall(failure).eval()
        before = Snapshot.of(model)
        traces.append(shapetrace.trace(model, torch.zeros(1, 3, 8, 8, device=device)))
        assert_untouched(model, before)
    on_meta, on_cpu = traces
    assert [(b.kind, b.op, b.layer, b.message) for b in on_cpu.breaks] == [
        (b.kind, b.op, b.layer, b.message) for b in on_meta.breaks
    ]


def test_a_value_read_is_a_meta_break_on_meta_and_no_break_on_cpu() -> None:
    class ReadsValue(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * float(x.mean())

    assert [brk.kind for brk in shapetrace.trace(ReadsValue(), torch.zeros(1, 3, device="meta")).breaks] == ["meta"]
    assert shapetrace.trace(ReadsValue(), torch.zeros(1, 3)).ok


def test_the_sweep_classifies_failures_as_the_full_trace_does() -> None:
    class ReadsValue(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h: torch.Tensor = self.conv(x)
            return h * float(h.mean()) if h.shape[-1] > 4 else h + F.max_pool2d(h, 4)

    with torch.device("meta"):
        model = ReadsValue()
    sizes = [(size, size) for size in (4, 5, 6, 7, 8)]
    outcomes = light_sweep.sweep(model, sizes, lambda h, w: ((torch.zeros(1, 3, h, w, device="meta"),), {}), workers=1)
    traces = [shapetrace.trace(model, torch.zeros(1, 3, *size, device="meta")) for size in sizes]
    assert [outcome.kind for outcome in outcomes] == [
        trace.breaks[0].kind if trace.breaks else None for trace in traces
    ]
    assert [outcome.kind for outcome in outcomes] == [
        BreakKind.SIZE,
        BreakKind.SIZE,
        None,
        BreakKind.META,
        BreakKind.META,
    ]


# --- the classification itself -------------------------------------------------------------


def _raised(function: Callable[[], Any]) -> BaseException:
    try:
        function()
    except BaseException as error:  # noqa: BLE001 - the exception is the value under test
        return error
    raise AssertionError("it did not raise")


def test_torchs_error_through_the_tracers_call_site_is_not_internal() -> None:
    error = _raised(lambda: metashapes.call_torch(torch.conv2d, (torch.zeros(1, 3, 2, 2), torch.zeros(4, 3, 3, 3)), {}))
    assert not is_internal(error)
    failed = FailedOp(torch.conv2d, (torch.zeros(1, 3, 2, 2), torch.zeros(4, 3, 3, 3)), {}, error)
    assert failure_kind(error, failed) == BreakKind.SIZE  # the shape function says so on meta stand-ins


def test_what_counts_as_internal() -> None:
    assert is_internal(_raised(bug_in(failures)))

    def models_code() -> None:
        raise IndexError(BUG)

    assert not is_internal(_raised(models_code))  # the same error, raised outside shapetrace
    assert not is_internal(ShapeMismatch("The size of tensor a (3) must match"))
    assert not is_internal(_raised(lambda: metashapes.call(torch.add, (torch.zeros(3), torch.zeros(5)), {})))
    assert not is_internal(IndexError(BUG))  # raised nowhere: no frame to blame
    assert not is_internal(KeyboardInterrupt())


def test_failure_kind_reads_types_not_words() -> None:
    assert failure_kind(ValueError("size shape dimension broadcast match too small"), None) == BreakKind.ERROR
    assert failure_kind(KeyboardInterrupt(), None) == BreakKind.INTERRUPTED
    assert failure_kind(ShapeMismatch("anything", BreakKind.ERROR), None) == BreakKind.ERROR
    assert failure_kind(metashapes.ValueMismatch("anything"), None) == BreakKind.SIZE
    # An op's failure counts only for the exception it raised.
    error = RuntimeError("Tensor.item() cannot be called on meta tensors")
    read = FailedOp(torch.Tensor.item, (torch.zeros(1, device="meta"),), {}, error)
    assert failure_kind(error, read) == BreakKind.META
    assert failure_kind(RuntimeError("another"), read) == BreakKind.ERROR


class _OwnCheck(nn.Module):
    """Raises from its own forward: at sizes that are no multiple of 8, or (`always`) at every size."""

    def __init__(self, always: bool = False) -> None:
        super().__init__()
        self.always = always
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.always or x.shape[-1] % 8:
            raise ValueError("input size must be divisible by 8")  # the words say size either way
        output: torch.Tensor = self.conv(x)
        return output


@pytest.mark.parametrize(("always", "kind"), [(False, BreakKind.SIZE), (True, BreakKind.ERROR)])
def test_a_models_own_failure_is_a_size_break_only_where_other_sizes_run(always: bool, kind: BreakKind) -> None:
    with torch.device("meta"):
        model = _OwnCheck(always)
    x = torch.empty(1, 3, 20, 20, device="meta")
    unprobed = shapetrace.run_trace(model, (x,), verify=False)
    assert [brk.kind for brk in unprobed.breaks] == [BreakKind.ERROR]  # the tracer reads no message
    probed = shapetrace.trace(model, x)
    assert [brk.kind for brk in probed.breaks] == [kind]
    assert (probed.size_rule is not None) == (kind == BreakKind.SIZE)
