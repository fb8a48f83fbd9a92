"""Residual blocks: BasicBlock, Bottleneck, pre-activation, wide, ResNeXt, split-attention, SE.

A residual block computes ``out = F(x) + shortcut(x)`` (then a ReLU, for the
post-activation blocks of He et al. 2015). To let a learner -- and
``minires.inspect`` -- see the gradient of each path separately, every block here
follows one contract:

1. ``block.fork`` is a parameter-free sub-module whose forward returns
   ``F.fork(x)``: two tensors equal to ``x``, whose gradients add up in backward.
   ``forward`` begins with ``x_branch, x_skip = self.fork(x)``.
2. The residual branch F consumes ``x_branch``: it is ``block.branch(x_branch)``,
   a plain method that calls the branch layers, which are direct children with
   torchvision's names (``conv1``, ``bn1``, ``conv2``, ``bn2``, ``conv3``, ``bn3``,
   plus ``se`` for squeeze-and-excitation), so state_dict keys match torchvision.
3. The shortcut consumes ``x_skip`` through the child ``block.downsample``:
   ``Identity()`` when shapes match, ``ShortcutA`` (parameter-free: stride-2
   subsampling and zero-padded channels, the paper's CIFAR option A) or a
   projection (option B: ``Sequential(Conv2d 1x1, BatchNorm2d)``, torchvision's
   ``downsample.0`` / ``downsample.1``; a bare 1x1 conv in pre-activation blocks).
4. A plain block (``shortcut=False``; the "plain" networks of the paper) still
   forks but never uses ``x_skip``: the skip gradient is then zero (a tensor hook
   on ``x_skip`` is never called) and ``block.downsample is None``.
   ``block.shortcut`` tells which kind a block is.

So, for any block, a forward hook on ``block.fork`` receives ``(x_branch, x_skip)``
as its output; ``register_hook`` on each gives the gradient flowing back through
the branch and through the shortcut, and their sum is the gradient at the
block's input.

Activations: torchvision reuses one ``relu`` module for every ReLU of a block.
Here each activation is its own ReLU module (``relu1``, ``relu2`` inside the
branch, ``relu`` after the addition), so a forward hook fires once per
activation. ReLUs hold no parameters, so state_dict keys are unchanged.

Where the fork sits in pre-activation blocks (PreActBlock, PreActBottleneck,
WideBasic): at the block input, before ``bn1``. The branch is
``bn1-relu-conv1-...``; the shortcut (identity, or a bare 1x1 projection when
shapes change) sees the raw input ``x``. (The authors' Torch code lets a
projection see ``relu(bn1(x))`` instead; the parameter count is the same, and
this choice keeps the two paths disjoint, so the skip path carries no BN or ReLU.)
"""
from __future__ import annotations

import numbers

from .. import functional as F
from . import init
from .layers import AdaptiveAvgPool2d, BatchNorm2d, Conv2d, Dropout, Identity, ReLU
from .module import Module, Sequential


def conv3x3(in_planes, out_planes, stride=1, groups=1):
    """3x3 convolution with padding 1, no bias (a BN follows)."""
    return Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, groups=groups,
                  bias=False)


def conv1x1(in_planes, out_planes, stride=1):
    """1x1 convolution, no bias."""
    return Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class Fork(Module):
    """Parameter-free: returns ``F.fork(x)`` = (x_branch, x_skip), two tensors equal to x.

    In backward the two paths' gradients are added; hooks on the two outputs see
    each path's share.
    """

    def forward(self, x):
        """Return (x_branch, x_skip), two tensors equal to x whose gradients add up in backward."""
        return F.fork(x, 2)


