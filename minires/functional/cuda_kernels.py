"""Hand-written CuPy kernels for the hot spots of a ResNet on a GPU.

Every function here computes what the portable code of the same name computes
(``conv.im2col`` ..., the forward/backward of ``norm.BatchNorm``, ``activation.ReLU``,
``loss.CrossEntropy``), on CuPy arrays, and is tested against it
(tests/test_cuda_kernels.py). The portable code is the one to read first; these
are the same formulas written as one GPU thread's work.

Why they are faster on a GPU. Portable code is a sequence of ``xp.*`` calls. On a
GPU each call is a kernel launch (a few microseconds of Python and driver time,
whatever the size) and a full trip of its operands through GPU memory. A
ResNet layer's work is small (a 128 x 16 x 32 x 32 batch is 8 MB), so both costs
dominate. A fused kernel does the whole formula in one launch, reading each
input once and writing each output once, with the intermediate values in
registers. im2col/col2im have a second reason: the portable versions loop over
the KH*KW kernel offsets in Python (col2im: one slice-add, i.e. one launch and
one read-modify-write of the whole gradient, per offset); here one thread per
output element does the whole job.

col2im is a *gather*: one thread per input pixel adds up the column entries that
were read from that pixel. The scatter form (one thread per column entry, adding
into its pixel) needs atomic adds, whose order -- and so whose float rounding --
changes from run to run. The gather adds in a fixed order (kh, then kw, as the
portable loop does): results are deterministic.

Kernels are written down below as plain strings and built on first use (``_kernel``
keeps them in ``_KERNELS``): importing this module imports no CuPy and compiles
nothing. CuPy compiles each kernel once per dtype on its first call and caches the
binary on disk (~/.cupy/kernel_cache). im2col and col2im are compiled once per
geometry too, with the sizes as constants (``GEOMETRY``, ``ColumnGeometry``; the
comment above them says why). Only backend.py imports CuPy; it is reached through
``backend.get_cupy()``.

Conventions inside the kernel sources (CuPy's): ``i`` is the index of the element
this thread computes, in C order of the (non-raw) output; ``raw`` arrays are indexed
by hand with a flat C-order index; other array arguments are the element at ``i``
(broadcast); ``T`` stands for the dtype of the arrays (float32, or float64 in
gradient checks), ``R`` for that of the running statistics, ``I`` for the labels.
"""
from __future__ import annotations

from typing import NamedTuple

from ..backend import get_array_module, get_cupy
from .windows import conv_output_size, window_settings

