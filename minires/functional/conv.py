"""Convolution by hand: im2col / col2im, a naive reference, and ``conv2d`` with its backward.

The idea in one picture. A convolution slides a (C, KH, KW) kernel over the input
and takes a dot product at every output pixel. Lay each receptive field out as
one column of a matrix -- that is im2col -- and the whole convolution becomes
one matrix product, which BLAS computes fast:

    cols[n] = im2col(x)[n]           (C*KH*KW, OH*OW)   one column per output pixel
    y[n]    = W @ cols[n]            (C_out, C*KH*KW) @ (C*KH*KW, OH*OW) = (C_out, OH*OW)

Layout. Each image gets its own (C*KH*KW, OH*OW) matrix, so ``W @ cols[n]`` is
already image n of the output in NCHW order: the GEMM writes the result where it
belongs and no big transpose is ever needed (neither in forward nor backward).
A 1x1 convolution with stride 1 and no padding is the extreme case: its columns
*are* the pixels, ``x.reshape(N, C, H*W)``, and im2col copies nothing.

Backward, from y[n] = W @ cols[n]:

    dW       = sum over n of  gy[n] @ cols[n].T        (C_out, C*KH*KW)
    dcols[n] = W.T @ gy[n]                             (C*KH*KW, OH*OW)
    dx       = col2im(dcols)   -- every column adds its entries back to the pixels it was read from
    db       = sum of gy over N, OH, OW

col2im is the adjoint (transpose) of im2col: <col2im(c), x> == <c, im2col(x)>.

Groups. With ``groups=G`` the C input channels split into G blocks of C/G and the
output channels into G blocks of C_out/G; block g of the output sees only block g
of the input. Because im2col orders rows channel-major (c, kh, kw), the rows of
group g are one contiguous block, so the product is a batched matmul over G:
(G, C_out/G, C/G*KH*KW) @ (N, G, C/G*KH*KW, OH*OW).

Speed (NumPy). The work is limited by memory traffic, not arithmetic: the column
matrix of a 3x3 convolution is 9 times the size of its input. So ``Conv2d`` runs
im2col and the GEMMs on a few images at a time (a chunk of about
``Conv2d.CPU_CHUNK_BYTES`` of columns), so the columns stay in the CPU cache
between being written and being read by BLAS, and the buffer is reused instead of
a fresh allocation (page faults) for the whole batch. On the GPU the whole batch
is one chunk. Backward recomputes the columns from the saved input instead of
keeping them: keeping them costs 9x the input's memory per 3x3 layer (about
0.9 GB for ResNet-20 at batch 128) for a small gain in time -- see
benchmarks/conv_layers.py and the figures in benchmarks/RESULTS.md.
"""
from __future__ import annotations

import numbers

import numpy as np

from ..autograd import Function
from ..backend import get_array_module


# --- argument handling --------------------------------------------------------------
def _pair(value, name, op, minimum):
    """An int or a pair of ints, each >= minimum, as a pair (h, w); a clear error otherwise."""
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


def _check_4d(x, op, what="input"):
    if x.ndim != 4:
        hint = (" (for a single image (C, H, W), add a batch axis: x.reshape(1, *x.shape))"
                if x.ndim == 3 and what == "input" else "")
        raise ValueError(f"{op}: {what} must be 4-D (N, C, H, W), got shape {tuple(x.shape)}{hint}")


def conv_output_size(H, W, kernel_size, stride=1, padding=0, dilation=1, op="conv2d"):
    """(OH, OW) of a convolution or pooling window, or a clear error if the kernel does not fit.

    OH = (H + 2*padding - dilation*(KH - 1) - 1) // stride + 1, and likewise for OW.
    """
    KH, KW = _pair(kernel_size, "kernel_size", op, 1)
    sh, sw = _pair(stride, "stride", op, 1)
    ph, pw = _pair(padding, "padding", op, 0)
    dh, dw = _pair(dilation, "dilation", op, 1)
    span_h, span_w = dh * (KH - 1) + 1, dw * (KW - 1) + 1   # the kernel's reach, dilation included
    if span_h > H + 2 * ph or span_w > W + 2 * pw:
        reach = ""
        if (dh, dw) != (1, 1):
            reach = f" (dilation {dh}x{dw} stretches it to {span_h}x{span_w})"
        raise ValueError(f"{op}: kernel {KH}x{KW}{reach} is larger than the padded input "
                         f"{H + 2 * ph}x{W + 2 * pw} (input {H}x{W} + padding {ph}x{pw} "
                         f"on each side)")
    return (H + 2 * ph - span_h) // sh + 1, (W + 2 * pw - span_w) // sw + 1


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


