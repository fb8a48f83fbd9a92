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
# # Lesson 08 — The variants: pre-activation, wide, ResNeXt, split attention
#
# **Goal.** Four ideas built on the residual block, each in a few lines of
# `minires/nn/blocks.py`. For each: what it changes, a check that it does exactly
# what it claims, and what it costs in parameters, multiply-adds and time.
#
# * **Pre-activation** (He et al. 2016): batch norm and ReLU move *before* the
#   convolutions, so the shortcut path is a pure identity from input to output.
# * **Wide** ResNets (Zagoruyko & Komodakis 2016): fewer, wider blocks.
# * **ResNeXt** (Xie et al. 2017): the 3x3 convolution of a bottleneck split into many
#   groups — more, thinner paths for the same cost.
# * **Split attention** (ResNeSt, Zhang et al. 2020): several such splits, mixed by
#   weights the block computes from its own input.
#
# **Budget without fast mode:** no data set; forward and backward passes on random
# (16, 3, 32, 32) batches to time five CIFAR models; measured 6-11 s in two runs on a
# 2-core Intel Xeon (2026-12-05). Fast mode: (2, 3, 8, 8) batches, seconds.

# %%
import time

import numpy as np
from lesson_utils import fast_or_full, mode_line, new_figure, out_dir, save_figure

import minires as mr
import minires.functional as F
from minires import nn

OUT = out_dir("08_resnet_variants")
print(mode_line())
rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. Pre-activation: a clean identity path
#
# A post-activation block (lesson 06) ends with `relu(F(x) + x)`: the ReLU sits on
# the shortcut path, so even a block whose branch is zero changes its input (negative
# values are cut). A pre-activation block computes
# $F(x) =
# \mathrm{conv_2}(\mathrm{relu}(\mathrm{bn_2}(\mathrm{conv_1}(\mathrm{relu}(\mathrm{bn_1}(x))))))$
# and returns $x + F(x)$ with nothing after the addition. Then for a stack of such
# blocks (with identity shortcuts)
#
# $$ x_L = x_l + \sum_{i=l}^{L-1} F_i(x_i), \qquad
#    \frac{\partial L}{\partial x_l} = \frac{\partial L}{\partial x_L}
#    + \frac{\partial L}{\partial x_L}\,\frac{\partial}{\partial x_l}\sum_i F_i(x_i) $$
#
# — the output gradient reaches every block's input *unchanged*, plus the branches'
# contributions. Let us check both equations on the first stage of a pre-activation
# ResNet-20 (three blocks, 16 channels, identity shortcuts).

# %%
mr.manual_seed(0)
stage = mr.models.preact_resnet20().layer1
branch_outputs, skip_grads = [], []


def keep_branch(block, inputs, output):
    x_branch, _ = block.fork(inputs[0])            # recompute, hook-free, for the check
    branch_outputs.append(block.branch(x_branch).numpy())


branch_grads = []


def on_fork(fork, inputs, output):
    output[0].register_hook(lambda g: branch_grads.append(g))     # into the branch
    output[1].register_hook(lambda g: skip_grads.append(g))       # along the skip


handles = [blk.register_forward_hook(keep_branch) for blk in stage]
handles += [blk.fork.register_forward_hook(on_fork) for blk in stage]
x = mr.tensor(rng.standard_normal((2, 16, 8, 8)).astype(np.float32), requires_grad=True)
stage.eval()                                       # fixed statistics: the recomputation matches
out = stage(x)
g_out = rng.standard_normal(out.shape).astype(np.float32)
out.backward(g_out)
for h in handles:
    h.remove()

assert np.allclose(out.numpy(), x.numpy() + sum(branch_outputs), atol=1e-4)
assert np.allclose(skip_grads[0], g_out)        # the last block's skip: dL/dx_L, unchanged
# hooks fire last block first. The equation for l = 0: what reaches the stage's input is
# dL/dx_L itself plus every branch's contribution (the second term, summed over blocks)
branch_terms = [np.asarray(g) for g in branch_grads]
assert all(np.abs(b).max() > 1e-3 for b in branch_terms)        # every branch contributes
assert np.allclose(x.grad, g_out + sum(branch_terms), atol=1e-4)
print("pre-activation stage: x_L == x_0 + sum of the branches, and dL/dx_0 == dL/dx_L + the "
      "sum of what the three branches send back")
print(f"gradient norms along the skips, last block first: "
      f"{[round(float(np.linalg.norm(g)), 2) for g in skip_grads]}")

# %% [markdown]
# The difference shows at once in a block whose branch is zero. `zero_init_residual()`
# zeroes the last layer of the branch: the scale of `bn2` in a post-activation block,
# `conv2.weight` in a pre-activation block (its branch ends in a convolution). Then the
# pre-activation block is the identity, the post-activation one is a ReLU.

# %%
post, pre = nn.BasicBlock(16, 16), nn.PreActBlock(16, 16)
for blk in (post, pre):
    blk.zero_init_residual()
    blk.eval()
