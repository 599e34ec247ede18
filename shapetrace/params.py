"""click parameter types: each turns one typed-in value into Python or fails in one line."""

from __future__ import annotations

import re
from typing import Any

import click

from shapetrace.inputs import MAX_EXTENT


class ChannelMultipliers(click.ParamType):
    """`--chs 1,2,4,8`: a comma-separated list of positive ints."""

    name = "chs"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[int, ...]:
        if isinstance(value, tuple):
            return value
        parts = str(value).split(",")
        if not all(re.fullmatch(r"\s*\d+\s*", part) for part in parts) or any(int(part) < 1 for part in parts):
            self.fail(f"{value!r} is not a valid channel list: expected positive integers like 1,2,4,8", param, ctx)
        if len(parts) > 12:
            self.fail(f"{value!r} has {len(parts)} levels, expected at most 12", param, ctx)
        return tuple(int(part) for part in parts)


class SpatialSize(click.ParamType):
    """`--size 224` or `--size 224x256`: H and W, each a positive int."""

    name = "size"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[int, int]:
        if isinstance(value, tuple):
            return value
        match = re.fullmatch(r"\s*(\d+)\s*(?:[x×]\s*(\d+)\s*)?", str(value))
        if match is None:
            self.fail(f"{value!r} is not a valid size: expected an integer like 224 or HxW like 224x256", param, ctx)
        height = int(match.group(1))
        width = int(match.group(2)) if match.group(2) is not None else height
        for extent in (height, width):
            if not 1 <= extent <= MAX_EXTENT:
                self.fail(f"{value!r} is not a valid size: each side must be from 1 to {MAX_EXTENT}", param, ctx)
        return height, width