class ShortcutA(Module):
    """Option A shortcut (He et al. 2015, CIFAR): parameter-free.

    Takes every ``stride``-th pixel and pads the channel axis with zeros, half
    before and half after (as the common CIFAR implementations do):
    (N, C_in, H, W) -> (N, C_out, H / stride, W / stride).
    """

    def __init__(self, in_planes, out_planes, stride):
        super().__init__()
        if out_planes < in_planes:
            raise ValueError(f"ShortcutA: cannot map {in_planes} channels to fewer ({out_planes}); "
                             f"use a projection shortcut (option 'B')")
        self.in_planes, self.out_planes, self.stride = in_planes, out_planes, stride

    def extra_repr(self):
        """The settings shown in the repr: in_planes, out_planes, stride."""
        return f"{self.in_planes}, {self.out_planes}, stride={self.stride}"

    def forward(self, x):
        """Subsample x (N, C_in, H, W) by ``stride`` and zero-pad its channels to C_out.

        Returns (N, C_out, H / stride, W / stride); no parameters, so the shortcut
        path holds no learned weights.
        """
        if self.stride != 1:
            x = x[:, :, ::self.stride, ::self.stride]        # (N, C_in, H/s, W/s)
        extra = self.out_planes - self.in_planes
        if extra:
            before = extra // 2
            x = F.pad(x, ((0, 0), (before, extra - before), (0, 0), (0, 0)))  # (N, C_out, ., .)
        return x


def make_shortcut(in_planes, out_planes, stride, option="B", batch_norm=True):
    """The ``downsample`` module: Identity when shapes match, else option A or B.

    Option B is ``Sequential(conv1x1, BatchNorm2d)`` (torchvision's keys
    ``downsample.0.weight``, ``downsample.1.*``); with ``batch_norm=False`` (pre-activation
    blocks) it is ``Sequential(conv1x1)``.
    """
    if stride == 1 and in_planes == out_planes:
        return Identity()
    if option == "A":
        return ShortcutA(in_planes, out_planes, stride)
    if option == "B":
        layers = [conv1x1(in_planes, out_planes, stride)]
        if batch_norm:
            layers.append(BatchNorm2d(out_planes))
        return Sequential(*layers)
    raise ValueError(f"shortcut option must be 'A' (zero-padding) or 'B' (projection), "
                     f"got {option!r}")


class SqueezeExcitation(Module):
    """Squeeze-and-excitation (Hu et al. 2018): rescale channels by a learned gate.

    s = sigmoid(fc2(relu(fc1(mean over H, W of x)))),  out = x * s   (s: (N, C, 1, 1)).
    ``fc1``/``fc2`` are 1x1 convolutions with bias, as in torchvision.
    """

    def __init__(self, channels, reduction=16):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.avgpool = AdaptiveAvgPool2d(1)
        self.fc1 = Conv2d(channels, hidden, kernel_size=1)
        self.relu = ReLU()
        self.fc2 = Conv2d(hidden, channels, kernel_size=1)

    def forward(self, x):
        """Return x (N, C, H, W) scaled per channel by the gate s (N, C, 1, 1)."""
        s = self.avgpool(x)                                  # (N, C, 1, 1)
        s = F.sigmoid(self.fc2(self.relu(self.fc1(s))))      # (N, C, 1, 1)
        return x * s


