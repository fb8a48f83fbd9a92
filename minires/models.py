"""Model builders with the published layouts, and a registry (``MODELS``, ``get_model``).

Two families of layout:

``ResNet`` -- ImageNet style, exactly torchvision's ``resnet.py``: conv1 (7x7, stride 2),
bn1, relu, maxpool, layer1..layer4 (64, 128, 256, 512 planes), avgpool, fc. Parameter
names, shapes and counts equal torchvision's (resnet18: 11,689,512; resnet50:
25,557,032), so a torchvision state_dict loads with ``load_state_dict``.

``CifarResNet`` -- the 32x32 CIFAR layout of He et al. 2015 section 4.2: conv1 (3x3),
then three stages of blocks on 32x32, 16x16 and 8x8 maps (stride 2 at the first
block of stages 2 and 3), global average pooling and fc. Post-activation nets have
``bn1``/``relu`` after conv1 (torchvision names); pre-activation nets (preact,
wide) instead end with ``bn``/``relu`` before the pooling, since their blocks start
with BN-ReLU.

    depth 6n+2, BasicBlock:   resnet20 (n=3), 32, 44, 56, 110; plain* without shortcuts
    depth 9n+2, bottlenecks:  preact_resnet164 (n=18), resnext29 (n=3), resnest20 (n=2)
    depth 6n+4, WideBasic:    wide_resnet(depth, k): widths 16k, 32k, 64k

Weights are initialised like torchvision: Kaiming normal with fan_out for every
conv, BN weight 1 and bias 0; ``zero_init_residual=True`` makes each block start
as its shortcut. Initial weights come from ``minires.backend.default_rng()``, so
``mr.manual_seed(s)`` before building makes a model repeatable.
"""
from __future__ import annotations

from . import functional as F
from .nn import init
from .nn.blocks import (
    BasicBlock,
    Bottleneck,
    PreActBlock,
    PreActBottleneck,
    ResNeXtBottleneck,
    SplitAttentionBlock,
    WideBasic,
    is_residual_block,
)
from .nn.layers import AdaptiveAvgPool2d, BatchNorm2d, Conv2d, Linear, MaxPool2d, ReLU
from .nn.module import Module, Sequential


def _init_weights(model, zero_init_residual):
    """torchvision's ResNet initialisation (Linear layers keep PyTorch's default)."""
    for m in model.modules():
        if isinstance(m, Conv2d):
            init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                init.zeros_(m.bias)
        elif isinstance(m, BatchNorm2d) and m.affine:
            init.ones_(m.weight)
            init.zeros_(m.bias)
    if zero_init_residual:
        for m in model.modules():
            if is_residual_block(m):
                m.zero_init_residual()


def _make_layer(block, in_planes, planes, blocks, stride, **block_kwargs):
    """A stage: ``blocks`` blocks, the first with ``stride`` (and the shortcut that needs)."""
    layers = [block(in_planes, planes, stride, **block_kwargs)]
    in_planes = planes * block.expansion
    for _ in range(1, blocks):
        layers.append(block(in_planes, planes, 1, **block_kwargs))
    return Sequential(*layers), in_planes


class ResNet(Module):
    """torchvision's ImageNet ResNet: ``ResNet(BasicBlock, [2, 2, 2, 2])`` is resnet18."""

    def __init__(self, block, layers, num_classes=1000, zero_init_residual=False, groups=1,
                 width_per_group=64):
        super().__init__()
        if len(layers) != 4:
            raise ValueError(f"ResNet: expected 4 stage sizes, got {layers}")
        kw = {}
        if groups != 1 or width_per_group != 64:
            if block is not Bottleneck:
                raise ValueError("ResNet: groups and width_per_group need Bottleneck blocks")
            kw = {"groups": groups, "base_width": width_per_group}
        self.conv1 = Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = BatchNorm2d(64)
        self.relu = ReLU()
        self.maxpool = MaxPool2d(kernel_size=3, stride=2, padding=1)
        planes = 64
        self.layer1, planes = _make_layer(block, planes, 64, layers[0], 1, **kw)
        self.layer2, planes = _make_layer(block, planes, 128, layers[1], 2, **kw)
        self.layer3, planes = _make_layer(block, planes, 256, layers[2], 2, **kw)
        self.layer4, planes = _make_layer(block, planes, 512, layers[3], 2, **kw)
        self.avgpool = AdaptiveAvgPool2d((1, 1))
        self.fc = Linear(512 * block.expansion, num_classes)
        _init_weights(self, zero_init_residual)

    def forward(self, x):
        """x (N, 3, H, W) -> logits (N, num_classes).

        Stem (conv1, bn1, relu, maxpool: H/4 x W/4), layer1..layer4 (to H/32 x W/32),
        global average pool, flatten, fc.
        """
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = F.flatten(self.avgpool(x), 1)                  # (N, 512 * expansion)
        return self.fc(x)