# --- the kernel sources -------------------------------------------------------------------------
# name -> (in_params, out_params, operation): cupy.ElementwiseKernel's arguments.
ELEMENTWISE = {
    # batch norm, per channel: y = (x - mean) * scale + shift, scale = w / sigma, shift = b.
    "bn_apply": (
        "T x, T mean, T scale, T shift",
        "T y",
        "y = (x - mean) * scale + shift;"),
    # The per-channel kernels below run one thread per channel (i = c) and finish the sums
    # the reductions left per (image, channel): ``raw`` (N, C) partial sums, added over the N
    # images in order -- what a second .sum(axis=0) launch would do, here for free.
    # batch norm, training: the batch mean of each channel from its (N, C) partial sums.
    "bn_mean": (
        "raw T partial, int32 N, int32 C, T count",
        "T mean",
        """
        T total = 0;
        for (int n = 0; n < N; ++n) total += partial[(ptrdiff_t)n * C + i];
        mean = total / count;
        """),
    # batch norm, training: from the (N, C) partial sums of squared deviations, the biased
    # variance, 1/sigma, the factors bn_apply uses (scale = w / sigma, shift = b; w = 1 and
    # b = 0 without them: ``raw`` so that a stand-in array can be passed, never read) and, when
    # update, the running statistics in place as PyTorch does (rv gets the unbiased variance):
    #   rm = (1 - m) rm + m mean,   rv = (1 - m) rv + m var M / (M - 1)
    "bn_stats": (
        ("raw T partial_sq, int32 N, int32 C, T count, T eps, raw T weight, raw T bias, "
         "int32 affine_w, int32 affine_b, int32 update, R keep, R m_mean, R m_var, T mean"),
        "T invstd, T scale, T shift, R rm, R rv",
        """
        T sq = 0;
        for (int n = 0; n < N; ++n) sq += partial_sq[(ptrdiff_t)n * C + i];
        const T var = sq / count;
        invstd = (T)1 / sqrt(var + eps);
        scale = affine_w ? invstd * weight[i] : invstd;
        shift = affine_b ? bias[i] : (T)0;
        if (update) {
            rm = rm * keep + m_mean * (R)mean;
            rv = rv * keep + m_var * (R)var;
        }
        """),
    # batch norm, eval: the running statistics give mean, 1/sigma and bn_apply's factors.
    "bn_eval_stats": (
        "R rm, R rv, T eps, raw T weight, raw T bias, int32 affine_w, int32 affine_b",
        "T mean, T invstd, T scale, T shift",
        """
        mean = (T)rm;
        invstd = (T)1 / sqrt((T)rv + eps);
        scale = affine_w ? invstd * weight[i] : invstd;
        shift = affine_b ? bias[i] : (T)0;
        """),
    # batch norm backward, training, per channel: the (N, C) partial sums of gy and of
    # gy * (x - mu) finished over N, giving db = sum(gy), dw = sum(gy * x_hat) and the three
    # per-channel factors of bn_backward_x.
    "bn_backward_stats": (
        ("raw T partial_gy, raw T partial_gy_xc, int32 N, int32 C, T count, T invstd, "
         "raw T weight, int32 affine_w"),
        "T sum_gy, T sum_gy_xhat, T scale, T mean_gy, T mean_gy_xhat",
        """
        T s = 0, sx = 0;
        for (int n = 0; n < N; ++n) {
            s += partial_gy[(ptrdiff_t)n * C + i];
            sx += partial_gy_xc[(ptrdiff_t)n * C + i];
        }
        sum_gy = s;
        sum_gy_xhat = sx * invstd;
        scale = affine_w ? invstd * weight[i] : invstd;
        mean_gy = s / count;
        mean_gy_xhat = sum_gy_xhat / count;
        """),
    # batch norm backward, training mode (the formula in norm.py):
    #   dx = (w / sigma) * (gy - mean(gy) - x_hat * mean(gy * x_hat)),  x_hat = (x - mu) / sigma
    "bn_backward_x": (
        "T gy, T x, T mean, T invstd, T scale, T mean_gy, T mean_gy_xhat",
        "T gx",
        "gx = scale * (gy - mean_gy - (x - mean) * invstd * mean_gy_xhat);"),
    # relu backward from the output y (forward is cupy.maximum(x, 0), one kernel):
    # gy where y > 0, i.e. where x > 0. gy * (T)(y > 0), not y > 0 ? gy : 0, to match the
    # portable code exactly (a NaN in gy stays NaN).
    "relu_backward": (
        "T gy, T y",
        "T gx",
        "gx = gy * (T)(y > (T)0);"),
    # cross-entropy backward: g[row, k] = (p - q) * scale, p = exp(log p), q = the smoothed
    # one-hot target: eps / K everywhere, plus 1 - eps at the label. scale: gy / N (mean),
    # gy (sum), gy[row] (none) -- gy is read on the device, never copied to the host.
    "cross_entropy_backward": (
        "T logp, raw I target, raw T gy, int32 K, T smooth, T hit, T inv_n, int32 per_row",
        "T g",
        """
        const ptrdiff_t row = i / K;
        const int k = i % K;
        T p_minus_q = exp(logp) - smooth;
        if (k == target[row]) p_minus_q -= hit;
        g = p_minus_q * (gy[per_row ? row : 0] * inv_n);
        """),
    # SGD with momentum (optim/sgd.py, PyTorch's formulation), in place on the parameter p and
    # its momentum buffer, one pass instead of 6-8 launches per parameter:
    #   g = grad + wd * p;  buf = g (first step) or momentum * buf + damp * g (damp = 1 - dampening)
    #   d = g + momentum * buf (nesterov) or buf;  p -= lr * d
    # Each product and sum is rounded as the CPU rounds it (compiled with --fmad=false, no fused
    # multiply-add), in the CPU's order, so from the same gradients the weights are bit-identical.
    "sgd_momentum": (
        "T grad, T lr, T wd, T momentum, T damp, int32 first, int32 nesterov",
        "T p, T buf",
        """
        const T g = wd != (T)0 ? p * wd + grad : grad;
        if (first) buf = g;
        else buf = damp != (T)1 ? buf * momentum + damp * g : buf * momentum + g;
        const T d = nesterov ? g + momentum * buf : buf;
        p = p - lr * d;
        """),
    # SGD without momentum: p -= lr * (grad + wd * p).
    "sgd": (
        "T grad, T lr, T wd",
        "T p",
        """
        const T g = wd != (T)0 ? p * wd + grad : grad;
        p = p - lr * g;
        """),
    # The training loop's running sums of an epoch, kept on the GPU (train/loop.py, EpochTotals)
    # so that a step never waits to read its loss back: sums[0] += loss * examples (the loss
    # summed over the examples), sums[1] += correct (examples classified right; a float64
    # holds any count exactly). One thread (loss and correct are 0-d). Rounded as Python
    # rounds ``float(loss) * examples`` added to a float (double, no fused multiply-add), so
    # the sums are those of reading every step's loss back and adding it on the host.
    "epoch_sums": (
        "T loss, I correct, float64 examples",
        "raw float64 sums",
        """
        sums[0] = sums[0] + (double)loss * examples;
        sums[1] = sums[1] + (double)correct;
        """),
}

