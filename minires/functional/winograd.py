"""Winograd F(2x2, 3x3) (Lavin & Gray 2016): a 3x3, stride-1 convolution with fewer multiplies.

Why it can be faster. A direct 3x3 convolution spends 9 multiplies per input channel on
each output pixel, so 36 on a 2x2 block of outputs. Winograd's minimal filtering computes
a 2x2 block from the 4x4 input tile under it with 16: transform the tile (additions
only), multiply element-wise by the transformed kernel, transform back (additions only).
Summed over input channels, the 16 element-wise products of one tile position become
16 matrix products, one per position (a, b) of the 4x4 transformed tile:

    M[a, b] (K, P) = U[a, b] (K, C) @ V[a, b] (C, P),     P = N*TH*TW tiles

2.25x fewer multiply-adds than im2col's GEMM, and V (16*C values per 4 output pixels)
is less than half the size of im2col's columns (9*C values per output pixel). The
price: 16 GEMMs with inner dimension C instead of one with 9*C (BLAS runs short inner
dimensions less efficiently), and the transforms' additions, which are NumPy passes
over memory. Whether it wins is a measurement (benchmarks/bench_winograd.py).

The one-dimensional algorithm F(2, 3): outputs y0, y1 of the 3-tap filter g over the
4 inputs d0..d3 (y0 = d0 g0 + d1 g1 + d2 g2, y1 = d1 g0 + d2 g1 + d3 g2) are

    m1 = (d0 - d2) g0        m2 = (d1 + d2) (g0 + g1 + g2) / 2
    m4 = (d1 - d3) g2        m3 = (d2 - d1) (g0 - g1 + g2) / 2
    y0 = m1 + m2 + m3        y1 = m2 - m3 - m4

four multiplies instead of six. In matrices, y = A^T [(G g) * (B^T d)], with

          [1  0 -1  0]          [ 1    0    0 ]
    B^T = [0  1  1  0]      G = [1/2  1/2  1/2]      A^T = [1  1  1  0]
          [0 -1  1  0]          [1/2 -1/2  1/2]            [0  1 -1 -1]
          [0  1  0 -1]          [ 0    0    1 ]

B^T's rows are the four input combinations (d0 - d2, d1 + d2, d2 - d1, d1 - d3), G's rows
the matching filter combinations, A^T's rows the two output sums. Nesting the 1-D
algorithm along rows and columns gives F(2x2, 3x3) on a 4x4 tile d and a 3x3 kernel g:

    Y (2x2) = A^T [ (G g G^T) * (B^T d B) ] A          (* element-wise, 16 multiplies)

U = G g G^T depends on the weights only (once per call); V = B^T d B on the input only.
Output tiles are 2x2 and input tiles 4x4, overlapping by 2: tile (th, tw) reads padded
rows 2*th .. 2*th+3 and columns 2*tw .. 2*tw+3. When OH or OW is odd the last tile
reaches one row/column past the padded input: it reads zeros there (extra padding) and
its extra output row/column is cropped.

The input gradient. For stride 1, dx is itself a 3x3 convolution: of gy, with the kernel
flipped in both axes and C_in / C_out swapped, and padding 2 - p (conv_fast.py, the
transposed backward). So ``input_gradient`` computes dx with the same forward; dW
stays on conv_fast's ``backward_columns`` (Winograd for dW would need F(3x3, 2x2), a
different transform, for a gradient the columns path already computes well), and
conv_fast.backward_winograd puts the two together.

How the fast version lays out its work (the comment above ``_parity_planes`` says why):
the input split by row and column parity, so that every pass of the transforms is a few
long contiguous NumPy loops; V and M as (16, C or K, tiles) so that the 16 GEMMs are one
``matmul`` call; the batch in chunks of about ``parallel.get_chunk_bytes()`` bytes of V
and M (4 MiB: 2-4 MiB measured best, benchmarks/bench_winograd.py --sweep), on
parallel.py's threads. Float32 stays float32 (U is computed in the weight's dtype).

What this module offers, smallest first:
  winograd_reference   loops over tiles with the explicit matrices: slow, readable
  winograd_weights     U = G g G^T for every (C_out, C_in) pair at once
  forward_winograd     the vectorised forward: chunks of the batch, 16 batched GEMMs
  input_gradient       dx as forward_winograd of gy (conv_fast.backward_winograd adds dW)
  fits_winograd        whether the two fast functions handle a convolution
Both fast functions take conv_fast's arguments (x, weight, settings, chunk_bytes) and
refuse, with a ValueError naming themselves, what they do not handle: only 3x3 kernels,
stride 1, dilation 1, groups 1 and padding 0..2 (what a transposed dx needs). They are
written with get_array_module like conv_fast, but tested and used on the CPU (NumPy)
only; conv_fast.forward_path / backward_path decide when (``conv_fast.WINOGRAD_WINS``).
"""
from __future__ import annotations

