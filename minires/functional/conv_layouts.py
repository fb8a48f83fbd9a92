"""The column layouts of the fast conv2d (conv_fast.py), beside the readable im2col of conv.py.

``im2col_batch`` / ``col2im_batch``: the columns of every image of a chunk in ONE matrix
(one large GEMM instead of one per image), on the CPU with the "wide grid" for stride 1;
the GPU path and the strided CPU path use it. ``SideBySide``: on the CPU, for stride 1, the images
of a chunk side by side in one zero-padded plane. Both are tested against im2col / col2im
(tests/test_conv.py, tests/test_fast_paths.py).
"""
from __future__ import annotations

import numpy as np

from ..backend import get_array_module
from . import cuda_kernels
from .windows import (
    batch_grid_width,
    check_4d,
    conv_output_size,
    offset_slices,
    output_length,
    pad2d,
    strided_view,
    window_settings,
)

# --- the columns of a whole batch in ONE matrix -------------------------------------------
# conv.im2col gives each image its own matrix, so a convolution would be N small GEMMs.
# The fast conv2d instead lays the columns of all the images of a chunk side by side,
# channel-major:
#       cols (C*KH*KW, N*OH*Wq),   y = W @ cols  (C_out, N*OH*Wq)
# one large GEMM per group and pass. BLAS spreads one big product over the cores much
# better than many small ones; the price is a transpose of the output (C_out, N, ...) ->
# (N, C_out, ...), a copy the size of the output, not of the columns.
#
# Stride 1 gets a second trick, the "wide" grid. im2col copies rows only OW pixels long
# (8 in ResNet's last stage) and col2im adds them back the same way, so NumPy spends its
# time stepping between short rows. Flatten each zero-padded plane (Hp x Wp) into one
# row; output pixel (i, j) at kernel offset (kh, kw) reads flat position
#       (i + kh*dh) * Wp + (j + kw*dw)  =  q + (kh*dh*Wp + kw*dw),   q = i*Wp + j.
# Computing the output on a grid OH x Wq with Wq = Wp (q = 0 .. OH*Wp - 1) makes every
# row (c, kh, kw) of the columns ONE contiguous run of the flat plane, and col2im KH*KW
# contiguous adds. The Wp - OW extra outputs per row (j >= OW) read wrapped-around
# neighbours: they are computed and cut off (6% extra GEMM work at 32x32, 25% at 8x8);
# in backward the gradient there is zero, so they add nothing. The grid's width,
# Wq = batch_grid_width(...), is in windows.py. The GPU has no wide grid: its kernels
# (cuda_kernels.py) write each entry from its own thread, short rows or long, so there
# Wq = OW for every stride and nothing is cut off.
# tests/test_conv.py checks both functions against im2col / col2im.


def _flat_planes(x, padding, extra):
    """x (N, C, H, W) zero-padded, flattened: (N, C, Hp*Wp + extra), the last ``extra`` zero."""
    xp = get_array_module(x)
    N, C, H, W = x.shape
    ph, pw = padding
    Hp, Wp = H + 2 * ph, W + 2 * pw
    flat = xp.zeros((N, C, Hp * Wp + extra), dtype=x.dtype)
    flat[:, :, :Hp * Wp].reshape(N, C, Hp, Wp)[:, :, ph:ph + H, pw:pw + W] = x
    return flat


def _batch_settings(op, x_shape, kernel_size, stride, padding, dilation, xp):
    (KH, KW), stride, padding, dilation = window_settings(op, kernel_size, stride, padding,
                                                          dilation)
    H, W = x_shape[2:]
    OH, OW = conv_output_size(H, W, (KH, KW), stride, padding, dilation, op)
    return ((KH, KW), stride, padding, dilation, (OH, OW),
            batch_grid_width(W, OW, stride, padding, xp))