# --- im2col / col2im ------------------------------------------------------------------
def _is_pointwise(kernel_size, stride, padding):
    return tuple(kernel_size) == (1, 1) and tuple(stride) == (1, 1) and tuple(padding) == (0, 0)


def im2col(x, kernel_size, stride=1, padding=0, dilation=1, out=None):
    """The column matrices of x (N, C, H, W): (N, C*KH*KW, OH*OW), one column per output pixel.

    cols[n, (c, kh, kw), (i, j)] = x_pad[n, c, i*sh + kh*dh, j*sw + kw*dw]. Built as a
    strided view of the padded input (no copy) and then ONE copy into a contiguous,
    GEMM-ready array (``out``, if given, is that array: shape (N, C*KH*KW, OH*OW)).
    """
    op = "im2col"
    _check_4d(x, op)
    xp = get_array_module(x)
    N, C, H, W = x.shape
    KH, KW = _pair(kernel_size, "kernel_size", op, 1)
    stride, padding = _pair(stride, "stride", op, 1), _pair(padding, "padding", op, 0)
    dilation = _pair(dilation, "dilation", op, 1)
    OH, OW = conv_output_size(H, W, (KH, KW), stride, padding, dilation, op)
    if out is None and _is_pointwise((KH, KW), stride, padding) and x.flags.c_contiguous:
        # 1x1 kernel, stride 1, no padding: every pixel is its own column -- a reshape, no copy.
        return x.reshape(N, C, H * W)                                   # (N, C*1*1, OH*OW)
    x_pad = pad2d(x, padding)                                           # (N, C, H+2ph, W+2pw)
    win = window_view(x_pad, (KH, KW), (OH, OW), stride, dilation)     # (N, C, KH, KW, OH, OW)
    if out is None:
        out = xp.empty((N, C * KH * KW, OH * OW), dtype=x.dtype)
    xp.copyto(out.reshape(N, C, KH, KW, OH, OW), win)                   # the one copy
    return out                                                          # (N, C*KH*KW, OH*OW)


def col2im(cols, x_shape, kernel_size, stride=1, padding=0, dilation=1):
    """The adjoint of im2col: add every column entry back onto the pixel it was read from.

    cols (N, C*KH*KW, OH*OW) -> (N, C, H, W). One slice-add per kernel offset (KH*KW
    of them) into a padded buffer, then the padding is cut off. A pixel read by
    several windows receives the sum of their entries.
    """
    op = "col2im"
    xp = get_array_module(cols)
    N, C, H, W = x_shape
    KH, KW = _pair(kernel_size, "kernel_size", op, 1)
    stride, padding = _pair(stride, "stride", op, 1), _pair(padding, "padding", op, 0)
    dilation = _pair(dilation, "dilation", op, 1)
    OH, OW = conv_output_size(H, W, (KH, KW), stride, padding, dilation, op)
    if cols.shape != (N, C * KH * KW, OH * OW):
        raise ValueError(f"{op}: cols must have shape {(N, C * KH * KW, OH * OW)} for input shape "
                         f"{tuple(x_shape)} and a {KH}x{KW} kernel, got {tuple(cols.shape)}")
    if _is_pointwise((KH, KW), stride, padding):
        return cols.reshape(N, C, H, W)                                 # 1x1: the reshape back
    ph, pw = padding
    cols6 = cols.reshape(N, C, KH, KW, OH, OW)                          # (N, C, KH, KW, OH, OW)
    gx_pad = xp.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=cols.dtype)
    for kh in range(KH):
        for kw in range(KW):
            rows, columns = offset_slices(kh, kw, (OH, OW), stride, dilation)
            gx_pad[:, :, rows, columns] += cols6[:, :, kh, kw]
    return gx_pad[:, :, ph:ph + H, pw:pw + W]


