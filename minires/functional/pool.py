"""Pooling: max_pool2d, avg_pool2d, adaptive_avg_pool2d, with naive loop references.

Pooling windows are the same windows a convolution sees, and the bookkeeping both
share (argument pairs, output size, padding, ``offset_slices``) is in windows.py. But
each channel is pooled on its own, so no matrix product is needed: the ops loop over
the KH*KW kernel offsets, and for each offset touch one strided slice of the padded
input (``offset_slices``) covering every window at once -- never a loop over pixels.
"""
from __future__ import annotations

import numbers

import numpy as np

from ..autograd import Function
from ..backend import get_array_module
from .windows import _check_4d, _pair, conv_output_size, offset_slices, pad2d


def _pool_settings(op, kernel_size, stride, padding):
    kernel = _pair(kernel_size, "kernel_size", op, 1)
    stride = kernel if stride is None else _pair(stride, "stride", op, 1)
    padding = _pair(padding, "padding", op, 0)
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        # as in PyTorch: more padding would create windows that hold only padding
        raise ValueError(f"{op}: padding {padding} must be at most half the kernel size {kernel}")
    return kernel, stride, padding


class MaxPool2d(Function):
    """The maximum of each window; padding counts as -inf (it never wins).

    Backward: each window's gradient goes to the input element that held its maximum.
    Ties go to the FIRST maximum in window order (row by row, kh then kw), so the
    result is deterministic. Overlapping windows (stride < kernel) may pick the same
    element; its gradients add up. keeps: the arg-max offset of every window (uint8 or int32).
    """

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        settings = _pool_settings("max_pool2d", kernel_size, stride, padding)
        self.kernel, self.stride, self.padding = settings

    def forward(self, x):
        op = "max_pool2d"
        _check_4d(x, op)
        xp = get_array_module(x)
        N, C, H, W = x.shape
        (KH, KW), dil = self.kernel, (1, 1)
        OH, OW = conv_output_size(H, W, self.kernel, self.stride, self.padding, 1, op)
        x_pad = pad2d(x, self.padding, value=-np.inf)
        y = None
        arg = xp.zeros((N, C, OH, OW), dtype=np.uint8 if KH * KW <= 255 else np.int32)
        for kh in range(KH):
            for kw in range(KW):
                rows, cols = offset_slices(kh, kw, (OH, OW), self.stride, dil)
                v = x_pad[:, :, rows, cols]                     # offset (kh, kw) of every window
                if y is None:
                    y = v.copy()
                    continue
                better = v > y                                  # strictly: the first maximum stays
                xp.copyto(y, v, where=better)
                xp.copyto(arg, kh * KW + kw, where=better)
        self.save_for_backward(arg)
        self.shapes = (x.shape, x_pad.shape)
        return y

    def backward(self, gy):
        (arg,) = self.saved
        xp = get_array_module(gy)
        x_shape, pad_shape = self.shapes
        (KH, KW), (ph, pw) = self.kernel, self.padding
        H, W = x_shape[2:]
        gx_pad = xp.zeros(pad_shape, dtype=gy.dtype)
        for kh in range(KH):
            for kw in range(KW):
                rows, cols = offset_slices(kh, kw, arg.shape[2:], self.stride, (1, 1))
                gx_pad[:, :, rows, cols] += gy * (arg == kh * KW + kw)
        return (gx_pad[:, :, ph:ph + H, pw:pw + W],)


class AvgPool2d(Function):
    """The mean of each window, padding counted as zeros (PyTorch's count_include_pad=True):
    every window divides by KH*KW.

    Backward: each window spreads gy / (KH*KW) evenly over its KH*KW elements.
    keeps: nothing (only shapes).
    """

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        settings = _pool_settings("avg_pool2d", kernel_size, stride, padding)
        self.kernel, self.stride, self.padding = settings

    def forward(self, x):
        op = "avg_pool2d"
        _check_4d(x, op)
        H, W = x.shape[2:]
        KH, KW = self.kernel
        OH, OW = conv_output_size(H, W, self.kernel, self.stride, self.padding, 1, op)
        x_pad = pad2d(x, self.padding)
        y = None
        for kh in range(KH):
            for kw in range(KW):
                rows, cols = offset_slices(kh, kw, (OH, OW), self.stride, (1, 1))
                v = x_pad[:, :, rows, cols]                     # offset (kh, kw) of every window
                if y is None:
                    y = v.copy()
                else:
                    y += v
        y *= 1.0 / (KH * KW)
        self.shapes = (x.shape, x_pad.shape)
        return y

    def backward(self, gy):
        xp = get_array_module(gy)
        x_shape, pad_shape = self.shapes
        (KH, KW), (ph, pw) = self.kernel, self.padding
        H, W = x_shape[2:]
        share = gy * (1.0 / (KH * KW))
        gx_pad = xp.zeros(pad_shape, dtype=gy.dtype)
        for kh in range(KH):
            for kw in range(KW):
                rows, cols = offset_slices(kh, kw, gy.shape[2:], self.stride, (1, 1))
                gx_pad[:, :, rows, cols] += share
        return (gx_pad[:, :, ph:ph + H, pw:pw + W],)