def im2col_batch(x, kernel_size, stride=1, padding=0, dilation=1, out=None):
    """The columns of all images side by side: (C*KH*KW, N*OH*Wq), Wq = batch_grid_width(...).

    cols[(c, kh, kw), (n, i, j)] = x_pad[n, c, i*sh + kh*dh, j*sw + kw*dw] -- im2col's
    entries, channel-major. On the CPU for stride 1 (Wq = Wp) the columns with j >= OW hold
    values to discard; on the GPU Wq = OW. One strided view, one copy; ``out``, if given, is
    a flat buffer with room for the result (reused across calls).
    """
    op = "im2col_batch"
    check_4d(x, op)
    xp = get_array_module(x)
    N, C = x.shape[:2]
    (KH, KW), (sh, sw), padding, (dh, dw), (OH, OW), Wq = _batch_settings(
        op, x.shape, kernel_size, stride, padding, dilation, xp)
    if xp is not np:    # CuPy: the same columns in one kernel (cuda_kernels.py)
        return cuda_kernels.im2col_batch(x, (KH, KW), (sh, sw), padding, (dh, dw), out=out)
    if (sh, sw) == (1, 1):                                              # the wide grid
        flat = _flat_planes(x, padding, extra=(KW - 1) * dw)            # (N, C, Hp*Wp + extra)
        sN, sC, s1 = flat.strides
        view = strided_view(flat, (C, KH, KW, N, OH * Wq),              # (C, KH, KW, N, OH*Wq)
                            (sC, dh * Wq * s1, dw * s1, sN, s1))
    else:
        x_pad = pad2d(x, padding)                                       # (N, C, Hp, Wp)
        sN, sC, sH, sW = x_pad.strides
        view = strided_view(x_pad, (C, KH, KW, N, OH, OW),              # (C, KH, KW, N, OH, OW)
                            (sC, dh * sH, dw * sW, sN, sh * sH, sw * sW))
    size = C * KH * KW * N * OH * Wq
    cols = xp.empty(size, dtype=x.dtype) if out is None else out[:size]
    xp.copyto(cols.reshape(view.shape), view)                           # the one copy
    return cols.reshape(C * KH * KW, N * OH * Wq)                       # (C*KH*KW, N*OH*Wq)


def col2im_batch(cols, x_shape, kernel_size, stride=1, padding=0, dilation=1):
    """The adjoint of im2col_batch: (C*KH*KW, N*OH*Wq) -> (N, C, H, W).

    On the CPU for stride 1, the entries in the discarded columns (j >= OW) must be zero --
    they are when cols = W.T @ (a gradient zero-padded to the wide grid). One add per kernel
    offset. On the GPU the grid has no such columns (Wq = OW).
    """
    op = "col2im_batch"
    xp = get_array_module(cols)
    N, C, H, W = x_shape
    (KH, KW), stride, (ph, pw), (dh, dw), (OH, OW), Wq = _batch_settings(
        op, x_shape, kernel_size, stride, padding, dilation, xp)
    if cols.shape != (C * KH * KW, N * OH * Wq):
        raise ValueError(f"{op}: cols must have shape {(C * KH * KW, N * OH * Wq)} for input "
                         f"shape {tuple(x_shape)}, got {tuple(cols.shape)}")
    if xp is not np:    # CuPy: a gather kernel, one thread per pixel (cuda_kernels.py)
        return cuda_kernels.col2im_batch(cols, x_shape, (KH, KW), stride, (ph, pw), (dh, dw))
    Hp, Wp = H + 2 * ph, W + 2 * pw
    if stride == (1, 1):                                                # the wide grid
        L = OH * Wq
        runs = cols.reshape(C, KH, KW, N, L)                            # (C, KH, KW, N, OH*Wq)
        flat = xp.zeros((N, C, Hp * Wp + (KW - 1) * dw), dtype=cols.dtype)
        for kh in range(KH):
            for kw in range(KW):
                start = kh * dh * Wp + kw * dw
                flat[:, :, start:start + L] += runs[:, kh, kw].transpose(1, 0, 2)
        planes = flat[:, :, :Hp * Wp].reshape(N, C, Hp, Wp)             # (N, C, Hp, Wp)
    else:
        cols6 = cols.reshape(C, KH, KW, N, OH, OW)                      # (C, KH, KW, N, OH, OW)
        planes = xp.zeros((N, C, Hp, Wp), dtype=cols.dtype)
        for kh in range(KH):
            for kw in range(KW):
                rows, columns = offset_slices(kh, kw, (OH, OW), stride, (dh, dw))
                planes[:, :, rows, columns] += cols6[:, kh, kw].transpose(1, 0, 2, 3)
    return planes[:, :, ph:ph + H, pw:pw + W]