# --- the stride-1 fast path: columns on the "wide" grid ---------------------------------
# im2col above copies rows only OW pixels long (8 in ResNet's last stage), and col2im
# adds them back the same way: NumPy then spends its time stepping between short rows,
# not moving data. With stride 1 there is a layout where every copy and add is one long
# contiguous run. Flatten each padded image plane (Hp x Wp) to one row. Output pixel
# (i, j) at kernel offset (kh, kw) reads flat position
#       (i + kh*dh) * Wp + (j + kw*dw)  =  q + (kh*dh*Wp + kw*dw),   with q = i*Wp + j.
# So compute the output on a "wide" grid of OH x Wp pixels (q = 0 .. OH*Wp - 1): then
# row (c, kh, kw) of the column matrix is the flat plane shifted by kh*dh*Wp + kw*dw,
# ONE contiguous run. The Wp - OW extra pixels per output row (q with j >= OW) read
# wrapped-around neighbours: they are computed and cut off (6% extra work at 32x32,
# 25% at 8x8). In backward the gradient is zero there, so they add nothing.
# Measured: about 1.3x faster convolution layers on ResNet-20 (benchmarks/RESULTS.md);
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


def im2col_wide(x, kernel_size, padding=0, dilation=1, out=None):
    """Stride-1 columns on the wide grid: (N, C*KH*KW, OH*Wp), Wp = W + 2*pw.

    cols[n, (c, kh, kw), i*Wp + j] = x_pad[n, c, i + kh*dh, j + kw*dw] for j < OW, the
    same entries as im2col; the columns with j >= OW hold values to be discarded.
    """
    op = "im2col_wide"
    _check_4d(x, op)
    xp = get_array_module(x)
    N, C, H, W = x.shape
    (KH, KW), padding = _pair(kernel_size, "kernel_size", op, 1), _pair(padding, "padding", op, 0)
    dh, dw = _pair(dilation, "dilation", op, 1)
    OH, _ = conv_output_size(H, W, (KH, KW), 1, padding, (dh, dw), op)
    Wp = W + 2 * padding[1]
    flat = _flat_planes(x, padding, extra=(KW - 1) * dw)                # (N, C, Hp*Wp + extra)
    sN, sC, s1 = flat.strides
    runs = strided_view(flat, (N, C, KH, KW, OH * Wp),                  # (N, C, KH, KW, OH*Wp)
                        (sN, sC, dh * Wp * s1, dw * s1, s1))
    if out is None:
        out = xp.empty((N, C * KH * KW, OH * Wp), dtype=x.dtype)
    xp.copyto(out.reshape(N, C, KH, KW, OH * Wp), runs)                 # the one copy
    return out                                                          # (N, C*KH*KW, OH*Wp)


def col2im_wide(cols, x_shape, kernel_size, padding=0, dilation=1):
    """The adjoint of im2col_wide: (N, C*KH*KW, OH*Wp) -> (N, C, H, W).

    Entries in the discarded columns (j >= OW) must be zero -- they are when cols is
    W.T @ (a gradient zero-padded to the wide grid). One contiguous add per kernel offset.
    """
    op = "col2im_wide"
    xp = get_array_module(cols)
    N, C, H, W = x_shape
    (KH, KW), (ph, pw) = _pair(kernel_size, "kernel_size", op, 1), _pair(padding, "padding", op, 0)
    dh, dw = _pair(dilation, "dilation", op, 1)
    OH, _ = conv_output_size(H, W, (KH, KW), 1, (ph, pw), (dh, dw), op)
    Hp, Wp = H + 2 * ph, W + 2 * pw
    L = OH * Wp
    if cols.shape != (N, C * KH * KW, L):
        raise ValueError(f"{op}: cols must have shape {(N, C * KH * KW, L)}, "
                         f"got {tuple(cols.shape)}")
    runs = cols.reshape(N, C, KH, KW, L)                                # (N, C, KH, KW, OH*Wp)
    flat = xp.zeros((N, C, Hp * Wp + (KW - 1) * dw), dtype=cols.dtype)
    for kh in range(KH):
        for kw in range(KW):
            start = kh * dh * Wp + kw * dw
            flat[:, :, start:start + L] += runs[:, :, kh, kw]
    planes = flat[:, :, :Hp * Wp].reshape(N, C, Hp, Wp)                 # (N, C, Hp, Wp)
    return planes[:, :, ph:ph + H, pw:pw + W]