class ResidualBlock(Module):
    """What every block shares: the fork, the shortcut and the forward that joins them.

    A subclass's constructor reads in state_dict order (torchvision's): ``super().__init__``
    checks the stride and adds the fork; then come the branch layers, the SE gate
    (``self.se``) when asked for, ``self._add_shortcut(option)`` and, for post-activation
    blocks, the final ``self.relu``. The subclass defines ``branch``, ending it with
    ``_se_gate``, and ``zero_init_residual``.
    """

    expansion = 1
    post_activation = True     # a ReLU after the addition (He et al. 2015); False: pre-activation

    def __init__(self, in_planes, out_planes, stride, shortcut):
        """Record the block's shape (``in_planes`` -> ``out_planes`` channels, ``stride``)
        and whether it adds a shortcut, and add the fork, the block's first child."""
        super().__init__()
        if not isinstance(stride, numbers.Integral) or stride < 1:
            raise ValueError(f"{type(self).__name__}: stride must be a positive int, "
                             f"got {stride!r}")
        self.in_planes, self.out_planes, self.stride = in_planes, out_planes, stride
        self.shortcut = bool(shortcut)
        self.fork = Fork()

    def _add_shortcut(self, option, batch_norm=True):
        """Add the child ``downsample``: the shortcut's module (``make_shortcut``: identity,
        option A or a projection, with a BN unless ``batch_norm=False``), or None for a
        plain block. Called after the branch layers, so its keys follow theirs."""
        if self.shortcut:
            self.downsample = make_shortcut(self.in_planes, self.out_planes, self.stride, option,
                                            batch_norm)
        else:
            self.add_module("downsample", None)

    def branch(self, x):  # pragma: no cover - abstract
        """The residual branch F applied to ``x_branch``; each block defines it.

        Returns (N, out_planes, H / stride, W / stride), the shape of the shortcut's output.
        """
        raise NotImplementedError

    def _se_gate(self, out):
        """The end of every branch: the squeeze-and-excitation gate when the block has one."""
        return self.se(out) if "se" in self._modules else out

    def forward(self, x):
        """out = F(x) + shortcut(x), then a ReLU for post-activation blocks.

        x: (N, in_planes, H, W) -> (N, out_planes, H / stride, W / stride). The input
        is forked first, so hooks on ``self.fork``'s outputs see the branch and the
        skip gradient separately; a plain block (``shortcut=False``) skips the addition.
        """
        x_branch, x_skip = self.fork(x)
        out = self.branch(x_branch)
        if self.shortcut:
            out = out + self.downsample(x_skip)
        if self.post_activation:
            out = self.relu(out)
        return out

    def zero_init_residual(self):
        """Make the branch output zero at initialisation, so the block starts as its shortcut.

        Post-activation blocks zero the last BN's weight (torchvision's
        ``zero_init_residual``); pre-activation blocks zero the last conv's weight.
        """
        raise NotImplementedError  # pragma: no cover - each block defines it


def is_residual_block(module) -> bool:
    """Whether ``module`` is a residual block: True or False. The one place that decides it.

    The contract (this module's docstring): a residual block has a ``fork`` submodule, where
    its input splits into the residual branch F and the skip path, and its forward returns
    ``F(x) + shortcut(x)`` (``shortcut`` the identity or ``downsample``). Every
    ``ResidualBlock`` subclass keeps it; so can a block of your own (an MLP block with a
    ``self.fork = nn.Fork()``), which ``minires.inspect`` and the experiments then treat like
    the library's. Any other module (a layer, a container, a whole network) is not one.

    A plain block (``shortcut=False``, e.g. ``PlainBlock``) keeps the same structure with the
    shortcut switched off, so it counts too: its skip gradient is zero. ``module.shortcut``
    (on ``ResidualBlock``) tells whether the shortcut is added.
    """
    return isinstance(module, ResidualBlock) or "fork" in dict(module.named_children())


# --- post-activation blocks (He et al. 2015) ------------------------------------------
class BasicBlock(ResidualBlock):
    """Two 3x3 convs: F(x) = bn2(conv2(relu(bn1(conv1(x))))); out = relu(F(x) + shortcut(x)).

    ``option``: "A" (zero-padding, CIFAR) or "B" (projection) when shapes change.
    ``shortcut=False`` gives the plain block; ``se=True`` adds squeeze-and-excitation
    at the end of the branch.
    """

    expansion = 1

    def __init__(self, inplanes, planes, stride=1, option="B", shortcut=True, se=False,
                 se_reduction=16):
        super().__init__(inplanes, planes, stride, shortcut)
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = BatchNorm2d(planes)
        self.relu1 = ReLU()
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = BatchNorm2d(planes)
        if se:
            self.se = SqueezeExcitation(planes, se_reduction)
        self._add_shortcut(option)
        self.relu = ReLU()

    def branch(self, x):
        """F(x) = bn2(conv2(relu(bn1(conv1(x))))), then the SE gate if present."""
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self._se_gate(out)

    def zero_init_residual(self):
        """Zero bn2's weight, so F(x) = 0 and the block starts as its shortcut."""
        init.zeros_(self.bn2.weight)