class CifarResNet(Module):
    """The CIFAR layout: conv1 3x3, three stages (stride 1, 2, 2), global average pool, fc.

    ``widths``: planes of the three stages (a block's output is planes * expansion).
    ``preact``: blocks are pre-activation, so conv1 has no BN after it and the net ends
    with ``bn``/``relu``. ``block_kwargs`` go to every block (option, shortcut, se, ...).
    """

    def __init__(self, block, layers, num_classes=10, widths=(16, 32, 64), stem_width=16,
                 preact=False, zero_init_residual=False, **block_kwargs):
        super().__init__()
        if len(layers) != 3 or len(widths) != 3:
            raise ValueError(f"CifarResNet: expected 3 stage sizes and 3 widths, got {layers} "
                             f"and {widths}")
        self.preact = preact
        self.conv1 = Conv2d(3, stem_width, kernel_size=3, padding=1, bias=False)
        if not preact:
            self.bn1 = BatchNorm2d(stem_width)
            self.relu = ReLU()
        planes = stem_width
        self.layer1, planes = _make_layer(block, planes, widths[0], layers[0], 1, **block_kwargs)
        self.layer2, planes = _make_layer(block, planes, widths[1], layers[1], 2, **block_kwargs)
        self.layer3, planes = _make_layer(block, planes, widths[2], layers[2], 2, **block_kwargs)
        if preact:
            self.bn = BatchNorm2d(planes)
            self.relu = ReLU()
        self.avgpool = AdaptiveAvgPool2d((1, 1))
        self.fc = Linear(planes, num_classes)
        _init_weights(self, zero_init_residual)

    def forward(self, x):
        """x (N, 3, 32, 32) -> logits (N, num_classes).

        conv1 (then bn1-relu for post-activation nets), layer1..layer3 on 32x32, 16x16 and
        8x8 maps (then bn-relu for pre-activation nets), global average pool, flatten, fc.
        """
        x = self.conv1(x)
        if not self.preact:
            x = self.relu(self.bn1(x))
        x = self.layer3(self.layer2(self.layer1(x)))
        if self.preact:
            x = self.relu(self.bn(x))
        x = F.flatten(self.avgpool(x), 1)                  # (N, C)
        return self.fc(x)


# --- CIFAR builders -----------------------------------------------------------------------
def _blocks_per_stage(depth, per_block, extra, family):
    n, rest = divmod(depth - extra, 3 * per_block)
    if rest or n < 1:
        raise ValueError(f"{family}: depth must be {3 * per_block}n+{extra} (n >= 1), got {depth}")
    return n


def cifar_resnet(depth, num_classes=10, option="A", se=False, zero_init_residual=False):
    """He et al. 2015 CIFAR ResNet of depth 6n+2 (BasicBlock, option A shortcuts by default)."""
    n = _blocks_per_stage(depth, 2, 2, "cifar_resnet")
    model = CifarResNet(BasicBlock, [n] * 3, num_classes, option=option, se=se,
                        zero_init_residual=zero_init_residual)
    model.builder_name = f"resnet{depth}" + ("-se" if se else "")
    return model


def cifar_plain(depth, num_classes=10):
    """The plain counterpart of ``cifar_resnet(depth)``: same layers, no shortcuts."""
    n = _blocks_per_stage(depth, 2, 2, "cifar_plain")
    model = CifarResNet(BasicBlock, [n] * 3, num_classes, shortcut=False)
    model.builder_name = f"plain{depth}"
    return model