# --- the naive reference ----------------------------------------------------------------
def conv2d_naive(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """conv2d written as plain loops over every output element: slow, obviously right.

    Raw arrays in and out (NumPy). It is the definition the fast version is tested
    against, and the one to read first:

        y[n, o, i, j] = b[o] + sum over c, kh, kw in o's group of
                        w[o, c, kh, kw] * x_pad[n, g*C/G + c, i*sh + kh*dh, j*sw + kw*dw]
    """
    x, weight = np.asarray(x), np.asarray(weight)
    N, C, H, W = x.shape
    O, Cg, KH, KW = weight.shape
    sh, sw = _pair(stride, "stride", "conv2d_naive", 1)
    ph, pw = _pair(padding, "padding", "conv2d_naive", 0)
    dh, dw = _pair(dilation, "dilation", "conv2d_naive", 1)
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


# --- conv2d ------------------------------------------------------------------------------
class Conv2d(Function):
    """2-D convolution on NCHW input with an OIHW weight, by im2col + GEMM.

    Forward y[n] = W @ im2col(x)[n] (+ b), per group; see the module docstring for the
    backward formulas. The columns come in one of three layouts, chosen per call:
      "pointwise"  1x1 kernel, stride 1, no padding: the input itself, reshaped (no copy);
      "wide"       other stride-1 convolutions: im2col_wide / col2im_wide (long contiguous
                   copies; the output is computed on the OH x Wp grid and cropped);
      "plain"      everything else: im2col / col2im.
    keeps: x and the weight (the columns are recomputed in backward, a few images at a
    time, rather than stored).
    """

    # Bytes of column matrix built at a time on the CPU: small enough to stay in cache,
    # large enough for efficient GEMMs (measured on ResNet-20 shapes, see benchmarks/).
    CPU_CHUNK_BYTES = 4 << 20
    # Use the wide layout for stride-1 convolutions (False forces "plain": tests compare both).
    WIDE_STRIDE1 = True

    def __init__(self, stride=1, padding=0, dilation=1, groups=1):
        super().__init__()
        op = "conv2d"
        self.stride = _pair(stride, "stride", op, 1)
        self.padding = _pair(padding, "padding", op, 0)
        self.dilation = _pair(dilation, "dilation", op, 1)
        if isinstance(groups, bool) or not isinstance(groups, numbers.Integral) or groups < 1:
            raise ValueError(f"{op}: groups must be a positive int, got {groups!r}")
        self.groups = int(groups)

    def _check(self, x, weight, bias):
        op, G = "conv2d", self.groups
        _check_4d(x, op)
        _check_4d(weight, op, "weight (C_out, C_in/groups, KH, KW)")
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
        return conv_output_size(H, W, (KH, KW), self.stride, self.padding, self.dilation, op)

    def _plan(self, x, weight, OH, OW):
        """Choose the column layout, the grid width the GEMM computes on (OW, or Wp for
        "wide"), and the (n0, n1) batch chunks: about CPU_CHUNK_BYTES of columns each on
        the CPU, the whole batch on the GPU. Sets self.layout, self.grid_w, self.chunks."""
        N, C, _, W = x.shape
        KH, KW = weight.shape[2:]
        if _is_pointwise((KH, KW), self.stride, self.padding):
            self.layout, self.grid_w = "pointwise", OW
        elif self.stride == (1, 1) and self.WIDE_STRIDE1:
            self.layout, self.grid_w = "wide", W + 2 * self.padding[1]
        else:
            self.layout, self.grid_w = "plain", OW
        per_image = C * KH * KW * OH * self.grid_w * x.itemsize
        step = N if get_array_module(x) is not np else max(1, self.CPU_CHUNK_BYTES // per_image)
        self.chunks = [(n0, min(N, n0 + step)) for n0 in range(0, N, step)]

    def _buffer(self, x, weight, OH):
        """One columns buffer, reused by every chunk (None when no copy is made)."""
        if self.layout == "pointwise":
            return None
        C, (KH, KW) = x.shape[1], weight.shape[2:]
        biggest = max((n1 - n0 for n0, n1 in self.chunks), default=0)
        return get_array_module(x).empty((biggest, C * KH * KW, OH * self.grid_w), dtype=x.dtype)

    def _cols(self, x_chunk, weight, OH, buffer):
        """The columns of a chunk of images as (n, G, C/G*KH*KW, OH*grid_w)."""
        n, kernel = x_chunk.shape[0], weight.shape[2:]
        if self.layout == "pointwise":
            cols = im2col(x_chunk, kernel)                              # a reshape of x
        elif self.layout == "wide":
            cols = im2col_wide(x_chunk, kernel, self.padding, self.dilation, out=buffer[:n])
        else:
            cols = im2col(x_chunk, kernel, self.stride, self.padding, self.dilation, out=buffer[:n])
        return cols.reshape(n, self.groups, -1, OH * self.grid_w)       # (n, G, C/G*KH*KW, OH*Wq)

    def _col2im(self, dcols, x_shape, kernel):
        if self.layout == "wide":
            return col2im_wide(dcols, x_shape, kernel, self.padding, self.dilation)
        return col2im(dcols, x_shape, kernel, self.stride, self.padding, self.dilation)

    def forward(self, x, weight, bias):
        xp = get_array_module(x)
        OH, OW = self._check(x, weight, bias)
        N, G, O = x.shape[0], self.groups, weight.shape[0]
        self._plan(x, weight, OH, OW)
        Wq = self.grid_w
        w = weight.reshape(G, O // G, -1)                               # (G, O/G, C/G*KH*KW)
        y = xp.empty((N, O, OH, OW), dtype=x.dtype)
        buffer = self._buffer(x, weight, OH)
        for n0, n1 in self.chunks:
            n = n1 - n0
            cols = self._cols(x[n0:n1], weight, OH, buffer)             # (n, G, C/G*KH*KW, OH*Wq)
            if self.layout == "wide":
                y_wide = xp.matmul(w, cols)                             # (n, G, O/G, OH*Wq)
                y[n0:n1] = y_wide.reshape(n, O, OH, Wq)[:, :, :, :OW]   # crop the wide grid
            else:
                xp.matmul(w, cols, out=y[n0:n1].reshape(n, G, O // G, OH * OW))
        if bias is not None:
            y += bias.reshape(1, O, 1, 1)
        self.save_for_backward(x, weight)
        return y

    def backward(self, gy):
        x, weight = self.saved
        xp = get_array_module(gy)
        need_x, need_w, need_b = self.needs_input_grad
        G, Wq = self.groups, self.grid_w
        O, OH, OW = gy.shape[1:]
        C, H, W = x.shape[1:]
        KH, KW = weight.shape[2:]
        w = weight.reshape(G, O // G, -1)                               # (G, O/G, C/G*KH*KW)
        wT = w.transpose(0, 2, 1)                                       # (G, C/G*KH*KW, O/G)
        gx = xp.empty(x.shape, dtype=x.dtype) if need_x else None
        gw = xp.zeros(w.shape, dtype=weight.dtype) if need_w else None
        buffer = self._buffer(x, weight, OH) if need_w else None
        if self.layout == "wide":       # gy on the wide grid, zero in the columns cut off
            biggest = max((n1 - n0 for n0, n1 in self.chunks), default=0)
            gy_wide = xp.zeros((biggest, O, OH, Wq), dtype=gy.dtype)
        for n0, n1 in self.chunks:
            n = n1 - n0
            if self.layout == "wide":
                gy_wide[:n, :, :, :OW] = gy[n0:n1]
                gy_c = gy_wide[:n].reshape(n, G, O // G, OH * Wq)       # (n, G, O/G, OH*Wq)
            else:
                gy_c = gy[n0:n1].reshape(n, G, O // G, OH * OW)         # (n, G, O/G, OH*OW)
            if need_w:
                cols = self._cols(x[n0:n1], weight, OH, buffer)         # recomputed, not stored
                # dW = sum over images of gy[n] @ cols[n].T; BLAS reads the transpose in place.
                colsT = cols.transpose(0, 1, 3, 2)                      # (n, G, OH*Wq, C/G*KH*KW)
                gw += xp.matmul(gy_c, colsT).sum(axis=0)                # (G, O/G, C/G*KH*KW)
            if need_x:
                dcols = xp.matmul(wT, gy_c)                             # (n, G, C/G*KH*KW, OH*Wq)
                dcols = dcols.reshape(n, C * KH * KW, OH * Wq)          # (n, C*KH*KW, OH*Wq)
                gx[n0:n1] = self._col2im(dcols, (n, C, H, W), (KH, KW))
        gb = gy.sum(axis=(0, 2, 3)) if need_b else None
        return gx, (gw.reshape(weight.shape) if need_w else None), gb


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D convolution, like ``torch.nn.functional.conv2d``.

    x: (N, C_in, H, W); weight: (C_out, C_in/groups, KH, KW); bias: (C_out,) or None.
    stride, padding, dilation: an int or a pair (h, w). groups divides C_in and C_out
    (groups == C_in is a depthwise convolution). Returns (N, C_out, OH, OW).
    """
    return Conv2d(stride, padding, dilation, groups)(x, weight, bias)


__all__ = ["Conv2d", "col2im", "col2im_wide", "conv2d", "conv2d_naive", "conv_output_size",
           "im2col", "im2col_wide"]
