"""click parameter types: each turns one typed-in value into Python or fails in one line.

They import no torch: `shapetrace --help`, `show` and `diff` parse their options without it.
A dtype stays a name here (validated against DTYPE_NAMES); the tracing side makes it a torch.dtype.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from typing import Any, Literal

import click

from shapetrace.records import MAX_EXTENT
from shapetrace.sizes import Size, parse_size, parse_sizes

DTYPE_NAMES = ("float32", "float16", "bfloat16", "float64", "int64", "int32", "int8", "uint8", "bool")
"""The dtypes `--input` and `--kw` accept; each is the name of a torch.dtype."""

FLOATING_DTYPE_NAMES = ("float32", "float16", "bfloat16", "float64")
"""The dtypes `--dtype` accepts: those a model's weights can have."""

MAX_TENSOR_DIMS = 8
RANDOM_TIMESTEP: Literal["random"] = "random"
_EXTENT = re.compile(r"\s*[0-9]+\s*")  # ASCII digits only: str.isdigit() accepts "²", which int() refuses


class ChannelMultipliers(click.ParamType):  # type: ignore[type-arg]  # generic only in newer click
    """`--chs 1,2,4,8`: a comma-separated list of positive ints."""

    name = "chs"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[int, ...]:
        if isinstance(value, tuple):
            return value
        parts = str(value).split(",")
        if not all(_EXTENT.fullmatch(part) for part in parts) or any(int(part) < 1 for part in parts):
            self.fail(f"{value!r} is not a valid channel list: expected positive integers like 1,2,4,8", param, ctx)
        if len(parts) > 12:
            self.fail(f"{value!r} has {len(parts)} levels, expected at most 12", param, ctx)
        return tuple(int(part) for part in parts)


class SpatialSize(click.ParamType):  # type: ignore[type-arg]  # generic only in newer click
    """`--size 224` or `--size 224x256`: H and W, each a positive int."""

    name = "size"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[int, int]:
        if isinstance(value, tuple):
            return value
        try:
            size = parse_size(str(value))
        except ValueError as error:
            self.fail(str(error), param, ctx)
        if len(size) > 2:
            self.fail(f"{value!r} is not a valid size: expected an integer like 224 or HxW like 224x256", param, ctx)
        return (size[0], size[0]) if len(size) == 1 else (size[0], size[1])


class SizeList(click.ParamType):  # type: ignore[type-arg]  # generic only in newer click
    """`--sizes 32:512`, `32:512:8` (inclusive) or `224,225,230x232`: the sizes to sweep (see shapetrace.sizes)."""

    name = "sizes"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> list[Size]:
        if isinstance(value, list):
            return value
        try:
            return parse_sizes(str(value))
        except ValueError as error:
            self.fail(str(error), param, ctx)


@dataclass(frozen=True)
class TensorSpec:
    """A tensor the user asked for: its shape and the name of its dtype."""

    shape: tuple[int, ...]
    dtype: str = "float32"
    named: bool = False
    """The user named the dtype (`:float16`); an unnamed floating input follows --dtype."""


def parse_tensor_spec(text: str) -> TensorSpec:
    """`2,3,64,64` or `2,3,64,64:float16` as a TensorSpec.

    Raises:
        ValueError: the text is not a shape of at most 8 extents with one of DTYPE_NAMES.
    """
    shape_text, _, dtype_text = text.partition(":")
    parts = shape_text.split(",")
    if not all(_EXTENT.fullmatch(part) for part in parts):
        raise ValueError(f"{text!r} is not a valid shape: expected integers like 2,3,64,64[:float16]")
    shape = tuple(int(part) for part in parts)
    if any(extent > MAX_EXTENT for extent in shape) or len(shape) > MAX_TENSOR_DIMS:
        raise ValueError(f"{text!r} is too large: expected at most {MAX_TENSOR_DIMS} dims of at most {MAX_EXTENT}")
    dtype = dtype_text.strip() or "float32"
    if dtype not in DTYPE_NAMES:
        raise ValueError(f"{text!r} has dtype {dtype!r}: expected one of {', '.join(DTYPE_NAMES)}")
    return TensorSpec(shape, dtype, named=bool(dtype_text.strip()))


class TensorSpecType(click.ParamType):  # type: ignore[type-arg]  # generic only in newer click
    """`--input 2,3,64,64[:float16]`: a positional input tensor."""

    name = "SHAPE[:DTYPE]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> TensorSpec:
        if isinstance(value, TensorSpec):
            return value
        try:
            return parse_tensor_spec(str(value))
        except ValueError as error:
            self.fail(str(error), param, ctx)


class KeywordTensorType(click.ParamType):  # type: ignore[type-arg]  # generic only in newer click
    """`--kw encoder_hidden_states=1,77,768[:dtype]`: a keyword tensor, as (name, TensorSpec)."""

    name = "NAME=SHAPE[:DTYPE]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[str, TensorSpec]:
        if isinstance(value, tuple):
            return value
        text = str(value)
        name, separator, spec = text.partition("=")
        if not separator or not name.isidentifier():
            self.fail(f"{text!r} is not valid: expected name=shape like encoder_hidden_states=1,77,768", param, ctx)
        try:
            return name, parse_tensor_spec(spec)
        except ValueError as error:
            self.fail(f"{text!r}: {error}", param, ctx)


class JsonObject(click.ParamType):  # type: ignore[type-arg]  # generic only in newer click
    """`--init '{"chs": [1, 2]}'`: keyword arguments as a JSON object."""

    name = "JSON"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> dict[str, Any]:
        if isinstance(value, dict):
            return value
        text = str(value)
        try:
            parsed = json.loads(text)
        except RecursionError:
            self.fail(
                f"{text!r:.60} is not valid JSON (nested too deeply): expected an object like {_EXAMPLE}", param, ctx
            )
        except json.JSONDecodeError as error:
            self.fail(f"{text!r:.60} is not valid JSON ({error.msg}): expected an object like {_EXAMPLE}", param, ctx)
        except ValueError:  # an int longer than Python converts
            message = f"a number of more than {sys.get_int_max_str_digits()} digits"
            self.fail(f"{text!r:.60} is not valid JSON ({message}): expected an object like {_EXAMPLE}", param, ctx)
        if not isinstance(parsed, dict):
            self.fail(
                f"{text!r:.60} is a JSON {type(parsed).__name__}, expected an object of keyword arguments", param, ctx
            )
        return parsed


_EXAMPLE = "'{\"chs\": [1, 2]}'"


class TimestepValue(click.ParamType):  # type: ignore[type-arg]  # generic only in newer click
    """`--timestep` (random timesteps) or `--timestep 500` (that value everywhere)."""

    name = "VALUE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int | Literal["random"]:
        if isinstance(value, int) or value == RANDOM_TIMESTEP:
            return value  # type: ignore[no-any-return]  # an int or the literal, as the signature says
        text = str(value).strip()
        if not re.fullmatch(r"-?[0-9]+", text):
            self.fail(f"{value!r} is not an integer: expected e.g. --timestep 500", param, ctx)
        if len(text) > 20 or not _INT64_MIN <= int(text) <= _INT64_MAX:
            self.fail(f"{value!r} does not fit a timestep tensor: expected an int64, e.g. --timestep 500", param, ctx)
        return int(text)


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1  # timesteps are int64 tensors