# Compiler options per kernel (cupy.ElementwiseKernel's ``options``); the others have none.
OPTIONS = {"sgd_momentum": ("--fmad=false",), "sgd": ("--fmad=false",),
           "epoch_sums": ("--fmad=false",)}

# name -> (in_params, out_params, map_expr, reduce_expr, post_map_expr, identity):
# cupy.ReductionKernel's arguments. Both are per-channel sums, called on (N, C, L) arrays
# with the per-channel mean as (1, C, 1) (broadcast), reduced over L (axis 2) into (N, C)
# partial sums, which a per-channel kernel then adds over N (bn_stats, bn_backward_stats):
# a reduction with N*C outputs keeps the GPU busy, where one reduction to C outputs runs only
# a few thread blocks.
REDUCTION = {
    # sum of squared deviations from the mean (the variance, times M), without a temporary
    "bn_sq_dev": ("T x, T mean", "T total", "(x - mean) * (x - mean)", "a + b", "total = a", "0"),
    # sum of gy * (x - mean) (times 1/sigma: sum(gy * x_hat)), without recomputing x_hat
    "bn_sum_gy_xc": ("T gy, T x, T mean", "T total", "gy * (x - mean)", "a + b", "total = a",
                     "0"),
}

# --- im2col / col2im: kernels specialised per geometry --------------------------------------------
# Why specialised. A column entry's place (image, channel, kh, kw, oi, oj) comes from the thread
# index by divisions and remainders by the geometry's sizes. With the sizes as runtime kernel
# arguments each of those is a real integer division (a few dozen instructions on a GPU, which
# has no divider), about ten per thread -- as much work as the copy itself. Written into the
# source as compile-time constants, a division by a constant is a multiply and a shift, a
# stride of 1 or a padding of 0 folds away, and col2im's loops over KH x KW unroll. So each
# kernel below is compiled once per geometry (``ColumnGeometry``: C, H, W, kernel, stride,
# padding, dilation, layout): its source is the body below behind a block of ``constexpr``
# declarations. A ResNet has few geometries (ResNet-20: six for im2col, two for col2im), each
# compiled once and kept in CuPy's disk cache. Only the batch size N stays a runtime argument
# (it changes with the last batch and with evaluation): the threads run over (image, row,
# pixel), image outermost, so N is never divided by, only multiplied by in the channel-major
# address.
#
# No wide grid on the GPU. On the CPU, im2col_batch's stride-1 columns run on the "wide" grid
# (Wq = Wp columns per output row, the extra ones cut off after the GEMM, conv_layouts.py),
# which turns NumPy's many short row copies into one long one. A kernel writes every entry
# from its own thread, so short rows cost it nothing: here the columns are exactly the output
# pixels (Wq = OW, windows.batch_grid_width), and the GEMMs do no throw-away work.
#
# Conventions: the layout is channel-major (C*KH*KW, N*OH*OW) for conv_layouts.im2col_batch,
# image-major (N, C*KH*KW, OH*OW) for conv.im2col; ``index_t`` is 32-bit unless an array has
# 2**31 entries or more (then 64-bit: a second variant of the kernel).
# name -> (in_params, out_params, operation): cupy.ElementwiseKernel's arguments; the operation
# runs behind ColumnGeometry.declarations().
GEOMETRY = {
    # im2col: thread i writes the entry (img, row, p) of the columns, row = (c, kh, kw), p =
    # (oi, oj): padded pixel (oi*SH + kh*DH, oj*SW + kw*DW) of x, or the padding's zero.
    # ``col`` is raw: the threads run image-major whatever the layout (called with size=).
    "im2col": (
        "raw T x, int32 N",
        "raw T col",
        """
        const index_t j = i;
        const int p = j % P;                        // the output pixel (oi, oj)
        const index_t t = j / P;
        const int row = t % ROWS;                   // the row of the columns: (c, kh, kw)
        const index_t img = t / ROWS;
        const int oi = p / OW, oj = p % OW;
        const int c = row / (KH * KW), kh = row / KW % KH, kw = row % KW;
        const int h = oi * SH + kh * DH - PH, w = oj * SW + kw * DW - PW;   // outside: padding
        col[CHANNEL_MAJOR ? ((index_t)row * N + img) * P + p : j] =
            h >= 0 && h < H && w >= 0 && w < W ? x[(img * C + c) * (H * W) + h * W + w] : (T)0;
        """),
    # col2im as a gather: thread i computes input-gradient pixel i = (img, c, h, w) as the sum
    # of every column entry read from it. Entry (kh, kw, oi, oj) read padded pixel
    # (oi*SH + kh*DH, oj*SW + kw*DW), so for each (kh, kw) there is at most one (oi, oj):
    # oi = (h + PH - kh*DH) / SH when that divides exactly and 0 <= oi < OH (likewise oj).
    # Added in the order kh, then kw, from zero: the portable loop's order, the same sums.
    "col2im": (
        "raw T cols, int32 N",
        "T gx",
        """
        const index_t j = i;
        const int w = j % W, h = j / W % H, c = j / (H * W) % C;
        const index_t img = j / (C * H * W);
        T total = 0;
        for (int kh = 0; kh < KH; ++kh) {
            const int di = h + PH - kh * DH;            // = oi * SH
            if (di < 0 || di % SH != 0 || di / SH >= OH) continue;
            for (int kw = 0; kw < KW; ++kw) {
                const int dj = w + PW - kw * DW;        // = oj * SW
                if (dj < 0 || dj % SW != 0 || dj / SW >= OW) continue;
                const int row = (c * KH + kh) * KW + kw;
                const index_t block = CHANNEL_MAJOR ? (index_t)row * N + img : img * ROWS + row;
                total += cols[block * P + di / SH * OW + dj / SW];
            }
        }
        gx = total;
        """),
}

