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
# # Lesson 06 — The residual block: gradient highways
#
# **Goal.** Build the two-convolution residual block of He et al. (2015) yourself —
# `out = relu(F(x) + x)` — check it against `minires.nn.BasicBlock` and against
# finite differences, and see what the `+ x` does to the backward pass: the gradient
# reaching a block's input is the gradient of its output *plus* whatever the branch
# adds. Then get the gradient story right. He et al. (§4.1) checked that their deep
# *plain* networks, which have batch norm after every convolution, do **not** suffer
# from vanishing gradients: forward signals and backward gradients have healthy norms,
# so the degradation of lesson 05 is a difficulty of *optimisation*, not of vanishing.
# We measure what batch norm, depth and the skip each do to gradients, in a deep MLP
# and in real ResNets, and how "shattered" the gradients are (Balduzzi et al. 2017).
#
# **Budget without fast mode:** a 50-layer MLP three ways (seconds); one batch of 64
# CIFAR-10 training images through plain20, plain56, resnet20 and resnet56 at
# initialisation (one forward and backward pass each), the 56-layer nets five more times
# in float64, and their input gradients at 32 points on a line between two images:
# measured 40 s in two runs on a 2-core Intel Xeon (2026-12-06). Fast mode: 16 synthetic
# 8x8 images, depths 8 and 20.
#
# Hooks, used below: `t.register_hook(fn)` calls `fn(grad)` with the gradient arriving
# at tensor `t` during `backward()`; `module.register_forward_hook(fn)` calls
# `fn(module, inputs, output)` after the module's forward. Both return a handle whose
# `.remove()` takes the hook off again. `minires.inspect` is built on nothing else.

# %%
import numpy as np
from lesson_utils import (
    FAST,
    fast_or_full,
    has_matplotlib,
    load_data,
    mode_line,
    new_figure,
    out_dir,
    save_figure,
)

import minires as mr
import minires.functional as F
from minires import nn

OUT = out_dir("06_residual_block")
print(mode_line())
rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. The block, by hand
#
# The residual branch is two 3x3 convolutions, each followed by batch norm, with a ReLU
# between them:
# $F(x) = \mathrm{bn_2}(\mathrm{conv_2}(\mathrm{relu}(\mathrm{bn_1}(\mathrm{conv_1}(x)))))$.
# The block adds its input back and applies the last ReLU:
#
# $$ \mathrm{out} = \mathrm{relu}\big(F(x) + x\big) $$
#
# If the block should compute (nearly) the identity, the branch only has to learn
# (nearly) zero, which He et al. argue is easier than learning an identity through two
# convolutions (lesson 05, section 4, shows such an identity net exists).