assert not pre.conv2.weight.data.any() and not post.bn2.weight.data.any()
xz = mr.tensor(rng.standard_normal((2, 16, 4, 4)).astype(np.float32))
assert np.array_equal(pre(xz).numpy(), xz.numpy())
assert np.array_equal(post(xz).numpy(), np.maximum(xz.numpy(), 0))
print("zero branch: pre-activation block == identity, post-activation block == relu")

# %% [markdown]
# ## 2. Wide ResNets: width costs quadratically
#
# A WRN-d-k has depth d = 6n + 4 and stage widths 16k, 32k, 64k. A 3x3 convolution
# from $C$ to $C$ channels holds $9C^2$ weights, so multiplying all widths by 2 costs
# nearly 4x the parameters — and the multiply-adds. Zagoruyko and Komodakis (2016)
# report that wide networks are also faster to *train* to a given accuracy on a GPU,
# because the work comes in big matrix products where depth comes as many small
# sequential layers. That is the paper's claim; this lesson does not measure
# time-to-accuracy (try it: exercise 4).

# %%
sizes = {k: mr.models.wide_resnet(16, k).num_parameters() for k in (1, 2, 4, 8)}
for k, p in sizes.items():
    print(f"WRN-16-{k}: {p:>10,} parameters")
for k in (2, 4, 8):
    ratio = sizes[k] / sizes[k // 2]
    assert 3.9 < ratio <= 4.0, ratio
print("doubling the width multiplies the parameters by",
      ", ".join(f"{sizes[k] / sizes[k // 2]:.2f}" for k in (2, 4, 8)))

# %% [markdown]
# ## 3. ResNeXt: grouped convolutions
#
# A convolution with `groups=G` splits the input channels into G blocks and the
# output channels into G blocks; output block g sees only input block g. It is
# exactly G small convolutions side by side — with 1/G of the weights and of the
# multiply-adds of the dense convolution.

# %%
G, C_in, C_out = 4, 8, 12
xg = rng.standard_normal((2, C_in, 6, 6))
wg = rng.standard_normal((C_out, C_in // G, 3, 3))
grouped = F.conv2d(mr.tensor(xg), mr.tensor(wg), padding=1, groups=G).numpy()
pieces = [F.conv2d(mr.tensor(xg[:, g * C_in // G:(g + 1) * C_in // G]),
                   mr.tensor(wg[g * C_out // G:(g + 1) * C_out // G]), padding=1).numpy()
          for g in range(G)]
assert np.allclose(grouped, np.concatenate(pieces, axis=1))
assert nn.Conv2d(C_in, C_out, 3, groups=G, bias=False).num_parameters() * G \
    == nn.Conv2d(C_in, C_out, 3, bias=False).num_parameters()
print(f"groups={G}: == {G} separate convolutions, with 1/{G} of the weights")

# %% [markdown]
# ResNeXt spends the saving on width: its "32x4d" bottleneck has a 3x3 convolution 128
# channels wide in 32 groups of 4, where the ResNet bottleneck of lesson 07 has 64
# dense channels. About the same parameters; twice the width; 32 parallel paths.

# %%
resnext_block = nn.ResNeXtBottleneck(256, 64, cardinality=32, base_width=4)
resnet_block = nn.Bottleneck(256, 64)
by_hand = (256 * 128 + 128 * (128 // 32) * 9 + 128 * 256) + 2 * (2 * 128) + 2 * 256
assert resnext_block.num_parameters() == by_hand
print(f"ResNeXt 32x4d bottleneck: {resnext_block.num_parameters():,} parameters, 3x3 width "
      f"{resnext_block.conv2.out_channels}; ResNet bottleneck: {resnet_block.num_parameters():,}, "
      f"3x3 width {resnet_block.conv2.out_channels}")

tiny = nn.ResNeXtBottleneck(8, 2, cardinality=2, base_width=64)   # 3x3 width 4 in 2 groups
tiny.to(dtype=np.float64)
assert mr.gradcheck(lambda t: tiny(t), mr.tensor(rng.standard_normal((2, 8, 4, 4)),
                                                 requires_grad=True))
print("gradcheck passed for a tiny ResNeXt block")

# %% [markdown]
# ## 4. Split attention
#
# A split-attention convolution computes R ("radix") groups of feature maps
# $U_1..U_R$, pools their sum into one vector per image, maps it through two small
# 1x1 layers to R weights per channel, normalises them with a softmax *across the R
# splits*, and returns $\sum_r a_r U_r$: the block chooses, per image and channel,
# how to mix its own splits. Here is the computation redone from the module's own
# layers, checked against its forward pass.

# %%
mr.manual_seed(0)
sa = nn.SplitAttentionConv2d(8, 8, radix=2)
sa.eval()
xs = mr.tensor(rng.standard_normal((2, 8, 6, 6)).astype(np.float32))
with mr.no_grad():
    u = sa.relu(sa.bn0(sa.conv(xs))).numpy()                       # (N, R*C, H, W)
    U = u.reshape(2, 2, 8, 6, 6)                                    # (N, R, C, H, W)
    gap = U.sum(axis=1).mean(axis=(2, 3), keepdims=True)            # (N, C, 1, 1)
    logits = sa.fc2(sa.relu1(sa.bn1(sa.fc1(mr.tensor(gap))))).numpy().reshape(2, 2, 8, 1, 1)
    a = np.exp(logits - logits.max(axis=1, keepdims=True))
    a /= a.sum(axis=1, keepdims=True)                               # softmax over the R splits
    by_hand = (a * U).sum(axis=1)                                   # (N, C, H, W)
    module_out = sa(xs).numpy()
assert np.allclose(a.sum(axis=1), 1.0)
assert np.allclose(by_hand, module_out, atol=1e-5)
print("split attention by hand == the module; the weights of the 2 splits sum to 1 per channel")

tiny_sa = nn.SplitAttentionBlock(8, 2, radix=2)
tiny_sa.to(dtype=np.float64)
assert mr.gradcheck(lambda t: tiny_sa(t), mr.tensor(rng.standard_normal((2, 8, 4, 4)),
                                                    requires_grad=True))
print("gradcheck passed for a tiny split-attention block")

# %% [markdown]
# ## 5. What they cost
#
# Parameters and multiply-adds are counted (exact); time is measured (one forward and
# backward pass, this machine, this moment — reported, not asserted).

# %%
def conv_macs(model, shape=(1, 3, 32, 32), scale=1):
    """Conv multiply-adds for one forward pass; those on spatial maps are multiplied by ``scale``
    (the attention layers of split attention and SE work on pooled 1x1 maps: they do not scale)."""
    total = [0]

    def hook(layer, inputs, output):
        N, C_out, OH, OW = output.shape
        KH, KW = layer.kernel_size
        macs = N * C_out * OH * OW * (layer.in_channels // layer.groups) * KH * KW
        total[0] += macs if OH * OW == 1 else scale * macs

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    model.eval()
    with mr.no_grad():
        model(mr.tensor(np.zeros(shape, dtype=np.float32)))
    for h in handles:
        h.remove()
    model.train()
    return total[0]


# The CIFAR networks halve the side of their maps exactly twice (32 -> 16 -> 8, or
# 8 -> 4 -> 2), so their convolutions on feature maps cost exactly 16x as much on 32x32
# images as on 8x8 ones. Fast mode counts and times on 8x8 images and scales the counts.
SIZE = fast_or_full(8, 32)
scale = (32 // SIZE) ** 2
probe = mr.models.resnest20()
assert conv_macs(probe, (1, 3, 32, 32)) == conv_macs(probe, (1, 3, 8, 8), scale=16)

batch = fast_or_full(2, 16)
xb = mr.tensor(rng.standard_normal((batch, 3, SIZE, SIZE)).astype(np.float32))
yb = rng.integers(0, 10, batch)
F.cross_entropy(probe(xb), yb).backward()          # warm-up: the first pass pays for page faults
rows = {}
for name in ["resnet20", "preact_resnet20", "wrn16_4", "resnext29_4x16d", "resnest20"]:
    mr.manual_seed(0)
    model = mr.models.get_model(name)
    macs = conv_macs(model, (1, 3, SIZE, SIZE), scale=scale)
    start = time.perf_counter()
    F.cross_entropy(model(xb), yb).backward()
    seconds = time.perf_counter() - start
    rows[name] = (model.num_parameters(), macs, seconds)
    print(f"{name:>16}: {model.num_parameters():>9,} parameters, {macs / 1e6:7.1f} M MACs per "
          f"32x32 image, forward+backward of {batch} {SIZE}x{SIZE} images {seconds:.2f}s")

fig = new_figure((10, 3.5))
if fig is not None:
    axes = fig.subplots(1, 3)
    names = list(rows)
    for ax, i, label in zip(axes, range(3), ["parameters (M)", "M MACs per image",
                                            f"s, fwd+bwd of {batch} at {SIZE}x{SIZE}"]):
        values = [rows[n][i] / (1e6 if i < 2 else 1) for n in names]
        ax.barh(names, values, color=f"C{i}")
        ax.set_xlabel(label)
save_figure(fig, OUT / "variant_costs.png")

# %% [markdown]
# ## Try this
#
# 1. In section 1 use a *post-activation* stage (`mr.models.resnet20().layer1`): which
#    of the two asserts fails, and why?
# 2. Count MACs per parameter for each model of section 5. Which variants spend their
#    compute on few parameters used many times?
# 3. Make a ResNeXt block with `cardinality=1` and the same width: how many more
#    parameters does the 3x3 layer need?
# 4. Train `preact_resnet20` and `resnet20` for one epoch each with lesson 09's `fit`
#    and compare. Then test the wide-network claim on your machine: time `wrn16_4`
#    and `resnet56` to the same test accuracy.

# %%
print("lesson 08 done: each variant's defining equation, parameter counts and gradients were "
      "asserted; costs in time are reported")
