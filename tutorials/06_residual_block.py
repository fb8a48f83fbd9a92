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
# adds, so it has a path through the network that no layer can shrink. Then measure
# gradient norms per layer in plain and residual networks with `minires.inspect`.
#
# **Budget without fast mode:** one batch of 64 CIFAR-10 training images through
# plain20, plain56, resnet20 and resnet56 at initialisation (one forward and backward
# pass each); 1–5 minutes on a 2-core CPU, depending on what else it is doing. Fast
# mode: 16 synthetic 8x8 images, depths 8 and 20.

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
# between them: $F(x) = \mathrm{bn_2}(\mathrm{conv_2}(\mathrm{relu}(\mathrm{bn_1}(\mathrm{conv_1}(x)))))$.
# The block adds its input back and applies the last ReLU:
#
# $$ \mathrm{out} = \mathrm{relu}\big(F(x) + x\big) $$
#
# If the block should compute (nearly) the identity, the branch only has to learn
# (nearly) zero — far easier than learning an identity through two convolutions
# (lesson 05, section 4).

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
# ## 2. Why "highway": one number through fifty layers
#
# Strip a network down to one number per layer. A plain layer computes
# $h_{i+1} = a_i \tanh(h_i)$; a residual layer $h_{i+1} = h_i + a_i \tanh(h_i)$. By the
# chain rule the gradient of the last layer with respect to the first is a product of
# per-layer factors:
#
# * plain: $\prod_i a_i \tanh'(h_i)$, and with $|a_i| \le \tfrac12$ and
#   $0 < \tanh' \le 1$ every factor is at most ½ — after 50 layers at most $2^{-50}$;
# * residual: $\prod_i \big(1 + a_i \tanh'(h_i)\big)$, and with $a_i > 0$ every factor
#   is at least 1 — the product can never vanish.
#
# That is the "1 +" of $\partial(x + F(x))/\partial x = 1 + F'(x)$. Let autograd
# compute both:

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
assert plain_grads[0] <= 0.5 ** depth
assert res_grads[0] >= 1.0

fig = new_figure((6, 3.5))
if fig is not None:
    ax = fig.subplots()
    ax.semilogy(range(depth), plain_grads, ".-", label="plain  h + = a tanh(h)")
    ax.semilogy(range(depth), res_grads, ".-", label="residual  h + = h + a tanh(h)")
    ax.set(xlabel="layer i", ylabel="|d h_50 / d h_i|", title="gradient reaching layer i")
    ax.legend()
save_figure(fig, OUT / "scalar_highway.png")

# %% [markdown]
# ## 3. Seeing the two paths in a real block: `F.fork`
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

assert np.allclose(xb.grad, seen["branch"] + seen["skip"], atol=1e-6)
assert np.allclose(seen["skip"], g_out * (out.numpy() > 0))
print(f"|grad| at the block input {np.linalg.norm(xb.grad):.3f} = skip path "
      f"{np.linalg.norm(seen['skip']):.3f} (+) branch path {np.linalg.norm(seen['branch']):.3f}")

# %% [markdown]
# ## 4. Plain vs residual networks at initialisation
#
# `mr.inspect.compare` runs one forward and backward pass of each model on the same
# batch (leaving the models untouched) and reports, per layer, the norm of each
# weight's gradient and, per block, how the gradient splits between skip and branch.
# In a plain network the skip share is 0 by construction (there is no skip).

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
        print(f"{name}: the skip path carries on average {100 * np.mean(shares):.0f}% of the "
              f"gradient norm reaching a block")

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
print("lesson 06 done: block equality, gradchecks, the scalar bounds and the path split are "
      "asserted; the plain-vs-residual ratio is reported as measured")
