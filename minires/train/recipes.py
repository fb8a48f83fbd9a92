"""Recipes (``fast``, ``paper``), the run configuration, and what a config builds: the
model, the optimiser and the learning-rate schedule."""
from __future__ import annotations

import importlib
from dataclasses import dataclass

from .. import backend
from ..optim import (SGD, Adam, AdamW, ConstantLR, CosineAnnealingLR, MultiStepLR, OneCycleLR,
                     Warmup, split_weight_decay)

# --- recipes --------------------------------------------------------------------------------------
# `fast`: the best accuracy we can get in under an hour on a 2-core CPU (47 minutes for the 22
# epochs on the 2-core AVX-512 machine). The number of epochs is the budget knob: change
# FAST_EPOCHS (or pass --epochs). The figures of each setting, the machines they ran on and
# their wall times are in benchmarks/RESULTS.md and the README ("What it reaches").
FAST_EPOCHS = 22

RECIPES = {
    "fast": dict(
        model="resnet20", epochs=FAST_EPOCHS, max_steps=None, batch_size=128,
        optimizer="sgd", lr=None,           # None: 0.1 * batch_size / 128 (linear scaling)
        momentum=0.9, nesterov=True, weight_decay=5e-4, decay_bn_bias=False,
        schedule="cosine", milestones=None, warmup_epochs=1.0, warmup_steps=None,
        warmup_mode="linear", warmup_factor=0.1, label_smoothing=0.1, val_split=0,
        flip_eval=True),
    # He et al. 2015, section 4.2: batch 128, lr 0.1 divided by 10 at 32k and 48k iterations,
    # stop at 64k, momentum 0.9, weight decay 1e-4 (on every parameter), 45k/5k train/val
    # split, 4-pixel pad + crop + flip. For ResNet-110 lr 0.01 for the first 400 iterations.
    "paper": dict(
        model="resnet20", epochs=None, max_steps=64000, batch_size=128,
        optimizer="sgd", lr=0.1, momentum=0.9, nesterov=False, weight_decay=1e-4,
        decay_bn_bias=True, schedule="step", milestones=[32000, 48000], warmup_epochs=0.0,
        warmup_steps=None, warmup_mode="linear", warmup_factor=0.1, label_smoothing=0.0,
        val_split=5000, flip_eval=False),
}
SCHEDULES = ("cosine", "onecycle", "step", "multistep", "constant")
OPTIMIZERS = ("sgd", "adam", "adamw")


@dataclass
class TrainConfig:
    """Everything that defines a run (saved as config.json and inside every checkpoint)."""

    model: str = "custom"           # a name in minires.models.MODELS, or "package.module:callable"
    recipe: str | None = None
    epochs: int | None = 10         # stop after this many epochs ...
    max_steps: int | None = None    # ... or this many iterations, whichever comes first
    batch_size: int = 128
    optimizer: str = "sgd"          # sgd | adam | adamw
    lr: float = 0.1
    momentum: float = 0.9           # SGD momentum (Adam: beta1)
    nesterov: bool = True
    weight_decay: float = 5e-4
    decay_bn_bias: bool = False     # apply weight decay to batch-norm and bias parameters too
    schedule: str = "cosine"        # cosine | onecycle | step (milestones in iterations) |
    milestones: list | None = None  # multistep (milestones in epochs) | constant
    warmup_epochs: float = 0.0      # linear warm-up, multiplying the schedule
    warmup_steps: int | None = None  # overrides warmup_epochs when set
    warmup_mode: str = "linear"     # linear | constant
    warmup_factor: float = 0.1      # the warm-up starts at this fraction of the rate
    label_smoothing: float = 0.0
    flip_eval: bool = False         # also evaluate the last epoch with flip test-time augmentation
    augment: bool = True            # random crop (crop_padding zero pixels) + horizontal flip
    crop_padding: int = 4           # the crop's padding: 4 at 32x32 (He et al.); scale it with the input
    drop_last: bool = False         # drop each epoch's last batch when it is smaller
    seed: int = 0
    device: str = "cpu"
    val_split: int = 0              # informational here: fit() uses data.val when it exists
    limit_train: int | None = None  # use only the first N training / test examples
    limit_test: int | None = None
    prefetch: int = 2               # batches prepared ahead by a background thread (0: off)
    data_dir: str | None = None
    threads: int | None = None

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; valid: "
                             f"{', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; valid: {', '.join(SCHEDULES)}")
        if self.schedule in ("step", "multistep") and not self.milestones:
            raise ValueError(f"schedule {self.schedule!r} needs milestones (--milestones)")
        if self.epochs is None and self.max_steps is None:
            raise ValueError("set epochs or max_steps (or both)")
        backend.check_device(self.device)
        if self.crop_padding < 0:
            raise ValueError(f"crop_padding must be >= 0, got {self.crop_padding}")
        for name in ("batch_size", "epochs", "max_steps", "limit_train", "limit_test"):
            value = getattr(self, name)
            if value is not None and value < (0 if name.startswith("limit") else 1):
                raise ValueError(f"{name} must be >= 1, got {value}")


