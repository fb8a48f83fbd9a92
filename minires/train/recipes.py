"""Recipes (``fast``, ``paper``), the run configuration, and what a config builds: the
model, the optimiser and the learning-rate schedule.

``TrainConfig`` declares each setting once: its default, and in the field's metadata what the
command line needs (the help text, the flag, its group in ``--help``) and the values it accepts
(choices, a ``Range``). ``minires.train.cli`` builds its options from these declarations and
``TrainConfig`` checks every value against them, so adding a training option is one field here.
"""
from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field, fields

from .. import backend
from ..optim import (
    SGD,
    Adam,
    AdamW,
    ConstantLR,
    CosineAnnealingLR,
    MultiStepLR,
    OneCycleLR,
    Warmup,
    split_weight_decay,
)

# --- recipes --------------------------------------------------------------------------------------
# `fast`: the best accuracy we can get in about an hour on a 2-core CPU (the 22 epochs: 47
# minutes on one 2-core AVX-512 machine, 70-81 on a slower one). The number of epochs is the
# budget knob: change FAST_EPOCHS (or pass --epochs). The figures of each setting, the machines
# they ran on and their wall times are in benchmarks/RESULTS.md and the README ("What it
# reaches").
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


# --- how a setting is declared --------------------------------------------------------------------
@dataclass(frozen=True)
class Range:
    """The numbers a setting accepts: from ``low`` (itself allowed unless ``low_included`` is
    False) up to ``high`` (allowed; None: no upper bound)."""

    low: float
    high: float | None = None
    low_included: bool = True

    def __str__(self):
        low = f">= {self.low}" if self.low_included else f"> {self.low}"
        return low if self.high is None else f"{low} and <= {self.high}"

    def allows(self, value) -> bool:
        """Whether ``value`` lies in the range."""
        above = value >= self.low if self.low_included else value > self.low
        return above and (self.high is None or value <= self.high)


def value_problem(value, bounds: Range | None = None) -> str | None:
    """What is wrong with a numeric setting's ``value`` ("must be >= 1, got 0"), or None.

    None (a setting left unset) is fine; a float must be finite (NaN and infinity would pass
    every comparison with a bound, or fail it, for no reason the user can see); ``bounds``
    is checked when given. The one range check of the package: ``TrainConfig`` and the
    command line both call it.
    """
    if value is None:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be a finite number, got {value}"
    if bounds is not None and not bounds.allows(value):
        return f"must be {bounds}, got {value}"
    return None


# the groups of ``python -m minires.train cifar --help``, in this order
GROUP_MODEL = "model and recipe"
GROUP_OPTIMISATION = "optimisation (default: the recipe's value)"
GROUP_DATA = "data"
GROUP_RUN = "run"


def setting(default, help=None, *, group=GROUP_OPTIMISATION, flag=None, bounds=None,
            choices=None, metavar=None):
    """A ``TrainConfig`` field declared with what the command line and the checks need.

    help:    the option's text in ``--help``; None: a setting of ``fit()`` only, no flag.
    group:   its group in ``--help``.
    flag:    the flag (default ``--`` and the name with dashes). A bool setting gets
             ``--flag``/``--no-flag``, or only the flag given when it starts with ``--no-``.
    bounds:  a ``Range`` the value must lie in (checked by ``TrainConfig`` and the command line).
    choices: the values allowed (a tuple of names).
    metavar: how ``--help`` names the value.
    """
    return field(default=default, metadata={
        "help": help, "group": group, "flag": flag, "bounds": bounds, "choices": choices,
        "metavar": metavar})


def flag_of(f) -> str:
    """The command-line flag of the ``TrainConfig`` field ``f`` (``--batch-size``, ``--wd``)."""
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def command_line_settings() -> list:
    """The ``TrainConfig`` fields the command line sets (those declared with a help text)."""
    return [f for f in fields(TrainConfig) if f.metadata.get("help")]


