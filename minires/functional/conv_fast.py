"""The fast conv2d: the reference's arithmetic (conv.py), with the work arranged for speed.

``FastConv2d`` computes what the reference ``conv.Conv2d`` computes -- im2col, one GEMM
per group; dW by a GEMM, dx by col2im -- and is the default; conv_select.py chooses
between the two and gathers the knobs (``use_winograd`` below, the chunk size, threads).
Every path below is compared with the reference, forward and all gradients, on drawn
cases (tests/test_fast_paths.py). What changes, and why:

* Chunks. NumPy convolutions are limited by memory traffic more than by arithmetic: the
  column matrix of a 3x3 convolution is 9 times the size of its input. So the CPU paths
  build the columns of a few images at a time (about ``parallel.get_chunk_bytes()``
  bytes), which stay in the CPU cache between being written and being read by BLAS. On
  the GPU the whole batch is one chunk.
* One GEMM per chunk. The columns of all the images of a chunk sit side by side in one
  matrix (conv_layouts.py): one large GEMM instead of one small one per image.
* Threads. The chunks run on parallel.py's thread pool, BLAS single-threaded, so the
  copies around the GEMMs use every core too. Each chunk writes only its own slice of
  the output; the weight gradient is summed from per-chunk parts in chunk order
  (``sum_in_chunk_order``), so results do not depend on the number of threads.
* Backward recomputes the columns from the saved input rather than keeping them: kept,
  they would hold the 9x-the-input columns of every layer until its backward, for a
  small saving in time (benchmarks/RESULTS.md, "Moved from code comments").

The paths -- ``forward_path`` and ``backward_path`` pick one each, and those two
functions are the whole policy:

  forward_pointwise          1x1 kernel, stride 1, no padding: the columns ARE the pixels
  forward_winograd           CPU, 3x3, stride 1, padding <= 2, where Winograd wins (below):
                             F(2x2, 3x3), winograd.py
  forward_kernel_rows        CPU, stride 1, <= 32 output channels per group: side by side,
                             the kernel rows folded into the GEMM's rows
  forward_side_by_side       CPU, stride 1: a chunk's images side by side in one plane
  forward_grid               otherwise, and on the GPU: im2col_batch's grid
  backward_pointwise         the 1x1 case
  backward_winograd          dx wanted, where Winograd wins: dx by Winograd, as a 3x3
                             convolution of gy; dW (if wanted) by backward_columns
  backward_transposed_*      stride 1 when dx is needed: dx as a convolution of gy
                             (side_by_side on the CPU, grid on the GPU)
  backward_columns           otherwise: dW = gy @ cols.T, dx = col2im_batch(W.T @ gy)

Where Winograd wins (``WINOGRAD_WINS``): C_in and C_out >= 64 with an output of 16x16
or more, or >= 128 with 8x8 or more -- measured on 2 cores, batch 128, float32
(benchmarks/bench_winograd.py, whose docstring has the figures). Its 2.25x fewer
multiply-adds pay for its transforms' extra passes over memory only with enough
channels (its 16 GEMMs have inner dimension C_in instead of 9*C_in), and its
wrap-around extra tile per row of tiles costs 2/OW more (25% at 8x8, 50% at 4x4). None
of ResNet-20's convolutions qualifies: at 16-64 channels Winograd runs 5-20% slower.
When dW is wanted too, backward_transposed_* gets dx and dW from the same columns of gy,
so Winograd's dx plus dW alone wins only on larger layers (``WINOGRAD_WINS_WITH_DW``:
twice the output side). ``use_winograd(False)`` turns Winograd off.

Forward paths take (x, weight, settings) and return y; backward paths take (gy, x,
weight, settings, need_x, need_w) and return (dx, dW). ``settings`` is a
windows.ConvSettings. Each also takes ``chunk_bytes`` (None: the module setting).
The work of one chunk is a plain function ``_..._chunk(..., n0, n1)`` that
``run_chunks`` calls through ``functools.partial``.
"""
from __future__ import annotations

from functools import partial

import numpy as np

from ..autograd import Function
from ..backend import get_array_module
from . import winograd
from .conv_layouts import SideBySide, col2im_batch, im2col_batch
from .parallel import batch_chunks, run_chunks, sum_in_chunk_order
from .windows import (
    batch_grid_width,
    check_conv_inputs,
    conv_output_size,
    conv_settings,
    is_pointwise,
)

