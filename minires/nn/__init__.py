"""minires.nn: modules (layers, containers, residual blocks) and initialisers, PyTorch-style.

    import minires as mr
    model = mr.nn.Sequential(mr.nn.Conv2d(3, 16, 3, padding=1, bias=False),
            mr.nn.BatchNorm2d(16), mr.nn.ReLU())
"""
from . import init, utils
from .blocks import (
    BasicBlock,
    Bottleneck,
    Fork,
    PlainBlock,
    PreActBlock,
    PreActBottleneck,
    ResidualBlock,
    ResNeXtBottleneck,
    ShortcutA,
    SplitAttentionBlock,
    SplitAttentionConv2d,
    SqueezeExcitation,
    WideBasic,
    is_residual_block,
)
from .layers import (
    AdaptiveAvgPool2d,
    AvgPool2d,
    BatchNorm1d,
    BatchNorm2d,
    Conv2d,
    Dropout,
    Flatten,
    Identity,
    Linear,
    MaxPool2d,
    ReLU,
)
from .loss import CrossEntropyLoss
from .module import Module, ModuleList, Parameter, RemovableHandle, Sequential

__all__ = [
    "init", "utils", "CrossEntropyLoss", "Module", "ModuleList", "Parameter", "RemovableHandle",
    "Sequential",
    "AdaptiveAvgPool2d", "AvgPool2d", "BatchNorm1d", "BatchNorm2d", "Conv2d", "Dropout", "Flatten",
    "Identity", "Linear", "MaxPool2d", "ReLU",
    "BasicBlock", "Bottleneck", "Fork", "PlainBlock", "PreActBlock", "PreActBottleneck",
    "ResidualBlock", "ResNeXtBottleneck", "ShortcutA", "SplitAttentionBlock",
    "SplitAttentionConv2d", "SqueezeExcitation", "WideBasic", "is_residual_block",
]
