"""The ``torch.nn`` twins of minires' composite modules, for ``minires.export.to_torch``.

This file imports PyTorch: ``to_torch`` imports it only after checking that PyTorch is
installed, and nothing else in minires imports it. Each class computes exactly what the
minires module of the same role computes, and keeps its children under the same
attribute names, so the ``state_dict`` keys are minires' (torchvision's) keys. They are
module-level classes, so a whole exported module pickles (``torch.save(net, path)``).
Leaf layers (Conv2d, BatchNorm2d, Linear, ReLU, pooling ...) are ``torch.nn``'s own.
"""
from __future__ import annotations

import torch
from torch import nn


def _add_children(module, children):
    for name, child in children.items():
        module.add_module(name, child)


class ShortcutA(nn.Module):
    """He et al.'s option A, as ``minires.nn.blocks.ShortcutA``: no parameters.

    Every ``stride``-th pixel starting from the first (``x[:, :, ::s, ::s]``), then
    ``extra = out_planes - in_planes`` zero channels: ``extra // 2`` before the input's
    channels and ``extra - extra // 2`` after them. (N, C_in, H, W) -> (N, C_out, H/s, W/s).
    """

    def __init__(self, in_planes, out_planes, stride):
        super().__init__()
        self.in_planes, self.out_planes, self.stride = in_planes, out_planes, stride

    def extra_repr(self):
        return f"{self.in_planes}, {self.out_planes}, stride={self.stride}"

    def forward(self, x):
        if self.stride != 1:
            x = x[:, :, ::self.stride, ::self.stride]
        extra = self.out_planes - self.in_planes
        if extra:
            before = extra // 2
            # F.pad's pairs run from the last axis backwards: (W), (H), then (C)
            x = nn.functional.pad(x, (0, 0, 0, 0, before, extra - before))
        return x


class SqueezeExcitation(nn.Module):
    """x * sigmoid(fc2(relu(fc1(avgpool(x))))), as ``minires.nn.blocks.SqueezeExcitation``."""

    def __init__(self, children):
        super().__init__()
        _add_children(self, children)

    def forward(self, x):
        return x * torch.sigmoid(self.fc2(self.relu(self.fc1(self.avgpool(x)))))


class Block(nn.Module):
    """A residual block of any minires kind: out = branch(x) [+ downsample(x)] [then relu].

    ``branch`` names the children applied one after the other (``conv1``, ``bn1``,
    ``relu1``, ...); ``shortcut`` False is a plain block (no addition, no ``downsample``);
    ``post_activation`` False is a pre-activation block (no ReLU after the addition).
    """

    def __init__(self, children, branch, shortcut, post_activation):
        super().__init__()
        _add_children(self, children)
        self.branch, self.shortcut, self.post_activation = tuple(branch), shortcut, post_activation

    def extra_repr(self):
        return (f"branch={'-'.join(self.branch)}, shortcut={self.shortcut}, "
                f"post_activation={self.post_activation}")

    def forward(self, x):
        out = x
        for name in self.branch:
            out = getattr(self, name)(out)
        if self.shortcut:
            out = out + self.downsample(x)
        if self.post_activation:
            out = self.relu(out)
        return out


class ImageNetResNet(nn.Module):
    """torchvision's ResNet forward, over the given children: conv1-bn1-relu-maxpool,
    layer1..layer4, avgpool, flatten, fc (used where torchvision is not installed)."""

    def __init__(self, children):
        super().__init__()
        _add_children(self, children)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class CifarResNet(nn.Module):
    """``minires.models.CifarResNet``'s forward: conv1 (then bn1-relu unless ``preact``),
    layer1..layer3 (then bn-relu if ``preact``), avgpool, flatten, fc."""

    def __init__(self, children, preact):
        super().__init__()
        _add_children(self, children)
        self.preact = preact

    def forward(self, x):
        x = self.conv1(x)
        if not self.preact:
            x = self.relu(self.bn1(x))
        x = self.layer3(self.layer2(self.layer1(x)))
        if self.preact:
            x = self.relu(self.bn(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))