def recipe_config(recipe="fast", **overrides) -> TrainConfig:
    """The TrainConfig of a recipe, with ``overrides`` (``None`` values are ignored)."""
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; valid recipes: {', '.join(RECIPES)}")
    values = {**RECIPES[recipe], **{k: v for k, v in overrides.items() if v is not None}}
    if values["lr"] is None:
        values["lr"] = 0.1 * values["batch_size"] / 128
    if (recipe == "paper" and values["model"] == "resnet110"
            and overrides.get("warmup_epochs") is None):
        # He et al.: lr 0.01 until the training error is below 80% (about 400 iterations)
        values.update(warmup_steps=400, warmup_mode="constant", warmup_factor=0.1)
    return TrainConfig(recipe=recipe, **values)


# --- building blocks of a run ---------------------------------------------------------------------
def build_model(name: str, num_classes=10):
    """A model from the registry (``resnet20``) or from ``package.module:callable``."""
    if ":" in name:
        module_name, attr = name.split(":", 1)
        try:
            builder = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"--model {name!r}: cannot import {attr} from {module_name} "
                             f"({err})") from err
        return builder(num_classes=num_classes)
    from ..models import get_model
    return get_model(name, num_classes=num_classes)


def build_optimizer(config: TrainConfig, model):
    """The optimizer a config asks for: SGD (momentum, Nesterov), Adam or AdamW.

    Weight decay skips batch-norm and bias parameters (``split_weight_decay``) unless
    ``config.decay_bn_bias``; for Adam and AdamW ``config.momentum`` is beta1.
    """
    params = (list(model.parameters()) if config.decay_bn_bias
              else split_weight_decay(model, config.weight_decay))
    if config.optimizer == "sgd":
        return SGD(params, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov,
                   weight_decay=config.weight_decay)
    cls = Adam if config.optimizer == "adam" else AdamW
    return cls(params, lr=config.lr, betas=(config.momentum, 0.999),
               weight_decay=config.weight_decay)


def build_schedule(config: TrainConfig, optimizer, steps_per_epoch: int, total_steps: int):
    """The learning-rate schedule a config asks for, stepped once per iteration.

    cosine, onecycle, step (milestones in iterations), multistep (milestones in epochs)
    or constant, over ``total_steps``; wrapped in ``Warmup`` when the config's warm-up
    (in steps, or epochs times ``steps_per_epoch``) is positive.
    """
    name = config.schedule
    if name == "cosine":
        inner = CosineAnnealingLR(optimizer, total_steps)
    elif name == "onecycle":
        inner = OneCycleLR(optimizer, max(total_steps, 2))
    elif name == "step":
        inner = MultiStepLR(optimizer, config.milestones)
    elif name == "multistep":
        inner = MultiStepLR(optimizer, config.milestones, steps_per_epoch=steps_per_epoch)
    else:
        inner = ConstantLR(optimizer)
    warmup = (config.warmup_steps if config.warmup_steps is not None
              else round(config.warmup_epochs * steps_per_epoch))
    if warmup > 0:
        return Warmup(optimizer, warmup, start_factor=config.warmup_factor, schedule=inner,
                      mode=config.warmup_mode)
    return inner