# --- the one switch: whether the policy may pick Winograd (module docstring) -----------
_use_winograd = True


def use_winograd(on: bool) -> bool:
    """Let the policy pick Winograd F(2x2, 3x3) where it is faster (True, the default) or
    never (False); returns the previous value. Results change by float rounding only."""
    global _use_winograd
    if not isinstance(on, bool):
        raise ValueError(f"use_winograd: on must be True or False, got {on!r}")
    previous, _use_winograd = _use_winograd, on
    return previous


def weight_gradient_gemm(a, b):
    """a @ b.T over the last two axes: a weight gradient, a sum over the pixels (the long,
    contiguous axis of both). On NumPy it runs as (b @ a.T).T when b has more rows: OpenBLAS
    multiplies these shapes faster with the taller operand on the left (the rates per shape
    and kernel: ``python -m minires.blas_kernel``, benchmarks/RESULTS.md). The same products;
    the gradients came out bit-identical (benchmarks/same_results.py). The result may be a
    transposed view."""
    xp = get_array_module(a)
    if xp is np and b.shape[-2] > a.shape[-2]:
        return xp.matmul(b, a.swapaxes(-1, -2)).swapaxes(-1, -2)
    return xp.matmul(a, b.swapaxes(-1, -2))


def _column_chunks(x, kernel, settings, out_hw, chunk_bytes):
    """The chunks of the paths that build the columns of x (per image C*KH*KW x OH*Wq)."""
    xp = get_array_module(x)
    N, C, _, W = x.shape
    (KH, KW), (OH, OW) = kernel, out_hw
    Wq = batch_grid_width(W, OW, settings.stride, settings.padding, xp)
    per_image = C * KH * KW * OH * Wq * x.itemsize
    return batch_chunks(N, per_image, xp, chunk_bytes)


# --- 1x1, stride 1, no padding: no im2col at all --------------------------------------
def _check_pointwise(op, weight, settings):
    if not is_pointwise(weight.shape[2:], settings.stride, settings.padding):
        raise ValueError(f"{op}: needs a 1x1 kernel, stride 1 and no padding")


def _pointwise_forward_chunk(w, x4, y4, n0, n1):
    get_array_module(x4).matmul(w, x4[n0:n1], out=y4[n0:n1])      # (n, G, O/G, H*W)