@dataclass
class TrainConfig:
    """Everything that defines a run (saved as config.json and inside every checkpoint).

    Each field is declared with ``setting()``: its default, and for the command line its
    help text, flag and group, and the values it accepts (checked here, on construction).
    """

    model: str = setting(
        "custom", "a builder in minires.models (default: the recipe's, resnet20) or "
        "package.module:callable", group=GROUP_MODEL)     # "custom": fit() with one's own model
    recipe: str | None = None       # set by recipe_config (--recipe)
    # the run stops after `epochs` epochs or `max_steps` iterations, whichever comes first
    epochs: int | None = setting(10, "number of epochs", bounds=Range(1))
    max_steps: int | None = setting(None, "stop after this many iterations (paper: 64000)",
                                    bounds=Range(1))
    batch_size: int = setting(128, "examples per step (128)", bounds=Range(1))
    optimizer: str = setting("sgd", "sgd (default), adam or adamw", choices=OPTIMIZERS)
    lr: float = setting(0.1, "peak learning rate (fast: 0.1 x batch-size / 128)",
                        bounds=Range(0, low_included=False))
    momentum: float = setting(0.9, "SGD momentum, Adam beta1 (0.9)", bounds=Range(0, 1))
    nesterov: bool = setting(True, "Nesterov momentum (fast: on, paper: off)")
    weight_decay: float = setting(5e-4, "weight decay (fast: 5e-4, paper: 1e-4)", flag="--wd",
                                  bounds=Range(0))
    decay_bn_bias: bool = setting(
        False, "also decay batch-norm and bias parameters (fast: no, paper: yes)")
    schedule: str = setting(
        "cosine", "learning-rate schedule, stepped per iteration: cosine (fast), onecycle, step "
        "(milestones in iterations; paper), multistep (milestones in epochs), constant",
        choices=SCHEDULES)
    milestones: list | None = setting(
        None, "comma-separated milestones for step/multistep, lr x 0.1 at each "
        "(paper: 32000,48000)", metavar="N,N,...")
    warmup_epochs: float = setting(     # linear warm-up, multiplying the schedule
        0.0, "linear warm-up from 0.1 x lr over this many epochs (fast: 1)", bounds=Range(0))
    warmup_steps: int | None = setting(None, bounds=Range(0))   # overrides warmup_epochs when set
    warmup_mode: str = setting("linear", choices=Warmup.MODES)
    warmup_factor: float = setting(0.1)   # the warm-up starts at this fraction of the rate
    label_smoothing: float = setting(0.0, "label smoothing (fast: 0.1, paper: 0)",
                                     bounds=Range(0, 1))
    flip_eval: bool = setting(
        False, "after the last epoch (and with --eval-only) also report test accuracy averaged "
        "over each image and its mirror image (fast: on, paper: off)")
    augment: bool = setting(True, "switch off random crop + flip", flag="--no-augment")
    # the crop's padding: 4 at 32x32 (He et al.); scale it with the input
    crop_padding: int = setting(4, bounds=Range(0))
    drop_last: bool = False         # drop each epoch's last batch when it is smaller
    seed: int = setting(0, "seed for initialisation, data order, augmentation (0)", group=GROUP_RUN,
                        bounds=Range(0))
    device: str = setting("cpu", "cpu (default) or cuda (needs CuPy)", group=GROUP_RUN,
                          choices=backend.DEVICES)
    data_dir: str | None = setting(
        None, "folder with cifar-10-batches-bin/ (or -py/, or the .tar.gz); default "
        "$MINIRES_DATA, else ~/.cache/minires; downloaded if absent", group=GROUP_DATA)
    val_split: int = setting(       # informational here: fit() uses data.val when it exists
        0, "hold out the last N training images for validation; best.npz then follows "
        "validation accuracy (paper: 5000, fast: 0)", group=GROUP_DATA, bounds=Range(0))
    limit_train: int | None = setting(None, "use only the first N training examples",
                                      group=GROUP_DATA, bounds=Range(1))
    limit_test: int | None = setting(None, "use only the first N test (and validation) examples",
                                     group=GROUP_DATA, bounds=Range(1))
    prefetch: int = setting(2, "batches prepared ahead by a background thread (0: off; default 2)",
                            group=GROUP_DATA, bounds=Range(0))
    threads: int | None = setting(
        None, "CPU threads: minires' convolution workers, with OpenBLAS on one thread each "
        "(default: $MINIRES_NUM_THREADS, else every core this process may use; see "
        "minires.use_speed_settings)", group=GROUP_RUN, bounds=Range(1))

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            choices = f.metadata.get("choices")
            if choices is not None and value not in choices:
                raise ValueError(f"unknown {f.name} {value!r}; valid: {', '.join(choices)}")
            problem = value_problem(value, f.metadata.get("bounds"))
            if problem:
                raise ValueError(f"{f.name} {problem}")
        if self.schedule in ("step", "multistep") and not self.milestones:
            raise ValueError(f"schedule {self.schedule!r} needs milestones (--milestones)")
        if self.epochs is None and self.max_steps is None:
            raise ValueError("set epochs or max_steps (or both)")


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


