"""The one way shapetrace writes shapes and sizes, for every layer that words them.

Torch-free and import-free, so the analysis and every renderer share it.
"""

from __future__ import annotations

from collections.abc import Sequence

Shape = tuple[int, ...]


def format_shape(shape: Sequence[int]) -> str:
    """ "[2, 64, 224, 224]": a whole shape, as torch's messages write it."""
    return "[" + ", ".join(str(extent) for extent in shape) + "]"


def format_size(size: Sequence[int]) -> str:
    """ "224" when every extent is equal, else "224×256": a spatial size."""
    if not size:
        return "?"
    if len(set(size)) == 1:
        return str(size[0])
    return "×".join(str(extent) for extent in size)


def format_size_change(before: Sequence[int], after: Sequence[int]) -> str:
    """ "225 → 112": a spatial size before and after a layer."""
    return f"{format_size(before)} → {format_size(after)}"


def format_extents(shape: Sequence[int]) -> str:
    """ "64×224×224": the extents joined, as table cells and diagram labels show C×H×W."""
    return "×".join(str(extent) for extent in shape)


def compact_shape(shape: Sequence[int]) -> str:
    """ "64×224×224": C×H×W without the batch, which titles show once; "—" for no shape."""
    if not shape:
        return "—"
    return format_extents(shape[1:]) if len(shape) > 1 else str(shape[0])


def describe_change(inputs: Sequence[int], outputs: Sequence[int]) -> str:
    """ "channels 64→128, size 224→112" for an activation; "" when nothing changed."""
    if len(inputs) < 2 or len(outputs) < 2:
        return ""
    changes = []
    if inputs[1] != outputs[1]:
        changes.append(f"channels {inputs[1]}→{outputs[1]}")
    if tuple(inputs[2:]) != tuple(outputs[2:]) and len(inputs) == len(outputs):
        changes.append(f"size {format_size(inputs[2:])}→{format_size(outputs[2:])}")
    return ", ".join(changes)


_SI_PREFIXES = ("", "k", "M", "G", "T", "P", "E")


def format_count(count: int) -> str:
    """ "1.09 G": a count of FLOPs, MACs or parameters with an SI prefix, three significant digits."""
    return _si(count, "")


def format_bytes(count: int) -> str:
    """ "27.8 MB": bytes with an SI prefix (1 MB = 10**6 bytes, as `--budget 24GB` reads it)."""
    return _si(count, "B")


def _si(count: int, unit: str) -> str:
    if count < 1000:
        return f"{count} {unit}".rstrip()
    value, prefix = float(count), 0
    while value >= 999.5 and prefix < len(_SI_PREFIXES) - 1:
        value /= 1000
        prefix += 1
    digits = 2 if value < 9.995 else 1 if value < 99.95 else 0
    return f"{value:.{digits}f} {_SI_PREFIXES[prefix]}{unit}"
