"""metashapes against torch: each shape function gives the shape, dtype and errors of the real op.

Every case runs twice: the torch op on small CPU tensors, and the shape function on meta
tensors of the same shapes. They must agree on the output's shape and dtype, or raise the
same exception type. A shape function may leave a call to torch (NotImplemented) only where
torch raises, and not where torch's message names a shape mistake (SHAPE_ERRORS): those
the shape function must raise itself.
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import re
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.overrides import TorchFunctionMode

from shapetrace.records import BreakKind
from shapetrace.tracing import metashapes
from shapetrace.tracing.metashapes import META_SHAPES, ShapeMismatch

Case = tuple[Callable[..., Any], Sequence[Any], dict[str, Any]]

LEFT_TO_TORCH = "left to torch"
# torch's messages for the shape mistakes a trace reports; the shape functions raise these themselves.
SHAPE_ERRORS = re.compile(
    r"too small|Invalid computed output size|must match|channels|Kernel size can't|should contain|"
    r"Expected (weight|bias) to be|normalized_shape|cannot be multiplied|Expected size for first|expected bias|"
    r"divisible|output padding must|doesn't match the broadcast|can't be cast|smaller than kernel size|"
    r"more than one element of the written-to"
)
FLOATING = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
DTYPES = (*FLOATING, torch.int64, torch.int32, torch.uint8, torch.bool)


@pytest.fixture(autouse=True, scope="module")
def single_thread() -> Iterator[None]:
    """torch's thread pool speeds up none of these tiny CPU ops, and its idle spinning slows a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def ones(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.ones(shape, dtype=dtype)


def meta(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype, device="meta")


def to_meta(value: Any) -> Any:
    """The same arguments, each tensor replaced by an empty meta tensor of its shape and dtype."""
    if isinstance(value, torch.Tensor):
        return meta(*value.shape, dtype=value.dtype)
    if isinstance(value, (list, tuple)):
        return type(value)(to_meta(item) for item in value)
    if isinstance(value, dict):
        return {key: to_meta(item) for key, item in value.items()}
    return value


def summary(result: Any) -> Any:
    if result is NotImplemented:
        return LEFT_TO_TORCH
    if result is None:
        return None  # (output, None): attention without its weights
    if isinstance(result, (tuple, list)):
        return tuple(summary(item) for item in result)
    return (tuple(result.shape), result.dtype)


def outcome(function: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any]) -> tuple[Any, str]:
    """The summary of `function(*args, **kwargs)`, or the type of what it raised; and the message.

    A shape function's ShapeMismatch counts as the torch type it stands for; anything else a
    shape function raises is a bug of its own, which never equals an outcome of torch's.
    """
    try:
        # A shape function gives torch's shapes, not its advice: warnings are not outcomes here.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = function(*args, **kwargs)
    except ShapeMismatch as error:
        return error.torch_type, str(error)
    except Exception as error:  # noqa: BLE001 - whatever torch raises is compared
        if getattr(function, "__module__", "").startswith("shapetrace."):
            return f"{type(error).__name__}, not a ShapeMismatch", str(error)
        return type(error), str(error)
    return summary(result), ""


def raised_its_own_error(expected: Any, message: str) -> bool:
    """Whether torch refused the call with a message of its own, not one naming a shape mistake."""
    return isinstance(expected, type) and not (issubclass(expected, RuntimeError) and SHAPE_ERRORS.search(message))


def disagreement(func: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any]) -> str | None:
    """None where META_SHAPES[func] on meta agrees with `func` on CPU, else what differs."""
    expected, message = outcome(func, args, kwargs)
    got, _ = outcome(META_SHAPES[func], (to_meta(args), to_meta(kwargs)), {})
    if got == expected:
        return None
    if got == LEFT_TO_TORCH and raised_its_own_error(expected, message):
        return None
    shapes = [tuple(a.shape) if isinstance(a, torch.Tensor) else a for a in args]
    name = getattr(func, "__qualname__", repr(func))
    return f"{name}{shapes} {to_meta(kwargs)}: torch {expected} {message[:90]!r}, shape function {got}"


def assert_agree(cases: Iterable[Case]) -> int:
    """Run every case and fail listing the first disagreements; returns how many cases ran."""
    failures, count = [], 0
    for func, args, kwargs in cases:
        count += 1
        problem = disagreement(func, args, kwargs)
        if problem is not None:
            failures.append(problem)
    assert not failures, f"{len(failures)} of {count} cases disagree:\n" + "\n".join(failures[:15])
    return count


def name_of(func: Callable[..., Any]) -> str:
    return getattr(func, "__qualname__", repr(func))


# --- elementwise --------------------------------------------------------------------------

FLOAT_VALUED = ("sin", "cos", "exp", "log", "sqrt", "rsqrt", "sigmoid", "tanh", "neg")
UNARY = [getattr(owner, name) for owner in (torch, torch.Tensor) for name in FLOAT_VALUED]
ACTIVATIONS = [F.silu, F.relu, F.gelu, F.mish, torch.relu, torch.Tensor.relu]
SOFTMAXES = [F.softmax, F.log_softmax, torch.softmax, torch.log_softmax, torch.Tensor.softmax, torch.Tensor.log_softmax]


@pytest.mark.parametrize("func", UNARY, ids=name_of)
@pytest.mark.parametrize("dtype", list(DTYPES), ids=str)
def test_unary_matches_torch(func: Callable[..., Any], dtype: torch.dtype) -> None:
    assert_agree((func, (ones(*shape, dtype=dtype),), {}) for shape in [(), (3,), (2, 3, 4)])


@pytest.mark.parametrize("func", ACTIVATIONS, ids=name_of)
def test_activation_matches_torch(func: Callable[..., Any]) -> None:
    assert_agree((func, (ones(*shape, dtype=dtype),), {}) for shape in [(), (2, 3, 4)] for dtype in FLOATING)


