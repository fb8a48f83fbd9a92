"""``to_torch(model)``: a minires model as a PyTorch ``nn.Module``, weights loaded.

What. The returned module has the same layout as the minires model -- the same
attribute names, so the same ``state_dict`` keys (``conv1.weight``, ``bn1.running_mean``,
``bn1.num_batches_tracked``, ``layer1.0.downsample.0.weight``, ``fc.weight`` ...) -- and
computes the same function: its weights, batch-norm running statistics and
``num_batches_tracked`` are copied in with ``load_state_dict(strict=True)``, so a key
missing on either side is an error, not a silently random layer. It is in the model's
mode (``eval()`` or ``train()``) and dtype (float32 or float64), on the CPU.

    import minires as mr
    from minires.export import to_torch
    net = to_torch(mr.models.resnet20().eval())      # torch.nn.Module, eval mode
    logits = net(torch.randn(8, 3, 32, 32))

Which models. Every model of ``minires.models`` but the split-attention one (resnest20):

- the ImageNet layouts (``ResNet``: resnet18..152, resnext50_32x4d) become
  ``torchvision.models.resnet.ResNet`` when torchvision is importable (pass
  ``torchvision=False`` to get the modules below instead, ``True`` to insist);
- everything else, and the ImageNet layouts without torchvision, is rebuilt from the
  small ``torch.nn`` modules below, one per minires module: ``CifarResNet`` (the CIFAR
  ResNets 8..110 with option A or B shortcuts, their plain twins, pre-activation, wide
  and ResNeXt nets), ``Block`` (every residual block: branch, shortcut, final ReLU),
  ``ShortcutA`` (option A, exactly as ``minires.nn.blocks.ShortcutA``: every
  ``stride``-th pixel from the first, then ``extra // 2`` zero channels before and the
  rest after), ``SqueezeExcitation``, and ``torch.nn``'s own layers.

A model with a module this file does not know (your own subclass with a new
``forward``, say) is refused with a ``TypeError`` naming it, rather than translated
wrongly. Why check the logits anyway: a zero-padding shortcut with its padding split
the other way loads with "All keys matched" and computes something else;
``tests/test_export.py`` compares logits for every layout family.

PyTorch is an optional dependency: without it ``to_torch`` raises an ``ImportError``
that says ``pip install torch``. (Loading a ``.safetensors`` file written by
``export_safetensors`` into PyTorch, ``safetensors.torch.load_file``, needs the
``safetensors`` package too: ``pip install safetensors``; ``to_torch`` does not.)
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from ..backend import to_numpy
from ..models import CifarResNet, ResNet
from ..nn import blocks, layers
from ..nn.module import Module, Sequential
from ..nn.utils import FoldedBatchNorm


def _import_torch():
    try:
        import torch
    except ImportError:
        raise ImportError("minires.export.to_torch needs PyTorch, which is not installed: "
                          "pip install torch") from None
    return torch


def _import_torchvision(required):
    """torchvision's resnet module, or None where it is not importable and not ``required``."""
    try:
        from torchvision.models import resnet
    except ImportError:
        if required:
            raise ImportError("to_torch(torchvision=True) needs torchvision, which is not "
                              "installed: pip install torchvision (or pass torchvision=False "
                              "for minires' own equivalent modules)") from None
        return None
    return resnet


# Each residual block's branch: its children in the order ``branch()`` applies them. A name
# a block lacks (``se``, ``dropout``) is skipped. The rest of every block is the same:
# ``fork`` (parameter-free, nothing to translate), ``downsample`` (the shortcut, or None in
# a plain block) and, for post-activation blocks, the ``relu`` after the addition.
_BRANCHES = {
    blocks.BasicBlock: ("conv1", "bn1", "relu1", "conv2", "bn2", "se"),
    blocks.Bottleneck: ("conv1", "bn1", "relu1", "conv2", "bn2", "relu2", "conv3", "bn3", "se"),
    blocks.PreActBlock: ("bn1", "relu1", "conv1", "dropout", "bn2", "relu2", "conv2", "se"),
    blocks.PreActBottleneck: ("bn1", "relu1", "conv1", "bn2", "relu2", "conv2", "bn3", "relu3",
                              "conv3", "se"),
}


def _known_base(module, bases, what):
    """The class among ``bases`` that ``module`` is (the nearest), provided it keeps that
    class's ``what`` method: a subclass with its own ``forward`` or ``branch`` computes
    something this file cannot know, and is refused rather than translated wrongly."""
    for base in type(module).__mro__:
        if base in bases:
            if getattr(type(module), what) is not getattr(base, what):
                raise TypeError(f"to_torch: {type(module).__name__} overrides {base.__name__}."
                                f"{what}, so its PyTorch twin cannot be built from the table; "
                                f"supported: minires.models' layouts (see minires.export.pytorch)")
            return base
    return None