from functools import partial

import numpy as np

from ..backend import get_array_module
from .parallel import batch_chunks, run_chunks
from .windows import as_int_pair, conv_settings

# The transforms of F(2x2, 3x3) (module docstring): float64 here, cast to the data's dtype.
B_T = np.array([[1, 0, -1, 0],
                [0, 1, 1, 0],
                [0, -1, 1, 0],
                [0, 1, 0, -1]], dtype=np.float64)
G = np.array([[1, 0, 0],
              [0.5, 0.5, 0.5],
              [0.5, -0.5, 0.5],
              [0, 0, 1]], dtype=np.float64)
A_T = np.array([[1, 1, 1, 0],
                [0, 1, -1, -1]], dtype=np.float64)


def tile_counts(OH, OW):
    """(TH, TW): how many 2x2 output tiles cover an OH x OW output (the last ones may overhang)."""
    return (OH + 1) // 2, (OW + 1) // 2


def fits_winograd(kernel, settings):
    """Whether F(2x2, 3x3) here computes this convolution: a 3x3 kernel, stride 1,
    dilation 1, groups 1, padding 0..2 on each axis (``settings`` a windows.ConvSettings)."""
    return (tuple(kernel) == (3, 3) and settings.stride == (1, 1) and settings.dilation == (1, 1)
            and settings.groups == 1 and max(settings.padding) <= 2)


def check_winograd(op, weight, settings):
    if not fits_winograd(weight.shape[2:], settings):
        raise ValueError(f"{op}: needs a 3x3 kernel, stride 1, dilation 1, groups 1 and "
                         f"padding <= 2; got kernel {tuple(weight.shape[2:])}, stride "
                         f"{settings.stride}, dilation {settings.dilation}, groups "
                         f"{settings.groups}, padding {settings.padding}")


# --- the reference: one tile at a time, the matrices as written -----------------------
def winograd_reference(x, weight, padding=1):
    """conv2d (3x3, stride 1, no bias) by F(2x2, 3x3), tile by tile: slow, readable.

    Raw NumPy arrays in and out, like conv.conv2d_naive (which it is tested against):
    x (N, C, H, W), weight (K, C, 3, 3) with K = C_out; returns y (N, K, OH, OW).
    """
    x, weight = np.asarray(x), np.asarray(weight)
    N, C, H, W = x.shape
    K = weight.shape[0]
    if weight.shape[1:] != (C, 3, 3):
        raise ValueError(f"winograd_reference: weight must be (K, {C}, 3, 3), got {weight.shape}")
    ph, pw = as_int_pair(padding, "padding", "winograd_reference", 0)
    OH, OW = H + 2 * ph - 2, W + 2 * pw - 2
    TH, TW = tile_counts(OH, OW)
    # the padded input, plus a zero row/column when OH/OW is odd (the last tile overhangs)
    d_pad = np.zeros((N, C, 2 * TH + 2, 2 * TW + 2), dtype=x.dtype)
    d_pad[:, :, ph:ph + H, pw:pw + W] = x
    U = np.zeros((K, C, 4, 4))                      # the transformed kernels, 4x4 each
    for k in range(K):
        for c in range(C):
            U[k, c] = G @ weight[k, c] @ G.T
    y = np.zeros((N, K, 2 * TH, 2 * TW), dtype=np.result_type(x, weight))
    for n in range(N):
        for th in range(TH):
            for tw in range(TW):
                V = np.zeros((C, 4, 4))             # the transformed input tiles
                for c in range(C):
                    d = d_pad[n, c, 2 * th:2 * th + 4, 2 * tw:2 * tw + 4]
                    V[c] = B_T @ d @ B_T.T
                for k in range(K):
                    m = (U[k] * V).sum(axis=0)      # 16 products per channel, summed over C
                    y[n, k, 2 * th:2 * th + 2, 2 * tw:2 * tw + 2] = A_T @ m @ A_T.T
    return y[:, :, :OH, :OW]


# --- the fast version: all the tiles of a chunk at once --------------------------------
def winograd_weights(weight):
    """U = G g G^T for every kernel g: weight (K, C, 3, 3) -> U (16, K, C), in weight's dtype.

    U[4*a + b, k, c] is position (a, b) of the transformed kernel of (k, c): the left
    operand of position (a, b)'s GEMM.
    """
    xp = get_array_module(weight)
    K, C = weight.shape[:2]
    g = xp.asarray(G, dtype=weight.dtype)
    u = xp.matmul(xp.matmul(g, weight), g.T)                            # (K, C, 4, 4)
    return xp.ascontiguousarray(u.transpose(2, 3, 0, 1)).reshape(16, K, C)  # (16, K, C)


