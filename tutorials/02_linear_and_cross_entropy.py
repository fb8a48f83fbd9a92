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
# # Lesson 02 — Linear layers and softmax cross-entropy
#
# **Goal.** Derive the backward pass of the two layers every classifier ends with —
# the fully connected layer $y = xW^\top + b$ and the softmax cross-entropy loss —
# check the derivations against minires and against finite differences, and train a
# linear classifier and a small two-layer network on images.
#
# **Budget without fast mode:** the first 5,000 CIFAR-10 training images and 1,000
# test images (from `~/.cache/minires` or `$MINIRES_DATA`); measured 9-16 s in two runs
# on a 2-core Intel Xeon (2026-12-05). Fast mode: 256 synthetic 8x8 images, a few
# seconds.

# %%
import itertools
import time

import numpy as np
from lesson_utils import FAST, fast_or_full, load_data, mode_line, new_figure, out_dir, save_figure

import minires as mr
import minires.functional as F

OUT = out_dir("02_linear_and_cross_entropy")
print(mode_line())

# %% [markdown]
# ## 1. The linear layer
#
# For one batch, $y = x W^\top + b$ with $x$: (N, in), $W$: (out, in), $b$: (out,).
# Write $g = \partial L/\partial y$ (N, out). Each $y_{nj} = \sum_i x_{ni} W_{ji} + b_j$,
# so
#
# $$ \frac{\partial L}{\partial x} = g\,W, \qquad
#    \frac{\partial L}{\partial W} = g^\top x, \qquad
#    \frac{\partial L}{\partial b} = \textstyle\sum_n g_{n\cdot} $$
#
# (the bias is broadcast over the batch, so its gradient sums over the batch).
#
# ## 2. Softmax cross-entropy
#
# The logits $z$ (N, K) become probabilities $p = \mathrm{softmax}(z)$ and the loss
# is the mean negative log-probability of the true class $t_n$:
# $L = -\frac1N \sum_n \log p_{n t_n}$. Since
# $\log p_{nk} = z_{nk} - \log\sum_j e^{z_{nj}}$,
#
# $$ \frac{\partial L}{\partial z_{nk}} = \frac1N\left(p_{nk} - [k = t_n]\right) $$
#
# — probabilities minus the one-hot target: the whole backward pass of the loss is
# one subtraction. Let us check both derivations on a small random problem.

# %%
rng = np.random.default_rng(0)
N, D, K = 5, 4, 3
X = rng.standard_normal((N, D))
W = rng.standard_normal((K, D))
b = rng.standard_normal(K)
t = rng.integers(0, K, N)

# minires
x_t = mr.tensor(X, requires_grad=True)
w_t = mr.tensor(W, requires_grad=True)
b_t = mr.tensor(b, requires_grad=True)
loss = F.cross_entropy(F.linear(x_t, w_t, b_t), t)
loss.backward()

# by hand, with NumPy
z = X @ W.T + b
p = np.exp(z - z.max(axis=1, keepdims=True))
p /= p.sum(axis=1, keepdims=True)
loss_by_hand = -np.log(p[np.arange(N), t]).mean()
g = p.copy()
g[np.arange(N), t] -= 1
g /= N                                   # dL/dz
print(f"loss: minires {loss.item():.6f}, by hand {loss_by_hand:.6f}")
assert np.isclose(loss.item(), loss_by_hand)
assert np.allclose(x_t.grad, g @ W)
assert np.allclose(w_t.grad, g.T @ X)
assert np.allclose(b_t.grad, g.sum(axis=0))
print("dL/dx, dL/dW, dL/db by hand == minires")

# %% [markdown]
# And against finite differences (float64, every element, random projection):

# %%
assert mr.gradcheck(F.linear, x_t, w_t, b_t)
z_t = mr.tensor(rng.standard_normal((N, K)), requires_grad=True)
assert mr.gradcheck(lambda z: F.cross_entropy(z, t), z_t)
assert mr.gradcheck(lambda z: F.cross_entropy(z, t, label_smoothing=0.1), z_t)
print("gradcheck passed: linear, cross_entropy, cross_entropy with label smoothing")

