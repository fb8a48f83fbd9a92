# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Lesson 03 — Convolution: from a naive loop to im2col
#
# **Goal.** Write a convolution as the obvious seven nested loops, then turn it into
# *one matrix product* with im2col ("image to columns"), derive the backward pass
# (col2im is the transpose of im2col), and check everything against the loop and
# against finite differences. This is exactly `F.conv2d`'s *reference* implementation,
# the class `Conv2d` in `minires/functional/conv.py`; the default, *fast* implementation
# (`conv_fast.py`) computes the same with the work arranged for speed. Section 3 shows
# how to switch between them and checks that they agree.
#
# **Budget without fast mode:** one CIFAR-10 image for the picture, and a speed test
# on a random (8, 16, 16, 16) batch; measured 4-8 s in two runs on a 2-core Intel Xeon
# (2026-12-05). Fast mode: a synthetic image and a smaller speed test, a few seconds.

# %%
import time

import numpy as np
from lesson_utils import FAST, fast_or_full, load_data, mode_line, new_figure, out_dir, save_figure

import minires as mr
import minires.functional as F

OUT = out_dir("03_convolution_im2col")
print(mode_line())
rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. The definition, as loops
#
# Input $x$: (N, C, H, W); weight $w$: (C_out, C, KH, KW); zero padding $p$, stride $s$.
# Output pixel $(i, j)$ of channel $o$ is a dot product between the kernel and the
# window of the (padded) input it covers:
#
# $$ y_{n,o,i,j} = b_o +
#    \sum_{c,k_h,k_w} w_{o,c,k_h,k_w}\; x^{pad}_{n,\,c,\,i s + k_h,\,j s + k_w} $$
#
# and the output size is $OH = \lfloor (H + 2p - KH)/s \rfloor + 1$ (same for $OW$).

# %%
def conv2d_loops(x, w, b, stride=1, padding=0):
    N, C, H, W = x.shape
    O, _, KH, KW = w.shape
    OH = (H + 2 * padding - KH) // stride + 1
    OW = (W + 2 * padding - KW) // stride + 1
    x_pad = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    y = np.zeros((N, O, OH, OW), dtype=x.dtype)
    for n in range(N):
        for o in range(O):
            for i in range(OH):
                for j in range(OW):
                    total = b[o]
                    for c in range(C):
                        for kh in range(KH):
                            for kw in range(KW):
                                total += w[o, c, kh, kw] * x_pad[n, c, i * stride + kh,
                                                                 j * stride + kw]
                    y[n, o, i, j] = total
    return y


x = rng.standard_normal((2, 3, 7, 7))
w = rng.standard_normal((4, 3, 3, 3))
b = rng.standard_normal(4)
y_loops = conv2d_loops(x, w, b, stride=2, padding=1)
y_fast = F.conv2d(mr.tensor(x), mr.tensor(w), mr.tensor(b), stride=2, padding=1).numpy()
print("output shape", y_loops.shape)
assert y_loops.shape == (2, 4, 4, 4)
assert np.allclose(y_loops, y_fast)
assert np.allclose(y_loops, F.conv2d_naive(x, w, b, stride=2, padding=1))
print("our loops == F.conv2d == F.conv2d_naive")

# %% [markdown]
# ## 2. im2col: every window becomes a column
#
# The inner three loops are a dot product between the flattened kernel (length
# C·KH·KW) and the flattened window. Lay every window of image $n$ out as one column
# of a matrix `cols[n]` of shape (C·KH·KW, OH·OW); stack the kernels as rows of
# `w_mat` (C_out, C·KH·KW). Then the whole convolution is
#
# $$ y[n] = w_{mat}\;\mathrm{cols}[n] \quad (C_{out}, OH\cdot OW) $$
#
# — a single matrix product that BLAS computes at close to the machine's peak speed.
# The row order (c, kh, kw) matches `w.reshape(C_out, -1)`.

