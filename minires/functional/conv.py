"""Convolution by hand: im2col / col2im, a naive reference, and ``conv2d`` with its backward.

The idea in one picture. A convolution slides a (C, KH, KW) kernel over the input
and takes a dot product at every output pixel. Lay each receptive field out as
one column of a matrix -- that is im2col -- and the whole convolution becomes
one matrix product, which BLAS computes fast:

    cols[n] = im2col(x)[n]           (C*KH*KW, OH*OW)   one column per output pixel
    y[n]    = W @ cols[n]            (C_out, C*KH*KW) @ (C*KH*KW, OH*OW) = (C_out, OH*OW)

Layout. Each image gets its own (C*KH*KW, OH*OW) matrix, so ``W @ cols[n]`` is
already image n of the output in NCHW order. That is ``im2col`` / ``col2im`` below,
the readable version. ``conv2d`` itself puts the columns of several images side by
side in one matrix (``im2col_batch``: one GEMM instead of one per image, faster), and
on the CPU lays stride-1 images side by side in one plane (``SideBySide``) -- both in
conv_layouts.py, each tested against im2col. The window bookkeeping shared with pooling
(output size, padding, strided views) is in windows.py. A 1x1 convolution with stride 1 and no padding needs no
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
(G, C_out/G, C/G*KH*KW) @ (G, C/G*KH*KW, columns).

Speed (NumPy). The work is limited by memory traffic more than by arithmetic: the
column matrix of a 3x3 convolution is 9 times the size of its input. So ``Conv2d``
builds the columns of a few images at a time (about ``Conv2d.CPU_CHUNK_BYTES``),
which stay in the CPU cache between being written and being read by BLAS, in one
buffer reused by every chunk (a fresh allocation of the whole batch's columns costs
page faults). On the GPU the whole batch is one chunk. Backward recomputes the
columns from the saved input instead of keeping them: keeping them would hold 815 MiB
for ResNet-20 at batch 128 and saved about 3% of the time.

Measured with ``python benchmarks/conv_layers.py --variants`` on the code of commit
824c9ef (per-image GEMMs; ResNet-20's 19 convolutions, batch 128, forward + backward,
float32, 2-core AMD EPYC shared with other jobs, 2 threads, medians of 7): chunks of
4 MiB, recomputed 1554 ms; whole batch at once, recomputed 1742 ms; whole batch, kept
1503 ms; PyTorch 2.13 CPU 927 ms. One GEMM per chunk (commit c8aca4f) then took the
chunked, recomputing version from 1517 to 1131 ms against PyTorch's 1045 ms (medians
of 10, alternating in one process).
"""
from __future__ import annotations

import numbers

import numpy as np

