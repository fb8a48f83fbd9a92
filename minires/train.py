"""Train a ResNet on CIFAR-10: ``python -m minires.train cifar``, and ``fit()``, the loop it wraps.

    python -m minires.train cifar                     # the `fast` recipe: resnet20, ~1 h, 2 cores
    python -m minires.train cifar --recipe paper --model resnet56 --device cuda
    python -m minires.train cifar --resume runs/<run>/last.npz
    python -m minires.train cifar --eval-only runs/<run>/best.npz

From Python (a notebook, a tutorial):

    import minires as mr
    from minires.train import fit, TrainConfig
    data = mr.data.load_cifar10()
    mr.manual_seed(0)
    model = mr.models.resnet20()
    result = fit(model, data, TrainConfig(epochs=5, lr=0.1), out="runs/try")

One training step reads the batch, runs ``model(x)``, the loss, ``loss.backward()``,
the callbacks' ``on_after_backward`` (gradients are there to look at), then
``optimizer.step()`` and ``scheduler.step()`` -- the schedule advances once per
iteration. The run folder gets ``config.json``, one line per epoch in
``metrics.jsonl``, ``last.npz`` at the end of every epoch (and on Ctrl-C/SIGTERM, at
the current step), ``best.npz`` whenever the evaluation accuracy improves,
``summary.json`` and, with matplotlib, ``curves.png``.

Resuming is exact: every random choice of the data pipeline is a function of (seed,
epoch, batch) (see ``minires.data.loader``), and the checkpoint holds the weights,
buffers, optimizer and schedule state, minires' default generator (dropout) and any
generator a module keeps -- so on the CPU a run stopped anywhere and resumed ends with
the same weights, bit for bit, as one never stopped.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import math
import os
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import backend, checkpoint
from . import functional as F
from .autograd import no_grad
from .backend import to_device
from .data import DataLoader, Split, load_cifar10
from .data.cifar import DataError
from .optim import (SGD, Adam, AdamW, ConstantLR, CosineAnnealingLR, MultiStepLR, OneCycleLR,
                    Warmup, split_weight_decay)
from .tensor import Tensor

# --- recipes --------------------------------------------------------------------------------------
# `fast`: the best accuracy we can get in about an hour on a 2-core CPU. The number of
# epochs is the budget knob: change FAST_EPOCHS (or pass --epochs). 8 epochs of
# ResNet-20 took 52 minutes on the 2-core development machine (README, "What it reaches").
FAST_EPOCHS = 12

RECIPES = {
    "fast": dict(
        model="resnet20", epochs=FAST_EPOCHS, max_steps=None, batch_size=256,
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
    augment: bool = True            # random crop (4-pixel padding) + horizontal flip
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
    from .models import get_model
    return get_model(name, num_classes=num_classes)


def build_optimizer(config: TrainConfig, model):
    params = (list(model.parameters()) if config.decay_bn_bias
              else split_weight_decay(model, config.weight_decay))
    if config.optimizer == "sgd":
        return SGD(params, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov,
                   weight_decay=config.weight_decay)
    cls = Adam if config.optimizer == "adam" else AdamW
    return cls(params, lr=config.lr, betas=(config.momentum, 0.999),
               weight_decay=config.weight_decay)


def build_schedule(config: TrainConfig, optimizer, steps_per_epoch: int, total_steps: int):
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


def evaluate(model, split: Split, batch_size=256, device="cpu",
             flip=False) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` (in eval mode) on ``split``.

    ``flip=True`` is test-time augmentation: the logits are the mean of the image's and its
    mirror image's (the same left-right flip the training augmentation uses), at twice the cost.
    """
    loader = DataLoader(split.images, split.labels, batch_size=batch_size)
    was_training = model.training
    model.eval()
    loss_sum, correct = 0.0, 0
    try:
        with no_grad():
            for x, y in loader.epoch(0):
                y_dev = to_device(y, device)
                x_dev = to_device(x, device)                     # (N, C, H, W)
                logits = model(Tensor(x_dev))
                if flip:
                    xp = backend.get_array_module(x_dev)
                    mirrored = xp.ascontiguousarray(x_dev[..., ::-1])    # (N, C, H, W), W reversed
                    logits = (logits + model(Tensor(mirrored))) * 0.5
                loss_sum += float(F.cross_entropy(logits, y_dev, reduction="sum").item())
                correct += int((logits.data.argmax(axis=1) == y_dev).sum())
    finally:
        model.train(was_training)
    n = max(len(split), 1)
    return loss_sum / n, correct / n


