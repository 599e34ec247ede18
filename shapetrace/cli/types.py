"""click parameter types: each turns one typed-in value into Python or fails in one line."""

from __future__ import annotations

import re
from typing import Any

import click

from shapetrace.records import MAX_EXTENT


class ChannelMultipliers(click.ParamType):  # type: ignore[type-arg]  # generic only in newer click
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


class SpatialSize(click.ParamType):  # type: ignore[type-arg]  # generic only in newer click
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


class SizeList(click.ParamType):  # type: ignore[type-arg]  # generic only in newer click
    """`--sizes 32:512`, `32:512:8` (inclusive) or `224,225,230x232`: the sizes to sweep."""

    name = "sizes"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> list[tuple[int, int]]:
        if isinstance(value, list):
            return value
        text = str(value).strip()
        match = re.fullmatch(r"(\d+):(\d+)(?::(\d+))?", text)
        if match is not None:
            start, stop, step = int(match.group(1)), int(match.group(2)), int(match.group(3) or 1)
            if not 1 <= start <= stop <= MAX_EXTENT or step < 1:
                self.fail(
                    f"{value!r} is not a valid range: expected START:STOP[:STEP] with 1 <= START <= STOP", param, ctx
                )
            sizes = [(size, size) for size in range(start, stop + 1, step)]
        else:
            size_type = SpatialSize()
            sizes = [size_type.convert(part, param, ctx) for part in text.split(",")]
        if len(sizes) > 100_000:
            self.fail(f"{value!r} gives {len(sizes)} sizes, expected at most 100000", param, ctx)
        return sizes
