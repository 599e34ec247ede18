"""What each resampling op makes of one spatial extent: torch's size formulas, torch-free.

The tracer uses them to tell a module's geometry from a size it was told to produce; the
analysis composes them along the down and up paths to find floors, ceils and valid sizes.
"""

from __future__ import annotations

from fractions import Fraction

from shapetrace.records import Resampling, ResamplingKind

WINDOWED = (ResamplingKind.POOL, ResamplingKind.CONV, ResamplingKind.CONV_TRANSPOSE)


def windowed_extent(record: Resampling, axis: int, extent: int) -> int:
    """What a pool, convolution or transposed convolution of `record`'s geometry makes of `extent`."""
    k, s, p, d = record.kernel[axis], record.stride[axis], record.padding[axis], record.dilation[axis]
    if record.kind == ResamplingKind.CONV_TRANSPOSE:
        extra = record.output_padding[axis] if record.output_padding else 0
        return (extent - 1) * s - 2 * p + d * (k - 1) + extra + 1
    reach = extent + 2 * p - d * (k - 1) - 1
    if not record.ceil_mode:
        return reach // s + 1 if reach >= 0 else 0
    output = (reach + s - 1) // s + 1
    # torch: in ceil mode the last window must start inside the input or its left padding.
    return output - 1 if (output - 1) * s >= extent + p else output


def resampled_extent(record: Resampling, axis: int, extent: int) -> int | None:
    """The output extent on `axis` for an input `extent`; None where torch would refuse it.

    Refused: an output below 1 (the input is too small), or a pixel-unshuffle of an extent
    its factor does not divide. A RESIZE has no formula: its output is what the caller asked.
    """
    if record.kind in WINDOWED:
        output = windowed_extent(record, axis, extent)
    elif record.kind == ResamplingKind.INTERPOLATE:
        numerator, denominator = record.scale[axis]
        output = extent * numerator // denominator
    elif record.kind == ResamplingKind.PIXEL_SHUFFLE:
        output = extent * record.stride[axis]
    elif record.kind == ResamplingKind.PIXEL_UNSHUFFLE:
        factor = record.stride[axis]
        output = extent // factor if extent % factor == 0 else 0
    else:
        return None
    return output if output >= 1 else None


def scale_of(record: Resampling, axis: int) -> Fraction:
    """The factor the op would scale an extent by, were nothing rounded (1/2 for a stride-2 pool)."""
    if record.kind in (ResamplingKind.CONV_TRANSPOSE, ResamplingKind.PIXEL_SHUFFLE):
        return Fraction(record.stride[axis])
    if record.kind in WINDOWED or record.kind == ResamplingKind.PIXEL_UNSHUFFLE:
        return Fraction(1, record.stride[axis])
    if record.kind == ResamplingKind.INTERPOLATE:
        return Fraction(*record.scale[axis])
    return Fraction(1)


def rounding(record: Resampling, axis: int) -> int:
    """How far the op's output on `axis` is from its input times its scale: < 0 lost, > 0 gained, 0 exact.

    A stride-2 pool of 225 gives 112, half a row lost (-1/2 rounds to -1); a padded stride-2
    conv gives 113 (+1); a ConvTranspose2d(k=3, s=2, p=1) of 28 gives 55 instead of 56 (-1).
    """
    extent, output = record.input_size[axis], record.output_size[axis]
    ideal = extent * scale_of(record, axis)
    if output == ideal:
        return 0
    return -1 if output < ideal else 1


def is_valid_geometry(record: Resampling) -> bool:
    """Whether a record's per-axis fields fit its kind (a hand-edited trace file may not)."""
    axes = len(record.input_size)
    if axes != len(record.output_size):
        return False
    if record.kind in WINDOWED:
        fields = [record.kernel, record.stride, record.padding, record.dilation]
        if record.output_padding:
            fields.append(record.output_padding)
        if any(len(field) != axes for field in fields):
            return False
        return min((*record.kernel, *record.stride, *record.dilation), default=1) >= 1
    if record.kind in (ResamplingKind.PIXEL_SHUFFLE, ResamplingKind.PIXEL_UNSHUFFLE):
        return len(record.stride) == axes and min(record.stride, default=1) >= 1
    if record.kind == ResamplingKind.INTERPOLATE:
        return len(record.scale) == axes and all(n >= 1 and d >= 1 for n, d in record.scale)
    return True


def has_channel_dim(rank: int, image_rank: int | None) -> bool:
    """Whether dim 1 of a tensor of `rank` dims is a channel count, as in a feature map (B, C, *spatial).

    Always in maps of two or more spatial dims. A 3-D tensor is a 1-D signal (B, C, L) in a model
    whose image input is 3-D itself (audio, sequences of features), and elsewhere a token
    sequence (B, N, C), whose dim 1 counts tokens.
    """
    return rank >= 4 or (rank == 3 and image_rank == 3)