INDEX32_LIMIT = 2**31    # arrays with fewer entries than this get the kernels' 32-bit indexing


class ColumnGeometry(NamedTuple):
    """What an im2col / col2im kernel is compiled for: the input's C, H, W, the window's
    (KH, KW), stride, padding and dilation, the layout of the columns and the index width."""

    C: int
    H: int
    W: int
    KH: int
    KW: int
    sh: int
    sw: int
    ph: int
    pw: int
    dh: int
    dw: int
    channel_major: bool     # (C*KH*KW, N*OH*OW), else (N, C*KH*KW, OH*OW)
    index32: bool           # every array has fewer than INDEX32_LIMIT entries

    @classmethod
    def of(cls, op, x_shape, kernel_size, stride, padding, dilation, channel_major):
        """The geometry of these arguments (checked as the portable functions check them)."""
        N, C, H, W = (int(v) for v in x_shape)
        (KH, KW), (sh, sw), (ph, pw), (dh, dw) = window_settings(op, kernel_size, stride,
                                                                 padding, dilation)
        OH, OW = conv_output_size(H, W, (KH, KW), (sh, sw), (ph, pw), (dh, dw), op)
        largest = N * max(C * H * W, C * KH * KW * OH * OW)
        return cls(C, H, W, KH, KW, sh, sw, ph, pw, dh, dw, bool(channel_major),
                   largest < INDEX32_LIMIT)

    @property
    def out_hw(self):
        """(OH, OW)."""
        return conv_output_size(self.H, self.W, (self.KH, self.KW), (self.sh, self.sw),
                                (self.ph, self.pw), (self.dh, self.dw))

    @property
    def rows(self):
        """C*KH*KW, the rows of the column matrix."""
        return self.C * self.KH * self.KW

    @property
    def pixels(self):
        """OH*OW, the columns per image."""
        OH, OW = self.out_hw
        return OH * OW

    def tag(self):
        """The geometry in a kernel's name, e.g. cm_c16_h32_w32_k3x3_s1x1_p1x1_d1x1."""
        return (f"{'cm' if self.channel_major else 'im'}_c{self.C}_h{self.H}_w{self.W}_"
                f"k{self.KH}x{self.KW}_s{self.sh}x{self.sw}_p{self.ph}x{self.pw}_"
                f"d{self.dh}x{self.dw}" + ("" if self.index32 else "_i64"))

    def declarations(self):
        """The C++ that makes this geometry compile-time constants of a kernel's body."""
        OH, OW = self.out_hw
        index = "unsigned int" if self.index32 else "unsigned long long"
        return (f"\n        typedef {index} index_t;\n"
                f"        constexpr int C = {self.C}, H = {self.H}, W = {self.W}, "
                f"KH = {self.KH}, KW = {self.KW}, OH = {OH}, OW = {OW};\n"
                f"        constexpr int SH = {self.sh}, SW = {self.sw}, PH = {self.ph}, "
                f"PW = {self.pw}, DH = {self.dh}, DW = {self.dw};\n"
                f"        constexpr int P = OH * OW, ROWS = C * KH * KW;\n"
                f"        constexpr bool CHANNEL_MAJOR = {str(self.channel_major).lower()};")