# %%
def im2col_loops(x, KH, KW, stride=1, padding=0):
    N, C, H, W = x.shape
    OH = (H + 2 * padding - KH) // stride + 1
    OW = (W + 2 * padding - KW) // stride + 1
    x_pad = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    cols = np.zeros((N, C * KH * KW, OH * OW), dtype=x.dtype)
    for i in range(OH):
        for j in range(OW):
            window = x_pad[:, :, i * stride:i * stride + KH, j * stride:j * stride + KW]
            cols[:, :, i * OW + j] = window.reshape(N, C * KH * KW)     # (N, C*KH*KW)
    return cols


cols = im2col_loops(x, 3, 3, stride=2, padding=1)
print("cols:", cols.shape, "  w_mat:", w.reshape(4, -1).shape)
assert np.array_equal(cols, F.im2col(x, 3, stride=2, padding=1))
y_gemm = (w.reshape(4, -1) @ cols).reshape(2, 4, 4, 4) + b.reshape(1, 4, 1, 1)
assert np.allclose(y_gemm, y_loops)
print("im2col by loops == F.im2col, and w_mat @ cols == the convolution")

# %% [markdown]
# `F.im2col` builds the same matrix without any Python loop over pixels: a
# *strided view* of the padded input (`as_strided`: no copy, just new strides) of
# shape (N, C, KH, KW, OH, OW), then one copy into the contiguous matrix BLAS wants.
# A 3x3 convolution's matrix is 9 times the size of its input — memory traffic, not
# arithmetic, is what im2col costs.

# %%
assert F.im2col(x, 3, padding=1).size == 9 * x.size      # stride 1, padding 1: one column per pixel

# %% [markdown]
# ## 3. The backward pass, and col2im
#
# From $y[n] = w_{mat}\,\mathrm{cols}[n]$ (lesson 02's matrix rule):
#
# * $\partial L/\partial w_{mat} = \sum_n g[n]\,\mathrm{cols}[n]^\top$,
# * $\partial L/\partial \mathrm{cols}[n] = w_{mat}^\top g[n]$,
# * $\partial L/\partial x = \mathrm{col2im}(\partial L/\partial\mathrm{cols})$: every
#   entry of a column is added back onto the pixel it was read from. A pixel read by
#   several overlapping windows receives the sum.
#
# col2im is the **transpose (adjoint)** of im2col: for any $x$ and any column matrix
# $c$, $\langle \mathrm{col2im}(c), x\rangle = \langle c, \mathrm{im2col}(x)\rangle$.

# %%
c = rng.standard_normal(cols.shape)
lhs = np.sum(F.col2im(c, x.shape, 3, stride=2, padding=1) * x)
rhs = np.sum(c * F.im2col(x, 3, stride=2, padding=1))
print(f"<col2im(c), x> = {lhs:.10f}   <c, im2col(x)> = {rhs:.10f}")
assert np.isclose(lhs, rhs, rtol=1e-12)

g = rng.standard_normal(y_loops.shape)                     # dL/dy
g_mat = g.reshape(2, 4, -1)                                # (N, C_out, OH*OW)
dw_by_hand = sum(g_mat[n] @ cols[n].T for n in range(2)).reshape(w.shape)
dx_by_hand = F.col2im(np.stack([w.reshape(4, -1).T @ g_mat[n] for n in range(2)]), x.shape, 3,
                      stride=2, padding=1)
db_by_hand = g.sum(axis=(0, 2, 3))

x_t, w_t, b_t = (mr.tensor(a, requires_grad=True) for a in (x, w, b))
F.conv2d(x_t, w_t, b_t, stride=2, padding=1).backward(g)
assert np.allclose(w_t.grad, dw_by_hand)
assert np.allclose(x_t.grad, dx_by_hand)
assert np.allclose(b_t.grad, db_by_hand)
print("dW, dx (col2im), db by hand == F.conv2d's backward")