# %%
class MyBasicBlock(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + x                     # the shortcut: the whole idea in one line
        return F.relu(out)


mr.manual_seed(0)
mine = MyBasicBlock(4)
theirs = nn.BasicBlock(4, 4)
theirs.load_state_dict(mine.state_dict())        # same names: conv1, bn1, conv2, bn2
x = mr.tensor(rng.standard_normal((2, 4, 6, 6)).astype(np.float32))
assert np.allclose(mine(x).numpy(), theirs(x).numpy(), atol=1e-6)
print("MyBasicBlock == minires.nn.BasicBlock:", sorted(mine.state_dict()))

# gradient check in float64, with respect to the input and every parameter
mine.to(dtype=np.float64)
x64 = mr.tensor(rng.standard_normal((2, 4, 4, 4)), requires_grad=True)
params = list(mine.parameters())


def block_fn(x, *ps):
    return mine(x)


assert mr.gradcheck(block_fn, x64, *params)
print("gradcheck passed for the block: input and", len(params), "parameter tensors")

# %% [markdown]
# ## 2. What the "+ x" does to a product of factors: one number through fifty layers
#
# Strip a network down to one number per layer. A plain layer computes
# $h_{i+1} = a_i \tanh(h_i)$; a residual layer $h_{i+1} = h_i + a_i \tanh(h_i)$. By the
# chain rule the gradient of the last layer with respect to the first is a product of
# per-layer factors:
#
# * plain: $\prod_i a_i \tanh'(h_i)$;
# * residual: $\prod_i \big(1 + a_i \tanh'(h_i)\big)$.
#
# That is the "1 +" of $\partial(x + F(x))/\partial x = 1 + F'(x)$: a residual
# factor stays near 1 whenever the branch's factor is small, whatever its size, while
# a plain factor *is* the branch's factor. **This toy is not an explanation of
# anything by itself:** below we pick $a_i \le \tfrac12$, so every plain factor is at
# most ½ and the plain product must vanish — we built that in. Real networks choose
# their scales by initialisation and normalisation; section 3 measures what they do.

# %%
depth = 50
a = rng.uniform(0.05, 0.5, depth)


def layer_gradients(residual):
    h0 = mr.tensor(np.array([0.3]), requires_grad=True)
    hs, h = [], h0
    for i in range(depth):
        if i > 0:
            h.retain_grad()          # keep .grad on an intermediate result (leaves always keep it)
        hs.append(h)
        h = h + a[i] * F.tanh(h) if residual else a[i] * F.tanh(h)
    h.sum().backward()
    return np.array([abs(float(t.grad[0])) for t in hs])       # |d h_50 / d h_i|


plain_grads, res_grads = layer_gradients(False), layer_gradients(True)
print(f"|d h_50 / d h_0|: plain {plain_grads[0]:.3e}, residual {res_grads[0]:.3e}")
assert plain_grads[0] <= 0.5 ** depth          # guaranteed by our choice a_i <= 1/2
assert res_grads[0] >= 1.0                     # guaranteed by a_i > 0: every factor >= 1

fig = new_figure((6, 3.5))
if fig is not None:
    ax = fig.subplots()
    ax.semilogy(range(depth), plain_grads, ".-", label="plain  h + = a tanh(h)")
    ax.semilogy(range(depth), res_grads, ".-", label="residual  h + = h + a tanh(h)")
    ax.set(xlabel="layer i", ylabel="|d h_50 / d h_i|",
           title="toy: every plain factor <= 1/2 by construction")
    ax.legend()
save_figure(fig, OUT / "scalar_highway.png")

# %% [markdown]
# ## 3. A deep MLP three ways: vanishing, exploding, stable
#
# Now real layers: 50 linear layers of width 64 with tanh, PyTorch's default
# initialisation, a batch of 256 random inputs, and the gradient norm
# $\lVert \partial L / \partial h_i \rVert$ reaching each layer's input for a
# random-projection loss $L = \sum h_{50} \cdot r$:
#
# * **tanh, no batch norm**: the default initialisation shrinks the signal a little
#   at every layer and tanh' ≤ 1 shrinks the gradient: it *vanishes* toward the input;
# * **tanh with batch norm** after each linear layer: the forward signal is
#   renormalised at every layer, but the gradient now *grows* toward the input — at
#   initialisation batch norm makes deep plain nets' gradients explode (Yang et al.
#   2019, "A mean field theory of batch normalization"). Nothing vanishes here;
# * **residual**, $h_{i+1} = h_i + \tanh(\mathrm{bn}(W_i h_i))$: the same layers as a
#   branch beside an identity path; the gradient stays within a small factor.

# %%
MLP_DEPTH, MLP_WIDTH = 50, 64


def mlp_gradient_norms(kind, seed=0):
    """|dL/dh_i| for each layer input of a 50-layer MLP: kind = 'tanh', 'bn' or 'residual'."""
    local = np.random.default_rng(seed)
    mr.manual_seed(seed)
    linears = [nn.Linear(MLP_WIDTH, MLP_WIDTH, bias=kind == "tanh") for _ in range(MLP_DEPTH)]
    norms = [nn.BatchNorm1d(MLP_WIDTH) for _ in range(MLP_DEPTH)]
    h = mr.tensor(local.standard_normal((256, MLP_WIDTH)).astype(np.float32), requires_grad=True)
    inputs = []
    for i in range(MLP_DEPTH):
        if i > 0:
            h.retain_grad()
        inputs.append(h)
        z = linears[i](h)
        if kind != "tanh":
            z = norms[i](z)                       # train mode: batch statistics
        z = F.tanh(z)
        h = h + z if kind == "residual" else z
    r = local.standard_normal(h.shape).astype(np.float32)
    (h * mr.tensor(r)).sum().backward()
    return np.array([np.linalg.norm(t.grad) for t in inputs])


mlp = {kind: mlp_gradient_norms(kind) for kind in ("tanh", "bn", "residual")}
for kind, g in mlp.items():
    print(f"{kind:>9}: |grad| at layer 0 / at layer {MLP_DEPTH - 1} = {g[0] / g[-1]:.3g}")
assert mlp["tanh"][0] / mlp["tanh"][-1] < 1e-3             # vanishes
assert mlp["bn"][0] / mlp["bn"][-1] > 10                   # grows toward the input
ratio_res = mlp["residual"][0] / mlp["residual"][-1]
assert abs(np.log10(ratio_res)) < abs(np.log10(mlp["bn"][0] / mlp["bn"][-1]))

fig = new_figure((6, 3.5))
if fig is not None:
    ax = fig.subplots()
    for kind, g in mlp.items():
        ax.semilogy(range(MLP_DEPTH), g, ".-", ms=3, label=kind)
    ax.set(xlabel="layer i", ylabel="|dL / dh_i|", title="50-layer MLP at initialisation")
    ax.legend()
save_figure(fig, OUT / "mlp_gradients.png")

# %% [markdown]
# ## 4. Seeing the two paths in a real block: `F.fork`
#
# Every block in `minires.nn` starts with `x_branch, x_skip = self.fork(x)`: two
# tensors equal to `x`, one for each path. Their gradients are added in the backward
# pass, and a hook on each shows how much gradient each path sends back. For a block
# with an identity shortcut, the skip path receives the gradient of the block's output,
# masked only by the final ReLU.

# %%
block = nn.BasicBlock(4, 4)
seen = {}


def on_fork(module, inputs, output):
    x_branch, x_skip = output
    x_branch.register_hook(lambda g: seen.__setitem__("branch", g))
    x_skip.register_hook(lambda g: seen.__setitem__("skip", g))


handle = block.fork.register_forward_hook(on_fork)
xb = mr.tensor(rng.standard_normal((2, 4, 6, 6)).astype(np.float32), requires_grad=True)
out = block(xb)
g_out = rng.standard_normal(out.shape).astype(np.float32)
out.backward(g_out)
handle.remove()

assert np.allclose(xb.grad, seen["branch"] + seen["skip"], atol=1e-6)   # the vectors add
assert np.allclose(seen["skip"], g_out * (out.numpy() > 0))
n_in, n_skip, n_branch = (np.linalg.norm(v) for v in (xb.grad, seen["skip"], seen["branch"]))
# the gradient *vectors* add; their norms do not (only the triangle inequality holds)
assert n_in <= n_skip + n_branch + 1e-6
print(f"grad at the block input = skip-path grad + branch-path grad (as vectors); norms: "
      f"{n_in:.3f} <= {n_skip:.3f} + {n_branch:.3f}")

# %% [markdown]
# ## 5. Plain vs residual networks at initialisation
#
# `mr.inspect.compare` runs one forward and backward pass of each model on the same
# batch (leaving the models untouched) and reports, per layer, the norm of each
# weight's gradient and, per block, how the gradient splits between skip and branch.
# The **skip share** of a block is exactly what the code computes:
# $\lVert g_\text{skip} \rVert / (\lVert g_\text{skip} \rVert + \lVert g_\text{branch} \rVert)$,
# where $g_\text{skip}$ and $g_\text{branch}$ are the gradients arriving at the block's
# input through each path (the two outputs of `fork`). It is a ratio of norms, not a
# share of a sum: the vectors can partly cancel. In a plain network it is 0 by
# construction (there is no skip).

# %%
depths = fast_or_full((8, 20), (20, 56))
data = load_data(n_train=64, n_test=1, fast_train=16, fast_test=1)
x_batch, y_batch = next(iter(mr.data.DataLoader(data.train.images, data.train.labels,
                                                batch_size=len(data.train))))
models = {}
for family in ("plain", "resnet"):
    for d in depths:
        mr.manual_seed(0)
        models[f"{family}{d}"] = mr.models.get_model(f"{family}{d}")
comparison = mr.inspect.compare(models, x_batch, y_batch)
print(comparison)

summary = {name: comparison[name].summary() for name in models}
for name in summary:
    shares = [b["skip_share"] for b in comparison[name].blocks]
    if name.startswith("plain"):
        assert all(b["skip_grad_norm"] == 0 for b in comparison[name].blocks)
    else:
        assert all(b["skip_grad_norm"] > 0 for b in comparison[name].blocks)
        print(f"{name}: mean skip share |g_skip| / (|g_skip| + |g_branch|) = "
              f"{np.mean(shares):.2f}")

# %% [markdown]
# The number to look at is **first/last**: the gradient norm of the first layer's
# weights over the last layer's. A gradient that fades on its way down the network
# (vanishing) gives a ratio far below 1; one that grows (exploding — what batch norm
# tends to cause in deep plain networks at initialisation, Yang et al. 2019) gives a
# ratio far above 1. A "highway" keeps it near 1. We measure how far from 1 each
# network is, on a log scale, and print what this run shows:

# %%
deep = max(depths)
ratio_plain = summary[f"plain{deep}"]["first_over_last"]
ratio_res = summary[f"resnet{deep}"]["first_over_last"]
off_plain, off_res = abs(np.log10(ratio_plain)), abs(np.log10(ratio_res))
trend = "grows" if ratio_plain > 1 else "fades"
if off_res < off_plain:
    print(f"In this run, at depth {deep}, the residual network's gradient profile is flatter: "
          f"first/last {ratio_res:.3g} against {ratio_plain:.3g} for the plain network, whose "
          f"gradient {trend} by {off_plain:.2f} orders of magnitude from the last layer to the "
          f"first.")
else:
    print(f"In this run, at depth {deep}, the residual network's gradient profile is NOT "
          f"flatter: first/last {ratio_res:.3g} against {ratio_plain:.3g} for the plain "
          f"network.")
if FAST:
    print("(fast mode: tiny synthetic data and shallow nets; the numbers check the code)")

if has_matplotlib():
    comparison.plot(OUT / "gradient_flow.png")
    print(f"figure: {OUT / 'gradient_flow.png'}")
else:
    print("(matplotlib is not installed: gradient_flow.png not drawn)")

# %% [markdown]
# ### How many digits does first/last have?
#
# Run this lesson with another BLAS, or with a minires whose batch norm adds its sums in
# another order, and the deep plain net's ratio comes out a few percent different. Is
# that float32 being sloppy, or the network? Test it the way a numerical analyst would:
# take the same weights in **float64**, multiply every pixel of the batch by
# $1 + 10^{-7} z$ ($z$ standard normal: a change below float32's resolution), and
# measure again, four times.

# %%
from minires.experiments.gradient_at_init import perturbed_first_over_last

x64 = x_batch.astype(np.float64)
for name in (f"plain{deep}", f"resnet{deep}"):
    mr.manual_seed(0)
    model64 = mr.models.get_model(name).double()       # the same weights, in float64
    exact = mr.inspect.gradient_flow(model64, x64, y_batch).summary()["first_over_last"]
    moved = perturbed_first_over_last(model64, x64, y_batch, count=4, scale=1e-7, seed=1)
    print(f"{name}: first/last in float32 {summary[name]['first_over_last']:.4g}, float64 "
          f"{exact:.4g}, float64 with the input moved by 1e-7: {min(moved):.4g} .. "
          f"{max(moved):.4g} (spread {(max(moved) - min(moved)) / exact:.1%})")

# %% [markdown]
# In the full run (depth 56), a change of one part in ten million in the input moves the
# deep plain net's ratio by percent, in float64: the chaos is in the function, and float32 rounding
# is just one more such nudge. (In PyTorch, on the same weights and batch, float64 gives
# the same numbers to the last digit and float32 ranges as widely:
# `benchmarks/gradient_digits.py`.) The residual net's ratio barely moves. This is the
# shattering of section 6 seen from the weights' side, and it is why this page quotes
# the plain net's ratio to two digits at most.

# %% [markdown]
# Read that with He et al. §4.1 in mind: the deep *plain* network's first layers get
# a gradient that is, if anything, larger than its last layers' — batch norm keeps
# the signals alive — and yet lesson 05 showed it training worse. Its gradients do
# not vanish; they are hard to *use*. The next measurement shows one way in which.
#
# ## 6. Shattered gradients (Balduzzi et al. 2017)
#
# Walk a straight line from one image to another in small steps and take, at each
# point, the gradient of one logit with respect to the input. For a smooth function
# the gradients at neighbouring points are nearly the same (correlation near 1). In a
# deep plain network they decorrelate toward white noise as depth grows: each step
# of gradient descent then follows a direction that says little about the next
# point. Skip connections keep them correlated. This is the measurement of
# `python -m minires.experiments gradient-at-init`, on the deep pair (batch norm in
# eval mode, its statistics calibrated on the batch above, so each point goes
# through the same fixed function).

# %%
from minires.experiments.gradient_at_init import shattering
from minires.experiments.nets import calibrate_batch_norm

points = fast_or_full(12, 32)
t = np.linspace(0.0, 1.0, points, dtype=np.float32).reshape(-1, 1, 1, 1)   # (P, 1, 1, 1)
line = ((1 - t) * x_batch[0:1] + t * x_batch[1:2]).astype(np.float32)   # (P, C, H, W)
shattered = {}
for family in ("plain", "resnet"):
    net = models[f"{family}{deep}"]
    calibrate_batch_norm(net, [mr.tensor(x_batch)])
    shattered[family] = shattering(net, line, x_batch[:8], int(y_batch[0]), "cpu")
    print(f"{family}{deep}: correlation of input gradients at neighbouring points "
          f"{shattered[family]['correlation'][0]:+.3f} (between unrelated images: "
          f"{shattered[family]['unrelated_abs_correlation']:.3f})")
for r in shattered.values():
    assert all(-1 <= c <= 1 for c in r["correlation"])
lag1 = {f: r["correlation"][0] for f, r in shattered.items()}
print(f"In this run the residual net's neighbouring gradients are "
      f"{'MORE' if lag1['resnet'] > lag1['plain'] else 'NOT more'} correlated than the plain "
      f"net's ({lag1['resnet']:+.3f} vs {lag1['plain']:+.3f}).")

# %% [markdown]
# ## Try this
#
# 1. Print `mr.inspect.gradient_flow(models["resnet20"], x_batch, y_batch)`: the
#    per-layer table shows activation statistics and dead ReLUs too.
# 2. Build a resnet with `zero_init_residual=True` (`mr.models.resnet20(...)`): every
#    branch starts at zero, so every block starts as the identity. What is the skip
#    share now?
# 3. In section 2, let some $a_i$ be negative, down to $-1$. Can the residual product
#    vanish now? What does that say about residual branches that learn to cancel
#    their input?
# 4. Add a residual connection to the two-layer network of lesson 02 (the hidden
#    layer needs the same width as its input) and compare the training curves.

# %%
print("lesson 06 done: block equality, gradchecks, the toy's built-in bounds, the MLP's vanishing "
      "and growth, and the path split are asserted; plain-vs-residual ratios and the shattering "
      "are reported as measured")