# --- the CPU layout for stride 1: the images of a chunk side by side in ONE plane -------
# The wide grid above still computes Wp - OW throw-away outputs per row (2 of every 10 at
# 8x8) and copies one run per image and row (c, kh, kw) -- short runs at 8x8. On the CPU,
# the fast conv2d instead lays the n images of a chunk side by side in a single zero-padded plane,
# each image followed by pw zero columns that double as the next image's left padding:
#       plane[c, ph + i, pw + k*S + j] = x[k, c, i, j]      S = W + pw,  plane Hp x Wb,
#                                                            Wb = n*S + pw
# and takes that one plane's wide grid: row (c, kh, kw) of the columns is ONE contiguous
# run of OH*Wb values, and output (k, i, j) sits in column i*Wb + k*S + j. Those runs for
# kh = 0, 1, 2 are windows of one longer run -- the plane shifted by kw*dw -- so the
# forward may copy the plane KW times, not KH*KW times, and fold the kernel rows into the
# GEMM's output rows instead (``shifted_planes``): a third of im2col's copying for a 3x3
# kernel, and a GEMM with KH times the rows, which BLAS runs faster when C_out is small
# (conv_fast.forward_kernel_rows says where it wins). Per image row
# only S - OW = (KW-1)*dw - pw outputs are thrown away (1 in 9 at 8x8 with a 3x3 kernel
# and padding 1). The layout needs S >= OW, i.e. pw <= (KW-1)*dw, or neighbouring images'
# outputs would overlap. Fewer throw-away outputs mean a smaller GEMM, and longer runs
# a faster copy (benchmarks/RESULTS.md, item 7). tests/test_fast_paths.py checks it
# against im2col.