def _pointwise_views(op, x, weight, settings):
    """The 1x1 case checked, and its grouped views: w (G, O/G, C/G), x4 (N, G, C/G, H*W)."""
    _check_pointwise(op, weight, settings)
    N, C, H, W = x.shape
    G = settings.groups
    w = weight.reshape(G, weight.shape[0] // G, -1)                     # (G, O/G, C/G)
    return w, x.reshape(N, G, C // G, H * W)                            # (N, G, C/G, H*W)


def forward_pointwise(x, weight, settings, chunk_bytes=None):
    """y[n] = W @ x[n].reshape(C, H*W): the pixels are the columns, one batched matmul."""
    w, x4 = _pointwise_views("forward_pointwise", x, weight, settings)
    xp = get_array_module(x)
    N, C, H, W = x.shape
    O, G = weight.shape[0], settings.groups
    y4 = xp.empty((N, G, O // G, H * W), dtype=x.dtype)
    chunks = batch_chunks(N, C * H * W * x.itemsize, xp, chunk_bytes)
    run_chunks(partial(_pointwise_forward_chunk, w, x4, y4), chunks)
    return y4.reshape(N, O, H, W)


def _pointwise_backward_chunk(gy4, x4, wT, gx4, need_w, n0, n1):
    xp = get_array_module(gy4)
    if gx4 is not None:
        xp.matmul(wT, gy4[n0:n1], out=gx4[n0:n1])                       # (n, G, C/G, H*W)
    if need_w:                                                          # (G, O/G, C/G)
        return xp.matmul(gy4[n0:n1], x4[n0:n1].transpose(0, 1, 3, 2)).sum(axis=0)
    return None


def backward_pointwise(gy, x, weight, settings, need_x=True, need_w=True, chunk_bytes=None):
    """dx[n] = W.T @ gy[n], dW = sum over n of gy[n] @ x[n].T, on the pixels directly."""
    w, x4 = _pointwise_views("backward_pointwise", x, weight, settings)
    xp = get_array_module(gy)
    N, C, H, W = x.shape
    O, G = weight.shape[0], settings.groups
    gy4 = gy.reshape(N, G, O // G, H * W)                               # (N, G, O/G, H*W)
    gx4 = xp.empty((N, G, C // G, H * W), dtype=x.dtype) if need_x else None
    chunks = batch_chunks(N, C * H * W * x.itemsize, xp, chunk_bytes)
    parts = run_chunks(partial(_pointwise_backward_chunk, gy4, x4, w.transpose(0, 2, 1), gx4,
                               need_w), chunks)
    gx = gx4.reshape(x.shape) if need_x else None
    gw = sum_in_chunk_order(parts, w.shape, weight.dtype, xp).reshape(weight.shape) if need_w \
        else None
    return gx, gw


# --- the columns of x: im2col_batch's grid (any stride; the GPU) ----------------------
def _grid_forward_chunk(x, w, kernel, settings, y, n0, n1):
    xp = get_array_module(x)
    n, (O, OH, OW), G = n1 - n0, y.shape[1:], settings.groups
    cols = im2col_batch(x[n0:n1], kernel, settings.stride, settings.padding,
                        settings.dilation)                              # (C*KH*KW, n*OH*Wq)
    cols = cols.reshape(G, -1, cols.shape[1])                           # (G, C/G*KH*KW, n*OH*Wq)
    y_cm = xp.matmul(w, cols)                                           # (G, O/G, n*OH*Wq)
    y_cm = y_cm.reshape(O, n, OH, -1)[:, :, :, :OW]     # (C_out, n, OH, OW); GPU: Wq = OW
    y[n0:n1] = y_cm.transpose(1, 0, 2, 3)                               # (n, C_out, OH, OW)


def _forward_columns(chunk, x, weight, settings, chunk_bytes, w=None):
    """What the column forward paths share: y allocated, W grouped (``w``: the chunk's own
    matrix of W instead), the chunks run."""
    N, _, H, W = x.shape
    O, G, kernel = weight.shape[0], settings.groups, weight.shape[2:]
    OH, OW = conv_output_size(H, W, kernel, settings.stride, settings.padding, settings.dilation)
    y = get_array_module(x).empty((N, O, OH, OW), dtype=x.dtype)
    if w is None:
        w = weight.reshape(G, O // G, -1)                               # (G, O/G, C/G*KH*KW)
    chunks = _column_chunks(x, kernel, settings, (OH, OW), chunk_bytes)
    run_chunks(partial(chunk, x, w, kernel, settings, y), chunks)
    return y


def forward_grid(x, weight, settings, chunk_bytes=None):
    """y = W @ im2col_batch(x chunk), one GEMM per group and chunk, cut to OW and transposed."""
    return _forward_columns(_grid_forward_chunk, x, weight, settings, chunk_bytes)


def _columns_backward_chunk(gy, x, wT, kernel, settings, gx, need_w, n0, n1):
    xp = get_array_module(gy)
    n, (C, H, W), (O, OH, OW), G = n1 - n0, x.shape[1:], gy.shape[1:], settings.groups
    Wq = batch_grid_width(W, OW, settings.stride, settings.padding, xp)
    K, L = C * kernel[0] * kernel[1], n * OH * Wq
    buffer = xp.empty(K * L, dtype=x.dtype)                             # the columns, then dcols
    g = xp.empty((O, n, OH, Wq), dtype=gy.dtype)        # gy channel-major on the grid,
    g[:, :, :, :OW] = gy[n0:n1].transpose(1, 0, 2, 3)
    if Wq > OW:                                         # zero in the cut-off columns (CPU)
        g[:, :, :, OW:] = 0
    g = g.reshape(G, O // G, L)                                         # (G, O/G, n*OH*Wq)
    gw_part = None
    if need_w:                                          # the columns, recomputed from x
        cols = im2col_batch(x[n0:n1], kernel, settings.stride, settings.padding,
                            settings.dilation, out=buffer)
        # dW = gy @ cols.T over the whole chunk; BLAS reads the transpose in place.
        gw_part = weight_gradient_gemm(g, cols.reshape(G, -1, L))       # (G, O/G, C/G*KH*KW)
    if gx is not None:
        dcols = buffer.reshape(G, -1, L)
        xp.matmul(wT, g, out=dcols)                                     # (G, C/G*KH*KW, n*OH*Wq)
        gx[n0:n1] = col2im_batch(dcols.reshape(K, L), (n, C, H, W), kernel, settings.stride,
                                 settings.padding, settings.dilation)
    return gw_part


def backward_columns(gy, x, weight, settings, need_x=True, need_w=True, chunk_bytes=None):
    """dW = gy @ cols.T and dx = col2im_batch(W.T @ gy), chunk by chunk. Any stride."""
    xp = get_array_module(gy)
    O, G, kernel = weight.shape[0], settings.groups, weight.shape[2:]
    w = weight.reshape(G, O // G, -1)                                   # (G, O/G, C/G*KH*KW)
    gx = xp.empty(x.shape, dtype=x.dtype) if need_x else None
    chunks = _column_chunks(x, kernel, settings, gy.shape[2:], chunk_bytes)
    parts = run_chunks(partial(_columns_backward_chunk, gy, x, w.transpose(0, 2, 1), kernel,
                               settings, gx, need_w), chunks)
    gw = sum_in_chunk_order(parts, w.shape, weight.dtype, xp).reshape(weight.shape) if need_w \
        else None
    return gx, gw


# --- stride 1, CPU: the chunk's images side by side in one plane (conv_layouts.py) ----
def _side_by_side_forward_chunk(x, w, kernel, settings, y, n0, n1):
    H, W = x.shape[2:]
    layout = SideBySide(n1 - n0, H, W, kernel, settings.padding, settings.dilation)
    cols = layout.columns(x[n0:n1])                                     # (C*KH*KW, OH*Wb)
    cols = cols.reshape(settings.groups, -1, layout.L)                  # (G, C/G*KH*KW, OH*Wb)
    y_grid = get_array_module(x).matmul(w, cols).reshape(y.shape[1], layout.L)  # (C_out, OH*Wb)
    y[n0:n1] = layout.images(y_grid)                                    # (n, C_out, OH, OW)


def forward_side_by_side(x, weight, settings, chunk_bytes=None):
    """Stride 1 on the CPU: y = W @ SideBySide.columns(x chunk), read back image by image."""
    if settings.stride != (1, 1) or not SideBySide.fits(weight.shape[2:], settings.padding,
                                                          settings.dilation):
        raise ValueError("forward_side_by_side: needs stride 1 and padding <= (KW-1)*dilation")
    return _forward_columns(_side_by_side_forward_chunk, x, weight, settings, chunk_bytes)


# --- stride 1, CPU, few output channels: the kernel rows folded into the GEMM's rows -----
# With 16-32 output channels the forward GEMM has few rows, so BLAS reads each column of
# the 9x-the-input columns for only 16-32 multiply-adds and waits on memory. Folding the
# KH kernel rows into the GEMM's rows (SideBySide.shifted_planes) copies the plane KW times
# instead of KH*KW, and gives BLAS KH times the rows; the price is KH partial results summed
# at shifted windows, and (KH-1)*dh*Wb extra columns (6% at 32x32, 25% at 8x8). Measured on
# ResNet-20's layers (benchmarks/RESULTS.md): faster up to 32 output channels, slower at 64.
KERNEL_ROWS_MAX_CHANNELS = 32        # output channels per group, at most


def kernel_rows_first(weight, groups):
    """weight (O, C/G, KH, KW) as (G, KH*O/G, C/G*KW): rows (kh, o), columns (c, kw), the
    matrix that multiplies SideBySide.shifted_planes."""
    O, Cg, KH, KW = weight.shape
    w = weight.reshape(groups, O // groups, Cg, KH, KW).transpose(0, 3, 1, 2, 4)
    return w.reshape(groups, KH * (O // groups), Cg * KW)              # (G, KH*O/G, C/G*KW)


def _kernel_rows_forward_chunk(x, w_rows, kernel, settings, y, n0, n1):
    xp = get_array_module(x)
    (H, W), O, G = x.shape[2:], y.shape[1], settings.groups
    layout = SideBySide(n1 - n0, H, W, kernel, settings.padding, settings.dilation)
    planes = layout.shifted_planes(x[n0:n1])                            # (C*KW, Hp*Wb)
    planes = planes.reshape(G, -1, planes.shape[1])                     # (G, C/G*KW, Hp*Wb)
    z = xp.matmul(w_rows, planes)                                       # (G, KH*O/G, Hp*Wb)
    z = z.reshape(G, kernel[0], O // G, -1)                             # (G, KH, O/G, Hp*Wb)
    y_grid = layout.add_kernel_rows(z).reshape(O, layout.L)             # (C_out, OH*Wb)
    y[n0:n1] = layout.images(y_grid)                                    # (n, C_out, OH, OW)


def forward_kernel_rows(x, weight, settings, chunk_bytes=None):
    """Stride 1 on the CPU: z = W (kernel rows first) @ SideBySide.shifted_planes(x chunk);
    y = z summed over the kernel rows at their windows, read back image by image."""
    if settings.stride != (1, 1) or not SideBySide.fits(weight.shape[2:], settings.padding,
                                                          settings.dilation):
        raise ValueError("forward_kernel_rows: needs stride 1 and padding <= (KW-1)*dilation")
    return _forward_columns(_kernel_rows_forward_chunk, x, weight, settings, chunk_bytes,
                            w=kernel_rows_first(weight, settings.groups))


# --- stride 1: backward as a convolution of gy (no col2im) ----------------------------
# For stride 1 the gradient of the input is itself a convolution: gy, padded by
# p' = (K-1)*d - p, convolved with the kernel flipped in both axes and with C_in and
# C_out swapped (the "transposed convolution"):
#     dx[n, c, m] = sum over o, kh, kw of  W[o, c, K-1-kh, K-1-kw] * gy_pad'[n, o, m + kh*d]
# So backward builds the columns of gy instead of the columns of x, and both gradients
# are GEMMs against them:
#     dx          = W_flipped (C, O*KH*KW) @ gycols (O*KH*KW, n*H*Wq')
#     dW_flipped  = x_grid (C, n*H*Wq') @ gycols.T   (x on the same grid, zero elsewhere)
# since dW[o, c, a, b] = sum over pixels m of x[n, c, m] * gy_pad'[n, o, m + (K-1-a)*d].
# Compared with backward_columns this skips the col2im (KH*KW read-modify-write passes
# over the columns) and one im2col, and the dx GEMM's inner dimension is O*KH*KW instead
# of O, which BLAS runs much faster. It pays off through dx only: for dW alone (a
# network's first layer) the columns of x are fewer (C_in*KH*KW rows, not C_out*KH*KW).
def transposed_padding(kernel, padding, dilation):
    """(p'h, p'w) = ((KH-1)*dh - ph, (KW-1)*dw - pw), gy's padding in the transposed
    convolution; None when one is negative (then backward_columns serves)."""
    (KH, KW), (ph, pw), (dh, dw) = kernel, padding, dilation
    pad = ((KH - 1) * dh - ph, (KW - 1) * dw - pw)
    return pad if min(pad) >= 0 else None


def _transposed_side_by_side_chunk(gy, x, w_flip, kernel, pad_t, settings, gx, need_w, n0, n1):
    xp = get_array_module(gy)
    C, (OH, OW), G = x.shape[1], gy.shape[2:], settings.groups
    layout = SideBySide(n1 - n0, OH, OW, kernel, pad_t, settings.dilation)  # output grid: H x W
    gycols = layout.columns(gy[n0:n1])                                  # (C_out*KH*KW, H*Wb)
    gycols = gycols.reshape(G, -1, layout.L)                            # (G, O/G*KH*KW, H*Wb)
    gw_part = None
    if need_w:                                                          # x on the same grid
        x_grid = layout.place(x[n0:n1], xp.empty(C * layout.L, dtype=x.dtype))
        x_grid = x_grid.reshape(G, C // G, layout.L)                    # (G, C/G, H*Wb)
        gw_part = weight_gradient_gemm(x_grid, gycols)                  # (G, C/G, O/G*KH*KW)
    if gx is not None:
        dx = xp.matmul(w_flip, gycols).reshape(C, layout.L)             # (C_in, H*Wb)
        gx[n0:n1] = layout.images(dx)                                   # (n, C_in, H, W)
    return gw_part


def _transposed_grid_chunk(gy, x, w_flip, kernel, pad_t, settings, gx, need_w, n0, n1):
    xp = get_array_module(gy)
    n, (C, H, W), G = n1 - n0, x.shape[1:], settings.groups
    Wq = batch_grid_width(gy.shape[3], W, (1, 1), pad_t, xp)            # CPU: OW + 2p'w; GPU: W
    L = n * H * Wq
    gycols = im2col_batch(gy[n0:n1], kernel, 1, pad_t, settings.dilation)  # (O*KH*KW, n*H*Wq')
    gycols = gycols.reshape(G, -1, L)                                   # (G, O/G*KH*KW, n*H*Wq')
    grid = xp.empty((C, n, H, Wq), dtype=gy.dtype)                     # dx, or x, on the grid
    gw_part = None
    if need_w:
        grid[:, :, :, :W] = x[n0:n1].transpose(1, 0, 2, 3)              # x, channel-major
        if Wq > W:
            grid[:, :, :, W:] = 0
        gw_part = weight_gradient_gemm(grid.reshape(G, C // G, L), gycols)  # (G, C/G, O/G*KH*KW)
    if gx is not None:
        xp.matmul(w_flip, gycols, out=grid.reshape(G, C // G, L))       # (G, C/G, n*H*Wq')
        gx[n0:n1] = grid[:, :, :, :W].transpose(1, 0, 2, 3)             # (n, C_in, H, W)
    return gw_part


def _backward_transposed(chunk, gy, x, weight, settings, need_x, need_w, chunk_bytes):
    """What the two transposed paths share: the flipped kernel, chunks, dW un-flipped."""
    xp = get_array_module(gy)
    (N, _, H, _), (O, Cg, KH, KW), G = x.shape, weight.shape, settings.groups
    pad_t = transposed_padding((KH, KW), settings.padding, settings.dilation)
    if settings.stride != (1, 1) or pad_t is None:
        raise ValueError("backward_transposed: needs stride 1 and padding <= (K-1)*dilation")
    # W_flipped[g, c, (o, kh, kw)] = W[g*O/G + o, c, KH-1-kh, KW-1-kw]
    w_flip = weight.reshape(G, O // G, Cg, KH, KW)[:, :, :, ::-1, ::-1]
    w_flip = w_flip.transpose(0, 2, 1, 3, 4).reshape(G, Cg, O // G * KH * KW)
    per_image = O * KH * KW * H * batch_grid_width(gy.shape[3], x.shape[3], (1, 1), pad_t,
                                                   xp) * gy.itemsize
    gx = xp.empty(x.shape, dtype=x.dtype) if need_x else None
    parts = run_chunks(partial(chunk, gy, x, w_flip, (KH, KW), pad_t, settings, gx, need_w),
                       batch_chunks(N, per_image, xp, chunk_bytes))
    if not need_w:
        return gx, None
    gw_flip = sum_in_chunk_order(parts, (G, Cg, O // G * KH * KW), weight.dtype, xp)
    gw = gw_flip.reshape(G, Cg, O // G, KH, KW)[:, :, :, ::-1, ::-1]   # un-flip, un-swap
    return gx, xp.ascontiguousarray(gw.transpose(0, 2, 1, 3, 4).reshape(weight.shape))


def backward_transposed_side_by_side(gy, x, weight, settings, need_x=True, need_w=True,
                                     chunk_bytes=None):
    """Stride 1 on the CPU: the columns of gy laid out side by side (SideBySide)."""
    return _backward_transposed(_transposed_side_by_side_chunk, gy, x, weight, settings, need_x,
                                need_w, chunk_bytes)


def backward_transposed_grid(gy, x, weight, settings, need_x=True, need_w=True, chunk_bytes=None):
    """Stride 1, the GPU's layout: the columns of gy on im2col_batch's grid (wide on the CPU)."""
    return _backward_transposed(_transposed_grid_chunk, gy, x, weight, settings, need_x, need_w,
                                chunk_bytes)


# --- Winograd for dx (winograd.py), the columns for dW --------------------------------
def backward_winograd(gy, x, weight, settings, need_x=True, need_w=True, chunk_bytes=None):
    """(dx, dW): dx by Winograd as a 3x3 convolution of gy (winograd.input_gradient), dW by
    backward_columns (the columns of x); each None when not needed."""
    winograd.check_winograd("backward_winograd", weight, settings)
    gx = winograd.input_gradient(gy, weight, settings, chunk_bytes) if need_x else None
    gw = backward_columns(gy, x, weight, settings, need_x=False, need_w=True,
                          chunk_bytes=chunk_bytes)[1] if need_w else None
    return gx, gw


# --- the policy ------------------------------------------------------------------------
# Where Winograd wins, as (fewest channels, smallest output side) pairs: C_in and C_out at
# least the first, OH and OW at least the second (benchmarks/bench_winograd.py --extra).
WINOGRAD_WINS = ((64, 16), (128, 8))              # forward; dx alone
WINOGRAD_WINS_WITH_DW = ((64, 32), (128, 16))     # dx by Winograd, then dW alone


def winograd_wins(x, weight, settings, where=WINOGRAD_WINS):
    """Whether Winograd is the faster path for this 3x3 convolution on the CPU (the module
    docstring's rule); x (N, C_in, H, W), weight (C_out, C_in, 3, 3)."""
    if not (_use_winograd and get_array_module(x) is np
            and winograd.fits_winograd(weight.shape[2:], settings)):
        return False
    (H, W), (ph, pw) = x.shape[2:], settings.padding
    channels, side = min(weight.shape[:2]), min(H + 2 * ph - 2, W + 2 * pw - 2)
    return any(channels >= c and side >= size for c, size in where)


def forward_path(x, weight, settings):
    """The forward path FastConv2d takes for these inputs and settings."""
    kernel = weight.shape[2:]
    if is_pointwise(kernel, settings.stride, settings.padding):
        return forward_pointwise
    if winograd_wins(x, weight, settings):
        return winograd.forward_winograd
    if (get_array_module(x) is np and settings.stride == (1, 1)
            and SideBySide.fits(kernel, settings.padding, settings.dilation)):
        if weight.shape[0] // settings.groups <= KERNEL_ROWS_MAX_CHANNELS:
            return forward_kernel_rows
        return forward_side_by_side
    return forward_grid


def backward_path(x, weight, settings, need_x, need_w=True):
    """The backward path FastConv2d takes (need_x, need_w: whether dx, dW are wanted)."""
    kernel = weight.shape[2:]
    if is_pointwise(kernel, settings.stride, settings.padding):
        return backward_pointwise
    where = WINOGRAD_WINS_WITH_DW if need_w else WINOGRAD_WINS
    if need_x and winograd_wins(x, weight, settings, where):
        return backward_winograd                # dx as a 3x3 conv of gy (dW: columns)
    pad_t = transposed_padding(kernel, settings.padding, settings.dilation)
    if not (need_x and settings.stride == (1, 1) and pad_t is not None):
        return backward_columns
    if get_array_module(x) is np and SideBySide.fits(kernel, pad_t, settings.dilation):
        return backward_transposed_side_by_side
    return backward_transposed_grid


class FastConv2d(Function):
    """conv2d for speed (the default): the reference's arithmetic, in chunks, layouts and
    threads. forward_path / backward_path choose the work; keeps: x and the weight."""

    def __init__(self, stride=1, padding=0, dilation=1, groups=1):
        super().__init__()
        self.settings = conv_settings(stride, padding, dilation, groups)

    def forward(self, x, weight, bias):
        """y (N, C_out, OH, OW) of x (N, C_in, H, W), weight (C_out, C_in/G, KH, KW), bias."""
        check_conv_inputs(x, weight, bias, self.settings)
        y = forward_path(x, weight, self.settings)(x, weight, self.settings)
        if bias is not None:
            y += bias.reshape(1, -1, 1, 1)
        self.save_for_backward(x, weight)
        return y

    def backward(self, gy):
        """(dx, dW, db), each None when not needed."""
        x, weight = self.saved
        need_x, need_w, need_b = self.needs_input_grad
        gb = gy.sum(axis=(0, 2, 3)) if need_b else None
        if not (need_x or need_w):
            return None, None, gb
        path = backward_path(x, weight, self.settings, need_x, need_w)
        gx, gw = path(gy, x, weight, self.settings, need_x, need_w)
        return gx, gw, gb


__all__ = ["KERNEL_ROWS_MAX_CHANNELS", "WINOGRAD_WINS", "WINOGRAD_WINS_WITH_DW", "FastConv2d",
           "backward_columns", "backward_path", "backward_pointwise", "backward_transposed_grid",
           "backward_transposed_side_by_side", "backward_winograd", "forward_grid",
           "forward_kernel_rows", "forward_path", "forward_pointwise", "forward_side_by_side",
           "kernel_rows_first", "transposed_padding", "use_winograd", "winograd_wins"]