def preact_resnet(depth, num_classes=10, bottleneck=None, option="B"):
    """He et al. 2016 pre-activation ResNet: 6n+2 with PreActBlock, or 9n+2 with
    PreActBottleneck (default for depth 164 and beyond)."""
    if bottleneck is None:
        bottleneck = depth >= 164
    if bottleneck:
        n = _blocks_per_stage(depth, 3, 2, "preact_resnet (bottleneck)")
        return CifarResNet(PreActBottleneck, [n] * 3, num_classes, preact=True, option=option)
    n = _blocks_per_stage(depth, 2, 2, "preact_resnet")
    return CifarResNet(PreActBlock, [n] * 3, num_classes, preact=True, option=option)


def wide_resnet(depth, k, dropout=0.0, num_classes=10):
    """WRN-depth-k (Zagoruyko & Komodakis 2016): depth 6n+4, widths 16k, 32k, 64k."""
    n = _blocks_per_stage(depth, 2, 4, "wide_resnet")
    return CifarResNet(WideBasic, [n] * 3, num_classes, widths=(16 * k, 32 * k, 64 * k),
                       preact=True, dropout=dropout)


def cifar_resnext(depth, cardinality, base_width, num_classes=10):
    """ResNeXt-depth (C x d) for CIFAR (Xie et al. 2017): 9n+2, stem 64, stage outputs
    256, 512, 1024; inner width cardinality * base_width * 2^stage."""
    n = _blocks_per_stage(depth, 3, 2, "cifar_resnext")
    return CifarResNet(ResNeXtBottleneck, [n] * 3, num_classes, widths=(64, 128, 256),
                       stem_width=64, cardinality=cardinality, base_width=base_width)


# The CIFAR families below differ, model to model, only in depth (and the parameter
# count their docstring gives): one function per family makes its builders, so each
# published model is one line of the table that follows it.
def _builder(name, build, doc):
    """``build`` under the public ``name`` with the docstring ``doc`` (what ``help()`` shows)."""
    build.__name__ = build.__qualname__ = name
    build.__doc__ = doc
    return build


def _stages_of(n, block):
    return f"3 stages of {n} {block}" + ("s" if n > 1 else "")


def _cifar_resnet_builder(depth, params):
    n = (depth - 2) // 6

    def build(num_classes=10, **kw):
        return cifar_resnet(depth, num_classes, **kw)

    return _builder(f"resnet{depth}", build, f"""\
ResNet-{depth} for CIFAR (He et al. 2015): {_stages_of(n, "BasicBlock")} (depth 6n+2, n={n}).

    Widths 16, 32, 64 on 32x32, 16x16, 8x8 maps; option A (parameter-free) shortcuts by
    default; {params} parameters. ``kw`` goes to ``cifar_resnet`` (option, se,
    zero_init_residual). Input (N, 3, 32, 32), output (N, num_classes) logits.
    """)


def _cifar_plain_builder(depth):
    n = (depth - 2) // 6

    def build(num_classes=10):
        return cifar_plain(depth, num_classes)

    return _builder(f"plain{depth}", build, f"""\
Plain-{depth} for CIFAR: the layers of ``resnet{depth}`` without any shortcut (He et al. 2015).

    {_stages_of(n, "two-conv block")} (depth 6n+2, n={n}), widths 16, 32, 64; the
    network of the degradation experiment. Input (N, 3, 32, 32), output (N, num_classes).
    """)


def _preact_resnet_builder(depth, params):
    n = (depth - 2) // 6

    def build(num_classes=10, **kw):
        return preact_resnet(depth, num_classes, **kw)

    return _builder(f"preact_resnet{depth}", build, f"""\
Pre-activation ResNet-{depth} for CIFAR (He et al. 2016): {_stages_of(n, "PreActBlock")}.

    Widths 16, 32, 64; BN-ReLU before each conv, no ReLU after the addition, a final
    BN-ReLU before pooling; a 1x1 conv shortcut where shapes change (option B by
    default). {params} parameters. ``kw`` goes to ``preact_resnet``.
    """)


