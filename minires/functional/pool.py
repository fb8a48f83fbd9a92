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
from .windows import as_int_pair, check_4d, conv_output_size, offset_slices, pad2d


def _pool_settings(op, kernel_size, stride, padding):
    kernel = as_int_pair(kernel_size, "kernel_size", op, 1)
    stride = kernel if stride is None else as_int_pair(stride, "stride", op, 1)
    padding = as_int_pair(padding, "padding", op, 0)
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        # as in PyTorch: more padding would create windows that hold only padding
        raise ValueError(f"{op}: padding {padding} must be at most half the kernel size {kernel}")
    return kernel, stride, padding


class _WindowPool2d(Function):
    """What max and average pooling share: the settings, and the loops over the KH*KW
    kernel offsets, each touching one strided slice that covers every window at once."""

    op = ""     # the functional name, for messages

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel, self.stride, self.padding = _pool_settings(self.op, kernel_size, stride,
                                                                padding)

    def _offsets(self, x, pad_value):
        """Pad x and yield (kh, kw, v): v is offset (kh, kw) of every window, (N, C, OH, OW).

        Notes the shapes backward needs (``self.shapes``).
        """
        check_4d(x, self.op)
        H, W = x.shape[2:]
        KH, KW = self.kernel
        out_hw = conv_output_size(H, W, self.kernel, self.stride, self.padding, 1, self.op)
        x_pad = pad2d(x, self.padding, value=pad_value)
        self.shapes = (x.shape, x_pad.shape)
        for kh in range(KH):
            for kw in range(KW):
                rows, cols = offset_slices(kh, kw, out_hw, self.stride, (1, 1))
                yield kh, kw, x_pad[:, :, rows, cols]

    def _scatter(self, gy, share):
        """The input gradient: ``share(kh, kw)``, the gradient reaching offset (kh, kw) of
        every window, is added into that offset's slice; the padding is cut off."""
        xp = get_array_module(gy)
        x_shape, pad_shape = self.shapes
        (KH, KW), (ph, pw) = self.kernel, self.padding
        H, W = x_shape[2:]
        gx_pad = xp.zeros(pad_shape, dtype=gy.dtype)
        for kh in range(KH):
            for kw in range(KW):
                rows, cols = offset_slices(kh, kw, gy.shape[2:], self.stride, (1, 1))
                gx_pad[:, :, rows, cols] += share(kh, kw)
        return gx_pad[:, :, ph:ph + H, pw:pw + W]


class MaxPool2d(_WindowPool2d):
    """The maximum of each window; padding counts as -inf (it never wins).

    Backward: each window's gradient goes to the input element that held its maximum.
    Ties go to the FIRST maximum in window order (row by row, kh then kw), so the
    result is deterministic. Overlapping windows (stride < kernel) may pick the same
    element; its gradients add up. keeps: the arg-max offset of every window (uint8 or int32).
    """

    op = "max_pool2d"

    def forward(self, x):
        xp = get_array_module(x)
        KH, KW = self.kernel
        y = arg = None
        for kh, kw, v in self._offsets(x, pad_value=-np.inf):
            if y is None:                                       # offset (0, 0): the first candidate
                y = v.copy()
                arg = xp.zeros(v.shape, dtype=np.uint8 if KH * KW <= 255 else np.int32)
                continue
            better = v > y                                      # strictly: the first maximum stays
            xp.copyto(y, v, where=better)
            xp.copyto(arg, kh * KW + kw, where=better)
        self.save_for_backward(arg)
        return y

    def backward(self, gy):
        (arg,) = self.saved
        KW = self.kernel[1]
        return (self._scatter(gy, lambda kh, kw: gy * (arg == kh * KW + kw)),)


class AvgPool2d(_WindowPool2d):
    """The mean of each window, padding counted as zeros (PyTorch's count_include_pad=True):
    every window divides by KH*KW.

    Backward: each window spreads gy / (KH*KW) evenly over its KH*KW elements.
    keeps: nothing (only shapes).
    """

    op = "avg_pool2d"

    def forward(self, x):
        KH, KW = self.kernel
        y = None
        for _, _, v in self._offsets(x, pad_value=0.0):
            if y is None:
                y = v.copy()
            else:
                y += v
        y *= 1.0 / (KH * KW)
        return y

    def backward(self, gy):
        KH, KW = self.kernel
        share = gy * (1.0 / (KH * KW))
        return (self._scatter(gy, lambda kh, kw: share),)


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
        check_4d(x, op)
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
def _pool2d_naive(op, window_value, x, kernel_size, stride, padding, pad_value):
    """Loops over every output element: y[n, c, i, j] = ``window_value`` of its window of
    the input padded with ``pad_value`` (NumPy arrays in and out)."""
    (KH, KW), (sh, sw), (ph, pw) = _pool_settings(op, kernel_size, stride, padding)
    x = np.asarray(x)
    N, C, H, W = x.shape
    OH, OW = conv_output_size(H, W, (KH, KW), (sh, sw), (ph, pw), 1, op)
    x_pad = np.full((N, C, H + 2 * ph, W + 2 * pw), pad_value, dtype=x.dtype)
    x_pad[:, :, ph:ph + H, pw:pw + W] = x
    y = np.empty((N, C, OH, OW), dtype=x.dtype)
    for n in range(N):
        for c in range(C):
            for i in range(OH):
                for j in range(OW):
                    window = x_pad[n, c, i * sh:i * sh + KH, j * sw:j * sw + KW]
                    y[n, c, i, j] = window_value(window)
    return y


def max_pool2d_naive(x, kernel_size, stride=None, padding=0):
    """max_pool2d as loops over every output element (NumPy arrays in and out)."""
    return _pool2d_naive("max_pool2d_naive", lambda window: window.max(), x, kernel_size, stride,
                         padding, pad_value=-np.inf)


def avg_pool2d_naive(x, kernel_size, stride=None, padding=0):
    """avg_pool2d (count_include_pad=True) as loops over every output element."""
    # every window holds KH*KW elements (padding included), so each divides by that
    return _pool2d_naive("avg_pool2d_naive", lambda window: window.sum() / window.size, x,
                         kernel_size, stride, padding, pad_value=0)


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
