"""The rendered table: golden files for clean and broken traces, and invariants of its text."""

from __future__ import annotations

import re
from collections.abc import Callable

from shapetrace.table import trace_report, trace_table
from tests.conftest import render, trace_unet


def test_default_unet_table(golden: Callable[[str, str], None]) -> None:
    golden("test_default_unet_table.txt", render(trace_report(trace_unet(224))))


def test_size_break_table(golden: Callable[[str, str], None]) -> None:
    from shapetrace.reference import trace_reference

    trace = trace_reference(size=(225, 225), chs=(1, 2, 4, 8))
    golden("test_size_break_table.txt", render(trace_report(trace), width=160))


def test_params_column_sums_to_the_total() -> None:
    trace = trace_unet(64, (1, 2, 4))
    text = render(trace_table(trace), width=200)
    rows = [line for line in text.splitlines() if re.match(r"^│\s+\d+ │", line)]
    params = [int(line.rstrip(" │").rsplit("│", 1)[-1].strip().replace(",", "")) for line in rows]
    assert sum(params) == trace.total_params
    assert f"{trace.total_params:,}" in text


def test_every_skip_appears_at_both_ends() -> None:
    text = render(trace_table(trace_unet(64, (1, 2, 4))), width=200)
    assert text.count("→ ups.") == text.count("← downs.") == 6