class PlainBlock(BasicBlock):
    """BasicBlock without its shortcut (the paper's plain networks): out = relu(F(x))."""

    def __init__(self, inplanes, planes, stride=1, option="B", shortcut=False, se=False,
                 se_reduction=16):
        if shortcut:
            raise ValueError("PlainBlock has no shortcut; use BasicBlock for a residual block")
        super().__init__(inplanes, planes, stride, option, shortcut=False, se=se,
                         se_reduction=se_reduction)


class Bottleneck(ResidualBlock):
    """1x1 reduce, 3x3 (stride here, as torchvision's "ResNet v1.5"), 1x1 restore (x4).

    F(x) = bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x))))))))
    Inner width = int(planes * base_width / 64) * groups (ResNeXt: groups = cardinality).
    """

    expansion = 4

    def __init__(self, inplanes, planes, stride=1, groups=1, base_width=64, option="B",
                 shortcut=True, se=False, se_reduction=16):
        out_planes = planes * self.expansion
        super().__init__(inplanes, out_planes, stride, shortcut)
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = conv1x1(inplanes, width)
        self.bn1 = BatchNorm2d(width)
        self.relu1 = ReLU()
        self.conv2 = conv3x3(width, width, stride, groups)
        self.bn2 = BatchNorm2d(width)
        self.relu2 = ReLU()
        self.conv3 = conv1x1(width, out_planes)
        self.bn3 = BatchNorm2d(out_planes)
        if se:
            self.se = SqueezeExcitation(out_planes, se_reduction)
        self._add_shortcut(option)
        self.relu = ReLU()

    def branch(self, x):
        """F(x) = bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x)))))))), then the SE gate if present."""
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self._se_gate(out)

    def zero_init_residual(self):
        """Zero bn3's weight, so F(x) = 0 and the block starts as its shortcut."""
        init.zeros_(self.bn3.weight)


class ResNeXtBottleneck(Bottleneck):
    """ResNeXt block (Xie et al. 2017): a Bottleneck whose 3x3 conv has ``cardinality`` groups
    of ``base_width`` channels each (at planes=64); e.g. 32x4d: cardinality 32, base_width 4."""

    def __init__(self, inplanes, planes, stride=1, cardinality=32, base_width=4, option="B",
                 shortcut=True, se=False, se_reduction=16):
        super().__init__(inplanes, planes, stride, groups=cardinality, base_width=base_width,
                         option=option, shortcut=shortcut, se=se, se_reduction=se_reduction)
        self.cardinality = cardinality


# --- pre-activation blocks (He et al. 2016) -----------------------------------------
class PreActBlock(ResidualBlock):
    """F(x) = conv2(relu(bn2(conv1(relu(bn1(x)))))); out = F(x) + shortcut(x), no final ReLU.

    The shortcut is the identity, or when shapes change a bare 1x1 conv (option
    "B") or zero-padding (option "A"), applied to the raw input (see the module
    docstring on where the fork sits). ``dropout`` > 0 puts a Dropout between conv1 and
    bn2 (the wide-ResNet block, ``WideBasic``).
    """

    expansion = 1
    post_activation = False

    def __init__(self, inplanes, planes, stride=1, option="B", shortcut=True, se=False,
                 se_reduction=16, dropout=0.0):
        super().__init__(inplanes, planes, stride, shortcut)
        self.bn1 = BatchNorm2d(inplanes)
        self.relu1 = ReLU()
        self.conv1 = conv3x3(inplanes, planes, stride)
        if dropout:
            self.dropout = Dropout(dropout)
        self.bn2 = BatchNorm2d(planes)
        self.relu2 = ReLU()
        self.conv2 = conv3x3(planes, planes)
        if se:
            self.se = SqueezeExcitation(planes, se_reduction)
        self._add_shortcut(option, batch_norm=False)    # no final ReLU: pre-activation

    def branch(self, x):
        """F(x) = conv2(relu(bn2(conv1(relu(bn1(x)))))).

        With ``dropout`` a Dropout follows conv1; with ``se`` the SE gate ends the branch.
        """
        out = self.conv1(self.relu1(self.bn1(x)))
        if "dropout" in self._modules:
            out = self.dropout(out)
        out = self.conv2(self.relu2(self.bn2(out)))
        return self._se_gate(out)

    def zero_init_residual(self):
        """Zero conv2's weight (this branch ends in a conv, not a BN): the block starts as
        its shortcut."""
        init.zeros_(self.conv2.weight)