@pytest.mark.parametrize("func", [F.silu, F.relu, F.mish])
def test_in_place_activation_returns_its_input(func: Callable[..., Any]) -> None:
    x = meta(2, 3)
    assert metashapes.call(func, (x,), {"inplace": True}) is x


def test_gelu_approximation_matches_torch() -> None:
    assert_agree((F.gelu, (ones(2, 3),), {"approximate": approximate}) for approximate in ("none", "tanh", "x"))


@pytest.mark.parametrize(("training", "inplace"), list(itertools.product([True, False], repeat=2)))
def test_dropout_matches_torch(training: bool, inplace: bool) -> None:
    options = {"training": training, "inplace": inplace}
    assert_agree((F.dropout, (ones(2, 3),), {"p": p, **options}) for p in (0.0, 0.5, 1.0, 1.5))
    x = meta(2, 3)
    # Like torch, which hands back the input itself when it works in place or changes nothing.
    assert (metashapes.call(F.dropout, (x,), {"p": 0.1, **options}) is x) == (inplace or not training)


@pytest.mark.parametrize("func", SOFTMAXES, ids=name_of)
def test_softmax_matches_torch(func: Callable[..., Any]) -> None:
    cases = [
        (func, (ones(*shape, dtype=input_dtype), dim), {} if dtype is None else {"dtype": dtype})
        for shape in [(), (4,), (2, 3, 4)]
        for dim in range(-len(shape) - 1, len(shape) + 1)
        for input_dtype in (torch.float16, torch.int64)
        for dtype in (None, torch.float64)
    ]
    assert_agree(cases)


@pytest.mark.parametrize("func", [torch.mean, torch.Tensor.mean], ids=name_of)
def test_mean_matches_torch(func: Callable[..., Any]) -> None:
    dims: list[Any] = [None, 0, 1, -1, 3, (0, 2), (1, -2), [2, 0, 1], (1, 1), ()]
    cases: list[Case] = [
        (func, (ones(*shape, dtype=input_dtype),), {} if dim is None else {"dim": dim, "keepdim": keepdim})
        for shape in [(), (2, 3, 4)]
        for dim in dims
        for keepdim in (False, True)
        for input_dtype in (torch.float32, torch.float16, torch.int64)
    ]
    cases.append((func, (ones(2, 3),), {"dtype": torch.float64}))
    cases.append((func, (ones(2, 3, dtype=torch.int64),), {"dtype": torch.float32}))
    assert_agree(cases)


# --- binary, with broadcasting ------------------------------------------------------------

BINARY = [
    *(getattr(torch, name) for name in ("add", "sub", "mul", "div")),
    *(getattr(torch.Tensor, name) for name in ("add", "sub", "mul", "div")),
    *(getattr(torch.Tensor, f"__{name}__") for name in ("add", "radd", "sub", "rsub", "mul", "rmul")),
    torch.Tensor.__truediv__,
    torch.Tensor.__rtruediv__,
]
IN_PLACE = [
    *(getattr(torch.Tensor, f"{name}_") for name in ("add", "sub", "mul", "div")),
    *(getattr(torch.Tensor, f"__i{name}__") for name in ("add", "sub", "mul", "truediv")),
]
IN_PLACE_POWERS = [torch.Tensor.pow_, torch.Tensor.__ipow__]
POWERS = [torch.pow, torch.Tensor.pow, torch.Tensor.__pow__, torch.Tensor.__rpow__]


@st.composite
def operands(draw: st.DrawFn) -> tuple[torch.Tensor, Any]:
    """A tensor, and a tensor or Python scalar, of any dtype; their shapes broadcast more often than not."""
    base = draw(st.lists(st.integers(1, 4), max_size=4))
    shapes = []
    for _ in range(2):
        shape = base[draw(st.integers(0, len(base))) :]
        shapes.append([draw(st.sampled_from([size, size, 1, 3])) for size in shape])
    left = ones(*shapes[0], dtype=draw(st.sampled_from(DTYPES)))
    right = ones(*shapes[1], dtype=draw(st.sampled_from(DTYPES)))
    return left, draw(st.sampled_from([right, right, 2, 2.5, True, -1]))


@settings(max_examples=60, deadline=None)
@given(pair=operands(), func=st.sampled_from(BINARY + IN_PLACE))
def test_binary_matches_torch(pair: tuple[torch.Tensor, Any], func: Callable[..., Any]) -> None:
    assert_agree([(func, pair, {})])


@settings(max_examples=30, deadline=None)
@given(
    pair=operands(),
    func=st.sampled_from([torch.add, torch.sub, torch.Tensor.add_]),
    alpha=st.sampled_from([2, 0.5, True]),
)
def test_alpha_matches_torch(pair: tuple[torch.Tensor, Any], func: Callable[..., Any], alpha: float) -> None:
    assert_agree([(func, pair, {"alpha": alpha})])


@settings(max_examples=30, deadline=None)
@given(pair=operands(), mode=st.sampled_from(["trunc", "floor", "round"]))
def test_rounding_division_matches_torch(pair: tuple[torch.Tensor, Any], mode: str) -> None:
    assert_agree([(torch.div, pair, {"rounding_mode": mode}), (torch.Tensor.div_, pair, {"rounding_mode": mode})])


@pytest.mark.parametrize("func", POWERS, ids=name_of)
def test_power_matches_torch(func: Callable[..., Any]) -> None:
    # Bool powers are left to torch, which answers some by the exponent's value (x ** True is a copy).
    exponents = [2, 0.5, -1, 0, ones(3), ones(2, 1, dtype=torch.int64), ones(4, dtype=torch.float16)]
    dtypes = [dtype for dtype in DTYPES if dtype != torch.bool]
    assert_agree((func, (ones(2, 3, dtype=dtype), exponent), {}) for dtype in dtypes for exponent in exponents)