def geometry_kernel_spec(name, geometry):
    """(in_params, out_params, operation) of the kernel ``name`` of GEOMETRY specialised for
    ``geometry`` (a ColumnGeometry): the body behind the geometry's constants."""
    in_params, out_params, body = GEOMETRY[name]
    return in_params, out_params, geometry.declarations() + body


_KERNELS = {}   # name -> the compiled kernel object, filled on first use


def _kernel(name):
    """The kernel called ``name``, built on first use and cached in ``_KERNELS``."""
    kernel = _KERNELS.get(name)
    if kernel is None:
        kernel = _KERNELS[name] = make_kernel(get_cupy(), name)
    return kernel


def _geometry_kernel(name, geometry):
    """The kernel ``name`` of GEOMETRY for ``geometry``, built on first use and cached in
    ``_KERNELS`` as ``name__tag`` (CuPy compiles it on its first call)."""
    key = f"{name}__{geometry.tag()}"
    kernel = _KERNELS.get(key)
    if kernel is None:
        kernel = _KERNELS[key] = get_cupy().ElementwiseKernel(
            *geometry_kernel_spec(name, geometry), name=f"minires_{key}")
    return kernel


def make_kernel(cp, name):
    """The CuPy kernel object for ``name`` (``cp``: the cupy module). Nothing is compiled until
    it is called; tests/test_kernel_compile.py generates and compiles its source without a GPU."""
    if name in ELEMENTWISE:
        return cp.ElementwiseKernel(*ELEMENTWISE[name], name=f"minires_{name}",
                                    options=OPTIONS.get(name, ()))
    return cp.ReductionKernel(*REDUCTION[name], name=f"minires_{name}")


def built_kernels():
    """Names of the kernels built so far in this process (empty until one is used); a
    specialised one as ``name__tag`` (e.g. ``im2col__cm_c16_h32_w32_k3x3_s1x1_p1x1_d1x1``)."""
    return sorted(_KERNELS)