# %% [markdown]
# And against finite differences, for several strides, paddings, dilations and
# groups (small shapes: the check does two forward passes per input element).

# %%
settings = [{"stride": 1, "padding": 0}, {"stride": 2, "padding": 1},
            {"padding": 2, "dilation": 2}, {"stride": 1, "padding": 1, "groups": 2}]
for kw in settings:
    groups = kw.get("groups", 1)
    xs = mr.tensor(rng.standard_normal((2, 4, 5, 5)), requires_grad=True)
    ws = mr.tensor(rng.standard_normal((4, 4 // groups, 3, 3)), requires_grad=True)
    bs = mr.tensor(rng.standard_normal(4), requires_grad=True)
    assert mr.gradcheck(lambda a, k, c, kw=kw: F.conv2d(a, k, c, **kw), xs, ws, bs)
    print("gradcheck passed:", kw)

# %% [markdown]
# ### The code that runs: reference or fast
#
# `F.conv2d` (and so `nn.Conv2d`) has two implementations, chosen in one place:
#
# * `"reference"`: `Conv2d` in `minires/functional/conv.py`, this lesson line by line —
#   `im2col`, one matmul batched over images and groups; in backward dW by a matmul and
#   dx by `col2im`. Read it next to this lesson.
# * `"fast"` (the default): `FastConv2d` in `minires/functional/conv_fast.py`, the same
#   arithmetic in chunks of a few images (about 4 MiB of columns each), the columns of a
#   chunk in one matrix, the chunks on all cores, and for stride 1 a backward that needs
#   no col2im. Its docstring lists every path; the tests compare each with the reference.
#
# Switch for the whole program with `F.use_conv("reference")` (it returns the previous
# choice), or for one block with `with F.conv_implementation("reference"): ...`. The
# `grad_fn` of the output names the one that ran.

# %%
def conv_and_grads(stride, padding):
    """y, and [y, dx, dW, db] for a fixed dL/dy, with the implementation in use."""
    xt, wt, bt = (mr.tensor(a, requires_grad=True) for a in (x, w, b))
    y = F.conv2d(xt, wt, bt, stride=stride, padding=padding)
    y.backward(np.random.default_rng(1).standard_normal(y.shape))
    return y, [y.numpy(), xt.grad, wt.grad, bt.grad]


print("in use:", F.conv_in_use())
for stride, padding in [(2, 1), (1, 1)]:          # stride 1 takes the fast path's own tricks
    with F.conv_implementation("reference"):
        y_ref, reference = conv_and_grads(stride, padding)
    y_fast, fast = conv_and_grads(stride, padding)
    for name, a, c in zip(["y", "dx", "dW", "db"], reference, fast):
        assert np.allclose(a, c, rtol=1e-10, atol=1e-10), (stride, name)
    print(f"stride {stride}: {y_ref.grad_fn.name} (reference) and {y_fast.grad_fn.name} (fast) "
          f"agree on y, dx, dW, db")
previous = F.use_conv("reference")                # the same switch, without a block
assert F.conv_in_use() == "reference" and previous == "fast"
F.use_conv(previous)

# %% [markdown]
# ## 4. Why bother: speed
#
# The loops do the same arithmetic as the matrix product, one Python operation at a
# time. Timings depend on the machine and its load, so they are reported, not
# asserted.

# %%
shape = fast_or_full((2, 4, 8, 8), (8, 16, 16, 16))
xb = rng.standard_normal(shape).astype(np.float32)
wb = rng.standard_normal((shape[1], shape[1], 3, 3)).astype(np.float32)
bb = np.zeros(shape[1], dtype=np.float32)
start = time.perf_counter()
slow = conv2d_loops(xb, wb, bb, padding=1)
t_loops = time.perf_counter() - start
times = {}
for implementation in ("reference", "fast"):
    with F.conv_implementation(implementation):
        start = time.perf_counter()
        y_gemm = F.conv2d(mr.tensor(xb), mr.tensor(wb), mr.tensor(bb), padding=1).numpy()
        times[implementation] = time.perf_counter() - start
    assert np.allclose(slow, y_gemm, atol=1e-3)
t_gemm = times["reference"]
print(f"input {shape}, 3x3 kernel: loops {t_loops * 1e3:.1f} ms, im2col + GEMM "
      f"{t_gemm * 1e3:.2f} ms: {t_loops / t_gemm:.0f}x faster in this run "
      f"(fast implementation: {times['fast'] * 1e3:.2f} ms)")

# %% [markdown]
# ## 5. Max pooling and its backward
#
# Max pooling reads the same windows as a convolution and keeps the largest value of
# each. Only that one input moved the output, so the backward pass sends each output's
# gradient to the position of its window's maximum (the argmax, kept from the forward
# pass) and zero to the others; where windows overlap, a pixel that is the maximum of
# several windows collects the sum. (Ties have no derivative; inputs are drawn so that
# there are none.)

# %%
xp_ = rng.standard_normal((1, 1, 4, 4))
xm = mr.tensor(xp_, requires_grad=True)
ym = F.max_pool2d(xm, 2)                                   # (1, 1, 2, 2)
gm = rng.standard_normal(ym.shape)
ym.backward(gm)
expected = np.zeros_like(xp_)
for i in range(2):
    for j in range(2):
        window = xp_[0, 0, 2 * i:2 * i + 2, 2 * j:2 * j + 2]
        a, b = np.unravel_index(window.argmax(), window.shape)
        expected[0, 0, 2 * i + a, 2 * j + b] = gm[0, 0, i, j]   # the gradient goes to the argmax
assert np.allclose(xm.grad, expected)
print("max-pool backward routes each output gradient to its window's maximum")

# %% [markdown]
# ## 6. What a convolution sees
#
# A 3x3 kernel is a small pattern detector. The classic edge detectors (Sobel) as
# convolution weights, applied to an image:

# %%
data = load_data(n_train=1, n_test=1, fast_train=1, fast_test=1, fast_size=32)
image = data.train.images[:1].astype(np.float32) / 255.0          # (1, 3, 32, 32)
gray = image.mean(axis=1, keepdims=True)                           # (1, 1, 32, 32)
sobel_x = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float32)
kernels = np.stack([sobel_x, sobel_x.T])[:, None]                 # (2, 1, 3, 3)
edges = F.conv2d(mr.tensor(gray), mr.tensor(kernels), padding=1).numpy()
assert edges.shape == (1, 2, 32, 32)

fig = new_figure((9, 3))
if fig is not None:
    axes = fig.subplots(1, 4)
    axes[0].imshow(image[0].transpose(1, 2, 0))
    axes[0].set_title("CIFAR-10 image" if not FAST else "synthetic image")
    axes[1].imshow(gray[0, 0], cmap="gray")
    axes[1].set_title("gray")
    axes[2].imshow(edges[0, 0], cmap="RdBu")
    axes[2].set_title("vertical edges")
    axes[3].imshow(edges[0, 1], cmap="RdBu")
    axes[3].set_title("horizontal edges")
    for ax in axes:
        ax.axis("off")
save_figure(fig, OUT / "sobel.png")

# %% [markdown]
# ## Try this
#
# 1. A 1x1 convolution with stride 1 needs no im2col at all: check that
#    `F.conv2d(x, w1)` equals `np.einsum("oc,nchw->nohw", w1[:, :, 0, 0], x)`.
# 2. With `groups=C` (a depthwise convolution) each channel has its own kernel. How
#    many parameters does a depthwise 3x3 layer on 64 channels have, against a
#    normal one?
# 3. Extend `conv2d_loops` with `dilation` and compare with `F.conv2d(..., dilation=2)`.
# 4. Time `F.im2col` against `im2col_loops` on a (16, 16, 32, 32) batch.

# %%
print("lesson 03 done: every claim above was checked with an assert; timings are reported")