class PreActBottleneck(ResidualBlock):
    """Pre-activation bottleneck (He et al. 2016, ResNet-164):
    F(x) = conv3(relu(bn3(conv2(relu(bn2(conv1(relu(bn1(x))))))))),
    1x1 / 3x3 (stride) / 1x1 (x4)."""

    expansion = 4
    post_activation = False

    def __init__(self, inplanes, planes, stride=1, option="B", shortcut=True, se=False,
                 se_reduction=16):
        out_planes = planes * self.expansion
        super().__init__(inplanes, out_planes, stride, shortcut)
        self.bn1 = BatchNorm2d(inplanes)
        self.relu1 = ReLU()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn2 = BatchNorm2d(planes)
        self.relu2 = ReLU()
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn3 = BatchNorm2d(planes)
        self.relu3 = ReLU()
        self.conv3 = conv1x1(planes, out_planes)
        if se:
            self.se = SqueezeExcitation(out_planes, se_reduction)
        self._add_shortcut(option, batch_norm=False)    # no final ReLU: pre-activation

    def branch(self, x):
        """F(x) = conv3(relu(bn3(conv2(relu(bn2(conv1(relu(bn1(x))))))))).

        With ``se`` the SE gate ends the branch.
        """
        out = self.conv1(self.relu1(self.bn1(x)))
        out = self.conv2(self.relu2(self.bn2(out)))
        out = self.conv3(self.relu3(self.bn3(out)))
        return self._se_gate(out)

    def zero_init_residual(self):
        """Zero conv3's weight (this branch ends in a conv, not a BN): the block starts as
        its shortcut."""
        init.zeros_(self.conv3.weight)


class WideBasic(PreActBlock):
    """Wide ResNet block (Zagoruyko & Komodakis 2016), pre-activation with optional dropout:
    F(x) = conv2(relu(bn2(dropout(conv1(relu(bn1(x))))))), stride on conv1 -- a PreActBlock
    with ``dropout`` as its fourth argument, as in the paper's code.

    The shortcut is the identity or a bare 1x1 conv when shapes change.
    """

    def __init__(self, inplanes, planes, stride=1, dropout=0.0, option="B", shortcut=True,
                 se=False, se_reduction=16):
        super().__init__(inplanes, planes, stride, option=option, shortcut=shortcut, se=se,
                         se_reduction=se_reduction, dropout=dropout)