# --- im2col / col2im ------------------------------------------------------------------------------
def _im2col(x, geometry, cols):
    """Run the im2col kernel of ``geometry`` on x into the contiguous ``cols``."""
    xp = get_array_module(x)
    N = x.shape[0]
    _geometry_kernel("im2col", geometry)(xp.ascontiguousarray(x), N, cols,
                                         size=N * geometry.rows * geometry.pixels)
    return cols


def _col2im(cols, x_shape, geometry):
    """Run the col2im kernel of ``geometry`` on the columns: the gradient (N, C, H, W)."""
    xp = get_array_module(cols)
    gx = xp.empty(tuple(x_shape), dtype=cols.dtype)
    _geometry_kernel("col2im", geometry)(xp.ascontiguousarray(cols), int(x_shape[0]), gx)
    return gx


def im2col(x, kernel_size, stride=1, padding=0, dilation=1, out=None):
    """conv.im2col on the GPU: x (N, C, H, W) -> columns (N, C*KH*KW, OH*OW), one kernel.

    cols[n, (c, kh, kw), (i, j)] = x_pad[n, c, i*sh + kh*dh, j*sw + kw*dw]. The portable
    version pads x (one copy) and copies a strided view (a second); here each thread reads
    its pixel (or the zero of the padding) straight from x: one read, one write, no padded copy.
    """
    xp = get_array_module(x)
    geometry = ColumnGeometry.of("im2col", x.shape, kernel_size, stride, padding, dilation, False)
    shape = (x.shape[0], geometry.rows, geometry.pixels)
    if out is not None and tuple(out.shape) != shape:
        raise ValueError(f"im2col: out must have shape {shape}, got {tuple(out.shape)}")
    cols = out if out is not None and out.flags.c_contiguous else \
        xp.empty(shape, dtype=x.dtype)
    _im2col(x, geometry, cols)
    if out is not None and cols is not out:
        out[...] = cols
        return out
    return cols                                                         # (N, C*KH*KW, OH*OW)


def col2im(cols, x_shape, kernel_size, stride=1, padding=0, dilation=1):
    """conv.col2im on the GPU: columns (N, C*KH*KW, OH*OW) -> (N, C, H, W), a gather.

    The portable version does KH*KW slice-adds into a padded buffer (each one a launch and
    a pass over the whole buffer) and cuts the padding off; here one thread per pixel sums
    its (at most KH*KW) entries in registers and writes once -- no atomics, deterministic.
    """
    geometry = ColumnGeometry.of("col2im", x_shape, kernel_size, stride, padding, dilation,
                                 False)
    return _col2im(cols, x_shape, geometry)


def im2col_batch(x, kernel_size, stride=1, padding=0, dilation=1, out=None):
    """conv_layouts.im2col_batch on the GPU: (N, C, H, W) -> (C*KH*KW, N*OH*OW), channel-major.

    The portable version's entries without its wide grid: on the GPU the grid's width is OW
    for every stride (windows.batch_grid_width), so there are no columns to cut off. One
    kernel instead of a padded copy plus a strided copy. ``out``: a flat buffer with room
    for the result, as in the portable version.
    """
    xp = get_array_module(x)
    geometry = ColumnGeometry.of("im2col_batch", x.shape, kernel_size, stride, padding,
                                 dilation, True)
    width = x.shape[0] * geometry.pixels
    size = geometry.rows * width
    cols = xp.empty(size, dtype=x.dtype) if out is None else out[:size]
    _im2col(x, geometry, cols)
    return cols.reshape(geometry.rows, width)                           # (C*KH*KW, N*OH*OW)


def col2im_batch(cols, x_shape, kernel_size, stride=1, padding=0, dilation=1):
    """conv_layouts.col2im_batch on the GPU: (C*KH*KW, N*OH*OW) -> (N, C, H, W), a gather.

    The columns on the GPU's grid, OW wide (no cut-off columns, see im2col_batch).
    """
    geometry = ColumnGeometry.of("col2im_batch", x_shape, kernel_size, stride, padding,
                                 dilation, True)
    return _col2im(cols, x_shape, geometry)