@pytest.mark.parametrize("func", IN_PLACE_POWERS, ids=name_of)
def test_in_place_power_matches_torch(func: Callable[..., Any]) -> None:
    exponents = [2, 0.5, ones(3), ones(2, 1)]
    assert_agree((func, (ones(2, 3, dtype=dtype), exponent), {}) for dtype in FLOATING for exponent in exponents)
    x = meta(2, 3)
    assert metashapes.call(func, (x, 2), {}) is x


def test_broadcast_mismatch_raises_like_torch() -> None:
    with pytest.raises(
        RuntimeError, match=r"size of tensor a \(3\) must match the size of tensor b \(5\) at non-singleton dimension 1"
    ):
        metashapes.call(torch.Tensor.add, (meta(2, 3, 4), meta(5, 4)), {})


@pytest.mark.parametrize("func", IN_PLACE, ids=name_of)
def test_in_place_returns_its_target_or_raises_like_torch(func: Callable[..., Any]) -> None:
    x, row = meta(2, 3), meta(3)
    assert metashapes.call(func, (x, row), {}) is x
    with pytest.raises(RuntimeError, match=r"output with shape \[3\] doesn't match the broadcast shape \[2, 3\]"):
        metashapes.call(func, (row, x), {})
    with pytest.raises(RuntimeError, match="result type Float can't be cast to the desired output type Long"):
        metashapes.call(func, (meta(2, 3, dtype=torch.int64), 0.5), {})


def test_in_place_on_an_expanded_tensor_raises_like_torch() -> None:
    with pytest.raises(RuntimeError, match="more than one element of the written-to tensor"):
        ones(3, 1).expand(3, 4).add_(1)
    with pytest.raises(RuntimeError, match="more than one element of the written-to tensor"):
        metashapes.call(torch.Tensor.add_, (meta(3, 1).expand(3, 4), 1), {})


