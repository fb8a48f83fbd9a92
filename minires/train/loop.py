"""The training loop: ``fit()``, the ``Trainer`` behind it, and the callback contract
(``Callback``, ``StepStats``). Evaluation is in ``evaluation.py``, the run folder's files and
checks in ``run_folder.py``."""
from __future__ import annotations

import dataclasses
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import backend, checkpoint, speed
from .. import functional as F
from ..backend import device_of, get_array_module, is_cupy_array, to_device, to_numpy
from ..data import DataLoader
from ..functional import cuda_kernels
from ..tensor import Tensor
from . import run_folder
from .evaluation import evaluate_views
from .recipes import TrainConfig, build_optimizer, build_schedule
from .run_folder import plot_curves


def _module_generators(model):
    """(name, generator) for every numpy Generator a module keeps as an attribute."""
    for name, module in model.named_modules():
        for attr, value in vars(module).items():
            if isinstance(value, np.random.Generator):
                yield (f"{name}.{attr}" if name else attr), value


def _some(names, limit=4):
    """``names`` joined for a message, the first ``limit`` of them and how many more."""
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _format_time(seconds):
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


# --- the loop -------------------------------------------------------------------------------------
class NonFiniteLossError(RuntimeError):
    """The run diverged: the loss (training or evaluation) or the weights became NaN or Inf.

    The run stops there and saves nothing of the diverged state: non-finite weights are never
    written to ``last.npz`` or ``best.npz``, so the last checkpoint written is intact. On the
    CPU a training step with a non-finite loss stops before it touches the weights; on a GPU
    the training loss is checked when it is read back (progress display, end of epoch, a
    checkpoint), so the steps since the last check may have run.
    """


class _ReadBack:
    """A field of StepStats that may hold a 0-d GPU array: the first read copies it to the
    host as ``convert`` (float, int) -- one wait for the GPU -- and keeps that number."""

    def __init__(self, convert):
        self.convert = convert

    def __set_name__(self, owner, name):
        self.name, self.slot = name, f"_{name}"

    def __get__(self, obj, owner=None):
        if obj is None:                 # dataclasses looking for a default: there is none
            raise AttributeError(self.name)
        value = obj.__dict__[self.slot]
        if is_cupy_array(value):
            value = obj.__dict__[self.slot] = self.convert(value)
        return value

    def __set__(self, obj, value):      # only __init__ gets here (the dataclass is frozen)
        obj.__dict__[self.slot] = value

    def on_device(self, obj):
        """The value while it is still on the GPU (not read yet), else None."""
        value = obj.__dict__[self.slot]
        return value if is_cupy_array(value) else None


@dataclass(frozen=True)
class StepStats:
    """The numbers of one training step, as ``Callback.on_step_end`` receives them.

    ``loss`` and ``correct`` are measured on the batch before the step changed the weights
    (the forward pass the gradient came from), as He et al.'s training curves are.

    On a GPU the trainer does not read the loss and the count back after each step (that
    would make every step wait for the GPU); they stay on the device until someone asks:
    ``stats.loss`` is still a float and ``stats.correct`` an int, but the first read of each
    waits for the GPU to finish the step (later reads reuse the number). A callback that
    does not look at them costs nothing.
    """

    step: int        # the run's iteration count, this step included (1 after the first step)
    epoch: int       # the epoch this step belongs to, counting from 1 (as metrics.jsonl's rows)
    batch: int       # this step's place in its epoch, counting from 1
    loss: float = _ReadBack(float)   # the batch's mean training loss (the config's smoothing)
    correct: int = _ReadBack(int)    # examples of the batch classified right
    examples: int    # examples in the batch (the last batch of an epoch may be smaller)
    lr: float        # the learning rate this step used

    @property
    def accuracy(self) -> float:
        """``correct / examples``: the batch's training accuracy."""
        return self.correct / self.examples

    def _on_device(self):
        """(loss, correct) while both are still on the GPU (not read back), else None."""
        loss, correct = (type(self).__dict__[name].on_device(self) for name in ("loss", "correct"))
        return None if loss is None or correct is None else (loss, correct)


