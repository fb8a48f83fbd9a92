"""Sliding windows: the bookkeeping convolution and pooling share.

Argument checking (``as_int_pair``: an int or a pair, used by the functional ops, the
CUDA kernels' wrappers and the nn layers; ``check_4d``; ``conv_settings`` and
``check_conv_inputs``, which both conv2d implementations call), the output size of a
window of size KH x KW sliding with stride and dilation over a padded input
(``conv_output_size``, checked; ``output_length``, the formula itself), the width of
the column grid of conv2d's batch layout (``batch_grid_width``), padding, and the two
ways of looking at every window at once without copying: one strided slice per kernel
offset (``offset_slices``, used by pooling and col2im) and a strided view of all
windows (``window_view``, used by im2col).
"""
from __future__ import annotations

import numbers
from typing import NamedTuple

import numpy as np

from ..backend import get_array_module


# --- argument handling --------------------------------------------------------------
def as_int_pair(value, name, op, minimum):
    """An int or a pair of ints, each >= minimum, as a pair (h, w); a clear error otherwise."""
    if type(value) is tuple and len(value) == 2 and type(value[0]) is int \
            and type(value[1]) is int and min(value) >= minimum:
        return value                    # already checked (the common case, called per chunk)
    pair = (value, value) if isinstance(value, numbers.Integral) else value
    try:
        ok = (len(pair) == 2 and all(isinstance(v, numbers.Integral) and not isinstance(v, bool)
                                     for v in pair))
    except TypeError:
        ok = False
    if isinstance(value, bool) or not ok:
        raise TypeError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
    if min(pair) < minimum:
        raise ValueError(f"{op}: {name} must be >= {minimum}, got {value!r}")
    return int(pair[0]), int(pair[1])




def window_settings(op, kernel_size, stride, padding, dilation):
    """kernel_size, stride, padding, dilation checked and as pairs (h, w), in that order."""
    return (as_int_pair(kernel_size, "kernel_size", op, 1), as_int_pair(stride, "stride", op, 1),
            as_int_pair(padding, "padding", op, 0), as_int_pair(dilation, "dilation", op, 1))


def check_4d(x, op, what="input"):
    """A ValueError naming ``op`` unless ``x`` is 4-D (N, C, H, W) (a hint for one image)."""
    if x.ndim != 4:
        hint = (" (for a single image (C, H, W), add a batch axis: x.reshape(1, *x.shape))"
                if x.ndim == 3 and what == "input" else "")
        raise ValueError(f"{op}: {what} must be 4-D (N, C, H, W), got shape {tuple(x.shape)}{hint}")


def conv_output_size(H, W, kernel_size, stride=1, padding=0, dilation=1, op="conv2d"):
    """(OH, OW) of a convolution or pooling window, or a clear error if the kernel does not fit.

    OH = (H + 2*padding - dilation*(KH - 1) - 1) // stride + 1, and likewise for OW.
    """
    (KH, KW), (sh, sw), (ph, pw), (dh, dw) = window_settings(op, kernel_size, stride, padding,
                                                             dilation)
    span_h, span_w = dh * (KH - 1) + 1, dw * (KW - 1) + 1   # the kernel's reach, dilation included
    if span_h > H + 2 * ph or span_w > W + 2 * pw:
        reach = ""
        if (dh, dw) != (1, 1):
            reach = f" (dilation {dh}x{dw} stretches it to {span_h}x{span_w})"
        raise ValueError(f"{op}: kernel {KH}x{KW}{reach} is larger than the padded input "
                         f"{H + 2 * ph}x{W + 2 * pw} (input {H}x{W} + padding {ph}x{pw} "
                         f"on each side)")
    return output_length(H, KH, sh, ph, dh), output_length(W, KW, sw, pw, dw)


def output_length(size, kernel, stride, padding, dilation):
    """How many positions a window has along one axis (ints, already checked):
    (size + 2*padding - dilation*(kernel - 1) - 1) // stride + 1."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def is_pointwise(kernel_size, stride, padding):
    """A 1x1 kernel with stride 1 and no padding: every pixel is its own window (no im2col)."""
    return tuple(kernel_size) == (1, 1) and tuple(stride) == (1, 1) and tuple(padding) == (0, 0)


def batch_grid_width(W, OW, stride, padding, xp=np):
    """Wq, the width of the output grid of conv2d's batch layout (conv_layouts.im2col_batch):
    on the CPU (``xp`` NumPy, the default) Wp = W + 2*pw (the "wide" grid) for stride 1,
    else OW; on the GPU (``xp`` CuPy) OW for every stride -- its im2col kernel writes each
    entry from its own thread, so it has no use for the wide grid (cuda_kernels.py).

    ``stride`` and ``padding`` are pairs."""
    if xp is not np or tuple(stride) != (1, 1):
        return OW
    return W + 2 * padding[1]


# --- a convolution's arguments (both conv2d implementations check them here) ----------
class ConvSettings(NamedTuple):
    """A convolution's settings, checked: stride, padding, dilation as pairs, groups an int."""

    stride: tuple
    padding: tuple
    dilation: tuple
    groups: int


