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
# # Lesson 07 — Bottleneck blocks and projection shortcuts
#
# **Goal.** Count what a block costs — parameters, and multiply-adds (MACs) per image
# — by hand and with forward hooks, and see why the *bottleneck* block (1x1 reduce, 3x3,
# 1x1 expand) let He et al. go deeper for little extra cost: ResNet-50 costs about as
# much as ResNet-34 (4.1 against 3.7 G multiply-adds per image), though ResNet-101 (7.8)
# and ResNet-152 (11.5) cost two and three times as much. Then compare the two kinds of
# shortcut used when a block changes shape: zero-padding (option A, no parameters) and a
# 1x1 projection (option B).
#
# **Budget without fast mode:** no data set (costs are counted on zero images);
# builds ResNet-18/34/50/101/152: measured 5-6 s in two runs on a 2-core Intel Xeon
# (2026-12-05); it builds the models' 164 million weights. Fast mode: ResNet-34 and
# ResNet-50 only.

# %%
import numpy as np
from lesson_utils import fast_or_full, mode_line, new_figure, out_dir, save_figure

import minires as mr
from minires import nn

OUT = out_dir("07_bottleneck_and_projection")
print(mode_line())

# %% [markdown]
# ## 1. Parameters, by hand
#
# A convolution with $C_{in}$ inputs, $C_{out}$ outputs and a $K\times K$ kernel holds
# $C_{out}\cdot C_{in}\cdot K^2$ weights (divided by the number of groups, lesson 08),
# plus $C_{out}$ biases if it has them — ResNet convolutions do not, since a batch
# norm follows. A batch norm over $C$ channels learns $2C$ numbers (scale and shift);
# its running statistics are buffers, not parameters.
#
# Compare, at the width of ResNet-50's first stage:
#
# * a **basic block** on 256 channels: two 3x3 convolutions 256 → 256;
# * a **bottleneck block** with 256 channels in and out: 1x1 256 → 64, 3x3 64 → 64,
#   1x1 64 → 256. The 3x3 convolution — the expensive one — works on 64 channels.

