"""Convolution by hand: the definition as loops, im2col / col2im, and ``Conv2d`` with its backward.

Read it top to bottom, as lesson 03 does: ``conv2d_naive`` (the definition, seven nested
loops), ``im2col`` (every receptive field as one column), ``col2im`` (its adjoint, for
the backward pass), then the ``Conv2d`` Function, forward and backward side by side.
Everything here is plain ``xp`` code (NumPy, or CuPy on a GPU, through
``get_array_module``); nothing of the fast paths is imported.

The idea in one picture. A convolution slides a (C, KH, KW) kernel over the input
and takes a dot product at every output pixel. Lay each receptive field out as
one column of a matrix -- that is im2col -- and the whole convolution becomes
one matrix product, which BLAS computes fast:

    cols[n] = im2col(x)[n]           (C*KH*KW, OH*OW)   one column per output pixel
    y[n]    = W @ cols[n]            (C_out, C*KH*KW) @ (C*KH*KW, OH*OW) = (C_out, OH*OW)

Each image gets its own (C*KH*KW, OH*OW) matrix, so ``W @ cols[n]`` is already image n
of the output in NCHW order. A 1x1 convolution with stride 1 and no padding needs no
im2col at all: its columns *are* the pixels, ``x.reshape(N, C, H*W)``.

Backward, from y[n] = W @ cols[n]:

    dW       = sum over n of  gy[n] @ cols[n].T        (C_out, C*KH*KW)
    dcols[n] = W.T @ gy[n]                             (C*KH*KW, OH*OW)
    dx       = col2im(dcols): each column entry goes back onto the pixel it was read from
    db       = sum of gy over N, OH, OW

col2im is the adjoint (transpose) of im2col: <col2im(c), x> == <c, im2col(x)>.

Groups. With ``groups=G`` the C input channels split into G blocks of C/G and the
output channels into G blocks of C_out/G; block g of the output sees only block g
of the input. Because im2col orders rows channel-major (c, kh, kw), the rows of
group g are one contiguous block, so the product is a batched matmul over G:
(G, C_out/G, C/G*KH*KW) @ (G, C/G*KH*KW, OH*OW).

This is the *reference* implementation of ``F.conv2d``. The default, *fast* one
(``conv_fast.FastConv2d``) computes the same with the work arranged for speed; which
one runs is chosen in conv_select.py (``F.use_conv("reference" | "fast")``, default
"fast"). Both share the argument checks and the window bookkeeping shared with pooling
(output size, padding, strided views: windows.py), and are compared with each other,
forward and every gradient, in tests/test_fast_paths.py.
"""
from __future__ import annotations

import numpy as np

from ..autograd import Function
from ..backend import get_array_module
from .windows import (
    check_4d,
    check_conv_inputs,
    conv_output_size,
    conv_settings,
    is_pointwise,
    offset_slices,
    pad2d,
    window_settings,
    window_view,
)


# --- 1. the definition, as loops -------------------------------------------------------
def conv2d_naive(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """conv2d written as plain loops over every output element: slow, obviously right.

    Raw arrays in and out (NumPy). It is the definition both conv2d implementations
    are tested against, and the one to read first:

        y[n, o, i, j] = b[o] + sum over c, kh, kw in o's group of
                        w[o, c, kh, kw] * x_pad[n, g*C/G + c, i*sh + kh*dh, j*sw + kw*dw]
    """
    x, weight = np.asarray(x), np.asarray(weight)
    N, C, H, W = x.shape
    O, Cg, KH, KW = weight.shape
    _, (sh, sw), (ph, pw), (dh, dw) = window_settings("conv2d_naive", (KH, KW), stride,
                                                      padding, dilation)
    OH, OW = conv_output_size(H, W, (KH, KW), (sh, sw), (ph, pw), (dh, dw), "conv2d_naive")
    x_pad = np.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=x.dtype)
    x_pad[:, :, ph:ph + H, pw:pw + W] = x
    Og = O // groups
    y = np.zeros((N, O, OH, OW), dtype=np.result_type(x, weight))
    for n in range(N):
        for o in range(O):
            g = o // Og                                  # the group of output channel o
            for i in range(OH):
                for j in range(OW):
                    total = 0.0 if bias is None else float(np.asarray(bias)[o])
                    for c in range(Cg):
                        for kh in range(KH):
                            for kw in range(KW):
                                pixel = x_pad[n, g * Cg + c, i * sh + kh * dh, j * sw + kw * dw]
                                total += weight[o, c, kh, kw] * pixel
                    y[n, o, i, j] = total
    return y


# --- 2. im2col: every receptive field as one column -------------------------------------
def im2col(x, kernel_size, stride=1, padding=0, dilation=1, out=None):
    """The column matrices of x (N, C, H, W): (N, C*KH*KW, OH*OW), one column per output pixel.

    cols[n, (c, kh, kw), (i, j)] = x_pad[n, c, i*sh + kh*dh, j*sw + kw*dw]. Built as a
    strided view of the padded input (no copy) and then ONE copy into a contiguous,
    GEMM-ready array (``out``, if given, is that array: shape (N, C*KH*KW, OH*OW)).
    """
    op = "im2col"
    check_4d(x, op)
    xp = get_array_module(x)
    N, C, H, W = x.shape
    (KH, KW), stride, padding, dilation = window_settings(op, kernel_size, stride, padding,
                                                          dilation)
    OH, OW = conv_output_size(H, W, (KH, KW), stride, padding, dilation, op)
    if out is None and is_pointwise((KH, KW), stride, padding) and x.flags.c_contiguous:
        # 1x1 kernel, stride 1, no padding: every pixel is its own column -- a reshape, no copy.
        return x.reshape(N, C, H * W)                                   # (N, C*1*1, OH*OW)
    x_pad = pad2d(x, padding)                                           # (N, C, H+2ph, W+2pw)
    win = window_view(x_pad, (KH, KW), (OH, OW), stride, dilation)     # (N, C, KH, KW, OH, OW)
    if out is None:
        out = xp.empty((N, C * KH * KW, OH * OW), dtype=x.dtype)
    xp.copyto(out.reshape(N, C, KH, KW, OH, OW), win)                   # the one copy
    return out                                                          # (N, C*KH*KW, OH*OW)