def _translate(module, nn, twins, where):
    """The ``torch.nn`` module that computes what the minires ``module`` computes (no weights
    copied yet). ``nn`` is ``torch.nn``, ``twins`` the ``torch_modules`` module; ``where`` is
    the module's dotted name, for errors."""

    def children():
        return OrderedDict((name, _translate(child, nn, twins, f"{where}.{name}".lstrip(".")))
                           for name, child in module.named_children()
                           if not isinstance(child, blocks.Fork))

    kind = type(module)
    if kind is layers.Conv2d:
        return nn.Conv2d(module.in_channels, module.out_channels, module.kernel_size,
                         module.stride, module.padding, module.dilation, module.groups,
                         bias=module.bias is not None)
    if kind in (layers.BatchNorm2d, layers.BatchNorm1d):
        twin = nn.BatchNorm2d if kind is layers.BatchNorm2d else nn.BatchNorm1d
        return twin(module.num_features, module.eps, module.momentum, module.affine,
                    module.track_running_stats)
    if kind is layers.Linear:
        return nn.Linear(module.in_features, module.out_features, bias=module.bias is not None)
    if kind is layers.ReLU:
        return nn.ReLU()
    if kind is layers.MaxPool2d:
        return nn.MaxPool2d(module.kernel_size, module.stride, module.padding)
    if kind is layers.AvgPool2d:
        return nn.AvgPool2d(module.kernel_size, module.stride, module.padding)
    if kind is layers.AdaptiveAvgPool2d:
        return nn.AdaptiveAvgPool2d(module.output_size)
    if kind is layers.Flatten:
        return nn.Flatten(module.start_dim, module.end_dim)
    if kind is layers.Identity:
        return nn.Identity()
    if kind is layers.Dropout:
        return nn.Dropout(module.p)
    if kind is Sequential:
        return nn.Sequential(children())
    if kind is blocks.ShortcutA:
        return twins.ShortcutA(module.in_planes, module.out_planes, module.stride)
    if kind is blocks.SqueezeExcitation:
        return twins.SqueezeExcitation(children())
    if kind is FoldedBatchNorm:                  # fuse_conv_bn's copy: the identity in eval mode
        return nn.Identity()
    block = _known_base(module, _BRANCHES, "branch")
    if block is not None and _known_base(module, (blocks.ResidualBlock,), "forward"):
        names = children()
        branch = tuple(n for n in _BRANCHES[block] if n in names)
        rest = set(names) - set(branch) - {"downsample", "relu"}
        if rest:
            raise TypeError(f"to_torch: {where} ({kind.__name__}) has children the "
                            f"{block.__name__} layout does not have: {sorted(rest)}")
        return twins.Block(names, branch, module.shortcut, module.post_activation)
    if _known_base(module, (ResNet,), "forward"):
        return twins.ImageNetResNet(children())
    if _known_base(module, (CifarResNet,), "forward"):
        return twins.CifarResNet(children(), module.preact)
    raise TypeError(f"to_torch: no PyTorch twin for {where or 'the model'} "
                    f"({kind.__module__}.{kind.__name__}); supported: the layouts of "
                    f"minires.models except split attention (resnest20)")


def _torchvision_resnet(model, resnet):
    """torchvision's ``ResNet`` with ``model``'s layout, or None when ``model`` is not one of
    torchvision's layouts (SE gates, option-A or missing shortcuts, a subclass)."""
    if type(model) is not ResNet:
        return None
    first = model.layer1[0]
    block = {blocks.BasicBlock: resnet.BasicBlock, blocks.Bottleneck: resnet.Bottleneck,
             blocks.ResNeXtBottleneck: resnet.Bottleneck}.get(type(first))
    stages = [model.layer1, model.layer2, model.layer3, model.layer4]
    every = [b for stage in stages for b in stage]
    if block is None or any(type(b) is not type(first) or "se" in b._modules or not b.shortcut
                            or isinstance(b.downsample, blocks.ShortcutA) for b in every):
        return None
    groups = first.conv2.groups
    width_per_group = 64 if block is resnet.BasicBlock else first.conv2.out_channels // groups
    return resnet.ResNet(block, [len(stage) for stage in stages],
                         num_classes=model.fc.out_features, groups=groups,
                         width_per_group=width_per_group)


def to_torch(model, *, torchvision=None):
    """A PyTorch ``nn.Module`` that computes what the minires ``model`` computes.

    The module has ``model``'s layout and ``state_dict`` keys; its parameters and buffers
    (batch-norm running statistics and ``num_batches_tracked`` included) are ``model``'s,
    copied in with ``load_state_dict(strict=True)``. It is on the CPU, in ``model``'s dtype
    and mode (call ``.eval()`` on it, or on ``model`` first, for inference).

    ``torchvision``: for the ImageNet layouts (resnet18..152, resnext50_32x4d), None uses
    ``torchvision.models.resnet.ResNet`` when torchvision is importable and minires' own
    equivalent modules otherwise; True insists on torchvision (ImportError without it);
    False never uses it. Other models are always built from minires' modules.

    Raises ``ImportError`` (``pip install torch``) without PyTorch, ``TypeError`` for a
    model or module with no PyTorch twin (resnest20's split attention, a subclass with
    its own forward) or parameters of mixed floating dtypes.
    """
    torch = _import_torch()
    if not isinstance(model, Module):
        raise TypeError(f"to_torch: expected a minires Module, got {type(model).__name__}")
    state = model.state_dict()
    floats = {np.dtype(a.dtype) for a in state.values() if np.dtype(a.dtype).kind == "f"}
    if len(floats) > 1:
        raise TypeError(f"to_torch: the model mixes floating dtypes ({sorted(map(str, floats))}); "
                        f"convert it first, e.g. model.to(numpy.float32)")

    net = None
    if torchvision is not False and isinstance(model, ResNet):
        resnet = _import_torchvision(required=torchvision is True)
        if resnet is not None:
            net = _torchvision_resnet(model, resnet)
            if net is None and torchvision is True:
                raise TypeError(f"to_torch(torchvision=True): this {type(model).__name__} is "
                                f"not one of torchvision's layouts (SE gates, option-A or no "
                                f"shortcuts); pass torchvision=None")
    if net is None:
        from . import torch_modules
        net = _translate(model, torch.nn, torch_modules, "")
    if floats:
        net = net.to(getattr(torch, floats.pop().name))        # float32 -> torch.float32 ...
    tensors = OrderedDict((name, torch.from_numpy(np.ascontiguousarray(to_numpy(array))))
                          for name, array in state.items())
    net.load_state_dict(tensors, strict=True)
    return net.train(model.training)


__all__ = ["to_torch"]
