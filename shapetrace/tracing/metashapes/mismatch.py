"""The errors the shape functions raise on purpose: torch's own, where torch would raise them.

Inside a trace, an exception raised in shapetrace's code is either one of these (the model's
mistake, reported as a break of the kind it carries) or a bug of shapetrace's
(`shapetrace.tracing.failures` tells them apart). The message is torch's, word for word.
"""

from __future__ import annotations

from typing import ClassVar

from shapetrace.records import BreakKind


class ShapeMismatch(RuntimeError):  # noqa: N818 - torch raises it as a RuntimeError; named for what it means
    """torch's RuntimeError for a call a shape function checks, and the kind of break it is."""

    torch_type: ClassVar[type[Exception]] = RuntimeError
    """The exception type torch raises here; the break names it as the op that failed."""

    def __init__(self, message: str, kind: BreakKind = BreakKind.SIZE) -> None:
        super().__init__(message)
        self.kind = kind

    def __reduce__(self) -> tuple[type[ShapeMismatch], tuple[str, BreakKind]]:
        return type(self), (str(self), self.kind)


class ValueMismatch(ShapeMismatch, ValueError):  # noqa: N818 - as ShapeMismatch
    """The same for torch.nn.functional's ValueErrors (a norm given one value per channel)."""

    torch_type = ValueError
