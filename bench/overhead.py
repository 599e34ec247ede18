"""B2: what trace() adds to a plain `model(x, t)` under no_grad, same model and input, in-process."""

from __future__ import annotations

from dataclasses import dataclass

from measure import compare_calls
from report import Row, ratio_row, seconds_row


@dataclass(frozen=True)
class OverheadCase:
    device: str
    size: int
    batch: int
    n_channels: int
    limit: float
    """Most trace() may take, as a multiple of the plain forward."""


CASES = (
    OverheadCase("meta", 224, 2, 64, 1.5),
    # Small enough that a cpu forward takes a fraction of a second here; small is the hard
    # case, since the hooks' fixed cost weighs more against a short forward.
    OverheadCase("cpu", 64, 2, 32, 1.05),
)


def overhead(rounds: int) -> list[Row]:
    rows: list[Row] = []
    for case in CASES:
        rows += _overhead_rows(case, rounds)
    return rows


def _overhead_rows(case: OverheadCase, rounds: int) -> list[Row]:
    import workloads

    from shapetrace.models.unet import UNet

    model = workloads.reference_model(UNet, case.device, n_channels=case.n_channels)
    inputs = workloads.reference_inputs(case.size, case.batch, case.device)
    samples = compare_calls(
        {
            "plain": workloads.plain_forward(model, inputs),
            "trace": workloads.shapetrace_call(model, inputs),
        },
        rounds,
    )
    where = f"{case.device}, n_channels {case.n_channels}, {case.size}×{case.size} b{case.batch}"
    return [
        seconds_row("B2", f"plain forward under no_grad ({where})", samples["plain"]),
        seconds_row("B2", f"shapetrace.trace ({where})", samples["trace"]),
        ratio_row(
            "B2", f"trace / plain ({case.device})", samples["trace"], samples["plain"], case.limit, f"≤ {case.limit}×"
        ),
    ]