resnet8 = _cifar_resnet_builder(8, params="0.08M")
resnet14 = _cifar_resnet_builder(14, params="0.17M")
resnet20 = _cifar_resnet_builder(20, params="0.27M")
resnet32 = _cifar_resnet_builder(32, params="0.46M")
resnet44 = _cifar_resnet_builder(44, params="0.66M")
resnet56 = _cifar_resnet_builder(56, params="0.85M")
resnet110 = _cifar_resnet_builder(110, params="1.7M")

plain8 = _cifar_plain_builder(8)
plain14 = _cifar_plain_builder(14)
plain20 = _cifar_plain_builder(20)
plain32 = _cifar_plain_builder(32)
plain44 = _cifar_plain_builder(44)
plain56 = _cifar_plain_builder(56)
plain110 = _cifar_plain_builder(110)

preact_resnet20 = _preact_resnet_builder(20, params="0.27M")
preact_resnet32 = _preact_resnet_builder(32, params="0.47M")
preact_resnet44 = _preact_resnet_builder(44, params="0.66M")
preact_resnet56 = _preact_resnet_builder(56, params="0.86M")
preact_resnet110 = _preact_resnet_builder(110, params="1.7M")


def preact_resnet164(num_classes=10, **kw):
    """Pre-activation ResNet-164 for CIFAR (He et al. 2016): 3 stages of 18 PreActBottlenecks.

    Depth 9n+2 with n=18; stage outputs 64, 128, 256 channels (planes 16, 32, 64, x4);
    a 1x1 conv shortcut where shapes change. 1.7M parameters. ``kw`` goes to
    ``preact_resnet`` (option).
    """
    return preact_resnet(164, num_classes, bottleneck=True, **kw)


def wrn16_4(num_classes=10, dropout=0.0):
    """Wide ResNet WRN-16-4 for CIFAR (Zagoruyko & Komodakis 2016): 3 stages of 2 WideBasic blocks.

    Depth 6n+4 with n=2, widths 64, 128, 256 (16k, 32k, 64k for k=4);
    pre-activation, ``dropout`` between the two convs of each block, a 1x1 conv
    shortcut where shapes change. 2.7M parameters.
    """
    return wide_resnet(16, 4, dropout, num_classes)


def wrn16_8(num_classes=10, dropout=0.0):
    """Wide ResNet WRN-16-8 for CIFAR (Zagoruyko & Komodakis 2016): 3 stages of 2 WideBasic blocks.

    Depth 6n+4 with n=2, widths 128, 256, 512 (16k, 32k, 64k for k=8);
    pre-activation, ``dropout`` between the two convs of each block, a 1x1 conv
    shortcut where shapes change. 11.0M parameters.
    """
    return wide_resnet(16, 8, dropout, num_classes)


def wrn28_10(num_classes=10, dropout=0.0):
    """Wide ResNet WRN-28-10 for CIFAR (Zagoruyko & Komodakis 2016): 3 stages of 4 WideBasic blocks.

    Depth 6n+4 with n=4, widths 160, 320, 640 (16k, 32k, 64k for k=10);
    pre-activation, ``dropout`` between the two convs of each block, a 1x1 conv
    shortcut where shapes change. 36.5M parameters.
    """
    return wide_resnet(28, 10, dropout, num_classes)


def resnext29_8x64d(num_classes=10):
    """ResNeXt-29 (8x64d) for CIFAR (Xie et al. 2017): 3 stages of 3 ResNeXt bottlenecks.

    Depth 9n+2 with n=3; a 3x3 stem of 64 channels; the grouped 3x3 conv has 8
    groups of 64 channels at stage 1 (512, 1024, 2048 channels by stage); stage
    outputs 256, 512, 1024; projection (option B) shortcuts. 34.4M parameters.
    """
    return cifar_resnext(29, 8, 64, num_classes)


def resnext29_16x64d(num_classes=10):
    """ResNeXt-29 (16x64d) for CIFAR (Xie et al. 2017): 3 stages of 3 ResNeXt bottlenecks.

    Depth 9n+2 with n=3; a 3x3 stem of 64 channels; the grouped 3x3 conv has 16
    groups of 64 channels at stage 1 (1024, 2048, 4096 channels by stage); stage
    outputs 256, 512, 1024; projection (option B) shortcuts. 68.2M parameters.
    """
    return cifar_resnext(29, 16, 64, num_classes)