@dataclass
class EpochTotals:
    """The running sums of the epoch in progress: what its row of metrics.jsonl will report
    (and what a checkpoint taken mid-epoch carries, so a resumed epoch reports the same).

    On a GPU the steps' losses and counts are added on the device (StepStats leaves them
    there): ``loss_sum`` and ``correct`` are up to date after ``settle()``, which reads the
    device sums back -- one wait for the GPU; ``mean_loss`` and ``accuracy`` settle first.
    The device sums run from the epoch's start (or the resumed totals) in the order of the
    steps, so every settle gives what adding each step's numbers on the host would.
    """

    loss_sum: float = 0.0    # the training loss summed over the examples seen
    correct: int = 0         # examples classified right
    seen: int = 0            # examples trained on
    time: float = 0.0        # seconds spent training (evaluation excluded)

    def __post_init__(self):
        self._sums = None        # on a GPU: (loss_sum, correct) as a (2,) float64 device array
        self._unread = False     # steps added on the device since the last settle()

    def add(self, stats: StepStats):
        """Count one step in. A step whose loss and count are still on the GPU is added there,
        without waiting for it."""
        on_device = stats._on_device()
        if on_device is None:
            self.loss_sum += stats.loss * stats.examples
            self.correct += stats.correct
        else:
            loss, correct = on_device
            if self._sums is None:   # the epoch's sums so far, on the device (16 bytes, once)
                self._sums = to_device(np.array([self.loss_sum, self.correct], np.float64),
                                       device_of(loss))
            cuda_kernels.add_to_epoch_sums(self._sums, loss, correct, stats.examples)
            self._unread = True
        self.seen += stats.examples

    def settle(self) -> bool:
        """Read the device sums back into ``loss_sum`` and ``correct`` (one wait for the GPU);
        False when there was nothing to read (on the CPU, or read since the last step)."""
        if not self._unread:
            return False
        loss_sum, correct = to_numpy(self._sums).tolist()
        self.loss_sum, self.correct = loss_sum, int(correct)
        self._unread = False
        return True

    @property
    def mean_loss(self) -> float:
        """The mean training loss over the examples seen (0 before any)."""
        self.settle()
        return self.loss_sum / max(self.seen, 1)

    @property
    def accuracy(self) -> float:
        """The training accuracy over the examples seen (0 before any)."""
        self.settle()
        return self.correct / max(self.seen, 1)

    @property
    def images_per_second(self) -> float:
        """Training throughput so far this epoch."""
        return self.seen / max(self.time, 1e-9)