# The layout. Tile (th, tw) reads padded rows 2*th .. 2*th+3, so row k of every tile is
# every other row of the padded input, starting at row k: a slice with step 2, and the
# same for columns. NumPy runs such slices as many short loops (TW = 4 elements per row
# at 8x8), about ten times slower than one long contiguous loop. So the input is first
# split by row and column parity, D[r, q, ..., i, j] = x_pad[..., 2i + r, 2j + q]
# (Hq x Wq planes, Hq = TH + 1, Wq = TW + 1): then tile row k is D[k % 2] shifted by
# k // 2 rows, and tile column l is D[.., l % 2] shifted by l // 2 columns -- on the
# flattened plane, by one element. Every transform pass is then a few long contiguous
# loops. As in conv_layouts' wide grid, each row of tiles gets one extra tile at
# tw = TW, read from the wrap-around (the next row's first columns), computed and cut
# off: 1/TW of extra work (6% at 32x32, 25% at 8x8).
def _parity_planes(x, pad, tiles):
    """x (n, C, H, W) zero-padded and split by row and column parity: D (2, 2, C, n, Hq, Wq),
    D[r, q, c, m, i, j] = x_pad[m, c, 2i + r, 2j + q] (zero outside x)."""
    xp = get_array_module(x)
    n, C = x.shape[:2]
    (ph, pw), (TH, TW) = pad, tiles
    D = xp.zeros((2, 2, C, n, TH + 1, TW + 1), dtype=x.dtype)          # (r, q, C, n, Hq, Wq)
    for r in range(2):
        for q in range(2):
            r0, q0 = (r - ph) % 2, (q - pw) % 2     # x's first row / column of this parity
            part = x[:, :, r0::2, q0::2]                                # (n, C, H/2, W/2)
            i0, j0 = (r0 + ph) // 2, (q0 + pw) // 2
            D[r, q, :, :, i0:i0 + part.shape[2], j0:j0 + part.shape[3]] = \
                part.transpose(1, 0, 2, 3)                              # (C, n, H/2, W/2)
    return D


def _b_transform(lo, hi, out):
    """out[a] = (B^T d)[a], a = 0..3, for a tile's four rows (or columns) d0..d3 given as
    lo = (d0, d1) and hi = (d2, d3) stacked on the first axis, each for every tile at
    once. B^T's rows: d0 - d2, d1 + d2, d2 - d1, d1 - d3 -- the first and last in one pass."""
    xp = get_array_module(out)
    xp.subtract(lo, hi, out=out[0::3])                                  # d0 - d2, d1 - d3
    xp.add(lo[1], hi[0], out=out[1])                                    # d1 + d2
    xp.subtract(hi[0], lo[1], out=out[2])                               # d2 - d1


def _input_transform(D, TH):
    """V = B^T d B for every 4x4 tile d: D (2, 2, C, n, Hq, Wq) -> V (16, C, n*TH*Wq),
    V[4a + b, c, (m, th, tw)] the position (a, b) of tile (th, tw) of channel c of image m
    (tw = TW is the cut-off extra tile). Rows first (t = B^T d), then columns (V = t B)."""
    xp = get_array_module(D)
    C, n, _, Wq = D.shape[2:]
    L = C * n * TH * Wq                                                 # (C, n, TH, Wq) flat
    t = xp.empty((4, 2, L + 1), dtype=D.dtype)                          # (a, q, L + 1)
    t[:, :, L] = 0                      # one element of slack: the last shifted column
    # tile rows 0, 1 are the row-parity planes r = 0, 1; rows 2, 3 the same, one row down
    _b_transform(D[:, :, :, :, :TH], D[:, :, :, :, 1:TH + 1],          # (r, q, C, n, TH, Wq)
                 t[:, :, :L].reshape(4, 2, C, n, TH, Wq))               # (a, q, C, n, TH, Wq)
    V = xp.empty((4, 4, L), dtype=D.dtype)                              # (a, b, L)
    # tile columns 0, 1 are the column-parity planes q = 0, 1 of t; columns 2, 3 the
    # same, one column (one element of the flattened plane) further on
    _b_transform(t[:, :, :L].transpose(1, 0, 2), t[:, :, 1:].transpose(1, 0, 2),  # (q, a, L)
                 V.transpose(1, 0, 2))                                  # (b, a, L)
    return V.reshape(16, C, n * TH * Wq)                                # (16, C, n*TH*Wq)