# %% [markdown]
# ## 3. Why the loss is fused and shifted
#
# Computing `exp(z)` first and the log afterwards overflows as soon as a logit passes
# ~88 (float32) or ~709 (float64): `exp` gives `inf` and `inf / inf` is `nan`.
# Subtracting the row maximum first changes nothing mathematically (softmax is
# shift-invariant) and keeps every `exp` at most 1. `F.cross_entropy` does that, in
# one op, and its backward is the `p - onehot` above.

# %%
big = np.array([[1e4, 0.0, -1e4]])
with np.errstate(over="ignore", invalid="ignore"):
    naive = np.exp(big) / np.exp(big).sum(axis=1, keepdims=True)
print("naive softmax:", naive)
fused = [F.cross_entropy(mr.tensor(big), np.array([k])).item() for k in range(3)]
print("F.cross_entropy for targets 0, 1, 2:", fused)
assert not np.isfinite(naive).all()
with np.errstate(over="ignore"):
    assert np.isinf(np.exp(np.float32(89.0))) and np.isinf(np.exp(710.0))   # the overflow points
assert np.allclose(fused, [0.0, 1e4, 2e4])

# %% [markdown]
# ## 4. A linear classifier on images, with a step size that provably works
#
# Flatten each image into a vector and fit $W$, $b$ by gradient descent on the full
# training set. With all weights zero every class gets probability 1/10, so the
# loss starts at exactly $\ln 10$.
#
# How large may the step be? The softmax cross-entropy is convex in $(W, b)$, and its
# curvature is at most $L = \tfrac12 \lambda_{\max}(\tilde X^\top \tilde X / N) \le
# \tfrac12 \lVert\tilde X\rVert_F^2 / N$ ($\tilde X$ is $X$ with a column of ones for
# the bias; the $\tfrac12$ bounds the curvature of softmax). Gradient descent with
# step $1/L$ then *decreases the loss at every step* — the "descent lemma" — as long
# as the gradient is not zero. We compute in float64 so that rounding cannot hide
# the decrease.

# %%
data = load_data(n_train=5000, n_test=1000)
X_train = mr.data.normalize(data.train.images).reshape(len(data.train), -1).astype(np.float64)
X_test = mr.data.normalize(data.test.images).reshape(len(data.test), -1).astype(np.float64)
y_train, y_test = data.train.labels, data.test.labels
N, D = X_train.shape
print(f"{N} training images of {D} numbers each, {len(y_test)} test images")

curvature = 0.5 * ((X_train ** 2).sum() + N) / N      # an upper bound of L
lr = 1.0 / curvature
W_t = mr.tensor(np.zeros((10, D)), requires_grad=True)
b_t = mr.tensor(np.zeros(10), requires_grad=True)
X_tr = mr.tensor(X_train)
gd_losses = []
for step in range(fast_or_full(20, 40)):
    loss = F.cross_entropy(F.linear(X_tr, W_t, b_t), y_train)
    gd_losses.append(loss.item())
    W_t.zero_grad()
    b_t.zero_grad()
    loss.backward()
    with mr.no_grad():
        W_t.data -= lr * W_t.grad
        b_t.data -= lr * b_t.grad
print(f"step size 1/L = {lr:.3g}; loss {gd_losses[0]:.4f} -> {gd_losses[-1]:.4f}")
assert np.isclose(gd_losses[0], np.log(10.0), rtol=1e-12)
assert all(after < before for before, after in itertools.pairwise(gd_losses)), \
    "the descent lemma promises a decrease at every step"

with mr.no_grad():
    test_pred = F.linear(mr.tensor(X_test), W_t, b_t).numpy().argmax(axis=1)
linear_acc = float((test_pred == y_test).mean())
print(f"linear classifier, {len(gd_losses)} full-batch steps: "
      f"test accuracy {100 * linear_acc:.1f}% "
      f"(chance: 10%)")

# %% [markdown]
# Each class's weight vector has one number per pixel and channel, so it can be shown
# as an image: a "template" the classifier matches against.

