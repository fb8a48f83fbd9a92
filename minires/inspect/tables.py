"""Plain-text tables for the inspection reports: aligned columns and log-scale bars.

Everything here works on Python floats (or None for "not applicable") and returns
strings that fit an 80-column terminal, in ASCII only so any console shows them.
"""
from __future__ import annotations

import math

WIDTH = 79          # one column short of 80, so a terminal never wraps
RAMP = " .:-=+*#%@"  # low .. high, for one-character-per-layer profiles


def fmt(value, width=8) -> str:
    """A number in at most ``width`` characters (3 significant digits), "-" for None/NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-".rjust(width)
    if value == 0:
        return "0".rjust(width)
    text = f"{value:.3g}"
    if len(text) > width:
        text = f"{value:.1e}"
    return text.rjust(width)


def fmt_signed(value, width=6) -> str:
    """A value in [-1, 1] (a cosine) as +0.42; "-" for None."""
    if value is None:
        return "-".rjust(width)
    return f"{value:+.2f}".rjust(width)


def fmt_pct(value, width=5) -> str:
    if value is None:
        return "-".rjust(width)
    return f"{100 * value:.0f}%".rjust(width)


def log_range(values, min_decades=2.0, max_decades=6.0):
    """(lo, hi) spanning the positive values on a log scale; None if there are none.

    The range is at least ``min_decades`` wide, so values that differ by a few percent
    get bars of nearly the same length (a flat flow looks flat), and at most
    ``max_decades`` wide, so one vanishing value does not squash all the others.
    """
    pos = [v for v in values if v is not None and v > 0 and math.isfinite(v)]
    if not pos:
        return None
    hi = max(pos)
    lo = min(max(min(pos), hi * 10.0 ** -max_decades), hi * 10.0 ** -min_decades)
    return lo, hi


def log_fraction(value, scale) -> float | None:
    """Where ``value`` sits in ``scale`` = (lo, hi) on a log axis, from 0 to 1 (None for <= 0)."""
    if scale is None or value is None or not value > 0 or not math.isfinite(value):
        return None
    lo, hi = scale
    if hi <= lo:
        return 1.0
    frac = (math.log10(value) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
    return min(1.0, max(0.0, frac))


def bar(value, scale, width) -> str:
    """A bar of '#' whose length grows with log10(value) across ``scale``; '' for zero/None.

    The smallest value of the scale still gets one '#', so "tiny" and "zero" differ.
    """
    frac = log_fraction(value, scale)
    if frac is None:
        return ""
    return "#" * (1 + round(frac * (width - 1)))


def profile(values, scale, length) -> str:
    """One character per position (resampled to ``length``): RAMP by log magnitude, '_' for zero."""
    if not values:
        return ""
    out = []
    for i in range(length):
        v = values[min(len(values) - 1, int(i * len(values) / length))]
        frac = log_fraction(v, scale)
        out.append("_" if frac is None else RAMP[1 + round(frac * (len(RAMP) - 2))])
    return "".join(out)


def scale_text(scale) -> str:
    if scale is None:
        return "no positive values"
    return f"{scale[0]:.1e} .. {scale[1]:.1e}"


def clip_name(name: str, width: int) -> str:
    """``name`` left-aligned in ``width`` characters, shortened from the left if too long."""
    if len(name) > width:
        name = "~" + name[-(width - 1):]
    return name.ljust(width)