from ..autograd import Function
from ..backend import get_array_module
from . import cuda_kernels
from .conv_layouts import SideBySide, batch_grid_width, col2im_batch, im2col_batch
from .parallel import run_chunks
from .windows import _check_4d, _pair, conv_output_size, offset_slices, pad2d, window_view


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
    if xp is not np:    # CuPy: the same columns in one kernel (cuda_kernels.py)
        return cuda_kernels.im2col(x, (KH, KW), stride, padding, dilation, out=out)
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
    if xp is not np:    # CuPy: a gather kernel, one thread per pixel (cuda_kernels.py)
        return cuda_kernels.col2im(cols, x_shape, (KH, KW), stride, padding, dilation)
    ph, pw = padding
    cols6 = cols.reshape(N, C, KH, KW, OH, OW)                          # (N, C, KH, KW, OH, OW)
    gx_pad = xp.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=cols.dtype)
    for kh in range(KH):
        for kw in range(KW):
            rows, columns = offset_slices(kh, kw, (OH, OW), stride, dilation)
            gx_pad[:, :, rows, columns] += cols6[:, :, kh, kw]
    return gx_pad[:, :, ph:ph + H, pw:pw + W]


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

    Two paths:
      1x1 kernel, stride 1, no padding: the columns of image n are its pixels,
        x[n].reshape(C, H*W) -- no im2col at all, y[n] = W @ x[n] for every image at once
        (one batched matmul);
      everything else: im2col_batch on chunks of a few images (about CPU_CHUNK_BYTES of
        columns each, so they stay in the CPU cache and one buffer serves every chunk;
        the whole batch at once on the GPU), one GEMM per group and chunk.
    The backward formulas are in the module docstring. keeps: x and the weight -- the
    columns are recomputed in backward rather than stored.
    """

    # On the CPU, stride-1 convolutions lay a chunk's images side by side (SideBySide);
    # False: the wide grid of im2col_batch, as on the GPU.
    SIDE_BY_SIDE = True

    # Bytes of column matrix built at a time on the CPU: small enough to stay in cache,
    # large enough for efficient GEMMs (measured on ResNet-20 shapes, see benchmarks/).
    CPU_CHUNK_BYTES = 4 << 20

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
        """Sets self.pointwise, self.grid_w (Wq) and self.chunks, the (n0, n1) batch ranges."""
        N, C, _, W = x.shape
        KH, KW = weight.shape[2:]
        self.pointwise = _is_pointwise((KH, KW), self.stride, self.padding)
        self.grid_w = batch_grid_width(W, OW, self.stride, self.padding)
        self.side_by_side = (self.SIDE_BY_SIDE and get_array_module(x) is np
                             and self.stride == (1, 1) and not self.pointwise
                             and SideBySide.fits((KH, KW), self.padding, self.dilation))
        per_image = C * KH * KW * OH * self.grid_w * x.itemsize
        step = N if get_array_module(x) is not np else max(1, self.CPU_CHUNK_BYTES // per_image)
        self.chunks = [(n0, min(N, n0 + step)) for n0 in range(0, N, step)]
        self.step = max(1, min(step, N))

    def _pointwise_chunks(self, x):
        """Batch ranges of about CPU_CHUNK_BYTES of input each (one range on the GPU), so
        the CPU threads share the work; the split does not depend on the thread count."""
        N = x.shape[0]
        per_image = max(1, x[:1].nbytes)
        step = N if get_array_module(x) is not np else self.CPU_CHUNK_BYTES // per_image
        step = max(1, step)
        return [(n0, min(N, n0 + step)) for n0 in range(0, N, step)]

    def _columns(self, x_chunk, weight, buffer):
        """im2col_batch of a chunk into ``buffer``, as (G, C/G*KH*KW, n*OH*Wq)."""
        cols = im2col_batch(x_chunk, weight.shape[2:], self.stride, self.padding, self.dilation,
                            out=buffer)                                 # (C*KH*KW, n*OH*Wq)
        return cols.reshape(self.groups, -1, cols.shape[1])             # (G, C/G*KH*KW, n*OH*Wq)

    def forward(self, x, weight, bias):
        xp = get_array_module(x)
        OH, OW = self._check(x, weight, bias)
        N, C, H, W = x.shape
        G, O = self.groups, weight.shape[0]
        self._plan(x, weight, OH, OW)
        w = weight.reshape(G, O // G, -1)                               # (G, O/G, C/G*KH*KW)
        if self.pointwise:
            # 1x1, stride 1, no padding: a reshape is the whole im2col.
            x4 = x.reshape(N, G, C // G, H * W)                         # (N, G, C/G, H*W)
            y = xp.empty((N, G, O // G, H * W), dtype=x.dtype)

            def chunk(n0, n1):
                xp.matmul(w, x4[n0:n1], out=y[n0:n1])                   # (n, G, O/G, H*W)
            run_chunks(chunk, self._pointwise_chunks(x))
            y = y.reshape(N, O, OH, OW)
        elif self.side_by_side:
            # CPU, stride 1: the chunk's images side by side in one plane (see SideBySide).
            y = xp.empty((N, O, OH, OW), dtype=x.dtype)

            def chunk(n0, n1):
                layout = SideBySide(n1 - n0, H, W, weight.shape[2:], self.padding, self.dilation)
                cols = layout.columns(x[n0:n1])                         # (C*KH*KW, OH*Wb)
                cols = cols.reshape(G, -1, layout.L)                    # (G, C/G*KH*KW, OH*Wb)
                y_grid = xp.matmul(w, cols).reshape(O, layout.L)        # (C_out, OH*Wb)
                y[n0:n1] = layout.images(y_grid)                        # (n, C_out, OH, OW)
            run_chunks(chunk, self.chunks)
        else:
            Wq, KHKW = self.grid_w, weight.shape[2] * weight.shape[3]
            y = xp.empty((N, O, OH, OW), dtype=x.dtype)

            def chunk(n0, n1):
                n = n1 - n0
                buffer = xp.empty(C * KHKW * n * OH * Wq, dtype=x.dtype)   # the columns
                y_buffer = xp.empty(O * n * OH * Wq, dtype=x.dtype)        # W @ columns
                cols = self._columns(x[n0:n1], weight, buffer)          # (G, C/G*KH*KW, n*OH*Wq)
                y_cm = y_buffer[:O * n * OH * Wq].reshape(G, O // G, n * OH * Wq)
                xp.matmul(w, cols, out=y_cm)                            # (G, O/G, n*OH*Wq)
                y_cm = y_cm.reshape(O, n, OH, Wq)[:, :, :, :OW]         # (C_out, n, OH, OW)
                y[n0:n1] = y_cm.transpose(1, 0, 2, 3)                   # (n, C_out, OH, OW)
            run_chunks(chunk, self.chunks)
        if bias is not None:
            y += bias.reshape(1, O, 1, 1)
        self.save_for_backward(x, weight)
        return y

    def backward(self, gy):
        x, weight = self.saved
        xp = get_array_module(gy)
        need_x, need_w, need_b = self.needs_input_grad
        N, C, H, W = x.shape
        O, OH, OW = gy.shape[1:]
        G, (KH, KW) = self.groups, weight.shape[2:]
        w = weight.reshape(G, O // G, -1)                               # (G, O/G, C/G*KH*KW)
        wT = w.transpose(0, 2, 1)                                       # (G, C/G*KH*KW, O/G)
        gb = gy.sum(axis=(0, 2, 3)) if need_b else None
        if self.pointwise:
            gy4 = gy.reshape(N, G, O // G, OH * OW)                     # (N, G, O/G, H*W)
            x4 = x.reshape(N, G, C // G, H * W)                         # (N, G, C/G, H*W)
            gx = xp.empty((N, G, C // G, H * W), dtype=x.dtype) if need_x else None

            def chunk(n0, n1):                                          # returns its part of dW
                if need_x:
                    xp.matmul(wT, gy4[n0:n1], out=gx[n0:n1])            # (n, G, C/G, H*W)
                if need_w:                                              # (G, O/G, C/G)
                    return xp.matmul(gy4[n0:n1], x4[n0:n1].transpose(0, 1, 3, 2)).sum(axis=0)
            gw_parts = run_chunks(chunk, self._pointwise_chunks(x))
            gw = None
            if need_w:
                gw = xp.zeros(w.shape, dtype=weight.dtype)
                for part in gw_parts:                                   # in chunk order
                    gw += part
                gw = gw.reshape(weight.shape)
            return (gx.reshape(x.shape) if need_x else None), gw, gb

        if not (need_x or need_w):
            return None, None, gb
        # The transposed path pays off through dx; for dW alone (a network's first layer)
        # the columns of x are fewer (C_in*KH*KW rows against C_out*KH*KW) and cheaper.
        if (need_x and self.stride == (1, 1) and self.TRANSPOSED_BACKWARD
                and self._transposed_padding(KH, KW)):
            return self._backward_transposed(gy, x, weight) + (gb,)
        return self._backward_columns(gy, x, weight) + (gb,)

    def _backward_columns(self, gy, x, weight):
        """dx and dW from the columns of x: dW = gy @ cols.T, dx = col2im(W.T @ gy). Any stride."""
        xp = get_array_module(gy)
        need_x, need_w = self.needs_input_grad[:2]
        C, H, W = x.shape[1:]
        O, OH, OW = gy.shape[1:]
        G, (KH, KW) = self.groups, weight.shape[2:]
        w = weight.reshape(G, O // G, -1)                               # (G, O/G, C/G*KH*KW)
        wT = w.transpose(0, 2, 1)                                       # (G, C/G*KH*KW, O/G)
        Wq = self.grid_w
        gx = xp.empty(x.shape, dtype=x.dtype) if need_x else None

        def chunk(n0, n1):                                              # returns its part of dW
            n = n1 - n0
            buffer = xp.empty(C * KH * KW * n * OH * Wq, dtype=x.dtype)  # columns, dcolumns
            gy_buffer = xp.empty(O * n * OH * Wq, dtype=gy.dtype)
            gw_part = None
            # gy of the chunk, channel-major on the grid: (C_out, n, OH, Wq), zero where cut off
            g = gy_buffer[:O * n * OH * Wq].reshape(O, n, OH, Wq)
            g[:, :, :, :OW] = gy[n0:n1].transpose(1, 0, 2, 3)
            g[:, :, :, OW:] = 0
            g = g.reshape(G, O // G, n * OH * Wq)                       # (G, O/G, n*OH*Wq)
            if need_w:
                cols = self._columns(x[n0:n1], weight, buffer)          # recomputed, not stored
                # dW = gy @ cols.T over the whole chunk; BLAS reads the transpose in place.
                gw_part = xp.matmul(g, cols.transpose(0, 2, 1))         # (G, O/G, C/G*KH*KW)
            if need_x:
                dcols = buffer[:C * KH * KW * n * OH * Wq].reshape(G, -1, n * OH * Wq)
                xp.matmul(wT, g, out=dcols)                             # (G, C/G*KH*KW, n*OH*Wq)
                gx[n0:n1] = col2im_batch(dcols.reshape(C * KH * KW, n * OH * Wq), (n, C, H, W),
                                         (KH, KW), self.stride, self.padding, self.dilation)
            return gw_part
        gw_parts = run_chunks(chunk, self.chunks)
        gw = None
        if need_w:
            gw = xp.zeros(w.shape, dtype=weight.dtype)
            for part in gw_parts:                                       # in chunk order
                gw += part
            gw = gw.reshape(weight.shape)
        return gx, gw

    # --- stride 1: backward as a convolution of gy (no col2im) ---------------------------
    # For stride 1 the gradient of the input is itself a convolution: gy, padded by
    # p' = (K-1)*d - p, convolved with the kernel flipped in both axes and with C_in and
    # C_out swapped (the "transposed convolution"):
    #     dx[n, c, m] = sum over o, kh, kw of  W[o, c, K-1-kh, K-1-kw] * gy_pad'[n, o, m + kh*d]
    # So backward builds the columns of gy (im2col_batch, as in forward) instead of the
    # columns of x, and both gradients are GEMMs against them:
    #     dx          = W_flipped (C, O*KH*KW) @ gycols (O*KH*KW, n*H*Wq')
    #     dW_flipped  = x_grid (C, n*H*Wq') @ gycols.T   (x on the same grid, zero where j >= W)
    # since dW[o, c, a, b] = sum over pixels m of x[n, c, m] * gy_pad'[n, o, m + (K-1-a)*d].
    # Compared with _backward_columns this skips the col2im (KH*KW read-modify-write
    # passes over the columns) and one im2col, and the dx GEMM has an inner dimension of
    # O*KH*KW instead of O, which BLAS runs much faster. tests/test_conv.py compares the
    # two backward paths.
    TRANSPOSED_BACKWARD = True

    def _transposed_padding(self, KH, KW):
        """(p'h, p'w) = ((KH-1)*dh - ph, (KW-1)*dw - pw), or None when one is negative."""
        (ph, pw), (dh, dw) = self.padding, self.dilation
        pad = ((KH - 1) * dh - ph, (KW - 1) * dw - pw)
        return pad if min(pad) >= 0 else None

    def _backward_transposed(self, gy, x, weight):
        xp = get_array_module(gy)
        need_x, need_w = self.needs_input_grad[:2]
        N, C, H, W = x.shape
        O = gy.shape[1]
        G, (KH, KW) = self.groups, weight.shape[2:]
        pad_t = self._transposed_padding(KH, KW)
        Wq = gy.shape[3] + 2 * pad_t[1]                                 # Wq' = OW + 2p'w, the wide grid
        L = H * Wq                                                      # grid pixels per image
        # W_flipped[g, c, (o, kh, kw)] = W[g*O/G + o, c, KH-1-kh, KW-1-kw]
        w_flip = weight.reshape(G, O // G, C // G, KH, KW)[:, :, :, ::-1, ::-1]
        w_flip = w_flip.transpose(0, 2, 1, 3, 4).reshape(G, C // G, O // G * KH * KW)
        per_image = O * KH * KW * L * gy.itemsize
        step = max(1, N if xp is not np else min(N, self.CPU_CHUNK_BYTES // per_image))
        gx = xp.empty(x.shape, dtype=x.dtype) if need_x else None

        def chunk_side_by_side(n0, n1):                                 # CPU: see SideBySide
            OH, OW = gy.shape[2:]
            layout = SideBySide(n1 - n0, OH, OW, (KH, KW), pad_t, self.dilation)  # grid H x W
            gycols = layout.columns(gy[n0:n1])                          # (C_out*KH*KW, H*Wb)
            gycols = gycols.reshape(G, O // G * KH * KW, layout.L)
            gw_part = None
            if need_w:                                                  # x on the same grid
                x_grid = layout.place(x[n0:n1], xp.empty(C * layout.L, dtype=x.dtype))
                x_grid = x_grid.reshape(G, C // G, layout.L)            # (G, C/G, H*Wb)
                gw_part = xp.matmul(x_grid, gycols.transpose(0, 2, 1))  # (G, C/G, O/G*KH*KW)
            if need_x:
                dx = xp.matmul(w_flip, gycols).reshape(C, layout.L)     # (C_in, H*Wb)
                gx[n0:n1] = layout.images(dx)                           # (n, C_in, H, W)
            return gw_part

        def chunk(n0, n1):                                              # returns its part of dW
            n = n1 - n0
            buffer = xp.empty(O * KH * KW * n * L, dtype=gy.dtype)      # the columns of gy
            out_buffer = xp.empty(C * n * L, dtype=gy.dtype)            # dx, or x, on the grid
            gycols = im2col_batch(gy[n0:n1], (KH, KW), 1, pad_t, self.dilation, out=buffer)
            gycols = gycols.reshape(G, O // G * KH * KW, n * L)         # (G, O/G*KH*KW, n*H*Wq')
            grid = out_buffer[:C * n * L].reshape(C, n, H, Wq)          # (C_in, n, H, Wq')
            if need_w:
                grid[:, :, :, :W] = x[n0:n1].transpose(1, 0, 2, 3)      # x, channel-major
                grid[:, :, :, W:] = 0
                x_grid = grid.reshape(G, C // G, n * L)                 # (G, C/G, n*H*Wq')
                gw_part = xp.matmul(x_grid, gycols.transpose(0, 2, 1))  # (G, C/G, O/G*KH*KW)
            if need_x:
                dx = grid.reshape(G, C // G, n * L)
                xp.matmul(w_flip, gycols, out=dx)                       # (G, C/G, n*H*Wq')
                gx[n0:n1] = grid[:, :, :, :W].transpose(1, 0, 2, 3)     # (n, C_in, H, W)
            return gw_part if need_w else None
        side_by_side = (self.SIDE_BY_SIDE and xp is np
                        and SideBySide.fits((KH, KW), pad_t, self.dilation))
        gw_parts = run_chunks(chunk_side_by_side if side_by_side else chunk,
                              [(n0, min(N, n0 + step)) for n0 in range(0, N, step)])
        gw = None
        if need_w:                                                      # un-flip, un-swap
            gw_flip = xp.zeros((G, C // G, O // G * KH * KW), dtype=weight.dtype)
            for part in gw_parts:                                       # in chunk order
                gw_flip += part
            gw = gw_flip.reshape(G, C // G, O // G, KH, KW)[:, :, :, ::-1, ::-1]
            gw = gw.transpose(0, 2, 1, 3, 4).reshape(weight.shape)      # (C_out, C_in/G, KH, KW)
            gw = xp.ascontiguousarray(gw)
        return gx, gw


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D convolution, like ``torch.nn.functional.conv2d``.

    x: (N, C_in, H, W); weight: (C_out, C_in/groups, KH, KW); bias: (C_out,) or None.
    stride, padding, dilation: an int or a pair (h, w). groups divides C_in and C_out
    (groups == C_in is a depthwise convolution). Returns (N, C_out, OH, OW).
    """
    return Conv2d(stride, padding, dilation, groups)(x, weight, bias)


__all__ = ["Conv2d", "col2im", "conv2d", "conv2d_naive", "im2col"]
