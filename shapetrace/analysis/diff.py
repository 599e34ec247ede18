"""Two traces side by side: the layers whose shapes differ and the skips that changed."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from shapetrace.formatting import format_shape
from shapetrace.records import LayerRecord, Trace

LayerKey = tuple[str, int]
"""A call's qualified name and its occurrence (a shared module's second call is 1)."""


@dataclass(frozen=True, slots=True)
class LayerChange:
    key: LayerKey
    before: LayerRecord | None
    after: LayerRecord | None


@dataclass(frozen=True, slots=True)
class TraceDiff:
    layers: tuple[LayerChange, ...]
    skips_removed: tuple[str, ...]
    skips_added: tuple[str, ...]

    @property
    def same(self) -> bool:
        return not (self.layers or self.skips_removed or self.skips_added)


def diff_traces(before: Trace, after: Trace) -> TraceDiff:
    """Layers matched by name and occurrence; a layer differs when its shapes or type do."""
    old, new = _keyed(before), _keyed(after)
    changes = []
    for key in list(old) + [key for key in new if key not in old]:
        a, b = old.get(key), new.get(key)
        if a is None or b is None or (a.type, a.inputs, a.outputs) != (b.type, b.inputs, b.outputs):
            changes.append(LayerChange(key, a, b))
    skips_before, skips_after = _skip_lines(before), _skip_lines(after)
    return TraceDiff(
        layers=tuple(changes),
        skips_removed=tuple(sorted((skips_before - skips_after).elements())),
        skips_added=tuple(sorted((skips_after - skips_before).elements())),
    )


def _keyed(trace: Trace) -> dict[LayerKey, LayerRecord]:
    seen: Counter[str] = Counter()
    keyed = {}
    for layer in trace.layers:
        keyed[(layer.name, seen[layer.name])] = layer
        seen[layer.name] += 1
    return keyed


def _skip_lines(trace: Trace) -> Counter[str]:
    def name(index: int) -> str:
        return "input" if index < 0 else trace.layers[index].name

    return Counter(
        f"{name(skip.source)} → {name(skip.target)} {skip.op} {format_shape(skip.shape)}" for skip in trace.skips
    )