class Callback:
    """Hooks into the training loop; subclass it and override what you need.

    The contract. ``Trainer.run()`` calls, in this order:

    * ``on_train_begin(trainer)`` once, before the first step (also when resuming);
    * for every step, ``on_after_backward(trainer)`` -- every ``.grad`` holds this step's
      gradient and the weights are not yet changed -- then, after the optimizer and the
      schedule stepped, ``on_step_end(trainer, stats)`` with the step's numbers in a
      ``StepStats`` (step, epoch, batch, loss, correct, examples, lr);
    * ``on_epoch_end(trainer, metrics)`` after each epoch is evaluated and saved, with its
      row of ``metrics.jsonl``;
    * ``on_train_end(trainer, result)`` once, with the ``FitResult``.

    What a callback needs over several steps (a moving average, the error of the last N
    iterations) it sums itself from each step's ``stats`` (on a GPU, reading ``stats.loss``
    or ``stats.correct`` makes the step wait for the GPU: see StepStats). ``trainer`` gives
    the run's objects to look at: ``model``, ``optimizer``, ``scheduler``, ``config``, ``out``,
    ``epochs``, ``steps_per_epoch``, ``total_steps``, ``history``, ``best``, and where the
    run is: ``epoch`` (epochs finished), ``batch`` (steps done in this epoch),
    ``global_step``. ``trainer.request_stop()`` ends the run after the current step, saving
    ``last.npz``. Anything else on the trainer (the epoch's running sums, its progress bar)
    is its own business and may change.
    """

    def on_train_begin(self, trainer):
        """Called once by ``Trainer.run()`` before the first step (also when resuming)."""

    def on_after_backward(self, trainer):
        """After ``loss.backward()``, before the optimizer step: every ``.grad`` is this step's."""

    def on_step_end(self, trainer, stats: StepStats):
        """Called after each optimizer and schedule step with that step's ``StepStats``."""

    def on_epoch_end(self, trainer, metrics: dict):
        """Called after each epoch is evaluated (and saved), with its row of ``metrics.jsonl``.

        ``metrics`` holds epoch, step, train_loss, train_acc, the evaluation losses and
        accuracies (``test_acc``, ``val_acc`` ...), lr and the epoch's times.
        """

    def on_train_end(self, trainer, result):
        """Called once when ``run()`` returns, with its ``FitResult`` (completed or interrupted)."""


@dataclass
class FitResult:
    """What ``fit()`` and ``Trainer.run()`` return.

    ``status`` is "completed" or "interrupted"; ``history`` one dict per finished epoch
    (as in metrics.jsonl); ``best`` the best evaluation accuracy and its epoch;
    ``checkpoint`` the last checkpoint written; ``summary`` what summary.json holds
    (for a completed run).
    """
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


def planned_length(config: TrainConfig, steps_per_epoch: int) -> tuple[int, int]:
    """(epochs, total steps) of a run: ``config.epochs`` or ``config.max_steps``, whichever
    comes first, in epochs of ``steps_per_epoch`` iterations."""
    if config.max_steps is None:
        epochs = config.epochs
    else:
        epochs = math.ceil(config.max_steps / steps_per_epoch)
        if config.epochs is not None:
            epochs = min(epochs, config.epochs)
    total = epochs * steps_per_epoch
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    return epochs, total


