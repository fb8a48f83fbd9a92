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
# # Lesson 04 — Batch normalisation and its backward pass
#
# **Goal.** Derive the backward pass of batch norm on paper, write it as a minires
# `Function`, check it against `F.batch_norm` and against finite differences — and see
# why checking with a plain `sum()` loss would have let a wrong backward through,
# while the random projection `sum(out * r)` that `mr.gradcheck` uses catches it.
#
# **Budget without fast mode:** one batch of 64 CIFAR-10 training images through one
# convolution, for the picture; measured 1 s on a 2-core CPU. Fast mode: 64 synthetic
# images.

# %%
import numpy as np
from lesson_utils import load_data, mode_line, new_figure, out_dir, save_figure

import minires as mr
import minires.functional as F
from minires import Function

OUT = out_dir("04_batch_norm")
print(mode_line())
rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. The forward pass
#
# For each channel, over its $M = N\cdot H\cdot W$ values:
#
# $$ \mu = \frac1M\sum_i x_i,\quad \sigma^2 = \frac1M\sum_i (x_i-\mu)^2,\quad
#    \hat x_i = \frac{x_i-\mu}{\sqrt{\sigma^2+\epsilon}},\quad y_i = \gamma\,\hat x_i + \beta $$
#
# In training mode the statistics are the batch's, and running averages are updated
# for later (PyTorch's rule, with the *unbiased* variance $\sigma^2 M/(M-1)$):
# `running = (1 - momentum) * running + momentum * batch_statistic`. In evaluation mode
# the running statistics are used instead, so $y$ is a fixed affine function of $x$.

# %%
x = rng.standard_normal((4, 3, 5, 5)) * 2.0 + 1.0            # (N, C, H, W), float64
gamma, beta = rng.standard_normal(3), rng.standard_normal(3)
running_mean, running_var = np.zeros(3), np.ones(3)

y = F.batch_norm(mr.tensor(x), running_mean, running_var, mr.tensor(gamma), mr.tensor(beta),
                 training=True, momentum=0.1).numpy()

mu = x.mean(axis=(0, 2, 3))
var = x.var(axis=(0, 2, 3))
x_hat = (x - mu.reshape(1, 3, 1, 1)) / np.sqrt(var.reshape(1, 3, 1, 1) + 1e-5)
M = x.size // 3
assert np.allclose(y, gamma.reshape(1, 3, 1, 1) * x_hat + beta.reshape(1, 3, 1, 1))
assert np.allclose(running_mean, 0.1 * mu)                       # updated in place
assert np.allclose(running_var, 0.9 + 0.1 * var * M / (M - 1))
print("per-channel mean of y:", y.mean(axis=(0, 2, 3)).round(6), "= beta:", beta.round(6))
assert np.allclose(y.mean(axis=(0, 2, 3)), beta)        # x_hat has mean 0 in every channel

# %% [markdown]
# ## 2. The backward pass, on paper
#
# Write $g_i = \partial L/\partial y_i$. The easy parts: $\partial L/\partial\beta =
# \sum_i g_i$ and $\partial L/\partial\gamma = \sum_i g_i \hat x_i$. The hard part:
# every $\hat x_j$ depends on every $x_i$ of the channel, through $\mu$ and $\sigma$.
# With $\partial\mu/\partial x_i = 1/M$ and $\partial\sigma/\partial x_i = \hat x_i/M$:
#
# $$ \frac{\partial \hat x_j}{\partial x_i} =
#    \frac1\sigma\Big(\delta_{ij} - \frac1M - \frac{\hat x_i \hat x_j}{M}\Big) $$
#
# Summing over $j$ with weights $\gamma g_j$:
#
# $$ \frac{\partial L}{\partial x_i} =
#    \frac{\gamma}{\sigma}\Big(g_i - \overline{g} - \hat x_i\, \overline{g\hat x}\Big) $$
#
# where the bars are means over the channel's $M$ values. Two sums per channel —
# that is the whole backward pass. Here it is as an op (without $\gamma$, $\beta$ to
# keep it short; they are one multiply and one add).

# %%
class MyBatchNorm(Function):
    """Training-mode batch norm without affine parameters. keeps: x_hat and 1/sigma."""

    def __init__(self, eps=1e-5):
        super().__init__()
        self.eps = eps

    def forward(self, x):
        xp = mr.get_array_module(x)
        mu = x.mean(axis=(0, 2, 3), keepdims=True)                    # (1, C, 1, 1)
        invstd = 1 / xp.sqrt(x.var(axis=(0, 2, 3), keepdims=True) + self.eps)
        x_hat = (x - mu) * invstd
        self.save_for_backward(x_hat, invstd)
        return x_hat

    def backward(self, g):
        x_hat, invstd = self.saved
        g_mean = g.mean(axis=(0, 2, 3), keepdims=True)
        gx_mean = (g * x_hat).mean(axis=(0, 2, 3), keepdims=True)
        return (invstd * (g - g_mean - x_hat * gx_mean),)


def my_batch_norm(x):
    return MyBatchNorm()(x)


x_t = mr.tensor(x, requires_grad=True)
r = rng.standard_normal(x.shape)
(my_batch_norm(x_t) * r).sum().backward()
mine = x_t.grad
x_t.zero_grad()
(F.batch_norm(x_t, None, None, training=True) * r).sum().backward()
assert np.allclose(mine, x_t.grad)
assert mr.gradcheck(my_batch_norm, mr.tensor(x, requires_grad=True))
print("MyBatchNorm: same gradient as F.batch_norm, and gradcheck passes")

# %% [markdown]
# ## 3. The bug a `sum()` check cannot see
#
# Suppose we forget the last term, $\hat x_i\,\overline{g\hat x}$ — an easy slip.