# --- split attention (ResNeSt, Zhang et al. 2020) --------------------------------------
class SplitAttentionConv2d(Module):
    """Split-attention convolution (ResNeSt), ``radix`` splits, ``cardinality`` groups.

    U = relu(bn0(conv(x)))                  (N, R*C, OH, OW): R splits U_1..U_R of C channels
    s = mean over OH, OW of sum_r U_r       (N, C, 1, 1): what each split contributes, globally
    a = fc2(relu(bn1(fc1(s))))              (N, R*C, 1, 1)
    a_r = softmax over r of a               ("r-softmax"; per cardinal group and channel)
    out = sum_r a_r * U_r                   (N, C, OH, OW)

    Names as in the ResNeSt code: conv, bn0, relu, fc1, bn1, fc2.
    """

    def __init__(self, in_channels, channels, kernel_size=3, stride=1, padding=1, radix=2,
                 cardinality=1, reduction_factor=4, min_inter_channels=8):
        super().__init__()
        if radix < 1:
            raise ValueError(f"SplitAttentionConv2d: radix must be >= 1, got {radix}")
        if in_channels % (radix * cardinality):
            raise ValueError(f"SplitAttentionConv2d: in_channels={in_channels} must be divisible "
                             f"by radix * cardinality = {radix * cardinality}")
        self.radix, self.cardinality, self.channels = radix, cardinality, channels
        inter = max(in_channels * radix // reduction_factor, min_inter_channels)
        self.conv = Conv2d(in_channels, channels * radix, kernel_size, stride, padding,
                           groups=cardinality * radix, bias=False)
        self.bn0 = BatchNorm2d(channels * radix)
        self.relu = ReLU()
        self.fc1 = Conv2d(channels, inter, kernel_size=1, groups=cardinality)
        self.bn1 = BatchNorm2d(inter)
        self.relu1 = ReLU()
        self.fc2 = Conv2d(inter, channels * radix, kernel_size=1, groups=cardinality)

    def extra_repr(self):
        """The settings shown in the repr: radix, cardinality."""
        return f"radix={self.radix}, cardinality={self.cardinality}"

    def forward(self, x):
        """x (N, C_in, H, W) -> (N, C, OH, OW): the radix splits weighted by their r-softmax.

        With radix 1 the single split is gated by a sigmoid instead.
        """
        R, C, G = self.radix, self.channels, self.cardinality
        u = self.relu(self.bn0(self.conv(x)))                      # (N, R*C, OH, OW)
        N = u.shape[0]
        splits = [u[:, r * C:(r + 1) * C] for r in range(R)]      # R x (N, C, OH, OW)
        gap = splits[0]
        for s in splits[1:]:
            gap = gap + s
        gap = F.adaptive_avg_pool2d(gap, 1)                        # (N, C, 1, 1)
        a = self.fc2(self.relu1(self.bn1(self.fc1(gap))))          # (N, R*C, 1, 1)
        if R == 1:
            a = F.sigmoid(a)
            return u * a
        a = a.reshape(N, G, R, C // G).transpose(0, 2, 1, 3)       # (N, R, G, C/G)
        a = F.softmax(a, axis=1)                                   # over the R splits
        a = a.reshape(N, R * C, 1, 1)                              # (N, R*C, 1, 1)
        out = None
        for r in range(R):
            term = splits[r] * a[:, r * C:(r + 1) * C]
            out = term if out is None else out + term
        return out


class SplitAttentionBlock(ResidualBlock):
    """ResNeSt bottleneck: conv1 1x1 - bn1 - relu1 - conv2 (split attention, 3x3, stride) -
    conv3 1x1 (x4) - bn3; out = relu(F(x) + shortcut(x)).

    Kept small: radix 2, cardinality 1 by default, stride inside the split-attention conv
    (ResNeSt's "avd" average-pool downsampling is left out).
    """

    expansion = 4

    def __init__(self, inplanes, planes, stride=1, radix=2, cardinality=1, base_width=64,
                 option="B", shortcut=True, se=False, se_reduction=16):
        out_planes = planes * self.expansion
        super().__init__(inplanes, out_planes, stride, shortcut)
        width = int(planes * (base_width / 64.0)) * cardinality
        self.conv1 = conv1x1(inplanes, width)
        self.bn1 = BatchNorm2d(width)
        self.relu1 = ReLU()
        self.conv2 = SplitAttentionConv2d(width, width, 3, stride, 1, radix=radix,
                                          cardinality=cardinality)
        self.conv3 = conv1x1(width, out_planes)
        self.bn3 = BatchNorm2d(out_planes)
        if se:
            self.se = SqueezeExcitation(out_planes, se_reduction)
        self._add_shortcut(option)
        self.relu = ReLU()

    def branch(self, x):
        """F(x) = bn3(conv3(conv2(relu(bn1(conv1(x)))))), conv2 being the split-attention conv.

        With ``se`` the SE gate ends the branch.
        """
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.conv2(out)
        out = self.bn3(self.conv3(out))
        return self._se_gate(out)

    def zero_init_residual(self):
        """Zero bn3's weight, so F(x) = 0 and the block starts as its shortcut."""
        init.zeros_(self.bn3.weight)


__all__ = ["conv3x3", "conv1x1", "Fork", "ShortcutA", "make_shortcut", "SqueezeExcitation",
           "ResidualBlock", "is_residual_block", "BasicBlock", "PlainBlock", "Bottleneck",
           "ResNeXtBottleneck", "PreActBlock", "PreActBottleneck", "WideBasic",
           "SplitAttentionConv2d", "SplitAttentionBlock"]