class Trainer:
    """The state of one run and the loop over it; ``fit()`` builds one and calls ``run()``."""

    POSTFIX_SECONDS = 2.0    # on a GPU, the progress bar's loss and accuracy: at most this often

    def __init__(self, model, data, config: TrainConfig, out=None, callbacks=(), progress=None,
                 verbose=True):
        self.config, self.callbacks = config, list(callbacks)
        self.progress, self.verbose = progress, verbose
        self.model = model.to(config.device)
        self.train_split = data.train.take(config.limit_train)
        self.eval_splits = {}
        if getattr(data, "val", None) is not None:
            self.eval_splits["val"] = data.val.take(config.limit_test)
        if getattr(data, "test", None) is not None:       # none: train only, no evaluation
            self.eval_splits["test"] = data.test.take(config.limit_test)
        if len(self.train_split) == 0:
            raise ValueError("no training examples (check --limit-train)")
        self.loader = DataLoader(self.train_split.images, self.train_split.labels,
                                 batch_size=config.batch_size, shuffle=True, augment=config.augment,
                                 seed=config.seed, prefetch=config.prefetch,
                                 drop_last=config.drop_last, padding=config.crop_padding)
        self.steps_per_epoch = len(self.loader)
        self.epochs, self.total_steps = planned_length(config, self.steps_per_epoch)
        self.optimizer = build_optimizer(config, self.model)
        self.scheduler = build_schedule(config, self.optimizer, self.steps_per_epoch,
                                        self.total_steps)
        self.epoch = self.batch = self.global_step = 0
        self._checked_step = 0           # the iteration up to which the training loss is checked
        self.epoch_totals = EpochTotals()
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
        # last, after every check above: a run that cannot start leaves no new folder
        self.out = None if out is None else run_folder.check_writable(out)

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
        """The run's state besides the arrays, as JSON: config, position (epoch, batch,
        global step), the unfinished epoch's running sums, history, best, and the random
        generators' states -- what a checkpoint's ``meta`` must hold to resume exactly.
        """
        self._settle()                                # the epoch's sums, from the GPU
        return {
            "config": dataclasses.asdict(self.config),
            "epoch": self.epoch, "batch": self.batch, "global_step": self.global_step,
            "steps_per_epoch": self.steps_per_epoch,
            "epoch_totals": dataclasses.asdict(self.epoch_totals),
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
        """Write a checkpoint ``out/name`` (model, optimizer, schedule, ``state_meta()``).

        Returns its path, or None when the run has no output folder.
        """
        if self.out is None:
            return None
        bad = self.non_finite_state()
        if bad:
            raise NonFiniteLossError(
                f"not saving {name}: the weights are not finite ({_some(bad)}) at epoch "
                f"{self.epoch + 1}, iteration {self.global_step}; {self._intact()}. "
                f"A lower --lr or a longer warm-up usually helps.")
        path = checkpoint.save(self.out / name, self.model, self.optimizer, self.scheduler,
                               self.state_meta())
        if name == "last.npz":
            self.last_checkpoint = path
        return path

    def non_finite_state(self) -> list:
        """Names of the model's parameters and buffers that hold a NaN or an Inf (empty: all
        finite)."""
        bad = []
        for kind, named in (("", self.model.named_parameters()), ("buffer ",
                                                                   self.model.named_buffers())):
            for name, value in named:
                data = value.data
                xp = backend.get_array_module(data)
                if not bool(xp.isfinite(data).all()):
                    bad.append(kind + name)
        return bad

    def _intact(self):
        return (f"the last good checkpoint, {self.last_checkpoint}, is intact"
                if self.last_checkpoint else "no checkpoint was written in this run")

    def load(self, ckpt: checkpoint.Checkpoint):
        """Resume from a loaded checkpoint: model, optimizer, schedule, position, history
        and random generators.

        Raises ValueError when the checkpoint's batch size, seed, training subset or
        augmentation differ from this run's, since the data order would not continue.
        """
        meta = ckpt.meta
        saved = meta.get("config", {})
        for key in ("batch_size", "seed", "limit_train", "augment", "crop_padding"):
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
        self.global_step = self._checked_step = int(meta["global_step"])
        # "partial": the key of checkpoints written before minires named it epoch_totals
        self.epoch_totals = EpochTotals(**meta.get("epoch_totals", meta.get("partial")))
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

    def _train_step(self, x, y) -> StepStats:
        """One step: forward, loss, backward, the optimizer and the schedule; the position
        advances by one step.

        On the CPU the loss is read at once and a non-finite one stops the run before the
        step changes the weights. On a GPU reading it would make every step wait for the GPU
        to finish (the Python side could not queue the next step meanwhile), so the step
        reads nothing back: the labels go to cross_entropy from the host (checked there), the
        loss and the count of correct predictions stay on the device (StepStats, EpochTotals)
        and the loss is checked for NaN and Inf when the epoch's sums are read back
        (``_settle``: progress display, end of epoch, checkpoint) -- the steps since the last
        check may have run by then, but no diverged weights are ever saved (``save`` checks).
        """
        device = self.config.device
        labels = to_device(y, device)
        self.optimizer.zero_grad()
        logits = self.model(Tensor(to_device(x, device)))
        on_gpu = get_array_module(logits.data) is not np
        loss = F.cross_entropy(logits, y if on_gpu else labels,
                               label_smoothing=self.config.label_smoothing)
        if on_gpu:
            value = loss.data                     # 0-d, on the device
        else:
            value = float(loss.item())
            if not math.isfinite(value):
                raise NonFiniteLossError(
                    f"the training loss is {value} at epoch {self.epoch + 1}, step "
                    f"{self.batch + 1} (iteration {self.global_step}, lr "
                    f"{self.optimizer.param_groups[0]['lr']:.4g}); stopping before this step "
                    f"changes the weights; {self._intact()}. A lower --lr or a longer warm-up "
                    f"usually helps.")
        loss.backward()
        for cb in self.callbacks:
            cb.on_after_backward(self)
        self.last_lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.batch += 1
        self.global_step += 1
        correct = (logits.data.argmax(axis=1) == labels).sum()
        return StepStats(step=self.global_step, epoch=self.epoch + 1, batch=self.batch,
                         loss=value, correct=correct if on_gpu else int(correct),
                         examples=len(y), lr=self.last_lr)

    def _settle(self) -> bool:
        """Bring the epoch's sums back from the GPU (EpochTotals.settle: one wait for it) and
        check the training loss there: a NaN or Inf in any step's loss makes the sum
        non-finite. False when there was nothing to read (the CPU: each step checked its own
        loss; or nothing new)."""
        totals = self.epoch_totals
        if not totals.settle():
            return False
        if not math.isfinite(totals.loss_sum):
            raise NonFiniteLossError(
                f"the training loss became {totals.loss_sum / max(totals.seen, 1)} (the mean "
                f"of epoch {self.epoch + 1} so far) between iteration {self._checked_step + 1} "
                f"and {self.global_step}; on a GPU the loss is checked when it is read back, "
                f"so those steps ran; nothing of them is saved; {self._intact()}. A lower "
                f"--lr or a longer warm-up usually helps.")
        self._checked_step = self.global_step
        return True

    def _train_epoch(self):
        """Steps until the epoch ends, the run reaches its last step, or a stop is requested."""
        from tqdm.auto import tqdm

        self.model.train()
        batches = self.loader.epoch(self.epoch, start=self.batch)
        bar = tqdm(total=self.steps_per_epoch, initial=self.batch, leave=False, dynamic_ncols=True,
                   desc=f"epoch {self.epoch + 1}/{self.epochs}", unit="batch",
                   disable=None if self.progress is None else not self.progress)  # None: on a tty
        totals = self.epoch_totals
        start, time_before = time.perf_counter(), totals.time
        shown = -math.inf                         # when the bar's numbers were last updated
        try:
            for x, y in batches:
                stats = self._train_step(x, y)
                on_gpu = stats._on_device() is not None
                totals.add(stats)
                totals.time = time_before + time.perf_counter() - start
                for cb in self.callbacks:
                    cb.on_step_end(self, stats)
                # On a GPU the bar's numbers cost a wait for it (_settle reads the sums back):
                # only when the bar is shown, at most every POSTFIX_SECONDS. CPU: every step.
                if not on_gpu or (not bar.disable
                                  and time.perf_counter() - shown >= self.POSTFIX_SECONDS):
                    self._settle()
                    shown = time.perf_counter()
                    bar.set_postfix(loss=f"{totals.mean_loss:.3f}",
                                    acc=f"{100 * totals.accuracy:.1f}%",
                                    img_s=f"{totals.images_per_second:.0f}", refresh=False)
                bar.update(1)
                if self.stop_requested or self.global_step >= self.total_steps:
                    break
            if self._settle():     # a GPU: the epoch's numbers, its time with the GPU's tail
                totals.time = time_before + time.perf_counter() - start
        finally:
            if hasattr(batches, "close"):
                batches.close()                   # stops the prefetch thread
            bar.close()

    def _end_epoch(self) -> dict:
        """Close the epoch: evaluate, check for divergence, record (history, best, files), report,
        then ``on_epoch_end``. Returns the epoch's row of metrics.jsonl."""
        self._settle()
        totals = self.epoch_totals
        row = {"epoch": self.epoch + 1, "step": self.global_step,
               "train_loss": totals.mean_loss, "train_acc": totals.accuracy}
        self._check_finite(row, "the weights are not finite", self.non_finite_state())
        start = time.perf_counter()
        row.update(self._evaluate())
        self._check_finite(row, "the loss is not finite",
                           [f"{k} {v}" for k, v in row.items()
                            if k.endswith("_loss") and not math.isfinite(v)])
        row.update(lr=self.last_lr, epoch_time=totals.time,
                   eval_time=time.perf_counter() - start, img_per_s=totals.images_per_second)
        self._record(row)
        self._report(row)
        for cb in self.callbacks:
            cb.on_epoch_end(self, row)
        return row

    def _evaluate(self) -> dict:
        """Loss and accuracy on each evaluation split (``test_loss``, ``val_acc`` ...); after the
        last epoch with ``config.flip_eval`` also flip-averaged (``test_flip_acc`` ...)."""
        last_epoch = self.epoch + 1 >= self.epochs or self.global_step >= self.total_steps
        scores = {}
        for split_name, split in self.eval_splits.items():
            views = evaluate_views(self.model, split, max(self.config.batch_size, 256),
                                   self.config.device, flip=self.config.flip_eval and last_epoch)
            scores[f"{split_name}_loss"], scores[f"{split_name}_acc"] = views[False]
            if True in views:
                scores[f"{split_name}_flip_loss"], scores[f"{split_name}_flip_acc"] = views[True]
        return scores

    def _check_finite(self, row, what, bad):
        """Raise NonFiniteLossError (nothing of this epoch saved) when ``bad`` lists anything."""
        if bad:
            raise NonFiniteLossError(
                f"{what} at the end of epoch {row['epoch']} (iteration {self.global_step}, "
                f"train loss {row['train_loss']:.4g}): {_some(bad)}. Nothing of this epoch was "
                f"saved; {self._intact()}. A lower --lr or a longer warm-up usually helps.")

    def _record(self, row):
        """The epoch is done: its row joins the history (and the best, if it improved), the
        position moves to the next epoch, and with a run folder the row is appended to
        metrics.jsonl and the checkpoints written (``best.npz`` when it improved)."""
        self.history.append(row)
        score = row.get(f"{self.best_split}_acc")
        improved = score is not None and (self.best["acc"] is None or score > self.best["acc"])
        if improved:
            self.best.update(acc=score, epoch=self.epoch + 1)
        self.epoch += 1
        self.batch = 0
        self.epoch_totals = EpochTotals()
        if self.out is not None:
            run_folder.append_metrics(self.out, row)
            self.save("last.npz")
            if improved:
                self.save("best.npz")

    def _report(self, row):
        """The epoch's line on the terminal."""
        evals = "  ".join(f"{s} loss {row[f'{s}_loss']:.3f} acc {100 * row[f'{s}_acc']:.2f}%"
                          + (f" (flip-averaged {100 * row[f'{s}_flip_acc']:.2f}%)"
                             if f"{s}_flip_acc" in row else "")
                          for s in self.eval_splits)
        self._say(f"epoch {row['epoch']:3d}/{self.epochs}  train loss {row['train_loss']:.3f} "
                  f"acc {100 * row['train_acc']:.2f}%  {evals}  lr {row['lr']:.4g}  "
                  f"{row['img_per_s']:.0f} img/s  {_format_time(row['epoch_time'])}")

    def _finished(self):
        return self.epoch >= self.epochs or self.global_step >= self.total_steps

    def run(self, handle_signals=True) -> FitResult:
        """Train until the configured epochs or steps are done, or a stop is requested.

        Evaluates after every epoch and, with an output folder, saves checkpoints. With
        ``handle_signals`` (in the main thread) Ctrl-C / SIGTERM finish the current step
        and save ``last.npz``. Returns a ``FitResult``.
        """
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
            result.summary = self._summarize()
        elif self.out is not None:
            where = (f"after epoch {self.epoch}" if self.batch == 0 else
                     f"in epoch {self.epoch + 1} after step {self.batch}/{self.steps_per_epoch}")
            self._say(f"stopped {where}; checkpoint saved to {self.last_checkpoint}. Continue "
                      f"with: python -m minires.train cifar --resume {self.last_checkpoint}")
        for cb in self.callbacks:
            cb.on_train_end(self, result)
        return result

    def _summarize(self) -> dict:
        """What summary.json holds (written, with curves.png, when the run has a folder); the
        run's last line on the terminal."""
        final = self.history[-1] if self.history else {}
        summary = {
            "model": self.config.model, "recipe": self.config.recipe, "epochs": self.epoch,
            "steps": self.global_step, "final": final, "best": self.best,
            "train_time": sum(r["epoch_time"] for r in self.history),
            "eval_time": sum(r["eval_time"] for r in self.history),
            "num_parameters": int(sum(p.data.size for p in self.model.parameters())),
        }
        if self.out is not None:
            run_folder.write_summary(self.out, summary)
            curves = plot_curves(self.history, self.out / "curves.png")
            if curves is not None:
                summary["curves"] = str(curves)
        if final and "test_acc" in final:
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
        progress=None, verbose=True, handle_signals=True, speed_settings=True,
        **overrides) -> FitResult:
    """Train ``model`` on ``data`` (an object with ``.train``, ``.test`` and optional ``.val``
    ``Split``s, e.g. ``minires.data.load_cifar10()``; ``.test = None``: no evaluation).

    config:    a ``TrainConfig`` (default: ``TrainConfig()``); keyword ``overrides`` replace fields,
               e.g. ``fit(model, data, epochs=3, lr=0.05)``.
    out:       run folder for metrics, checkpoints and plots (None: write nothing).
    resume:    a checkpoint path: continue exactly where it stopped (same config).
    callbacks: ``Callback`` objects (its docstring states what they are called with, and when).
    progress:  True/False/None (None: a tqdm bar when the terminal is interactive).
    handle_signals: Ctrl-C / SIGTERM finish the step, save ``out/last.npz`` and return with
               ``status="interrupted"`` (a second Ctrl-C aborts at once).
    speed_settings: True runs the call inside ``minires.speed_settings(config.threads)``: the
               command lines' thread settings (minires' conv threads, OpenBLAS on one
               thread), with the host's put back when fit returns or raises. Settings
               already in force (``mr.use_speed_settings()``, an enclosing
               ``mr.speed_settings()`` block) are kept, config.threads included. False: the
               process as it is.

    Seeds: ``config.seed`` seeds the data order, the augmentation and minires' default
    generator (dropout). Seed the model's initialisation yourself (``mr.manual_seed``)
    before building it.

    Failures: a run that cannot start (a bad config, no training examples, a checkpoint
    that does not fit) raises before training and leaves no new folder behind; a run
    that diverges (a NaN or Inf loss or weights) raises ``NonFiniteLossError`` and never
    writes those weights to ``last.npz`` or ``best.npz``.
    """
    config = dataclasses.replace(config or TrainConfig(), **overrides)
    if out is not None and resume is None:
        run_folder.refuse_earlier_run(out)
    new_folders = [] if out is None else run_folder.missing_folders(out)
    try:
        trainer = Trainer(model, data, config, out=out, callbacks=callbacks, progress=progress,
                          verbose=verbose)
        if resume is not None:
            trainer.load(checkpoint.load(resume))
    except BaseException:
        run_folder.remove_empty_folders(new_folders)   # a run that cannot start leaves no folder
        raise
    if resume is not None and trainer.out is not None:
        run_folder.write_metrics(trainer.out, trainer.history)
    if trainer.out is not None:
        run_folder.write_config(trainer.out, config, resumed_from=resume)
    with speed.scoped(speed_settings, config.threads):
        return trainer.run(handle_signals=handle_signals)