# --- 3. col2im: the adjoint, for the backward pass ---------------------------------------
def col2im(cols, x_shape, kernel_size, stride=1, padding=0, dilation=1):
    """The adjoint of im2col: add every column entry back onto the pixel it was read from.

    cols (N, C*KH*KW, OH*OW) -> (N, C, H, W). One slice-add per kernel offset (KH*KW
    of them) into a padded buffer, then the padding is cut off. A pixel read by
    several windows receives the sum of their entries.
    """
    op = "col2im"
    xp = get_array_module(cols)
    N, C, H, W = x_shape
    (KH, KW), stride, padding, dilation = window_settings(op, kernel_size, stride, padding,
                                                          dilation)
    OH, OW = conv_output_size(H, W, (KH, KW), stride, padding, dilation, op)
    if cols.shape != (N, C * KH * KW, OH * OW):
        raise ValueError(f"{op}: cols must have shape {(N, C * KH * KW, OH * OW)} for input shape "
                         f"{tuple(x_shape)} and a {KH}x{KW} kernel, got {tuple(cols.shape)}")
    if is_pointwise((KH, KW), stride, padding):
        return cols.reshape(N, C, H, W)                                 # 1x1: the reshape back
    ph, pw = padding
    cols6 = cols.reshape(N, C, KH, KW, OH, OW)                          # (N, C, KH, KW, OH, OW)
    gx_pad = xp.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=cols.dtype)
    for kh in range(KH):
        for kw in range(KW):
            rows, columns = offset_slices(kh, kw, (OH, OW), stride, dilation)
            gx_pad[:, :, rows, columns] += cols6[:, :, kh, kw]
    return gx_pad[:, :, ph:ph + H, pw:pw + W]


# --- 4. Conv2d: forward and backward ------------------------------------------------------
class Conv2d(Function):
    """2-D convolution on NCHW input with an OIHW weight, as lesson 03 derives it.

    forward: cols = im2col(x), y = W @ cols -- one matmul, batched over images and groups.
    backward: dW = sum over n of gy[n] @ cols[n].T; dx = col2im(W.T @ gy); db = sum of gy.
    keeps: x and the weight; backward rebuilds the columns from x rather than keeping
    them (they are KH*KW times the size of x).
    """

    def __init__(self, stride=1, padding=0, dilation=1, groups=1):
        super().__init__()
        self.settings = conv_settings(stride, padding, dilation, groups)

    def forward(self, x, weight, bias):
        """y (N, C_out, OH, OW) of x (N, C_in, H, W), weight (C_out, C_in/G, KH, KW), bias."""
        OH, OW = check_conv_inputs(x, weight, bias, self.settings)
        stride, padding, dilation, G = self.settings
        xp = get_array_module(x)
        N, (O, Cg, KH, KW) = x.shape[0], weight.shape
        cols = im2col(x, (KH, KW), stride, padding, dilation)     # (N, C*KH*KW, OH*OW)
        cols = cols.reshape(N, G, Cg * KH * KW, OH * OW)          # (N, G, C/G*KH*KW, OH*OW)
        w = weight.reshape(G, O // G, Cg * KH * KW)               # (G, O/G, C/G*KH*KW)
        y = xp.matmul(w, cols).reshape(N, O, OH, OW)              # (N, G, O/G, OH*OW) -> NCHW
        if bias is not None:
            y += bias.reshape(1, O, 1, 1)
        self.save_for_backward(x, weight)
        return y

    def backward(self, gy):
        """(dx, dW, db), each None when not needed."""
        x, weight = self.saved
        need_x, need_w, need_b = self.needs_input_grad
        stride, padding, dilation, G = self.settings
        xp = get_array_module(gy)
        (N, O, OH, OW), (_, Cg, KH, KW) = gy.shape, weight.shape
        g = gy.reshape(N, G, O // G, OH * OW)                     # (N, G, O/G, OH*OW)
        gx = gw = gb = None
        if need_w:
            cols = im2col(x, (KH, KW), stride, padding, dilation)  # rebuilt from x
            cols = cols.reshape(N, G, Cg * KH * KW, OH * OW)      # (N, G, C/G*KH*KW, OH*OW)
            gw = xp.matmul(g, cols.transpose(0, 1, 3, 2))         # (N, G, O/G, C/G*KH*KW)
            gw = gw.sum(axis=0).reshape(weight.shape)             # summed over the images
        if need_x:
            wT = weight.reshape(G, O // G, Cg * KH * KW).transpose(0, 2, 1)  # (G, C/G*KH*KW, O/G)
            dcols = xp.matmul(wT, g).reshape(N, G * Cg * KH * KW, OH * OW)   # (N, C*KH*KW, OH*OW)
            gx = col2im(dcols, x.shape, (KH, KW), stride, padding, dilation)
        if need_b:
            gb = gy.sum(axis=(0, 2, 3))
        return gx, gw, gb


__all__ = ["Conv2d", "col2im", "conv2d_naive", "im2col"]