# --- batch norm -----------------------------------------------------------------------------------
def _as_channel(v):
    return v.reshape(1, -1, 1)                                          # (C,) -> (1, C, 1)


def _optional(v, xp, dtype):
    """(array, flag) for a kernel's optional ``raw`` per-channel argument: (v, 1), or when v
    is None a one-element stand-in of the dtype (never read) and 0."""
    return (xp.empty(1, dtype=dtype), 0) if v is None else (v, 1)


def batch_norm_forward(x, weight, bias, running_mean, running_var, training, momentum, eps):
    """norm.BatchNorm.forward on the GPU: returns (y, mean, invstd), the values it saves.

    training: mean and biased variance of the batch, per channel; running_mean/var (when
    not None) updated in place. Otherwise the running statistics normalise.
    Portable: about 8 passes over x (mean, subtract, einsum, scale, shift) plus ~10 tiny
    per-channel ops. Here, training: 5 launches -- the per-(image, channel) sums of x and
    of the squared deviations (two reductions that read x), one kernel that finishes the
    mean, one that finishes the variance and makes every per-channel number (1/sigma,
    scale, shift, running statistics), and one pass that writes y. Eval: 2 launches.
    """
    xp = get_array_module(x)
    N, C = x.shape[:2]
    M = x.size // C
    x3 = xp.ascontiguousarray(x).reshape(N, C, -1)                      # (N, C, L), L = H*W
    mean, invstd, scale, shift = (xp.empty(C, dtype=x.dtype) for _ in range(4))
    w, affine_w = _optional(weight, xp, x.dtype)
    b, affine_b = _optional(bias, xp, x.dtype)
    if training:
        _kernel("bn_mean")(x3.sum(axis=2), N, C, float(M), mean)        # (N, C) sums -> (C,)
        partial_sq = _kernel("bn_sq_dev")(x3, _as_channel(mean), axis=2)   # (N, C)
        update = running_mean is not None
        rm = running_mean if update else xp.empty(C, dtype=x.dtype)     # stand-ins: not written
        rv = running_var if update else xp.empty(C, dtype=x.dtype)
        m = float(momentum)
        _kernel("bn_stats")(partial_sq, N, C, float(M), float(eps), w, b, affine_w, affine_b,
                            int(update), 1.0 - m, m, m * M / (M - 1), mean,
                            invstd, scale, shift, rm, rv)
    else:
        _kernel("bn_eval_stats")(running_mean, running_var, float(eps), w, b, affine_w, affine_b,
                                 mean, invstd, scale, shift)
    y3 = _kernel("bn_apply")(x3, _as_channel(mean), _as_channel(scale), _as_channel(shift))
    return y3.reshape(x.shape), mean, invstd


def batch_norm_backward(gy, x, mean, invstd, weight, training, needs_input_grad):
    """norm.BatchNorm.backward on the GPU: returns (dx, dw, db) (None where not needed).

    Same closed form (see norm.py). Portable: ~9 passes over activation-sized arrays
    (x_hat recomputed into a temporary, einsum, four in-place updates of dx). Here, training:
    4 launches -- the per-(image, channel) sums of gy and of gy * (x - mu) (two reductions),
    one kernel that finishes them and makes db, dw and dx's per-channel factors, and one
    that writes dx from gy and x. Eval mode without dw, db: dx = gy * w / sigma, 2 launches.
    """
    xp = get_array_module(gy)
    need_x, need_w, need_b = needs_input_grad
    N, C = x.shape[:2]
    M = x.size // C
    gy3 = xp.ascontiguousarray(gy).reshape(N, C, -1)                    # (N, C, L)
    x3 = xp.ascontiguousarray(x).reshape(N, C, -1)                      # (N, C, L)
    sum_gy = sum_gy_xhat = None
    if training or need_w or need_b:
        sum_gy, sum_gy_xhat, scale, mean_gy, mean_gy_xhat = (xp.empty_like(invstd)
                                                             for _ in range(5))
        w, affine_w = _optional(weight, xp, invstd.dtype)
        partial_gy_xc = _kernel("bn_sum_gy_xc")(gy3, x3, _as_channel(mean), axis=2)  # (N, C)
        _kernel("bn_backward_stats")(gy3.sum(axis=2), partial_gy_xc, N, C, float(M), invstd,
                                     w, affine_w, sum_gy, sum_gy_xhat, scale, mean_gy,
                                     mean_gy_xhat)
    else:
        scale = invstd if weight is None else invstd * weight           # (C,) w / sigma
    gx = None
    if need_x:
        if training:
            gx = _kernel("bn_backward_x")(gy3, x3, _as_channel(mean), _as_channel(invstd),
                                          _as_channel(scale), _as_channel(mean_gy),
                                          _as_channel(mean_gy_xhat))
        else:
            gx = gy3 * _as_channel(scale)
        gx = gx.reshape(x.shape)
    return gx, (sum_gy_xhat if need_w else None), (sum_gy if need_b else None)


