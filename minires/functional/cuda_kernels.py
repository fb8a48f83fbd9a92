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
binary on disk (~/.cupy/kernel_cache). Only backend.py imports CuPy; it is reached
through ``backend.get_cupy()``.

Conventions inside the kernel sources (CuPy's): ``i`` is the index of the element
this thread computes, in C order of the (non-raw) output; ``raw`` arrays are indexed
by hand with a flat C-order index; other array arguments are the element at ``i``
(broadcast); ``T`` stands for the dtype of the arrays (float32, or float64 in
gradient checks), ``R`` for that of the running statistics, ``I`` for the labels.
"""
from __future__ import annotations

from ..backend import get_array_module, get_cupy
from .windows import batch_grid_width, conv_output_size, window_settings

# --- the kernel sources -------------------------------------------------------------------------
# name -> (in_params, out_params, operation): cupy.ElementwiseKernel's arguments.
ELEMENTWISE = {
    # im2col: thread i writes entry i of the column matrix, in either layout:
    #   channel_major = 0: (N, C*KH*KW, OH*Wq)   conv.im2col (Wq = OW)
    #   channel_major = 1: (C*KH*KW, N*OH*Wq)    conv_layouts.im2col_batch (Wq = Wp for stride 1,
    #                                            else OW)
    # Entry (img, c, kh, kw, oi, oj) holds padded pixel (oi*sh + kh*dh, oj*sw + kw*dw). On
    # im2col_batch's wide grid (oj up to Wp - 1) that column runs past the row's end and
    # wraps into the next row of the flattened padded plane, or past the plane's end (zero),
    # exactly as the portable flat view does -- so both go through the flat position f.
    "im2col": (
        ("raw T x, int32 N, int32 C, int32 H, int32 W, int32 KH, int32 KW, int32 sh, int32 sw, "
         "int32 ph, int32 pw, int32 dh, int32 dw, int32 OH, int32 Wq, int32 channel_major"),
        "T col",
        """
        ptrdiff_t t = i;
        const int oj = t % Wq;  t /= Wq;
        const int oi = t % OH;  t /= OH;
        const int rows = C * KH * KW;
        int img, row;
        if (channel_major) { img = t % N;  row = t / N; }
        else               { row = t % rows;  img = t / rows; }
        const int kw = row % KW, kh = (row / KW) % KH, c = row / (KH * KW);
        const int Hp = H + 2 * ph, Wp = W + 2 * pw;
        const ptrdiff_t f = (ptrdiff_t)(oi * sh + kh * dh) * Wp + oj * sw + kw * dw;
        T value = 0;
        if (f < (ptrdiff_t)Hp * Wp) {
            const int h = (int)(f / Wp) - ph, w = (int)(f % Wp) - pw;
            if (h >= 0 && h < H && w >= 0 && w < W)
                value = x[((ptrdiff_t)img * C + c) * H * W + (ptrdiff_t)h * W + w];
        }
        col = value;
        """),
    # col2im as a gather: thread i computes input-gradient pixel i = (img, c, h, w) as the sum
    # of every column entry read from it. Entry (kh, kw, oi, oj) read padded pixel
    # (oi*sh + kh*dh, oj*sw + kw*dw), so for each (kh, kw) there is at most one (oi, oj):
    # oi = (h + ph - kh*dh) / sh when that divides exactly and 0 <= oi < OH (likewise oj).
    # Only oj < OW is read: on the wide grid the columns oj >= OW hold zeros (see conv_layouts.py).
    "col2im": (
        ("raw T cols, int32 N, int32 C, int32 H, int32 W, int32 KH, int32 KW, int32 sh, "
         "int32 sw, int32 ph, int32 pw, int32 dh, int32 dw, int32 OH, int32 OW, int32 Wq, "
         "int32 channel_major"),
        "T gx",
        """
        ptrdiff_t t = i;
        const int w = t % W;  t /= W;
        const int h = t % H;  t /= H;
        const int c = t % C;
        const int img = t / C;
        const ptrdiff_t plane = (ptrdiff_t)OH * Wq;      // columns per image and row
        T total = 0;
        for (int kh = 0; kh < KH; ++kh) {
            const int di = h + ph - kh * dh;            // = oi * sh
            if (di < 0 || di % sh != 0 || di / sh >= OH) continue;
            const int oi = di / sh;
            for (int kw = 0; kw < KW; ++kw) {
                const int dj = w + pw - kw * dw;        // = oj * sw
                if (dj < 0 || dj % sw != 0 || dj / sw >= OW) continue;
                const int oj = dj / sw;
                const ptrdiff_t row = ((ptrdiff_t)c * KH + kh) * KW + kw;
                const ptrdiff_t block = channel_major ? row * N + img
                                                      : (ptrdiff_t)img * C * KH * KW + row;
                total += cols[block * plane + (ptrdiff_t)oi * Wq + oj];
            }
        }
        gx = total;
        """),
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
    # relu forward: the output and the mask backward reuses, in one pass over x.
    # y = x * mask, not mask ? x : 0, to match the portable code exactly (NaN stays NaN).
    "relu_forward": (
        "T x",
        "T y, bool mask",
        """
        mask = x > (T)0;
        y = x * (T)mask;
        """),
    "relu_backward": (
        "T gy, bool mask",
        "T gx",
        "gx = gy * (T)mask;"),
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
}

# Compiler options per kernel (cupy.ElementwiseKernel's ``options``); the others have none.
OPTIONS = {"sgd_momentum": ("--fmad=false",), "sgd": ("--fmad=false",)}

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

_KERNELS = {}   # name -> the compiled kernel object, filled on first use


def _kernel(name):
    """The kernel called ``name``, built on first use and cached in ``_KERNELS``."""
    kernel = _KERNELS.get(name)
    if kernel is None:
        kernel = _KERNELS[name] = make_kernel(get_cupy(), name)
    return kernel


def make_kernel(cp, name):
    """The CuPy kernel object for ``name`` (``cp``: the cupy module). Nothing is compiled until
    it is called; tests/test_kernel_compile.py generates and compiles its source without a GPU."""
    if name in ELEMENTWISE:
        return cp.ElementwiseKernel(*ELEMENTWISE[name], name=f"minires_{name}",
                                    options=OPTIONS.get(name, ()))
    return cp.ReductionKernel(*REDUCTION[name], name=f"minires_{name}")


def built_kernels():
    """Names of the kernels built so far in this process (empty until one is used)."""
    return sorted(_KERNELS)


# --- argument helpers (windows.py's, as the portable functions use them) ---------------------
def _geometry(op, H, W, kernel_size, stride, padding, dilation):
    """kernel, stride, padding, dilation as pairs, and (OH, OW)."""
    kernel, stride, padding, dilation = window_settings(op, kernel_size, stride, padding, dilation)
    out_hw = conv_output_size(H, W, kernel, stride, padding, dilation, op)
    return kernel, stride, padding, dilation, out_hw


def _conv_args(x_shape, geometry):
    """The scalar arguments the im2col / col2im kernels share: N, C, H, W, KH, ..., dw, OH."""
    (KH, KW), (sh, sw), (ph, pw), (dh, dw), (OH, _) = geometry
    return (*(int(v) for v in x_shape), KH, KW, sh, sw, ph, pw, dh, dw, OH)


# --- im2col / col2im ------------------------------------------------------------------------------
def im2col(x, kernel_size, stride=1, padding=0, dilation=1, out=None):
    """conv.im2col on the GPU: x (N, C, H, W) -> columns (N, C*KH*KW, OH*OW), one kernel.

    cols[n, (c, kh, kw), (i, j)] = x_pad[n, c, i*sh + kh*dh, j*sw + kw*dw]. The portable
    version pads x (one copy) and copies a strided view (a second); here each thread reads
    its pixel (or the zero of the padding) straight from x: one read, one write, no padded copy.
    """
    xp = get_array_module(x)
    N, C, H, W = x.shape
    geometry = _geometry("im2col", H, W, kernel_size, stride, padding, dilation)
    (KH, KW), (OH, OW) = geometry[0], geometry[4]
    if out is None:
        out = xp.empty((N, C * KH * KW, OH * OW), dtype=x.dtype)
    _kernel("im2col")(xp.ascontiguousarray(x), *_conv_args(x.shape, geometry), OW, 0, out)
    return out                                                          # (N, C*KH*KW, OH*OW)


def col2im(cols, x_shape, kernel_size, stride=1, padding=0, dilation=1):
    """conv.col2im on the GPU: columns (N, C*KH*KW, OH*OW) -> (N, C, H, W), a gather.

    The portable version does KH*KW slice-adds into a padded buffer (each one a launch and
    a pass over the whole buffer) and cuts the padding off; here one thread per pixel sums
    its (at most KH*KW) entries in registers and writes once -- no atomics, deterministic.
    """
    xp = get_array_module(cols)
    N, C, H, W = x_shape
    geometry = _geometry("col2im", H, W, kernel_size, stride, padding, dilation)
    OW = geometry[4][1]
    gx = xp.empty((N, C, H, W), dtype=cols.dtype)
    _kernel("col2im")(xp.ascontiguousarray(cols), *_conv_args(x_shape, geometry), OW, OW, 0, gx)
    return gx


def im2col_batch(x, kernel_size, stride=1, padding=0, dilation=1, out=None):
    """conv_layouts.im2col_batch on the GPU: (N, C, H, W) -> (C*KH*KW, N*OH*Wq), channel-major.

    The same entries as the portable version, wide grid included (Wq = Wp for stride 1:
    the columns j >= OW hold what the portable flat view holds there), in one kernel
    instead of a padded copy plus a strided copy. ``out``: a flat buffer with room for
    the result, as in the portable version.
    """
    xp = get_array_module(x)
    N, C, H, W = x.shape
    geometry = _geometry("im2col_batch", H, W, kernel_size, stride, padding, dilation)
    (KH, KW), (OH, OW) = geometry[0], geometry[4]
    Wq = batch_grid_width(W, OW, geometry[1], geometry[2])
    size = C * KH * KW * N * OH * Wq
    cols = xp.empty(size, dtype=x.dtype) if out is None else out[:size]
    _kernel("im2col")(xp.ascontiguousarray(x), *_conv_args(x.shape, geometry), Wq, 1, cols)
    return cols.reshape(C * KH * KW, N * OH * Wq)                       # (C*KH*KW, N*OH*Wq)


def col2im_batch(cols, x_shape, kernel_size, stride=1, padding=0, dilation=1):
    """conv_layouts.col2im_batch on the GPU: (C*KH*KW, N*OH*Wq) -> (N, C, H, W), a gather.

    As in the portable version, the entries of the wide grid's extra columns (j >= OW)
    must be zero; the gather does not read them at all.
    """
    xp = get_array_module(cols)
    N, C, H, W = x_shape
    geometry = _geometry("col2im_batch", H, W, kernel_size, stride, padding, dilation)
    OW = geometry[4][1]
    Wq = batch_grid_width(W, OW, geometry[1], geometry[2])
    gx = xp.empty((N, C, H, W), dtype=cols.dtype)
    _kernel("col2im")(xp.ascontiguousarray(cols), *_conv_args(x_shape, geometry), OW, Wq, 1, gx)
    return gx


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
def relu_forward(x):
    """activation.ReLU.forward on the GPU: returns (y, mask), mask = x > 0 (kept for backward).

    One pass that reads x once and writes y and the mask; the portable ``mask = x > 0;
    y = x * mask`` is two launches and reads x twice.
    """
    return _kernel("relu_forward")(x)


def relu_backward(gy, mask):
    """activation.ReLU.backward on the GPU: gy * mask.

    CuPy's own ``gy * mask`` is already a single kernel, so this gains little; it is here
    so forward and backward sit side by side and are tested together.
    """
    return _kernel("relu_backward")(gy, mask)


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


__all__ = ["ELEMENTWISE", "OPTIONS", "REDUCTION", "batch_norm_backward", "batch_norm_forward",
           "built_kernels", "col2im", "col2im_batch", "cross_entropy_backward", "im2col",
           "im2col_batch", "make_kernel", "relu_backward", "relu_forward", "sgd_update"]
