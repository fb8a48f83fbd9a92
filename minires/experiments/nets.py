"""The nets of the experiments: their names, how their weights start, and measuring them.

A net of the experiments is a model of ``minires.models`` plus how its weights start,
both in its name (``split_net_name``, ``describe_net``, ``net_name``):

* ``"paper"``: He et al.: Kaiming-normal convolutions, every BN scale 1 (torchvision's
  init) -- ``resnet56``, ``plain56``;
* ``"zero"``: residual nets: each branch's last BN scale 0, so every block starts as its
  shortcut (zero_init_residual; Goyal et al. 2017, as Fixup and SkipInit do by other
  means) -- named ``resnet56-zero``;
* ``"dirac"``: plain nets: each 3x3 convolution of the blocks starts as the identity plus
  0.1x its Kaiming-normal draw (DiracNets' starting point, without their
  reparameterisation) -- named ``plain56-dirac``.

``build`` makes one from its name and a seed; ``initial_net`` makes it ready to be measured
untrained (BN calibrated, eval mode); ``observe`` runs a batch through a net with forward
hooks. A net's blocks: ``minires.inspect.residual_blocks``.
"""
from __future__ import annotations

import minires as mr

from ..inspect import residual_blocks
from ..nn import BatchNorm2d, Conv2d, init

INITS = {"paper": "He et al.'s (Kaiming-normal, BN scale 1)",
         "zero": "residual branches zero-initialised (last BN scale 0)",
         "dirac": "each block conv the identity (Dirac) + 0.1x Kaiming noise"}
DIRAC_NOISE = 0.1


def split_net_name(name):
    """'resnet56-zero' -> ('resnet56', 'zero'); 'plain20' -> ('plain20', 'paper')."""
    model, _, init_name = name.partition("-")
    init_name = init_name or "paper"
    if init_name not in INITS:
        raise ValueError(f"unknown initialisation {init_name!r} in net name {name!r}; expected "
                         f"one of {', '.join(INITS)}")
    if (init_name == "zero" and not model.startswith("resnet")) or \
            (init_name == "dirac" and not model.startswith("plain")):
        raise ValueError(f"{name}: '{init_name}' initialisation is for "
                         f"{'residual' if init_name == 'zero' else 'plain'} nets only")
    return model, init_name


def describe_net(name):
    """'resnet56-zero' -> ('resnet', 56, 'zero'): family, depth and initialisation of a net
    of the degradation family (plainD / resnetD, with an optional -init suffix)."""
    model, init_name = split_net_name(name)
    family = model.rstrip("0123456789")
    return family, int(model[len(family):]), init_name


def net_name(model, init="paper"):
    """The inverse of ``split_net_name``."""
    return model if init == "paper" else f"{model}-{init}"


def dirac_init_(model, noise=DIRAC_NOISE):
    """Start every 3x3 convolution inside the blocks as the identity plus ``noise`` times its
    current (Kaiming-normal) weights; the stem and the fc keep theirs. Returns the model."""
    for _, block in residual_blocks(model):
        for m in block.modules():
            if isinstance(m, Conv2d) and m.weight.shape[-1] == 3:
                kaiming = m.weight.data.copy()
                init.dirac_(m.weight)
                m.weight.data += noise * kaiming
    return model


def build(name, seed, device="cpu"):
    """The net ``name`` ('resnet56', 'resnet56-zero', 'plain56-dirac', any model of
    ``minires.models``) with weights drawn after ``manual_seed(seed)``."""
    model_name, init_name = split_net_name(name)
    mr.manual_seed(seed)
    model = mr.models.get_model(model_name, **({"zero_init_residual": True}
                                                 if init_name == "zero" else {}))
    if init_name == "dirac":
        dirac_init_(model)
    return model.to(device)


def initial_net(name, seed, calibration_x, device="cpu"):
    """The untrained net ``name`` as ``build`` gives it, with every BN's running statistics
    calibrated on ``calibration_x`` (a batch of training images), in eval mode.

    An untrained net's running statistics are mean 0 and variance 1, so in eval mode BN does
    not normalise: every measurement of an untrained net in eval mode must calibrate first.
    """
    return calibrate_batch_norm(build(name, seed, device),
                                [mr.tensor(calibration_x, device=device)])


def calibrate_batch_norm(model, x_batches):
    """Set every BN's running statistics to the average over ``x_batches`` (train-mode passes).

    Leaves the model in eval mode, so that afterwards each example goes through a fixed
    function (no dependence on the rest of the batch) with statistics that describe the data.
    """
    bns = [m for m in model.modules() if isinstance(m, BatchNorm2d)]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None          # cumulative average over the calibration batches
    model.train()
    with mr.no_grad():
        for x in x_batches:
            model(x)
    for m, momentum in zip(bns, momenta):
        m.momentum = momentum
    model.eval()
    return model


def observe(model, x, hooks, device="cpu"):
    """One forward pass of ``x`` in eval mode, without a graph, with forward ``hooks``
    ([(module, fn)]) attached for its duration; the model's mode is restored."""
    handles = [module.register_forward_hook(fn) for module, fn in hooks]
    was_training = model.training
    model.eval()
    try:
        with mr.no_grad():
            model(mr.tensor(x, device=device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)


__all__ = ["DIRAC_NOISE", "INITS", "build", "calibrate_batch_norm", "describe_net",
           "dirac_init_", "initial_net", "net_name", "observe", "split_net_name"]