# --- relu -----------------------------------------------------------------------------------------
def relu_backward(gy, y):
    """activation.ReLU.backward on the GPU: gy * (y > 0), y the forward's output, in one
    kernel (CuPy's ``gy * (y > 0)`` would be two and a temporary mask)."""
    return _kernel("relu_backward")(gy, y)


# --- cross-entropy --------------------------------------------------------------------------------
def cross_entropy_backward(logp, target, gy, label_smoothing=0.0, reduction="mean"):
    """loss.CrossEntropy.backward on the GPU: d loss / d logits = (p - q) * gy (/ N for mean).

    logp: (N, K) log-probabilities saved by forward; target: (N,) integer labels; gy: the
    incoming gradient (a 0-d array, or (N,) for reduction="none"). One kernel; the portable
    version is five launches (exp, subtract, an arange, the scatter at the labels, the
    scaling) plus the arange's allocation.
    """
    xp = get_array_module(logp)
    N, K = logp.shape
    eps = float(label_smoothing)
    gy = xp.asarray(gy, dtype=logp.dtype).reshape(-1)                   # (1,) or (N,)
    g = xp.empty_like(logp)
    inv_n = 1.0 / N if reduction == "mean" and N else 1.0
    _kernel("cross_entropy_backward")(logp, xp.ascontiguousarray(target), gy, K, eps / K,
                                      1.0 - eps, inv_n, int(reduction == "none"), g)
    return g


# --- the training loop's sums -------------------------------------------------------------------
def add_to_epoch_sums(sums, loss, correct, examples):
    """sums (2,) float64 on the device += (loss * examples, correct), in place, one launch:
    a training step's mean loss (0-d) and count of correct predictions (0-d, integer) added
    without reading them back (train/loop.py's EpochTotals reads ``sums`` when it needs them)."""
    _kernel("epoch_sums")(loss, correct, float(examples), sums)


# --- SGD ------------------------------------------------------------------------------------------
def sgd_update(p, grad, buf, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
               first=False):
    """optim.SGD's update of one parameter on the GPU, in place, in one launch: ``p`` and, with
    momentum, its buffer ``buf`` (``first``: the buffer is new, it takes the gradient).

    The portable update is 6 to 8 launches per parameter (the weight decay term, the momentum
    buffer, the Nesterov term, the step) -- for a ResNet-20, 400 launches of a few
    microseconds each on arrays of a few thousand numbers. Rounded as the CPU rounds it.
    """
    if buf is None:
        _kernel("sgd")(grad, float(lr), float(weight_decay), p)
    else:
        _kernel("sgd_momentum")(grad, float(lr), float(weight_decay), float(momentum),
                                1.0 - float(dampening), int(first), int(nesterov), p, buf)


__all__ = ["ELEMENTWISE", "GEOMETRY", "INDEX32_LIMIT", "OPTIONS", "REDUCTION", "ColumnGeometry",
           "add_to_epoch_sums", "batch_norm_backward", "batch_norm_forward", "built_kernels",
           "col2im", "col2im_batch", "cross_entropy_backward", "geometry_kernel_spec", "im2col",
           "im2col_batch", "make_kernel", "relu_backward", "sgd_update"]