# %%
def conv_params(c_in, c_out, k, groups=1):
    return c_out * (c_in // groups) * k * k


def bn_params(c):
    return 2 * c


basic_by_hand = 2 * conv_params(256, 256, 3) + 2 * bn_params(256)
bottleneck_by_hand = (conv_params(256, 64, 1) + conv_params(64, 64, 3) + conv_params(64, 256, 1)
                      + 2 * bn_params(64) + bn_params(256))
basic = nn.BasicBlock(256, 256)
bottleneck = nn.Bottleneck(256, 64)          # planes=64, expansion 4: 256 out
print(f"basic block 256->256:      {basic.num_parameters():>9,} parameters")
print(f"bottleneck 256->64->256:   {bottleneck.num_parameters():>9,} parameters "
      f"({basic.num_parameters() / bottleneck.num_parameters():.1f}x fewer, one layer more)")
assert basic.num_parameters() == basic_by_hand
assert bottleneck.num_parameters() == bottleneck_by_hand

# %% [markdown]
# ## 2. Multiply-adds, with forward hooks
#
# Each output value of a convolution is a dot product of length $C_{in}K^2/G$, so one
# layer costs $N \cdot C_{out}\cdot OH\cdot OW \cdot C_{in} K^2/G$ multiply-adds; a
# linear layer $N\cdot$in$\cdot$out. A forward hook sees each layer's output shape, so
# counting a whole network is one forward pass on a zero image.

# %%
def count_macs(model, input_shape):
    """Multiply-adds of every Conv2d and Linear for one forward pass:
    {"conv": ..., "linear": ...}."""
    total = {"conv": 0, "linear": 0}

    def conv_hook(layer, inputs, output):
        N, C_out, OH, OW = output.shape
        KH, KW = layer.kernel_size
        total["conv"] += N * C_out * OH * OW * (layer.in_channels // layer.groups) * KH * KW

    def linear_hook(layer, inputs, output):
        total["linear"] += output.numel() * layer.in_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    model.eval()
    try:
        with mr.no_grad():
            model(mr.tensor(np.zeros(input_shape, dtype=np.float32)))
    finally:
        for h in handles:
            h.remove()
    return total


# one block on a 56x56 map (the first stage of an ImageNet ResNet)
basic_macs = count_macs(basic, (1, 256, 56, 56))["conv"]
bottleneck_macs = count_macs(bottleneck, (1, 256, 56, 56))["conv"]
assert basic_macs == 2 * 56 * 56 * 256 * 256 * 9
assert bottleneck_macs == 56 * 56 * (64 * 256 + 64 * 64 * 9 + 256 * 64)
print(f"at 56x56: basic {basic_macs / 1e6:,.0f} M MACs, bottleneck {bottleneck_macs / 1e6:,.0f} M "
      f"MACs ({basic_macs / bottleneck_macs:.1f}x cheaper)")

# %% [markdown]
# ## 3. The ImageNet family
#
# ResNet-18 and -34 stack basic blocks; ResNet-50, -101 and -152 stack bottlenecks
# (1x1, 3x3, 1x1: three layers per block) whose outputs are 4x wider. Counting at the
# standard 224x224 input would mean a slow forward pass, but every feature map of
# these networks at 224x224 is exactly 7x the side of the one at 32x32 (224 = 7 x 32,
# and every stage halves the side exactly), so the convolutions cost exactly 49x as
# much; the final linear layer sees a pooled vector either way. We count at 32x32 and
# scale — and check that rule on ResNet-18 at 64x64 (exactly 4x).

# %%
names = fast_or_full(["resnet34", "resnet50"],
                     ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"])
# published by torchvision (parameters; GFLOPS = billions of multiply-adds at 224x224)
published = {"resnet18": (11_689_512, 1.81), "resnet34": (21_797_672, 3.66),
             "resnet50": (25_557_032, 4.09), "resnet101": (44_549_160, 7.80),
             "resnet152": (60_192_808, 11.51)}

small = mr.models.resnet18()
at32, at64 = count_macs(small, (1, 3, 32, 32)), count_macs(small, (1, 3, 64, 64))
assert at64["conv"] == 4 * at32["conv"] and at64["linear"] == at32["linear"]
del small

table = {}
for name in names:
    model = mr.models.get_model(name)
    macs32 = count_macs(model, (1, 3, 32, 32))
    macs224 = 49 * macs32["conv"] + macs32["linear"]
    layers = sum(1 for n, m in model.named_modules()
                 if isinstance(m, (nn.Conv2d, nn.Linear)) and "downsample" not in n)
    table[name] = (model.num_parameters(), macs224, layers)
    params, gmacs = published[name]
    print(f"{name:>9}: {table[name][0]:>11,} parameters, {macs224 / 1e9:6.2f} G MACs at 224x224 "
          f"(torchvision lists {gmacs:.2f}), {layers} weighted layers on the main path")
    assert table[name][0] == params
    assert abs(macs224 / 1e9 - gmacs) < 0.01
    assert layers == int(name[len("resnet"):])            # the depth in the name
    del model

if "resnet34" in table and "resnet50" in table:
    p34, m34, _ = table["resnet34"]
    p50, m50, _ = table["resnet50"]
    print(f"ResNet-50 vs ResNet-34: {p50 / p34:.2f}x the parameters and {m50 / m34:.2f}x the "
          f"MACs for 16 more layers and a 4x wider output (2048 vs 512 features)")

fig = new_figure((7, 4))
if fig is not None:
    ax = fig.subplots()
    for name, (params, macs, _) in table.items():
        ax.scatter(macs / 1e9, params / 1e6, s=40)
        ax.annotate(name, (macs / 1e9, params / 1e6), textcoords="offset points", xytext=(5, 5))
    ax.set(xlabel="G multiply-adds per 224x224 image", ylabel="million parameters",
           title="cost of the ImageNet ResNets")
save_figure(fig, OUT / "imagenet_costs.png")

# %% [markdown]
# The CIFAR networks show the same trade: the pre-activation ResNet-164 of He et al.
# (2016) uses bottlenecks and has about as many parameters as ResNet-110 with basic
# blocks.

# %%
for name in fast_or_full(["resnet20"], ["resnet20", "resnet110", "preact_resnet164"]):
    model = mr.models.get_model(name)
    print(f"{name:>17}: {model.num_parameters():>9,} parameters, "
          f"{count_macs(model, (1, 3, 32, 32))['conv'] / 1e6:7.1f} M MACs per 32x32 image")
    del model

# %% [markdown]
# ## 4. Shortcuts that change shape
#
# When a block halves the map and doubles the channels, `x` no longer has the shape of
# $F(x)$ and cannot be added as it is. The paper offers:
#
# * **option A** (used for its CIFAR networks): take every second pixel and pad the
#   new channels with zeros — no parameters at all;
# * **option B** (torchvision's default): a 1x1 convolution with stride 2 and a batch
#   norm, the "projection shortcut" (`downsample.0`, `downsample.1`).

# %%
shortcut_a = nn.ShortcutA(16, 32, stride=2)
xa = mr.tensor(np.random.default_rng(0).standard_normal((2, 16, 8, 8)).astype(np.float32))
ya = shortcut_a(xa).numpy()
print("option A:", tuple(xa.shape), "->", ya.shape, "with", shortcut_a.num_parameters(),
      "parameters")
assert ya.shape == (2, 32, 4, 4)
assert np.array_equal(ya[:, 8:24], xa.numpy()[:, :, ::2, ::2])      # the old channels, subsampled
assert not ya[:, :8].any() and not ya[:, 24:].any()                  # the new ones: zeros

res_a, res_b = mr.models.resnet20(option="A"), mr.models.resnet20(option="B")
extra_by_hand = (conv_params(16, 32, 1) + bn_params(32)) + (conv_params(32, 64, 1) + bn_params(64))
print(f"resnet20 option A: {res_a.num_parameters():,} parameters; option B: "
      f"{res_b.num_parameters():,} (+{res_b.num_parameters() - res_a.num_parameters():,} in two "
      f"projections)")
assert res_b.num_parameters() - res_a.num_parameters() == extra_by_hand
print(res_b.layer2[0])

# %% [markdown]
# ## Try this
#
# 1. Count a `ResNeXtBottleneck(256, 64, cardinality=32, base_width=4)` (lesson 08):
#    how do grouped convolutions change the numbers of section 1?
# 2. Make `count_macs` count the batch-norm and ReLU work too (one or two operations
#    per element). How much of the total is it for ResNet-50?
# 3. Counting is not timing: time one forward pass of `resnet34` and `resnet50` on a
#    (1, 3, 64, 64) batch. Does the ratio of times follow the ratio of MACs? (1x1
#    convolutions need no im2col but move a lot of memory.)
# 4. Build `mr.models.resnet20(option="B")` and `option="A"` and train both with
#    lesson 09's `fit` for one epoch: any difference?

# %%
print("lesson 07 done: every count above was asserted against a formula or a published number")