def check_writable(out) -> Path:
    """Create the run folder and prove we can write there -- before any training starts."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=out)
        os.write(fd, b"ok")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise OSError(err.errno, f"cannot write to the run folder {out} (--out): "
                                 f"{err.strerror or err}") from err
    return out


def _write_json_atomic(path: Path, value):
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(value, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _write_metrics(path: Path, history):
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in history)
    os.replace(tmp, path)


def plot_curves(history, path) -> bool:
    """Loss and accuracy per epoch to ``path`` (PNG); False when matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    epochs = [row["epoch"] for row in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for split in ("train", "val", "test"):
        if history and f"{split}_loss" in history[0]:
            ax_loss.plot(epochs, [r[f"{split}_loss"] for r in history], label=split)
            ax_acc.plot(epochs, [100 * r[f"{split}_acc"] for r in history], label=split)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return True


def _module_generators(model):
    """(name, generator) for every numpy Generator a module keeps as an attribute."""
    for name, module in model.named_modules():
        for attr, value in vars(module).items():
            if isinstance(value, np.random.Generator):
                yield (f"{name}.{attr}" if name else attr), value


def _format_time(seconds):
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


# --- the loop -------------------------------------------------------------------------------------
class NonFiniteLossError(RuntimeError):
    """The loss became NaN or Inf; the run stopped before that step touched the weights."""


class Callback:
    """Hooks into the loop; override what you need. ``trainer`` exposes model, optimizer,
    scheduler, config, epoch (0-based), batch (steps done in this epoch), global_step, out."""

    def on_train_begin(self, trainer):
        pass

    def on_after_backward(self, trainer):
        """After ``loss.backward()``, before the optimizer step: every ``.grad`` is this step's."""

    def on_step_end(self, trainer, loss: float):
        pass

    def on_epoch_end(self, trainer, metrics: dict):
        pass

    def on_train_end(self, trainer, result):
        pass


@dataclass
class FitResult:
    status: str                      # "completed" or "interrupted"
    history: list                    # one dict per finished epoch (as in metrics.jsonl)
    best: dict                       # {"acc": ..., "epoch": ..., "split": "val" | "test"}
    epoch: int                       # epochs finished
    global_step: int
    out: Path | None = None
    checkpoint: Path | None = None   # the last checkpoint written
    signal: int | None = None        # the signal that stopped the run, if one did
    elapsed: float = 0.0             # training + evaluation seconds, this process only
    summary: dict = field(default_factory=dict)


class Trainer:
    """The state of one run and the loop over it; ``fit()`` builds one and calls ``run()``."""

    def __init__(self, model, data, config: TrainConfig, out=None, callbacks=(), progress=None,
                 verbose=True):
        self.config, self.callbacks = config, list(callbacks)
        self.progress, self.verbose = progress, verbose
        self.out = None if out is None else check_writable(out)
        self.model = model.to(config.device)
        self.train_split = data.train.take(config.limit_train)
        self.eval_splits = {}
        if getattr(data, "val", None) is not None:
            self.eval_splits["val"] = data.val.take(config.limit_test)
        self.eval_splits["test"] = data.test.take(config.limit_test)
        if len(self.train_split) == 0:
            raise ValueError("no training examples (check --limit-train)")
        self.loader = DataLoader(self.train_split.images, self.train_split.labels,
                                 batch_size=config.batch_size, shuffle=True, augment=config.augment,
                                 seed=config.seed, prefetch=config.prefetch)
        self.steps_per_epoch = len(self.loader)
        if config.max_steps is not None:
            self.epochs = math.ceil(config.max_steps / self.steps_per_epoch)
            if config.epochs is not None:
                self.epochs = min(self.epochs, config.epochs)
        else:
            self.epochs = config.epochs
        self.total_steps = self.epochs * self.steps_per_epoch
        if config.max_steps is not None:
            self.total_steps = min(self.total_steps, config.max_steps)
        self.optimizer = build_optimizer(config, self.model)
        self.scheduler = build_schedule(config, self.optimizer, self.steps_per_epoch,
                                        self.total_steps)
        self.epoch = self.batch = self.global_step = 0
        self.partial = {"loss_sum": 0.0, "correct": 0, "seen": 0, "time": 0.0}
        self.history = []
        self.best_split = "val" if "val" in self.eval_splits else "test"
        self.best = {"acc": None, "epoch": None, "split": self.best_split}
        self.stop_signal = None
        self.stop_requested = False
        self.last_checkpoint = None
        # minires' default generator (dropout & co) gets its own stream of the seed; a resume
        # overwrites it with the saved state
        backend.manual_seed(int(np.random.SeedSequence([config.seed, 2]).generate_state(1)[0]))
        self.last_lr = self.optimizer.param_groups[0]["lr"]

    # -- stopping ----------------------------------------------------------------------------------
    def request_stop(self, signum=None):
        """Finish the current step, save a checkpoint, and return from ``run()``."""
        self.stop_requested, self.stop_signal = True, signum

    def _on_signal(self, signum, frame):
        if self.stop_requested:
            raise KeyboardInterrupt("second interrupt: stopping without saving")
        self.request_stop(signum)
        self._say(f"\n{signal.Signals(signum).name}: finishing this step and saving a checkpoint "
                  f"(send it again to abort without saving)")

    # -- state -----------------------------------------------------------------------------------
    def state_meta(self) -> dict:
        return {
            "config": dataclasses.asdict(self.config),
            "epoch": self.epoch, "batch": self.batch, "global_step": self.global_step,
            "steps_per_epoch": self.steps_per_epoch, "partial": dict(self.partial),
            "history": self.history, "best": self.best,
            "rng": {
                # the data pipeline draws from default_rng([seed, 0, epoch]) (order) and
                # default_rng([seed, 1, epoch, batch]) (augmentation): these numbers are its state
                "data": {"seed": self.config.seed, "epoch": self.epoch, "batch": self.batch},
                "minires_default": backend.get_rng_state(),
                "modules": {name: g.bit_generator.state
                            for name, g in _module_generators(self.model)},
            },
        }

    def save(self, name="last.npz") -> Path | None:
        if self.out is None:
            return None
        path = checkpoint.save(self.out / name, self.model, self.optimizer, self.scheduler,
                               self.state_meta())
        if name == "last.npz":
            self.last_checkpoint = path
        return path

    def load(self, ckpt: checkpoint.Checkpoint):
        meta = ckpt.meta
        saved = meta.get("config", {})
        for key in ("batch_size", "seed", "limit_train", "augment"):
            if key in saved and saved[key] != getattr(self.config, key):
                raise ValueError(f"cannot resume {ckpt.path} with a different {key} (checkpoint: "
                                 f"{saved[key]!r}, now: {getattr(self.config, key)!r}): the data "
                                 f"order would not continue where it stopped")
        if meta.get("steps_per_epoch", self.steps_per_epoch) != self.steps_per_epoch:
            raise ValueError(f"cannot resume {ckpt.path}: it has {meta['steps_per_epoch']} steps "
                             f"per epoch, this run {self.steps_per_epoch} (different training "
                             f"set?)")
        checkpoint.restore(ckpt, self.model, self.optimizer, self.scheduler)
        self.epoch, self.batch = int(meta["epoch"]), int(meta["batch"])
        self.global_step = int(meta["global_step"])
        self.partial = dict(meta["partial"])
        self.history, self.best = list(meta["history"]), dict(meta["best"])
        self.last_checkpoint = ckpt.path
        backend.set_rng_state(meta["rng"]["minires_default"])
        generators = dict(_module_generators(self.model))
        for name, state in meta["rng"].get("modules", {}).items():
            if name in generators:
                generators[name].bit_generator.state = state

    # -- the loop --------------------------------------------------------------------------------
    def _say(self, message):
        if self.verbose:
            from tqdm.auto import tqdm
            tqdm.write(message)

    def _train_step(self, x, y):
        device = self.config.device
        y = to_device(y, device)
        self.optimizer.zero_grad()
        logits = self.model(Tensor(to_device(x, device)))
        loss = F.cross_entropy(logits, y, label_smoothing=self.config.label_smoothing)
        value = float(loss.item())
        if not math.isfinite(value):
            where = (f"the last good checkpoint, {self.last_checkpoint}, is intact"
                     if self.last_checkpoint else "no checkpoint was written in this run")
            raise NonFiniteLossError(
                f"the training loss is {value} at epoch {self.epoch + 1}, step {self.batch + 1} "
                f"(iteration {self.global_step}, lr {self.optimizer.param_groups[0]['lr']:.4g}); "
                f"stopping before this step changes the weights. {where}. "
                f"A lower --lr or a longer warm-up usually helps.")
        loss.backward()
        for cb in self.callbacks:
            cb.on_after_backward(self)
        self.last_lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        return value, int((logits.data.argmax(axis=1) == y).sum()), len(y)

    def _train_epoch(self):
        from tqdm.auto import tqdm

        self.model.train()
        batches = self.loader.epoch(self.epoch, start=self.batch)
        bar = tqdm(total=self.steps_per_epoch, initial=self.batch, leave=False, dynamic_ncols=True,
                   desc=f"epoch {self.epoch + 1}/{self.epochs}", unit="batch",
                   disable=None if self.progress is None else not self.progress)  # None: on a tty
        start = time.perf_counter()
        elapsed_before = self.partial["time"]
        try:
            for x, y in batches:
                loss, correct, n = self._train_step(x, y)
                self.batch += 1
                self.global_step += 1
                p = self.partial
                p["loss_sum"] += loss * n
                p["correct"] += correct
                p["seen"] += n
                p["time"] = elapsed_before + time.perf_counter() - start
                for cb in self.callbacks:
                    cb.on_step_end(self, loss)
                bar.set_postfix(loss=f"{p['loss_sum'] / p['seen']:.3f}",
                                acc=f"{100 * p['correct'] / p['seen']:.1f}%",
                                img_s=f"{p['seen'] / max(p['time'], 1e-9):.0f}", refresh=False)
                bar.update(1)
                if self.stop_requested or self.global_step >= self.total_steps:
                    break
        finally:
            if hasattr(batches, "close"):
                batches.close()                   # stops the prefetch thread
            bar.close()

    def _end_epoch(self) -> dict:
        p = self.partial
        row = {"epoch": self.epoch + 1, "step": self.global_step,
               "train_loss": p["loss_sum"] / max(p["seen"], 1),
               "train_acc": p["correct"] / max(p["seen"], 1)}
        last_epoch = self.epoch + 1 >= self.epochs or self.global_step >= self.total_steps
        start = time.perf_counter()
        for split_name, split in self.eval_splits.items():
            loss, acc = evaluate(self.model, split, max(self.config.batch_size, 256),
                                 self.config.device)
            row[f"{split_name}_loss"], row[f"{split_name}_acc"] = loss, acc
            if self.config.flip_eval and last_epoch:
                loss, acc = evaluate(self.model, split, max(self.config.batch_size, 256),
                                     self.config.device, flip=True)
                row[f"{split_name}_flip_loss"], row[f"{split_name}_flip_acc"] = loss, acc
        row.update(lr=self.last_lr, epoch_time=p["time"],
                   eval_time=time.perf_counter() - start,
                   img_per_s=p["seen"] / max(p["time"], 1e-9))
        self.history.append(row)
        improved = self.best["acc"] is None or row[f"{self.best_split}_acc"] > self.best["acc"]
        if improved:
            self.best.update(acc=row[f"{self.best_split}_acc"], epoch=self.epoch + 1)
        self.epoch += 1
        self.batch = 0
        self.partial = {"loss_sum": 0.0, "correct": 0, "seen": 0, "time": 0.0}
        if self.out is not None:
            with open(self.out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
            self.save("last.npz")
            if improved:
                self.save("best.npz")
        evals = "  ".join(f"{s} loss {row[f'{s}_loss']:.3f} acc {100 * row[f'{s}_acc']:.2f}%"
                          + (f" (flip-averaged {100 * row[f'{s}_flip_acc']:.2f}%)"
                             if f"{s}_flip_acc" in row else "")
                          for s in self.eval_splits)
        self._say(f"epoch {row['epoch']:3d}/{self.epochs}  train loss {row['train_loss']:.3f} "
                  f"acc {100 * row['train_acc']:.2f}%  {evals}  lr {row['lr']:.4g}  "
                  f"{row['img_per_s']:.0f} img/s  {_format_time(row['epoch_time'])}")
        for cb in self.callbacks:
            cb.on_epoch_end(self, row)
        return row

    def _finished(self):
        return self.epoch >= self.epochs or self.global_step >= self.total_steps

    def run(self, handle_signals=True) -> FitResult:
        started = time.perf_counter()
        installed = {}
        if handle_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                installed[sig] = signal.signal(sig, self._on_signal)
        status = "completed"
        try:
            for cb in self.callbacks:
                cb.on_train_begin(self)
            while not self._finished():
                self._train_epoch()
                epoch_done = (self.batch >= self.steps_per_epoch
                              or self.global_step >= self.total_steps)
                if epoch_done:
                    self._end_epoch()
                if self.stop_requested:
                    if not epoch_done:
                        self.save("last.npz")
                    status = "interrupted"
                    break
        finally:
            for sig, old in installed.items():
                signal.signal(sig, old)
        result = FitResult(status=status, history=self.history, best=self.best, epoch=self.epoch,
                           global_step=self.global_step, out=self.out,
                           checkpoint=self.last_checkpoint, signal=self.stop_signal,
                           elapsed=time.perf_counter() - started)
        if status == "completed":
            result.summary = self._summarize(result)
        elif self.out is not None:
            where = (f"after epoch {self.epoch}" if self.batch == 0 else
                     f"in epoch {self.epoch + 1} after step {self.batch}/{self.steps_per_epoch}")
            self._say(f"stopped {where}; checkpoint saved to {self.last_checkpoint}. Continue "
                      f"with: python -m minires.train cifar --resume {self.last_checkpoint}")
        for cb in self.callbacks:
            cb.on_train_end(self, result)
        return result

    def _summarize(self, result) -> dict:
        final = self.history[-1] if self.history else {}
        summary = {
            "model": self.config.model, "recipe": self.config.recipe, "epochs": self.epoch,
            "steps": self.global_step, "final": final, "best": self.best,
            "train_time": sum(r["epoch_time"] for r in self.history),
            "eval_time": sum(r["eval_time"] for r in self.history),
            "num_parameters": int(sum(p.data.size for p in self.model.parameters())),
        }
        if self.out is not None:
            _write_json_atomic(self.out / "summary.json", summary)
            if plot_curves(self.history, self.out / "curves.png"):
                summary["curves"] = str(self.out / "curves.png")
        if final:
            best = (f"best {self.best_split} acc {100 * self.best['acc']:.2f}% at epoch "
                    f"{self.best['epoch']}")
            self._say(f"done: {self.epoch} epochs, {self.global_step} steps, training time "
                      f"{_format_time(summary['train_time'])}; final test acc "
                      f"{100 * final['test_acc']:.2f}%"
                      + (f", {100 * final['test_flip_acc']:.2f}% flip-averaged"
                         if "test_flip_acc" in final else "")
                      + f" ({best})"
                      + (f"; run folder {self.out}" if self.out else ""))
        return summary


def fit(model, data, config: TrainConfig | None = None, *, out=None, resume=None, callbacks=(),
        progress=None, verbose=True, handle_signals=True, **overrides) -> FitResult:
    """Train ``model`` on ``data`` (an object with ``.train``, ``.test`` and optional ``.val``
    ``Split``s, e.g. ``minires.data.load_cifar10()``).

    config:    a ``TrainConfig`` (default: ``TrainConfig()``); keyword ``overrides`` replace fields,
               e.g. ``fit(model, data, epochs=3, lr=0.05)``.
    out:       run folder for metrics, checkpoints and plots (None: write nothing).
    resume:    a checkpoint path: continue exactly where it stopped (same config).
    callbacks: ``Callback`` objects (see its methods).
    progress:  True/False/None (None: a tqdm bar when the terminal is interactive).
    handle_signals: Ctrl-C / SIGTERM finish the step, save ``out/last.npz`` and return with
               ``status="interrupted"`` (a second Ctrl-C aborts at once).

    Seeds: ``config.seed`` seeds the data order, the augmentation and minires' default
    generator (dropout). Seed the model's initialisation yourself (``mr.manual_seed``)
    before building it.
    """
    config = dataclasses.replace(config or TrainConfig(), **overrides)
    if out is not None and resume is None and (Path(out) / "last.npz").exists():
        raise FileExistsError(f"{Path(out) / 'last.npz'} exists: resume it (--resume) or choose "
                              f"another run folder (--out); nothing was overwritten")
    trainer = Trainer(model, data, config, out=out, callbacks=callbacks, progress=progress,
                      verbose=verbose)
    if resume is not None:
        trainer.load(checkpoint.load(resume))
        if trainer.out is not None:
            _write_metrics(trainer.out / "metrics.jsonl", trainer.history)
    if trainer.out is not None:
        _write_json_atomic(trainer.out / "config.json", {
            **dataclasses.asdict(config), "minires_version": _version(),
            "resumed_from": None if resume is None else str(resume)})
    return trainer.run(handle_signals=handle_signals)


def _version():
    from . import __version__
    return __version__


# --- the command line -----------------------------------------------------------------------------
def set_threads(n: int) -> str:
    """Limit BLAS threads to ``n``; returns how (or why not)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        if all(os.environ.get(v) == str(n) for v in THREAD_VARS):
            return f"{n} (set by {'/'.join(THREAD_VARS)} before NumPy loaded)"
        return ("unchanged: install threadpoolctl, or set OMP_NUM_THREADS / OPENBLAS_NUM_THREADS "
                "before starting Python")
    threadpool_limits(n)
    return f"{n} (threadpoolctl)"


THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _maybe_reexec_for_threads(n, argv):
    """BLAS reads its thread count when NumPy loads -- before any of our code runs. Without
    threadpoolctl, start this command again once with the variables set."""
    try:
        import threadpoolctl  # noqa: F401
        return
    except ImportError:
        pass
    if all(os.environ.get(v) == str(n) for v in THREAD_VARS):
        return
    env = {**os.environ, **{v: str(n) for v in THREAD_VARS}}
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "minires.train", *argv], env)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m minires.train",
        description="Train a network from minires.models with minires. Command: cifar.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    p = commands.add_parser(
        "cifar", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="train on CIFAR-10",
        description="Train on CIFAR-10 (official archive; see --data-dir).\n\n"
                    "Recipes (every option below overrides the recipe's value):\n"
                    f"  fast   {_describe('fast')}\n"
                    f"  paper  {_describe('paper')}\n\n"
                    "The run folder gets config.json, metrics.jsonl (one line per epoch), "
                    "last.npz (each epoch,\nand on Ctrl-C/SIGTERM at the current step), best.npz, "
                    "summary.json and curves.png (with matplotlib).")
    g = p.add_argument_group("model and recipe")
    g.add_argument("--recipe", choices=sorted(RECIPES), default="fast",
                   help="fast (default): about an hour on a 2-core CPU; paper: He et al. 2015")
    g.add_argument("--model", help="a builder in minires.models (default: the recipe's, resnet20) "
                                   "or package.module:callable")
    g = p.add_argument_group("optimisation (default: the recipe's value)")
    g.add_argument("--epochs", type=int, help="number of epochs")
    g.add_argument("--max-steps", type=int, help="stop after this many iterations (paper: 64000)")
    g.add_argument("--batch-size", type=int, help="examples per step (fast: 256, paper: 128)")
    g.add_argument("--optimizer", choices=OPTIMIZERS, help="sgd (default), adam or adamw")
    g.add_argument("--lr", type=float, help="peak learning rate (fast: 0.1 x batch-size / 128)")
    g.add_argument("--momentum", type=float, help="SGD momentum, Adam beta1 (0.9)")
    g.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=None,
                   help="Nesterov momentum (fast: on, paper: off)")
    g.add_argument("--wd", type=float, dest="weight_decay",
                   help="weight decay (fast: 5e-4, paper: 1e-4)")
    g.add_argument("--decay-bn-bias", action=argparse.BooleanOptionalAction, default=None,
                   help="also decay batch-norm and bias parameters (fast: no, paper: yes)")
    g.add_argument("--schedule", choices=SCHEDULES,
                   help="learning-rate schedule, stepped per iteration: cosine (fast), onecycle, "
                        "step (milestones in iterations; paper), multistep (milestones in epochs), "
                        "constant")
    g.add_argument("--milestones", type=lambda s: [int(v) for v in s.split(",")],
                   help="comma-separated milestones for step/multistep, lr x 0.1 at each "
                        "(paper: 32000,48000)")
    g.add_argument("--warmup-epochs", type=float,
                   help="linear warm-up from 0.1 x lr over this many epochs (fast: 1)")
    g.add_argument("--label-smoothing", type=float, help="label smoothing (fast: 0.1, paper: 0)")
    g.add_argument("--flip-eval", action=argparse.BooleanOptionalAction, default=None,
                   help="after the last epoch (and with --eval-only) also report test accuracy "
                        "averaged over each image and its mirror image (fast: on, paper: off)")
    g.add_argument("--no-augment", dest="augment", action="store_false", default=None,
                   help="switch off random crop + flip")
    g = p.add_argument_group("data")
    g.add_argument("--data-dir",
                   help="folder with cifar-10-batches-bin/ (or -py/, or the .tar.gz); default "
                        "$MINIRES_DATA, else ~/.cache/minires; downloaded if absent")
    g.add_argument("--no-download", dest="download", action="store_false",
                   help="never download; fail with instructions if the data is missing")
    g.add_argument("--val-split", type=int,
                   help="hold out the last N training images for validation; best.npz then "
                        "follows validation accuracy (paper: 5000, fast: 0)")
    g.add_argument("--limit-train", type=int, help="use only the first N training examples")
    g.add_argument("--limit-test", type=int,
                   help="use only the first N test (and validation) examples")
    g.add_argument("--prefetch", type=int, default=2,
                   help="batches prepared ahead by a background thread (0: off; default 2)")
    g = p.add_argument_group("run")
    g.add_argument("--seed", type=int, help="seed for initialisation, data order, augmentation (0)")
    g.add_argument("--device", choices=backend.DEVICES, help="cpu (default) or cuda (needs CuPy)")
    g.add_argument("--threads", type=int,
                   help="BLAS threads (threadpoolctl when installed; otherwise the command "
                        "restarts itself once with OMP/OPENBLAS/MKL_NUM_THREADS=N)")
    g.add_argument("--out", help="run folder (default runs/cifar-MODEL-RECIPE-TIME; with --resume, "
                                 "the checkpoint's folder)")
    g.add_argument("--resume", metavar="CHECKPOINT",
                   help="continue a run exactly where its checkpoint stopped (its config is used; "
                        "options given here override it, e.g. more --epochs)")
    g.add_argument("--eval-only", metavar="CHECKPOINT",
                   help="evaluate a checkpoint on the test set and exit")
    g.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                   help="no progress bar (one line per epoch is still printed)")
    g.add_argument("--inspect-every", type=int, metavar="N",
                   help="every N steps, append each layer's weight-gradient norm to gradflow.jsonl "
                        "in the run folder (minires.inspect); gradflow.png heat map at the end")
    return parser


def _describe(recipe):
    r = RECIPES[recipe]
    length = f"{r['epochs']} epochs" if r["epochs"] else f"{r['max_steps']} iterations"
    lr = "0.1 x batch/128" if r["lr"] is None else r["lr"]
    return (f"{r['model']}, {length}, batch {r['batch_size']}, SGD lr {lr} momentum {r['momentum']}"
            f"{' nesterov' if r['nesterov'] else ''}, wd {r['weight_decay']}"
            f"{'' if r['decay_bn_bias'] else ' (not on BN/bias)'}, {r['schedule']} schedule"
            f"{' ' + str(r['milestones']) if r['milestones'] else ''}"
            f"{', warm-up ' + str(r['warmup_epochs']) + ' epoch' if r['warmup_epochs'] else ''}"
            f"{', label smoothing ' + str(r['label_smoothing']) if r['label_smoothing'] else ''}"
            f"{', val split ' + str(r['val_split']) if r['val_split'] else ''}")


_CONFIG_FLAGS = ("model", "epochs", "max_steps", "batch_size", "optimizer", "lr", "momentum",
                 "nesterov", "weight_decay", "decay_bn_bias", "schedule", "milestones",
                 "warmup_epochs", "label_smoothing", "flip_eval", "augment", "seed", "device",
                 "val_split", "limit_train", "limit_test", "prefetch", "data_dir", "threads")


def config_from_args(args) -> TrainConfig:
    given = {k: getattr(args, k) for k in _CONFIG_FLAGS if getattr(args, k, None) is not None}
    if args.resume:
        saved = checkpoint.load(args.resume).meta.get("config")
        if not saved:
            raise ValueError(f"{args.resume}: holds no training config; cannot resume it")
        changed = {k: v for k, v in given.items() if saved.get(k) != v and k != "prefetch"}
        if changed:
            print(f"resuming with changed settings: {changed}", file=sys.stderr)
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        return TrainConfig(**{k: v for k, v in {**saved, **given}.items() if k in known})
    return recipe_config(args.recipe, **given)


def callbacks_from_args(args, out) -> list:
    """Callbacks the command line switches on (the place for options like --inspect-every)."""
    callbacks = []
    if getattr(args, "inspect_every", None):
        from .inspect import GradFlowLog
        callbacks.append(GradFlowLog(None, Path(out) / "gradflow.jsonl", args.inspect_every))
    return callbacks


def _check_device(device):
    """Fail with CuPy's clear message (not a traceback) when "cuda" cannot work here."""
    if device == "cuda":
        try:
            backend.get_cupy()
        except RuntimeError as err:
            raise ValueError(str(err)) from err


def _eval_only(args) -> int:
    ckpt = checkpoint.load(args.eval_only)
    saved = ckpt.meta.get("config", {})
    name = args.model or saved.get("model")
    if not name or name == "custom":
        raise ValueError(f"{args.eval_only}: the checkpoint does not name its model; pass --model")
    model = build_model(name)
    checkpoint.load_model_state(model, ckpt.model, source=f"checkpoint {args.eval_only}")
    device = args.device or saved.get("device", "cpu")
    _check_device(device)
    model.to(device)
    data = load_cifar10(args.data_dir or saved.get("data_dir"), download=args.download)
    test = data.test.take(args.limit_test)
    start = time.perf_counter()
    loss, acc = evaluate(model, test, 256, device)
    report = {"checkpoint": str(args.eval_only), "model": name, "test_examples": len(test),
              "test_loss": loss, "test_acc": acc}
    if args.flip_eval if args.flip_eval is not None else saved.get("flip_eval", False):
        report["test_flip_loss"], report["test_flip_acc"] = evaluate(model, test, 256, device,
                                                                     flip=True)
    print(json.dumps({**report, "epoch": ckpt.meta.get("epoch"),
                      "seconds": round(time.perf_counter() - start, 2)}))
    return 0


def main(argv=None, allow_reexec=False) -> int:
    """Run the command line; returns the exit status (0 done, 1 error, 128+signal when stopped)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.threads and allow_reexec:
        _maybe_reexec_for_threads(args.threads, argv)
    try:
        if args.threads:
            print(f"BLAS threads: {set_threads(args.threads)}", file=sys.stderr)
        if args.eval_only:
            return _eval_only(args)
        config = config_from_args(args)
        if args.out:
            out = Path(args.out)
        elif args.resume:
            out = Path(args.resume).parent
        else:
            name = config.model.replace(":", "-")
            out = Path("runs") / f"cifar-{name}-{config.recipe}-{time.strftime('%Y%m%d-%H%M%S')}"
        check_writable(out)                                          # fail before any work
        if not args.resume and (out / "last.npz").exists():
            raise FileExistsError(f"{out / 'last.npz'} exists: resume it with --resume "
                                  f"{out / 'last.npz'} or choose another --out")
        _check_device(config.device)
        backend.manual_seed(config.seed)
        model = build_model(config.model)
        data = load_cifar10(config.data_dir, download=args.download, val_split=config.val_split)
        print(f"{config.model} ({sum(p.data.size for p in model.parameters()):,} parameters) on "
              f"{config.device}; {len(data.train.take(config.limit_train))} training images; run "
              f"folder {out}", file=sys.stderr)
        result = fit(model, data, config, out=out, resume=args.resume,
                     callbacks=callbacks_from_args(args, out), progress=args.progress)
    except NonFiniteLossError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except (DataError, checkpoint.CheckpointError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("aborted without saving (the last checkpoint is intact)", file=sys.stderr)
        return 130
    if result.status == "interrupted":
        return 128 + int(result.signal) if result.signal else 1
    return 0


if __name__ == "__main__":
    sys.exit(main(allow_reexec=True))