def _output_transform(M):
    """Y = A^T m A for every tile: M (4, 4, L) -> Z (2, L, 2), L = K*n*TH*Wq, with
    Z[i, (k, m, th, tw), j] = y[m, k, 2*th + i, 2*tw + j]: for each i, the output rows
    2*th + i whole (tw and j adjacent). A^T's rows: y0 = m0 + m1 + m2, y1 = m1 - m2 - m3."""
    xp = get_array_module(M)
    s = xp.empty((2,) + M.shape[1:], dtype=M.dtype)                     # A^T m: (i, b, L)
    xp.add(M[0], M[1], out=s[0])
    s[0] += M[2]
    xp.subtract(M[1], M[2], out=s[1])
    s[1] -= M[3]
    Z = xp.empty((2, M.shape[2], 2), dtype=M.dtype)                     # (i, L, j)
    xp.add(s[:, 0], s[:, 1], out=Z[:, :, 0])
    Z[:, :, 0] += s[:, 2]
    xp.subtract(s[:, 1], s[:, 2], out=Z[:, :, 1])
    Z[:, :, 1] -= s[:, 3]
    return Z


def _forward_chunk(x, U, pad, y, n0, n1):
    """y[n0:n1] by Winograd: parity planes, input transform, 16 GEMMs, output transform."""
    xp = get_array_module(x)
    n, (K, OH, OW) = n1 - n0, y.shape[1:]
    TH, TW = tile_counts(OH, OW)
    V = _input_transform(_parity_planes(x[n0:n1], pad, (TH, TW)), TH)  # (16, C, n*TH*Wq)
    M = xp.matmul(U, V)                                                 # (16, K, n*TH*Wq)
    Z = _output_transform(M.reshape(4, 4, -1))                          # (i, K*n*TH*Wq, j)
    Z = Z.reshape(2, K, n, TH, 2 * (TW + 1))                            # (i, K, n, TH, 2*Wq)
    for i in range(2):                  # output rows i, i+2, ...; cut to OH x OW
        rows = (OH - i + 1) // 2
        y[n0:n1, :, i::2] = Z[i, :, :, :rows, :OW].transpose(1, 0, 2, 3)  # (n, K, OH/2, OW)


def winograd_chunks(N, C, K, tiles, itemsize, xp, chunk_bytes=None):
    """The batch chunks: about ``chunk_bytes`` (None: parallel.get_chunk_bytes()) of transformed
    tiles V and products M per chunk, the two large arrays (16 * (C + K) values per tile)."""
    per_image = 16 * (C + K) * tiles[0] * (tiles[1] + 1) * itemsize
    return batch_chunks(N, per_image, xp, chunk_bytes)


def forward_winograd(x, weight, settings, chunk_bytes=None):
    """y = conv2d(x, weight) (3x3, stride 1, ``settings``) by F(2x2, 3x3), in chunks of
    the batch on parallel.py's threads. x (N, C, H, W), weight (K, C, 3, 3) -> (N, K, OH, OW)."""
    check_winograd("forward_winograd", weight, settings)
    xp = get_array_module(x)
    N, C, H, W = x.shape
    K = weight.shape[0]
    ph, pw = settings.padding
    OH, OW = H + 2 * ph - 2, W + 2 * pw - 2
    if OH < 1 or OW < 1:
        raise ValueError(f"forward_winograd: kernel 3x3 is larger than the padded input "
                         f"{H + 2 * ph}x{W + 2 * pw}")
    y = xp.empty((N, K, OH, OW), dtype=x.dtype)
    U = winograd_weights(weight)                                        # (16, K, C)
    chunks = winograd_chunks(N, C, K, tile_counts(OH, OW), x.itemsize, xp, chunk_bytes)
    run_chunks(partial(_forward_chunk, x, U, settings.padding, y), chunks)
    return y


def transposed_weight(weight):
    """The kernel of dx as a convolution of gy: flipped in both axes, C_in and C_out
    swapped. weight (K, C, 3, 3) -> (C, K, 3, 3), w_t[c, k, i, j] = weight[k, c, 2-i, 2-j]."""
    xp = get_array_module(weight)
    return xp.ascontiguousarray(weight[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))


def input_gradient(gy, weight, settings, chunk_bytes=None):
    """dx of a 3x3, stride-1 convolution: forward_winograd of gy with the flipped, swapped
    kernel and padding 2 - p (conv_fast.backward_winograd adds dW by the columns of x)."""
    check_winograd("input_gradient", weight, settings)
    ph, pw = settings.padding
    return forward_winograd(gy, transposed_weight(weight), conv_settings(1, (2 - ph, 2 - pw)),
                            chunk_bytes)


__all__ = ["A_T", "B_T", "G", "check_winograd", "fits_winograd", "forward_winograd",
           "input_gradient", "tile_counts", "transposed_weight", "winograd_chunks",
           "winograd_reference", "winograd_weights"]
