"""Sizes as users type them, shared by `--sizes` and `shapetrace.testing`."""

from __future__ import annotations

import pytest

from shapetrace.sizes import as_sizes, parse_sizes, spatial_extents


def test_a_range_includes_its_stop_and_keeps_its_step() -> None:
    assert parse_sizes("30:34") == [(30,), (31,), (32,), (33,), (34,)]
    assert parse_sizes("32:64:16") == [(32,), (48,), (64,)]


def test_a_list_mixes_squares_and_rectangles() -> None:
    assert parse_sizes("224, 230x232,8x16x16") == [(224,), (230, 232), (8, 16, 16)]


@pytest.mark.parametrize("text", ["", "0", "5:3", "32:64:0", "a,b", "2x", "1x2x3x4", "²"])
def test_bad_sizes_fail_naming_the_text(text: str) -> None:
    with pytest.raises(ValueError, match="expected"):
        parse_sizes(text)


def test_library_sizes_take_text_ints_and_tuples() -> None:
    assert as_sizes("8:9") == [(8,), (9,)]
    assert as_sizes(16) == [(16,)]
    assert as_sizes([16, (16, 24)]) == [(16,), (16, 24)]
    with pytest.raises(ValueError, match="not a valid size"):
        as_sizes([0])


def test_one_extent_fills_every_spatial_axis_and_others_must_match() -> None:
    assert spatial_extents((9,), 3) == (9, 9, 9)
    assert spatial_extents((8, 12), 2) == (8, 12)
    with pytest.raises(ValueError, match="2 spatial axes"):
        spatial_extents((8, 8, 8), 2)