def _on(device: str, *shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.zeros(shape, dtype=dtype, device=device)


MISMATCHES: dict[str, tuple[Callable[..., Any], Callable[[str], tuple[Any, ...]], dict[str, Any], BreakKind, type]] = {
    "broadcast": (torch.Tensor.add, lambda d: (_on(d, 2, 3, 4), _on(d, 5, 4)), {}, BreakKind.SIZE, RuntimeError),
    "in place, another dtype": (
        torch.Tensor.add_,
        lambda d: (_on(d, 2, 3, dtype=torch.int64), 0.5),
        {},
        BreakKind.ERROR,
        RuntimeError,
    ),
    "in place, overlapping": (
        torch.Tensor.add_,
        lambda d: (_on(d, 3, 1).expand(3, 4), 1),
        {},
        BreakKind.ERROR,
        RuntimeError,
    ),
    "group norm of one value": (F.group_norm, lambda d: (_on(d, 1, 4, 1, 1), 4), {}, BreakKind.SIZE, ValueError),
    "transposed output padding": (
        torch.conv_transpose2d,
        lambda d: (_on(d, 1, 2, 4, 4), _on(d, 2, 3, 3, 3)),
        {"stride": 1, "output_padding": 1},
        BreakKind.ERROR,
        RuntimeError,
    ),
}


@pytest.mark.parametrize("name", list(MISMATCHES))
def test_a_mismatch_carries_its_break_kind_and_torchs_type(name: str) -> None:
    func, arguments, kwargs, kind, torch_type = MISMATCHES[name]
    with pytest.raises(ShapeMismatch) as raised:
        metashapes.call(func, arguments("meta"), kwargs)
    assert raised.value.kind == kind
    assert isinstance(raised.value, torch_type) and raised.value.torch_type is torch_type
    with pytest.raises(torch_type, match=re.escape(str(raised.value)[:40])):
        func(*arguments("cpu"), **kwargs)


def test_a_shape_function_raising_a_plain_error_disagrees_with_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only a ShapeMismatch stands for torch's error: anything else is a bug of the shape function."""

    def plain(args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
        raise RuntimeError("The size of tensor a (3) must match the size of tensor b (5) at non-singleton dimension 1")

    plain.__module__ = "shapetrace.tracing.metashapes.elementwise"
    monkeypatch.setitem(META_SHAPES, torch.add, plain)  # type: ignore[misc]  # a dict keyed by callables
    assert disagreement(torch.add, (ones(3), ones(5)), {}) is not None


# --- layouts: an elementwise output keeps its inputs' dimension order ---------------------------


@st.composite
def laid_out(draw: st.DrawFn, shape: Sequence[int]) -> torch.Tensor:
    """A float CPU tensor of `shape` in any dimension order, sometimes a strided slice of a larger one."""
    order = draw(st.permutations(range(len(shape))))
    sliced = draw(st.booleans()) and len(shape) > 0
    sizes = [shape[dim] * (2 if sliced and position == 0 else 1) for position, dim in enumerate(order)]
    tensor = torch.zeros(sizes).permute([order.index(dim) for dim in range(len(shape))])
    return tensor.narrow(order[0], 0, shape[order[0]]) if sliced else tensor


@st.composite
def laid_out_operands(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor]:
    shape = draw(st.lists(st.integers(1, 4), min_size=1, max_size=4))
    other = [draw(st.sampled_from([size, size, 1])) for size in shape][draw(st.integers(0, len(shape) - 1)) :]
    return draw(laid_out(shape)), draw(laid_out(other))


def _layout(tensor: torch.Tensor) -> tuple[int, ...]:
    """The strides that matter: size-1 dims have no order to keep."""
    return tuple(stride for stride, size in zip(tensor.stride(), tensor.shape, strict=True) if size != 1)


def _on_meta(tensor: torch.Tensor) -> torch.Tensor:
    return torch.empty_strided(tensor.shape, tensor.stride(), dtype=tensor.dtype, device="meta")


@settings(max_examples=80, deadline=None)
@given(pair=laid_out_operands(), func=st.sampled_from([*BINARY[:4], torch.Tensor.__add__, torch.Tensor.__mul__]))
def test_a_binary_output_is_laid_out_as_torchs(
    pair: tuple[torch.Tensor, torch.Tensor], func: Callable[..., Any]
) -> None:
    expected = func(*pair)
    got = META_SHAPES[func]((_on_meta(pair[0]), _on_meta(pair[1])), {})
    assert tuple(got.shape) == tuple(expected.shape)
    assert _layout(got) == _layout(expected), [tensor.stride() for tensor in pair]


@settings(max_examples=40, deadline=None)
@given(data=st.data(), func=st.sampled_from([torch.sigmoid, torch.Tensor.neg, F.silu, F.gelu, F.relu]))
def test_a_unary_output_is_laid_out_as_torchs(data: st.DataObject, func: Callable[..., Any]) -> None:
    source = data.draw(laid_out(data.draw(st.lists(st.integers(1, 4), min_size=1, max_size=4))))
    expected = func(source)
    got = META_SHAPES[func]((_on_meta(source),), {})
    assert _layout(got) == _layout(expected), source.stride()


# --- convolution and linear ---------------------------------------------------------------


def convolution_cases(spatial: int, transposed: bool) -> Iterator[Case]:
    """A grid over size, kernel, stride, padding, dilation (and output_padding), in float64.

    float64 takes torch's reference CPU path. float32 goes through oneDNN, which returns an
    empty tensor for a transposed output size of 0 where the reference path and CUDA raise.
    """
    func = getattr(torch, f"conv_transpose{spatial}d" if transposed else f"conv{spatial}d")
    extras = (0, 1, 2) if transposed else (0,)
    paddings: tuple[Any, ...] = (0, 1, 2) if transposed or spatial == 3 else (0, 1, 2, "same", "valid")
    for size, kernel, stride, padding, dilation, extra in itertools.product(
        (1, 2, 5), (1, 2, 3), (1, 2), paddings, (1, 2), extras
    ):
        x = ones(1, 2, size, *(3,) * (spatial - 1), dtype=torch.float64)
        weight = ones(2, 2, *(kernel,) * spatial, dtype=torch.float64)
        kwargs = {"stride": stride, "padding": padding, "dilation": dilation}
        yield func, (x, weight), {**kwargs, "output_padding": extra} if transposed else kwargs


@pytest.mark.parametrize("spatial", [1, 2, 3])
@pytest.mark.parametrize("transposed", [False, True])
def test_convolution_sizes_match_torch(spatial: int, transposed: bool) -> None:
    assert assert_agree(convolution_cases(spatial, transposed)) > 50


@pytest.mark.parametrize("transposed", [False, True])
def test_convolution_channels_groups_and_bias_match_torch(transposed: bool) -> None:
    func = torch.conv_transpose2d if transposed else torch.conv2d
    cases = []
    for channels, groups, out_channels, bias, batched in itertools.product(
        (2, 3, 4, 6), (1, 2, 3), (2, 3, 6), (None, 2, 6), (True, False)
    ):
        x = ones(2, channels, 5, 5) if batched else ones(channels, 5, 5)
        if transposed:
            weight = ones(channels, max(out_channels // groups, 1), 3, 3)
        else:
            weight = ones(out_channels, max(4 // groups, 1), 3, 3)
        cases.append((func, (x, weight), {"groups": groups, "bias": None if bias is None else ones(bias)}))
    assert_agree(cases)


def test_convolution_per_dimension_arguments_match_torch() -> None:
    x, weight = ones(2, 3, 7, 6, dtype=torch.float64), ones(4, 3, 3, 2, dtype=torch.float64)
    transposed_weight = ones(3, 4, 3, 2, dtype=torch.float64)
    cases: list[Case] = [
        (torch.conv2d, (x, weight), {"stride": (2, 1), "padding": (1, 0), "dilation": (1, 3)}),
        (torch.conv2d, (x, weight), {"stride": [3], "padding": [2], "dilation": 2}),
        (torch.conv2d, (x, weight), {"padding": "same", "dilation": (2, 1)}),
        (torch.conv_transpose2d, (x, transposed_weight), {"stride": (2, 3), "output_padding": (1, 2)}),
        (torch.conv_transpose2d, (x[0], transposed_weight), {"stride": 2, "padding": (1, 0), "dilation": (1, 2)}),
        (torch.conv_transpose2d, (ones(2, 3, 0, 4, dtype=torch.float64), transposed_weight), {}),
        (torch.conv_transpose2d, (ones(0, 3, 4, 4, dtype=torch.float64), transposed_weight), {}),
        (torch.conv2d, (ones(0, 3, 8, 8, dtype=torch.float64), weight), {}),
        (torch.conv2d, (ones(2, 3, 0, 8, dtype=torch.float64), weight), {}),
        (torch.conv2d, (ones(2, 3, 0, 8, dtype=torch.float64), weight), {"padding": 2}),
    ]
    assert_agree(cases)


def test_convolution_arguments_torch_rejects_are_left_to_torch() -> None:
    x, weight = ones(2, 3, 8, 8), ones(4, 3, 3, 3)
    cases: list[Case] = [
        (torch.conv2d, (x, weight), {"padding": -1}),
        (torch.conv2d, (x, weight), {"stride": 0}),
        (torch.conv2d, (x, weight), {"padding": "same", "stride": 2}),
        (torch.conv2d, (x, weight), {"padding": "full"}),
        (torch.conv2d, (x, weight), {"stride": (1, 1, 1)}),
        (torch.conv2d, (x.double(), weight), {}),
        (torch.conv2d, (ones(1, 2, 3, 8, 8), weight), {}),
        (torch.conv_transpose2d, (x, ones(3, 4, 2, 2)), {"output_padding": -1}),
        (torch.conv_transpose2d, (x, ones(3, 4, 2, 2)), {"padding": "same"}),
    ]
    assert_agree(cases)


@pytest.mark.parametrize("func", [torch.conv2d, torch.conv_transpose2d], ids=name_of)
def test_convolution_channel_mismatch_names_both_counts(func: Callable[..., Any]) -> None:
    weight = meta(3, 4, 2, 2) if func is torch.conv_transpose2d else meta(4, 3, 3, 3)
    with pytest.raises(RuntimeError, match="expected input\\[2, 5, 8, 8\\] to have 3 channels, but got 5 channels"):
        metashapes.call(func, (meta(2, 5, 8, 8), weight), {})


def test_convolution_too_small_raises_like_torch() -> None:
    with pytest.raises(RuntimeError, match=r"padded input size per channel: \(2 x 2\). Kernel size: \(3 x 3\)"):
        metashapes.call(torch.conv2d, (meta(1, 3, 2, 2), meta(4, 3, 3, 3)), {})
    with pytest.raises(RuntimeError, match=r"Calculated output size per channel: \(0 x 0\). Output size is too small"):
        metashapes.call(torch.conv_transpose2d, (meta(1, 3, 2, 2), meta(3, 4, 1, 1)), {"padding": 1})


def test_linear_matches_torch() -> None:
    cases = [
        (F.linear, (ones(*shape), ones(5, features)), {"bias": bias})
        for shape in [(8,), (4, 8), (2, 3, 8), (0, 8), (2, 7)]
        for features in (8, 7)
        for bias in (None, ones(5), ones(4), ones(1), torch.ones(()))
    ]
    assert_agree(cases)
    with pytest.raises(RuntimeError, match=r"mat1 and mat2 shapes cannot be multiplied \(6x8 and 7x5\)"):
        metashapes.call(F.linear, (meta(2, 3, 8), meta(5, 7)), {})


# --- normalization ------------------------------------------------------------------------


def test_group_norm_matches_torch() -> None:
    affine = [(None, None), (ones(6), ones(6)), (ones(4), None), (None, ones(4)), (ones(6, 1), None)]
    cases = [
        (F.group_norm, (ones(*shape), groups), {"weight": weight, "bias": bias})
        for shape in [(2, 6, 4, 4), (2, 6), (1, 4, 1), (3, 6, 5), (0, 6, 2), (1, 2)]
        for groups in (1, 2, 3, 4, 6)
        for weight, bias in affine
    ]
    assert_agree(cases)
    with pytest.raises(RuntimeError, match="channels in input to be divisible by num_groups"):
        metashapes.call(F.group_norm, (meta(2, 6, 4, 4), 4), {})


def test_batch_and_instance_norm_match_torch() -> None:
    cases: list[Case] = []
    shapes = [(2, 3, 4, 4), (4, 3), (1, 3, 1, 1), (2, 3, 5), (2, 3, 1)]
    for shape, statistics, affine, training in itertools.product(shapes, (None, 3, 5), (None, 3, 4), (False, True)):
        running_mean, running_var = (None, None) if statistics is None else (ones(statistics), ones(statistics))
        weight = None if affine is None else ones(affine)
        options = {"weight": weight, "bias": weight}
        cases.append((F.batch_norm, (ones(*shape), running_mean, running_var), {**options, "training": training}))
        statistics_options = {"running_mean": running_mean, "running_var": running_var, "use_input_stats": training}
        cases.append((F.instance_norm, (ones(*shape),), {**options, **statistics_options}))
    assert_agree(cases)
    with pytest.raises(RuntimeError, match="running_mean should contain 3 elements not 5"):
        metashapes.call(F.batch_norm, (meta(2, 3, 4, 4), meta(5), meta(5)), {})


def test_layer_norm_matches_torch() -> None:
    cases = [
        (F.layer_norm, (ones(2, 3, 4, 5), normalized), {"weight": weight})
        for normalized in [(5,), (4, 5), [5], (4,), (3, 4, 5), (2, 3, 4, 5, 6), (), 5]
        for weight in (None, ones(5), ones(4, 5))
    ]
    assert_agree(cases)


# --- pooling and resampling ---------------------------------------------------------------

POOLS = [F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.max_pool1d, F.max_pool2d, F.max_pool3d]


def pooling_cases(func: Callable[..., Any]) -> Iterator[Case]:
    """A grid over size, kernel, stride, padding, ceil mode (and dilation), the first dimension varied."""
    spatial, maximum = int(func.__name__[-2]), "max" in func.__name__
    for size, kernel, stride, padding, ceil_mode, dilation in itertools.product(
        (1, 2, 3, 5), (1, 2, 3), (None, 1, 2), (0, 1, 2), (False, True), (1, 2) if maximum else (1,)
    ):
        kwargs: dict[str, Any] = {"stride": stride, "padding": padding, "ceil_mode": ceil_mode}
        yield (
            func,
            (ones(2, 3, size, *(4,) * (spatial - 1)), kernel),
            {**kwargs, "dilation": dilation} if maximum else kwargs,
        )


@pytest.mark.parametrize("func", POOLS, ids=lambda f: f.__name__)
def test_pooling_matches_torch(func: Callable[..., Any]) -> None:
    assert assert_agree(pooling_cases(func)) > 100


def test_pooling_too_small_raises_like_torch() -> None:
    with pytest.raises(RuntimeError, match=r"Calculated output size: \(3x0x0\). Output size is too small"):
        metashapes.call(F.avg_pool2d, (meta(2, 3, 1, 1), 2), {})
    # In ceil mode a last window that would start in the padding is dropped: 3, not 4.
    assert metashapes.pooled_size(5, 2, 2, 1, 1, ceil_mode=True) == 3
    assert F.max_pool2d(ones(1, 1, 5, 5), 2, 2, 1, ceil_mode=True).shape == (1, 1, 3, 3)
    assert metashapes.call(F.max_pool2d, (meta(1, 1, 5, 5), 2, 2, 1), {"ceil_mode": True}).shape == (1, 1, 3, 3)


@pytest.mark.parametrize("spatial", [1, 2, 3])
def test_max_pool_indices_match_torch(spatial: int) -> None:
    x = ones(2, 3, *(5,) * spatial)
    plain, with_indices = getattr(F, f"max_pool{spatial}d"), getattr(F, f"max_pool{spatial}d_with_indices")
    assert_agree([(plain, (x, 2), {"return_indices": True}), (with_indices, (x, 2), {}), (plain, (x[0], 3, 2), {})])


def test_pooling_arguments_match_torch() -> None:
    x = ones(2, 3, 6, 6)
    cases: list[Case] = [
        (F.avg_pool2d, (x, (2, 3)), {"stride": (1, 2), "padding": (1, 0)}),
        (F.avg_pool2d, (x, (2,)), {"stride": []}),
        (F.avg_pool2d, (x, (2, 2, 2)), {}),
        (F.avg_pool2d, (x, 2), {"divisor_override": 0}),
        (F.avg_pool2d, (x, 2), {"divisor_override": 3}),
        (F.avg_pool1d, (ones(2, 3, 6), 2), {"divisor_override": 3}),
        (F.avg_pool2d, (ones(6, 6), 2), {}),
        (F.max_pool2d, (ones(6, 6), 2), {}),
        (F.avg_pool2d, (ones(0, 3, 6, 6), 2), {}),
        (F.max_pool2d, (ones(2, 0, 6, 6), 2), {}),
        (F.max_pool2d, (x, 3), {"padding": 2, "dilation": 2}),
        (F.max_pool1d, (ones(2, 3, 8), (2, 2)), {}),
        (F.avg_pool2d, (x, 0), {}),
        (F.max_pool2d, (x, 2), {"stride": 0}),
    ]
    assert_agree(cases)


def test_pad_matches_torch() -> None:
    cases: list[Case] = []
    for mode, pad, shape in itertools.product(
        ("reflect", "replicate", "circular"),
        [(1, 2), (0, 3), (1, 1, 2, 0), (3, 3, 3, 3), (4, 0, 1, 1), (1, 1, 1, 1, 1, 1), (5, 5)],
        [(4, 4), (2, 4, 4), (2, 3, 4, 4), (2, 3, 4, 4, 4), (2, 3, 3, 5), (1, 1, 1)],
    ):
        cases.append((F.pad, (ones(*shape), pad), {"mode": mode}))
    cases.append((F.pad, (ones(2, 3, 4, 4), (1, 1)), {"mode": "reflect", "value": 0.0}))  # torch refuses
    assert assert_agree(cases) == 127


@pytest.mark.parametrize(
    ("pad", "options"), [((1, 1), {}), ((1, 1), {"mode": "constant", "value": 2.0}), ((-1, 2), {"mode": "reflect"})]
)
def test_constant_and_negative_pads_are_left_to_torch(pad: tuple[int, ...], options: dict[str, Any]) -> None:
    assert META_SHAPES[F.pad]((meta(2, 3, 4, 4), pad), options) is NotImplemented


def test_adaptive_average_pool_matches_torch() -> None:
    cases: list[Case] = [
        (F.adaptive_avg_pool2d, (ones(*shape), output_size), {})
        for shape in [(2, 3, 7, 5), (3, 7, 5), (2, 3, 1, 1)]
        for output_size in [1, 3, (2, 4), (None, 2), (4, None), (9, 9), 0, (2,), (1, 2, 3)]
    ]
    assert_agree(cases)


def test_interpolate_matches_torch() -> None:
    cases: list[Case] = []
    modes = [
        *(((2, 3, 7), mode) for mode in ("nearest", "nearest-exact", "linear")),
        *(((2, 3, 7, 5), mode) for mode in ("nearest", "nearest-exact", "bilinear", "bicubic")),
        *(((1, 2, 3, 5, 7), mode) for mode in ("nearest", "trilinear")),
    ]
    for shape, mode in modes:
        spatial = len(shape) - 2
        for scale in (2, 0.5, 1.5, 0.3, 0.7, 1 / 3, 2.1, (0.5, 3.0, 1.0)[:spatial], 0.1):
            for recompute in (None, True):
                options = {"scale_factor": scale, "mode": mode, "recompute_scale_factor": recompute}
                cases.append((F.interpolate, (ones(*shape),), options))
        for size in (4, 9, (3, 8, 2)[:spatial], (3, 8, 2, 1)):
            cases.append((F.interpolate, (ones(*shape),), {"size": size, "mode": mode}))
    cases.append((F.interpolate, (ones(2, 3, 4, 4),), {"size": 8, "mode": "bilinear", "align_corners": True}))
    cases.append((F.interpolate, (ones(2, 3, 4, 4),), {"size": 8, "align_corners": True}))
    cases.append((F.interpolate, (ones(2, 3, 4, 4),), {"size": 8, "scale_factor": 2}))
    assert_agree(cases)


# --- matrix products ----------------------------------------------------------------------


def test_matmul_matches_torch() -> None:
    shapes = [(3,), (4,), (2, 3), (3, 4), (4, 5), (2, 3, 4), (1, 4, 5), (3, 4, 5), (2, 1, 3, 4), (0, 3, 4)]
    cases: list[Case] = [
        (func, (ones(*left), ones(*right)), {})
        for func in (torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.Tensor.__rmatmul__)
        for left, right in itertools.product(shapes, repeat=2)
    ]
    assert_agree(cases)


def test_bmm_and_baddbmm_match_torch() -> None:
    cases: list[Case] = []
    for first, second in itertools.product([(2, 3, 4), (2, 4, 5), (3, 4, 5), (2, 3)], repeat=2):
        cases.append((torch.bmm, (ones(*first), ones(*second)), {}))
        if len(first) < 3 or len(second) < 3:
            continue  # baddbmm leaves 2-D batches to torch, whose errors there are of mixed types
        for input_shape in [(2, 3, 5), (3, 5), (1,), (5,), (2, 1, 1), (4, 5), (3, 2, 3, 5)]:
            cases.append((torch.baddbmm, (ones(*input_shape), ones(*first), ones(*second)), {"beta": 0.5}))
    assert_agree(cases)


def test_attention_matches_torch() -> None:
    cases: list[Case] = []
    sizes = [(4, 5, 8, 3), (1, 1, 2, 2)]  # target length, source length, features, value features
    for batch, (length, source, features, value_features) in itertools.product([(), (2,), (2, 3)], sizes):
        query, key = ones(*batch, length, features), ones(*batch, source, features)
        value = ones(*batch, source, value_features)
        masks = (None, ones(length, source, dtype=torch.bool), ones(*batch, 1, source), ones(2, 2, 1, 1, 1))
        cases.extend((F.scaled_dot_product_attention, (query, key, value), {"attn_mask": mask}) for mask in masks)
        cases.append((F.scaled_dot_product_attention, (query, key, value), {"is_causal": True, "scale": 0.5}))
        cases.append((F.scaled_dot_product_attention, (query, ones(*batch, source, features + 1), value), {}))
    # Not compared: a value longer than the key, which torch's CPU flash kernel reads without a word.
    assert_agree(cases)


def _multi_head_case(length: int, source: int, batch: tuple[int, ...], **options: Any) -> Case:
    """F.multi_head_attention_forward as nn.MultiheadAttention(8, 2) calls it, sequence first."""
    embed, heads = 8, 2
    query, key = ones(length, *batch, embed), ones(source, *batch, embed)
    weights = (ones(3 * embed, embed), ones(3 * embed), None, None, False, 0.0, ones(embed, embed), ones(embed))
    return F.multi_head_attention_forward, (query, key, key, embed, heads, *weights), {"training": False, **options}


def test_multi_head_attention_matches_torch() -> None:
    cases = [
        _multi_head_case(length, source, batch, need_weights=need, average_attn_weights=average)
        for length, source in [(5, 5), (4, 7)]
        for batch in [(), (3,)]
        for need in (True, False)
        for average in (True, False)
    ]
    wrong_width = _multi_head_case(5, 5, (3,))
    wrong_width = (wrong_width[0], (ones(5, 3, 6), *wrong_width[1][1:]), wrong_width[2])  # torch asserts
    assert assert_agree([*cases, wrong_width]) == 17


def _replaced(case: Case, **arguments: Any) -> Case:
    """The case with some positional arguments of F.multi_head_attention_forward replaced."""
    func, args, kwargs = case
    names = list(inspect.signature(F.multi_head_attention_forward).parameters)
    values = list(args)
    for name, value in arguments.items():
        if names.index(name) < len(values):
            values[names.index(name)] = value
        else:
            kwargs = {**kwargs, name: value}
    return func, tuple(values), kwargs


@pytest.mark.parametrize(
    "mistake",
    [
        {"key": ones(7, 3, 6), "value": ones(7, 3, 6)},  # a cross-attention context 6 wide into embed 8
        {"in_proj_weight": ones(24, 8, dtype=torch.float64)},
        {"dropout_p": 1.5, "training": True},
    ],
    ids=["context of another width", "weights of another dtype", "dropout above 1"],
)
def test_multi_head_attention_mistakes_are_left_to_torch(mistake: dict[str, Any]) -> None:
    func, args, kwargs = _replaced(_multi_head_case(5, 5, (3,)), **mistake)
    with pytest.raises(Exception):  # noqa: B017, PT011 - whatever torch says, it refuses
        func(*args, **kwargs)
    assert META_SHAPES[func](to_meta(args), to_meta(kwargs)) is NotImplemented


def test_multi_head_attention_with_masks_is_left_to_torch() -> None:
    func, args, kwargs = _multi_head_case(5, 5, (3,), attn_mask=ones(5, 5, dtype=torch.bool))
    assert META_SHAPES[func](to_meta(args), to_meta(kwargs)) is NotImplemented


# --- routing ------------------------------------------------------------------------------


class Arrivals(TorchFunctionMode):
    """Records the functions a TorchFunctionMode receives, answering them through metashapes."""

    def __init__(self) -> None:
        super().__init__()
        self.functions: list[Callable[..., Any]] = []

    def __torch_function__(
        self, func: Callable[..., Any], types: Any, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        self.functions.append(func)
        return metashapes.call(func, args, kwargs or {})


ATTENTION_MODULE = torch.nn.MultiheadAttention(4, 2, device="meta").eval()
"""Built once, outside the mode: only its forward's functions should arrive."""
ROUTES: dict[str, Callable[[torch.Tensor], Any]] = {
    "x + y": lambda x: x + x,
    "x + 2": lambda x: x + 2,
    "2 + x": lambda x: 2 + x,
    "x - y": lambda x: x - x,
    "2 - x": lambda x: 2 - x,
    "x * 2": lambda x: x * 2,
    "2 * x": lambda x: 2 * x,
    "x / y": lambda x: x / x,
    "2 / x": lambda x: 2 / x,
    "-x": lambda x: -x,
    "x ** 2": lambda x: x**2,
    "2 ** x": lambda x: 2**x,
    "x @ y": lambda x: x @ x,
    "x.sin()": lambda x: x.sin(),
    "torch.cos": torch.cos,
    "x.exp()": lambda x: x.exp(),
    "F.silu": F.silu,
    "F.relu": F.relu,
    "F.gelu": F.gelu,
    "F.sigmoid": F.sigmoid,
    "F.tanh": F.tanh,
    "F.dropout": F.dropout,
    "F.softmax": lambda x: F.softmax(x, dim=-1),
    "x.softmax": lambda x: x.softmax(-1),
    "x.mean": lambda x: x.mean((2, 3)),
    "F.conv2d": lambda x: F.conv2d(x, meta(4, 3, 3, 3)),
    "F.conv_transpose2d": lambda x: F.conv_transpose2d(x, meta(3, 4, 2, 2), stride=2),
    "F.linear": lambda x: F.linear(x, meta(5, 4)),
    "F.group_norm": lambda x: F.group_norm(x, 3),
    "F.batch_norm": lambda x: F.batch_norm(x, meta(3), meta(3)),
    "F.layer_norm": lambda x: F.layer_norm(x, (4,)),
    "F.instance_norm": F.instance_norm,
    "F.avg_pool2d": lambda x: F.avg_pool2d(x, 2),
    "F.max_pool2d": lambda x: F.max_pool2d(x, 2),
    "F.max_pool2d with indices": lambda x: F.max_pool2d(x, 2, return_indices=True),
    "F.adaptive_avg_pool2d": lambda x: F.adaptive_avg_pool2d(x, 1),
    "F.interpolate": lambda x: F.interpolate(x, scale_factor=2),
    "F.pad reflect": lambda x: F.pad(x, (1, 1, 1, 1), mode="reflect"),
    "torch.bmm": lambda x: torch.bmm(x[0], x[0]),
    "torch.baddbmm": lambda x: torch.baddbmm(x[0], x[0], x[0]),
    "F.scaled_dot_product_attention": lambda x: F.scaled_dot_product_attention(x, x, x),
    "nn.MultiheadAttention": lambda x: ATTENTION_MODULE(x[0], x[0], x[0]),
}


@pytest.mark.parametrize("route", list(ROUTES))
def test_the_function_that_arrives_has_a_shape_function(route: str) -> None:
    with Arrivals() as mode:
        ROUTES[route](meta(2, 3, 4, 4))
    assert mode.functions[-1] in META_SHAPES, f"{route} arrives as {mode.functions[-1]!r}"


@pytest.mark.parametrize("statement", ["x += y", "x -= y", "x *= 2", "x /= 2", "x **= 2"])
def test_augmented_assignment_keeps_its_target(statement: str) -> None:
    x, y = meta(2, 3), meta(3)
    namespace = {"x": x, "y": y}
    with Arrivals() as mode:
        exec(statement, namespace)  # the statement form, not a method call, is what is under test
    assert namespace["x"] is x
    assert mode.functions[-1] in META_SHAPES


def test_tensors_elsewhere_and_unsupported_dtypes_are_left_to_torch() -> None:
    assert torch.equal(metashapes.call(torch.add, (ones(2), ones(2)), {}), torch.full((2,), 2.0))
    integers = meta(2, 3, 4, 4, dtype=torch.int64)
    assert META_SHAPES[F.silu]((integers,), {}) is NotImplemented
    assert META_SHAPES[torch.conv2d]((integers, integers), {}) is NotImplemented
    assert META_SHAPES[torch.sin]((meta(2, dtype=torch.complex64),), {}) is NotImplemented


def test_autograd_is_left_to_torch() -> None:
    leaf = torch.empty(3, device="meta", requires_grad=True)
    # torch refuses in place on a leaf that requires grad; an empty stand-in would not know.
    with pytest.raises(RuntimeError, match="a leaf Variable that requires grad"):
        metashapes.call(torch.Tensor.add_, (leaf, 1), {})
    with torch.no_grad():
        assert metashapes.call(torch.Tensor.add_, (leaf, 1), {}) is leaf


@pytest.mark.parametrize(("variant", "size"), [("fixed", 12), ("as-written", 13)])
def test_a_meta_trace_equals_the_trace_on_cpu(variant: Any, size: int) -> None:
    from shapetrace.api import run_trace
    from shapetrace.models.unet import UNet

    model = UNet(n_channels=4, chs=(1, 2), variant=variant)
    traces = []
    for device in ("cpu", "meta"):
        x, t = torch.zeros(2, 3, size, size, device=device), torch.zeros(2, dtype=torch.long, device=device)
        traces.append(dataclasses.replace(run_trace(model.to(device), (x, t)), device=""))
    assert traces[0] == traces[1]
    assert bool(traces[0].breaks) == (variant == "as-written")  # a trace with breaks and one without


def test_trace_of_the_reference_unet_does_not_import_sympy() -> None:
    script = textwrap.dedent(
        """
        import sys, time
        import torch
        import torch.nn.functional as F
        from shapetrace.api import trace
        from shapetrace.models.unet import UNet

        with torch.device("meta"):
            model = UNet()
        x = torch.empty(2, 3, 224, 224, device="meta")
        t = torch.empty(2, dtype=torch.long, device="meta")
        start = time.perf_counter()
        result = trace(model, x, t)
        elapsed = time.perf_counter() - start
        assert not result.breaks, result.breaks
        # Conv2d's padding modes go through F.pad, and attention blocks through F.multi_head_attention_forward.
        for padding_mode in ("reflect", "replicate", "circular"):
            conv = torch.nn.Conv2d(3, 4, 3, padding=1, padding_mode=padding_mode, device="meta")
            assert trace(conv, x).ok
        attention = torch.nn.MultiheadAttention(32, 4, batch_first=True, device="meta")
        tokens = torch.empty(2, 64, 32, device="meta")
        assert trace(attention, tokens, tokens, tokens).ok
        # Left to torch on purpose: on meta these never reach a Python meta kernel.
        F.pad(x, (1, -1, 2, 0))
        F.dropout(x, 0.1, training=False)
        assert "sympy" not in sys.modules, "sympy was imported"
        print(f"traced in {elapsed:.3f} s")
        """
    )
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.startswith("traced in")