# %%
class BuggyBatchNorm(MyBatchNorm):
    def backward(self, g):
        _, invstd = self.saved
        return (invstd * (g - g.mean(axis=(0, 2, 3), keepdims=True)),)   # a term is missing


def buggy_batch_norm(x):
    return BuggyBatchNorm()(x)


# %% [markdown]
# A tempting way to test a backward pass is to call `out.sum().backward()` and compare
# with finite differences of `out.sum()`. But the output of batch norm has mean zero
# in every channel, **whatever** $x$ is: $\sum_i \hat x_i = 0$. So $L = \sum y$ is a
# constant, its true gradient is zero — and with $g = 1$ everywhere, the buggy
# backward also gives $g - \overline g = 0$. The check compares zero with zero and
# passes.

# %%
def check_with_sum(fn, x, eps=1e-6, tol=1e-6):
    """Compare fn's backward with finite differences of the loss sum(fn(x)) (a weak test)."""
    xt = mr.tensor(x, requires_grad=True)
    fn(xt).sum().backward()
    numeric = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        plus, minus = x.copy(), x.copy()
        plus[idx] += eps
        minus[idx] -= eps
        with mr.no_grad():
            numeric[idx] = (fn(mr.tensor(plus)).sum().item()
                            - fn(mr.tensor(minus)).sum().item()) / (2 * eps)
    worst = float(np.abs(xt.grad - numeric).max())
    return worst < tol, worst


small = rng.standard_normal((3, 2, 2, 2))
ok_sum, worst_sum = check_with_sum(buggy_batch_norm, small)
print(f"sum() check of the BUGGY backward: passes={ok_sum} (largest difference {worst_sum:.1e})")
assert ok_sum, "sum() cannot see this bug: both gradients are zero"

try:
    mr.gradcheck(buggy_batch_norm, mr.tensor(small, requires_grad=True))
except mr.GradcheckError as err:
    caught = err
else:
    caught = None
print("random-projection gradcheck of the BUGGY backward:\n ", caught)
assert caught is not None, "the random projection sum(out * r) exposes the missing term"
assert mr.gradcheck(my_batch_norm, mr.tensor(small, requires_grad=True))

# %% [markdown]
# With $L = \sum_i y_i r_i$ for a random $r$, $g = r$ is not constant, the missing
# term $\hat x_i\,\overline{r\hat x}$ is not zero, and the comparison fails on almost
# every element. That is why every gradient check in minires uses a random direction.
#
# ## 4. Evaluation mode
#
# In evaluation mode $\mu$ and $\sigma$ are the running statistics — constants — so
# batch norm is an affine map and $\partial L/\partial x_i = \gamma g_i/\sigma$. The
# same input gives a different output in the two modes, and in evaluation mode each
# example's output no longer depends on the rest of the batch.

# %%
bn = mr.nn.BatchNorm2d(3)
xb = mr.tensor(x.astype(np.float32))
out_train = bn(xb).numpy()                 # training mode: batch statistics; updates running ones
bn.eval()
out_eval = bn(xb).numpy()
out_eval_first = bn(xb[:1]).numpy()
print("train vs eval output differ:", not np.allclose(out_train, out_eval))
assert not np.allclose(out_train, out_eval)
assert np.allclose(out_eval_first, out_eval[:1], atol=1e-6)   # batch-independent in eval
rm = bn.running_mean.numpy().astype(np.float64)
rv = bn.running_var.numpy().astype(np.float64)
assert mr.gradcheck(lambda t: F.batch_norm(t, rm, rv, training=False),
                    mr.tensor(x, requires_grad=True))

# %% [markdown]
# ## 5. What it does to real activations
#
# One random 3x3 convolution on a batch of images, before and after batch norm:
# each channel's values are shifted and rescaled to mean 0 and variance 1.

# %%
data = load_data(n_train=64, n_test=1, fast_train=64, fast_test=1, fast_size=32)
images = mr.data.normalize(data.train.images)
mr.manual_seed(0)
conv = mr.nn.Conv2d(3, 4, 3, padding=1)
with mr.no_grad():
    pre = conv(mr.tensor(images))
    post = mr.nn.BatchNorm2d(4)(pre)
post_np = post.numpy()
assert np.allclose(post_np.mean(axis=(0, 2, 3)), 0, atol=1e-4)
assert np.allclose(post_np.var(axis=(0, 2, 3)), 1, atol=1e-2)

fig = new_figure((9, 3))
if fig is not None:
    ax1, ax2 = fig.subplots(1, 2, sharey=True)
    for c in range(4):
        ax1.hist(pre.numpy()[:, c].ravel(), bins=60, histtype="step", label=f"channel {c}")
        ax2.hist(post_np[:, c].ravel(), bins=60, histtype="step")
    ax1.set_title("after a random conv")
    ax2.set_title("after batch norm")
    ax1.legend(fontsize=7)
save_figure(fig, OUT / "activations.png")

# %% [markdown]
# ## Try this
#
# 1. Add $\gamma$ and $\beta$ to `MyBatchNorm` (three inputs, three gradients) and
#    gradcheck all of them.
# 2. Break `MyBatchNorm.backward` differently: drop $\overline g$ instead. Does the
#    `sum()` check catch *that* bug? Why?
# 3. With a batch of one 1x1 image per channel ($M = 1$), what is $\hat x$? Try it
#    with `F.batch_norm(..., training=True)` and read the error.
# 4. Compare the speed of `MyBatchNorm` with `F.batch_norm` on a (128, 16, 32, 32)
#    float32 batch; then read `minires/functional/norm.py` to see what it does
#    differently (einsum, no (N, C, H, W) temporaries).

# %%
print("lesson 04 done: every claim above was checked with an assert")