# %%
H = data.train.images.shape[2]
fig = new_figure((10, 1.6))
if fig is not None:
    axes = fig.subplots(1, 10)
    templates = W_t.numpy().reshape(10, 3, H, H).transpose(0, 2, 3, 1)
    for k, ax in enumerate(axes):
        img = templates[k]
        ax.imshow((img - img.min()) / (np.ptp(img) + 1e-12))
        ax.set_title(mr.data.CLASSES[k] if not FAST else f"class {k}", fontsize=7)
        ax.axis("off")
save_figure(fig, OUT / "linear_templates.png")

# %% [markdown]
# ## 5. Two layers, trained with mini-batch SGD
#
# First the one new op, ReLU: $y = \max(x, 0)$ elementwise. Its derivative is 1 where
# $x > 0$ and 0 where $x < 0$ (at exactly 0 it has none; minires, like PyTorch, uses
# 0), so the backward pass lets the gradient through where the input was positive and
# blocks it elsewhere: $\partial L/\partial x = \partial L/\partial y \cdot [x > 0]$.
# The forward pass only has to keep that mask. Checked on a few values:

# %%
xr = mr.tensor(np.array([-2.0, -0.5, 0.5, 3.0]), requires_grad=True)
yr = F.relu(xr)
g_relu = np.array([10.0, 20.0, 30.0, 40.0])
yr.backward(g_relu)
assert np.array_equal(xr.grad, g_relu * (xr.numpy() > 0))          # [0, 0, 30, 40]
print("relu backward = incoming gradient * (x > 0):", xr.grad)

# %% [markdown]
# One hidden layer with a ReLU makes the model non-linear. Now we train the usual way:
# mini-batches, `model(x)`, the loss, `loss.backward()`, `optimizer.step()`. This is
# the loop every later lesson uses (lesson 09 wraps it into `fit`).

# %%
mr.manual_seed(0)
mlp = mr.nn.Sequential(mr.nn.Flatten(), mr.nn.Linear(D, 256), mr.nn.ReLU(), mr.nn.Linear(256, 10))
opt = mr.optim.SGD(mlp.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
loader = mr.data.DataLoader(data.train.images, data.train.labels, batch_size=64, shuffle=True,
                            seed=0)
epochs = fast_or_full(3, 10)
mlp_losses, start = [], time.perf_counter()
for epoch in range(epochs):
    for xb, yb in loader.epoch(epoch):
        loss = F.cross_entropy(mlp(mr.tensor(xb)), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        mlp_losses.append(loss.item())
with mr.no_grad():
    mlp.eval()
    mlp_pred = mlp(mr.tensor(X_test.astype(np.float32))).numpy().argmax(axis=1)
mlp_acc = float((mlp_pred == y_test).mean())
print(f"two-layer net, {epochs} epochs ({time.perf_counter() - start:.1f}s): "
      f"test accuracy {100 * mlp_acc:.1f}%")
print("The two-layer network " + ("beats" if mlp_acc > linear_acc else "does not beat")
      + f" the linear classifier on this test set ({100 * mlp_acc:.1f}% vs "
      f"{100 * linear_acc:.1f}%)" + (" -- with this tiny fast-mode budget that says little."
                                     if FAST else "."))

fig = new_figure((9, 3))
if fig is not None:
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(gd_losses, ".-")
    ax1.set(title="linear, full-batch GD, step 1/L", xlabel="step", ylabel="training loss")
    ax2.plot(mlp_losses, lw=0.7)
    ax2.set(title="two-layer net, mini-batch SGD", xlabel="step", ylabel="batch loss")
save_figure(fig, OUT / "training_loss.png")

# %% [markdown]
# ## Try this
#
# 1. Double the step size of section 4 a few times. When does the loss stop falling
#    at every step? (The bound is loose: $\lVert X\rVert_F^2$ overestimates
#    $\lambda_{\max}$.)
# 2. Compute the exact $\lambda_{\max}(\tilde X^\top\tilde X/N)$ with
#    `np.linalg.eigvalsh` and use the tighter step.
# 3. Train the two-layer network with `label_smoothing=0.1` in `F.cross_entropy`.
#    Derive its gradient first: it is `p - q` with the smoothed target `q`.
# 4. Replace the ReLU by `mr.nn.Identity()`. What does the two-layer network become?

# %%
print("lesson 02 done: every claim above was checked with an assert; accuracies are reported, "
      "not asserted")