class AdaptiveAvgPool2d(Function):
    """Average (H, W) down to ``output_size`` (OH, OW) where OH divides H and OW divides W.

    Then the windows tile the input exactly (kernel = stride = (H/OH, W/OW)), so a
    reshape to (N, C, OH, H/OH, OW, W/OW) and a mean over the two window axes is
    the whole forward; backward broadcasts gy / (window size) back over each window.
    ``output_size=1`` is the global average pool at the end of a ResNet. keeps: nothing.
    """

    def __init__(self, output_size):
        super().__init__()
        op = "adaptive_avg_pool2d"
        if isinstance(output_size, numbers.Integral) and not isinstance(output_size, bool):
            output_size = (output_size, output_size)
        def positive_or_none(v):
            if v is None:
                return True
            return isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1

        try:
            ok = len(output_size) == 2 and all(positive_or_none(v) for v in output_size)
        except TypeError:
            ok = False
        if not ok:
            raise ValueError(f"{op}: output_size must be a positive int or a pair of positive ints "
                             f"(None keeps that side), got {output_size!r}")
        self.output_size = tuple(output_size)

    def forward(self, x):
        op = "adaptive_avg_pool2d"
        _check_4d(x, op)
        N, C, H, W = x.shape
        OH = H if self.output_size[0] is None else self.output_size[0]
        OW = W if self.output_size[1] is None else self.output_size[1]
        if H % OH or W % OW:
            raise ValueError(f"{op}: output size ({OH}, {OW}) must divide the input size "
                             f"({H}, {W}); minires supports only evenly dividing sizes (e.g. 1)")
        self.x_shape, self.window = x.shape, (H // OH, W // OW)
        xw = x.reshape(N, C, OH, H // OH, OW, W // OW)                  # (N, C, OH, KH, OW, KW)
        return xw.mean(axis=(3, 5))                                     # (N, C, OH, OW)

    def backward(self, gy):
        xp = get_array_module(gy)
        N, C, H, W = self.x_shape
        KH, KW = self.window
        OH, OW = gy.shape[2:]
        g = (gy * (1.0 / (KH * KW))).reshape(N, C, OH, 1, OW, 1)        # (N, C, OH, 1, OW, 1)
        g = xp.broadcast_to(g, (N, C, OH, KH, OW, KW))
        return (g.reshape(N, C, H, W),)                                 # (N, C, H, W), a copy


# --- naive references (plain loops, for tests and tutorials) ---------------------------
def max_pool2d_naive(x, kernel_size, stride=None, padding=0):
    """max_pool2d as loops over every output element (NumPy arrays in and out)."""
    (KH, KW), (sh, sw), (ph, pw) = _pool_settings("max_pool2d_naive", kernel_size, stride, padding)
    x = np.asarray(x)
    N, C, H, W = x.shape
    OH, OW = conv_output_size(H, W, (KH, KW), (sh, sw), (ph, pw), 1, "max_pool2d_naive")
    x_pad = np.full((N, C, H + 2 * ph, W + 2 * pw), -np.inf, dtype=x.dtype)
    x_pad[:, :, ph:ph + H, pw:pw + W] = x
    y = np.empty((N, C, OH, OW), dtype=x.dtype)
    for n in range(N):
        for c in range(C):
            for i in range(OH):
                for j in range(OW):
                    y[n, c, i, j] = x_pad[n, c, i * sh:i * sh + KH, j * sw:j * sw + KW].max()
    return y


def avg_pool2d_naive(x, kernel_size, stride=None, padding=0):
    """avg_pool2d (count_include_pad=True) as loops over every output element."""
    (KH, KW), (sh, sw), (ph, pw) = _pool_settings("avg_pool2d_naive", kernel_size, stride, padding)
    x = np.asarray(x)
    N, C, H, W = x.shape
    OH, OW = conv_output_size(H, W, (KH, KW), (sh, sw), (ph, pw), 1, "avg_pool2d_naive")
    x_pad = np.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=x.dtype)
    x_pad[:, :, ph:ph + H, pw:pw + W] = x
    y = np.empty((N, C, OH, OW), dtype=x.dtype)
    for n in range(N):
        for c in range(C):
            for i in range(OH):
                for j in range(OW):
                    window = x_pad[n, c, i * sh:i * sh + KH, j * sw:j * sw + KW]
                    y[n, c, i, j] = window.sum() / (KH * KW)
    return y


# --- the functional surface --------------------------------------------------------------
def max_pool2d(x, kernel_size, stride=None, padding=0):
    """Max pooling over (N, C, H, W); ``stride`` defaults to ``kernel_size``; padding is -inf."""
    return MaxPool2d(kernel_size, stride, padding)(x)


def avg_pool2d(x, kernel_size, stride=None, padding=0):
    """Average pooling over (N, C, H, W), zero padding counted in the mean (count_include_pad)."""
    return AvgPool2d(kernel_size, stride, padding)(x)


def adaptive_avg_pool2d(x, output_size):
    """Average pooling to a fixed output size that divides the input size (1 = global average)."""
    return AdaptiveAvgPool2d(output_size)(x)


__all__ = ["AdaptiveAvgPool2d", "AvgPool2d", "MaxPool2d", "adaptive_avg_pool2d", "avg_pool2d",
           "avg_pool2d_naive", "max_pool2d", "max_pool2d_naive"]