class SideBySide:
    """The side-by-side layout of a chunk of n images of H x W for a stride-1 convolution."""

    def __init__(self, n, H, W, kernel_size, padding, dilation):
        (self.KH, self.KW), (self.ph, self.pw), (self.dh, self.dw) = kernel_size, padding, dilation
        self.n, self.H, self.W = n, H, W
        self.OH = output_length(H, self.KH, 1, self.ph, self.dh)
        self.OW = output_length(W, self.KW, 1, self.pw, self.dw)
        self.S = W + self.pw                                # columns per image
        self.Wb = n * self.S + self.pw                      # columns of the plane
        self.L = self.OH * self.Wb                          # columns of the column matrix

    @staticmethod
    def fits(kernel_size, padding, dilation):
        """True when the layout applies: pw <= (KW-1)*dw (so that S >= OW)."""
        return padding[1] <= (kernel_size[1] - 1) * dilation[1]

    def columns(self, x, out=None):
        """im2col of x (n, C, H, W) in this layout: (C*KH*KW, OH*Wb); ``out``: a flat buffer."""
        xp = get_array_module(x)
        C = x.shape[1]
        flat = self._flat_plane(x)
        sC, sF = flat.strides                           # bytes per channel, per flat position
        view = strided_view(flat, (C, self.KH, self.KW, self.L),           # (C, KH, KW, OH*Wb)
                            (sC, self.dh * self.Wb * sF, self.dw * sF, sF))
        size = C * self.KH * self.KW * self.L
        cols = xp.empty(size, dtype=x.dtype) if out is None else out[:size]
        xp.copyto(cols.reshape(view.shape), view)                           # the one copy
        return cols.reshape(C * self.KH * self.KW, self.L)                  # (C*KH*KW, OH*Wb)

    def _flat_plane(self, x):
        """The zero-padded plane of x (n, C, H, W), flattened: (C, Hp*Wb + (KW-1)*dw)."""
        xp = get_array_module(x)
        C = x.shape[1]
        Hp = self.H + 2 * self.ph
        flat = xp.zeros((C, Hp * self.Wb + (self.KW - 1) * self.dw), dtype=x.dtype)
        plane = flat[:, :Hp * self.Wb].reshape(C, Hp, self.Wb)                # (C, Hp, Wb)
        inner = plane[:, self.ph:self.ph + self.H, self.pw:self.pw + self.n * self.S]
        inner.reshape(C, self.H, self.n, self.S)[..., :self.W] = x.transpose(1, 2, 0, 3)
        return flat

    def shifted_planes(self, x):
        """x (n, C, H, W) in this layout, as KW shifted copies of its plane: (C*KW, Hp*Wb).

        Row (c, kw) is the flat plane of channel c starting at column kw*dw. Its window of
        L = OH*Wb values starting at kh*dh*Wb (``kernel_row(kh)``) is row (c, kh, kw) of the
        im2col columns: the KH kernel rows need no copies of their own, only KW. So a
        convolution is one GEMM with the kernel rows folded into the output rows,
            z[(kh, o), :] = W[o, :, kh, :] (C*KW) @ shifted_planes(x),
        and y = the sum over kh of z[(kh, o), kernel_row(kh)] (``add_kernel_rows``).
        """
        xp = get_array_module(x)
        C, Hp = x.shape[1], self.H + 2 * self.ph
        flat = self._flat_plane(x)
        sC, sF = flat.strides                           # bytes per channel, per flat position
        view = strided_view(flat, (C, self.KW, Hp * self.Wb),                # (C, KW, Hp*Wb)
                            (sC, self.dw * sF, sF))
        planes = xp.empty(view.shape, dtype=x.dtype)
        xp.copyto(planes, view)                                             # the one copy
        return planes.reshape(C * self.KW, Hp * self.Wb)                    # (C*KW, Hp*Wb)

    def kernel_row(self, kh):
        """The columns of ``shifted_planes`` that kernel row kh reads: L of them."""
        start = kh * self.dh * self.Wb
        return slice(start, start + self.L)

    def add_kernel_rows(self, z):
        """z (..., KH, R, Hp*Wb), one GEMM's result with the kernel rows folded into its rows,
        summed over kh at each row's window: (..., R, L), the result on the grid."""
        out = z[..., 0, :, self.kernel_row(0)].copy()
        for kh in range(1, self.KH):
            out += z[..., kh, :, self.kernel_row(kh)]
        return out

    def images(self, res):
        """A result on the grid, (C', OH*Wb), as the images it holds: a view (n, C', OH, OW)."""
        grid = res.reshape(res.shape[0], self.OH, self.Wb)[:, :, :self.n * self.S]
        grid = grid.reshape(res.shape[0], self.OH, self.n, self.S)[..., :self.OW]
        return grid.transpose(2, 0, 1, 3)                                   # (n, C', OH, OW)

    def place(self, a, out):
        """a (n, C', OH, OW) onto the grid, zeros elsewhere: (C', OH*Wb) in the flat ``out``."""
        C = a.shape[1]
        grid = out[:C * self.L].reshape(C, self.OH, self.Wb)
        grid[:, :, self.n * self.S:] = 0
        per_image = grid[:, :, :self.n * self.S].reshape(C, self.OH, self.n, self.S)
        per_image[..., :self.OW] = a.transpose(1, 2, 0, 3)
        per_image[..., self.OW:] = 0
        return grid.reshape(C, self.L)


__all__ = ["SideBySide", "col2im_batch", "im2col_batch"]