def conv_settings(stride=1, padding=0, dilation=1, groups=1, op="conv2d"):
    """The ConvSettings of a conv2d call, or a clear error naming ``op``."""
    stride = as_int_pair(stride, "stride", op, 1)
    padding = as_int_pair(padding, "padding", op, 0)
    dilation = as_int_pair(dilation, "dilation", op, 1)
    if isinstance(groups, bool) or not isinstance(groups, numbers.Integral) or groups < 1:
        raise ValueError(f"{op}: groups must be a positive int, got {groups!r}")
    return ConvSettings(stride, padding, dilation, int(groups))


def check_conv_inputs(x, weight, bias, settings, op="conv2d"):
    """Check x (N, C, H, W), weight (C_out, C/groups, KH, KW) and bias (C_out,) or None
    against each other and ``settings``; return the output size (OH, OW)."""
    G = settings.groups
    check_4d(x, op)
    check_4d(weight, op, "weight (C_out, C_in/groups, KH, KW)")
    C, H, W = x.shape[1:]
    O, Cg, KH, KW = weight.shape
    if C % G:
        raise ValueError(f"{op}: groups={G} does not divide the {C} input channels")
    if O % G:
        raise ValueError(f"{op}: groups={G} does not divide the {O} output channels "
                         f"(weight shape {tuple(weight.shape)})")
    if C != Cg * G:
        raise ValueError(f"{op}: input has {C} channels but weight expects {Cg * G} "
                         f"(groups={G}; weight shape {tuple(weight.shape)})")
    if bias is not None and tuple(bias.shape) != (O,):
        raise ValueError(f"{op}: bias must have shape ({O},) for {O} output channels, "
                         f"got {tuple(bias.shape)}")
    for name, a in (("weight", weight), ("bias", bias)):
        if a is not None and a.dtype != x.dtype:
            raise TypeError(f"{op}: input has dtype {x.dtype} but {name} has dtype {a.dtype}; "
                            f"convert one of them (mixing would upcast silently)")
    return conv_output_size(H, W, (KH, KW), settings.stride, settings.padding,
                            settings.dilation, op)


def pad2d(x, padding, value=0.0):
    """x (N, C, H, W) with (ph, pw) rows/columns of ``value`` added on each side (a copy)."""
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    xp = get_array_module(x)
    N, C, H, W = x.shape
    out = xp.full((N, C, H + 2 * ph, W + 2 * pw), value, dtype=x.dtype)
    out[:, :, ph:ph + H, pw:pw + W] = x
    return out


def offset_slices(kh, kw, out_hw, stride, dilation):
    """The (rows, cols) slices of a padded input that kernel offset (kh, kw) touches.

    Output pixel (i, j) reads padded pixel (i*sh + kh*dh, j*sw + kw*dw), so for a fixed
    offset the pixels read by all OH x OW outputs form one strided slice.
    """
    (OH, OW), (sh, sw), (dh, dw) = out_hw, stride, dilation
    return (slice(kh * dh, kh * dh + sh * (OH - 1) + 1, sh),
            slice(kw * dw, kw * dw + sw * (OW - 1) + 1, sw))


def strided_view(a, shape, strides):
    """A read-only view of ``a`` with the given shape and strides (in bytes): no copy.

    NumPy's and CuPy's ``as_strided`` (CuPy's has no ``writeable`` flag: its views are
    never written here either).
    """
    xp = get_array_module(a)
    if xp is np:
        return np.lib.stride_tricks.as_strided(a, shape=shape, strides=strides, writeable=False)
    return xp.lib.stride_tricks.as_strided(a, shape=shape, strides=strides)


def window_view(x_pad, kernel_size, out_hw, stride, dilation):
    """A read-only strided view (N, C, KH, KW, OH, OW) of a padded input: no copy.

    view[n, c, kh, kw, i, j] = x_pad[n, c, i*sh + kh*dh, j*sw + kw*dw]. Moving one step
    along kh moves dh rows in memory, one step along i moves sh rows: the view is
    just the input's strides recombined.
    """
    N, C = x_pad.shape[:2]
    (KH, KW), (OH, OW), (sh, sw), (dh, dw) = kernel_size, out_hw, stride, dilation
    sN, sC, sH, sW = x_pad.strides
    return strided_view(x_pad, (N, C, KH, KW, OH, OW),
                        (sN, sC, dh * sH, dw * sW, sh * sH, sw * sW))


__all__ = ["ConvSettings", "as_int_pair", "batch_grid_width", "check_4d", "check_conv_inputs",
           "conv_output_size", "conv_settings", "is_pointwise", "offset_slices", "output_length",
           "pad2d", "strided_view", "window_settings", "window_view"]