def resnext29_4x16d(num_classes=10):
    """A small ResNeXt-29 (cardinality 4, width 16) that trains on a CPU."""
    return cifar_resnext(29, 4, 16, num_classes)


def resnest20(num_classes=10, radix=2):
    """A small CIFAR split-attention network (ResNeSt-style, Zhang et al. 2020): 9n+2 with
    n=2, SplitAttentionBlock bottlenecks of planes 16, 32, 64 (outputs 64, 128, 256)."""
    return CifarResNet(SplitAttentionBlock, [2, 2, 2], num_classes, radix=radix)


# --- ImageNet builders (torchvision layout) --------------------------------------------
def _imagenet_resnet_builder(depth, block, layers):
    widths = ", ".join(str(64 * 2 ** i * block.expansion) for i in range(4))

    def build(num_classes=1000, **kw):
        return ResNet(block, layers, num_classes, **kw)

    return _builder(f"resnet{depth}", build, f"""\
torchvision's ImageNet ResNet-{depth}: {block.__name__}s, {list(layers)} per stage.

    7x7 stride-2 stem and max pool, four stages with outputs {widths} channels
    (stride 2 from stage 2 on), projection (option B) shortcuts, global average pool
    and fc. Parameter names and counts equal torchvision's. ``kw`` goes to ``ResNet``
    (zero_init_residual). Input (N, 3, H, W), e.g. 224x224; output (N, num_classes).
    """)


resnet18 = _imagenet_resnet_builder(18, BasicBlock, [2, 2, 2, 2])
resnet34 = _imagenet_resnet_builder(34, BasicBlock, [3, 4, 6, 3])
resnet50 = _imagenet_resnet_builder(50, Bottleneck, [3, 4, 6, 3])
resnet101 = _imagenet_resnet_builder(101, Bottleneck, [3, 4, 23, 3])
resnet152 = _imagenet_resnet_builder(152, Bottleneck, [3, 8, 36, 3])


def resnext50_32x4d(num_classes=1000, **kw):
    """torchvision's ImageNet ResNeXt-50 (32x4d): resnet50's layout, grouped 3x3 convs.

    Bottlenecks [3, 4, 6, 3] per stage whose 3x3 conv has 32 groups of 4 channels at
    stage 1 (width 128, doubling each stage); outputs 256, 512, 1024, 2048 channels.
    ``kw`` goes to ``ResNet`` (zero_init_residual). Input (N, 3, H, W); output
    (N, num_classes).
    """
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes, groups=32, width_per_group=4, **kw)


MODELS = {f.__name__: f for f in (
    resnet8, resnet14, resnet20, resnet32, resnet44, resnet56, resnet110,
    plain8, plain14, plain20, plain32, plain44, plain56, plain110,
    preact_resnet20, preact_resnet32, preact_resnet44, preact_resnet56, preact_resnet110,
    preact_resnet164, wrn16_4, wrn16_8, wrn28_10,
    resnext29_8x64d, resnext29_16x64d, resnext29_4x16d, resnest20,
    resnet18, resnet34, resnet50, resnet101, resnet152, resnext50_32x4d)}


def get_model(name, **kwargs):
    """Build the model registered as ``name`` (see ``MODELS``), passing ``kwargs``
    (num_classes ...)."""
    try:
        builder = MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; valid names: "
                         f"{', '.join(sorted(MODELS))}") from None
    model = builder(**kwargs)
    model.builder_name = name          # what minires.inspect's reports call it
    return model


__all__ = [
    "ResNet", "CifarResNet", "MODELS", "get_model", "cifar_resnet", "cifar_plain",
    "preact_resnet", "wide_resnet", "cifar_resnext", "resnet8", "resnet14", "resnet20",
    "resnet32", "resnet44", "resnet56", "resnet110", "plain8", "plain14", "plain20",
    "plain32", "plain44", "plain56", "plain110", "preact_resnet20", "preact_resnet32",
    "preact_resnet44", "preact_resnet56", "preact_resnet110", "preact_resnet164", "wrn16_4",
    "wrn16_8", "wrn28_10", "resnext29_8x64d", "resnext29_16x64d", "resnext29_4x16d",
    "resnest20", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
    "resnext50_32x4d",
]
