"""The training loop: ``fit()``, the ``Trainer`` behind it, evaluation, callbacks and the run
folder (metrics, checkpoints, curves)."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import backend, checkpoint, files, speed
from .. import functional as F
from ..autograd import no_grad
from ..backend import to_device
from ..data import DataLoader, Split
from ..nn.utils import fuse_conv_bn
from ..tensor import Tensor
from .recipes import TrainConfig, build_optimizer, build_schedule


# --- evaluation and the run folder ----------------------------------------------------------------
def evaluate(model, split: Split, batch_size=256, device="cpu",
             flip=False, fuse=True, *, speed_settings=True) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` (in eval mode) on ``split``.

    ``flip=True`` is test-time augmentation: the logits are the mean of the image's and its
    mirror image's (the same left-right flip the training augmentation uses), at twice the cost.
    ``fuse=True`` evaluates a copy with batch norm folded into the convolutions
    (``minires.nn.utils.fuse_conv_bn``): the same function, computed faster.
    ``speed_settings=True`` runs it inside ``minires.speed_settings()`` (the command lines'
    thread settings, the host's put back afterwards); False leaves the process as it is.
    """
    return evaluate_views(model, split, batch_size, device, flip=flip, fuse=fuse,
                          speed_settings=speed_settings)[flip]


def inference_copy(model, example):
    """``fuse_conv_bn(model, example)``, or the model itself when folding does not apply
    (no convolution, or a convolution whose output feeds more than its batch norm):
    folding is for speed only, so evaluation never depends on it."""
    try:
        return fuse_conv_bn(model, example)
    except (RuntimeError, ValueError):
        return model


def evaluate_views(model, split: Split, batch_size=256, device="cpu",
                   flip=True, fuse=True, *, speed_settings=True) -> dict[bool, tuple[float, float]]:
    """``{False: (loss, acc)}`` and, with ``flip``, ``{True: flip-averaged (loss, acc)}`` too,
    in one pass: the plain forward pass serves both."""
    loader = DataLoader(split.images, split.labels, batch_size=batch_size)
    views = (False, True) if flip else (False,)
    loss_sum, correct = dict.fromkeys(views, 0.0), dict.fromkeys(views, 0)
    was_training = model.training
    model.eval()
    net = None                  # what runs: the fused copy, made from the first batch
    try:
        with no_grad(), speed.scoped(speed_settings):
            for x, y in loader.epoch(0):
                y_dev = to_device(y, device)
                x_dev = to_device(x, device)                         # (N, C, H, W)
                if net is None:
                    net = inference_copy(model, Tensor(x_dev[:2])) if fuse else model
                logits = {False: net(Tensor(x_dev))}
                if flip:
                    xp = backend.get_array_module(x_dev)
                    mirrored = xp.ascontiguousarray(x_dev[..., ::-1])    # (N, C, H, W), W reversed
                    logits[True] = (logits[False] + net(Tensor(mirrored))) * 0.5
                for view in views:
                    loss = F.cross_entropy(logits[view], y_dev, reduction="sum")
                    loss_sum[view] += float(loss.item())
                    correct[view] += int((logits[view].data.argmax(axis=1) == y_dev).sum())
    finally:
        model.train(was_training)
    n = max(len(split), 1)
    return {view: (loss_sum[view] / n, correct[view] / n) for view in views}


def check_writable(out, keep=True) -> Path:
    """Create the run folder and prove we can write there -- before any training starts.

    With ``keep=False`` the folders this call had to create are removed again after the
    probe (a check that leaves nothing behind: the command line makes it before it loads
    the data, and the folder itself appears only when training starts).
    """
    out = Path(out)
    created = _missing_folders(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=out)
        os.write(fd, b"ok")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        _remove_empty_folders(created)
        raise OSError(err.errno, f"cannot write to the run folder {out} (--out): "
                                 f"{err.strerror or err}") from err
    if not keep:
        _remove_empty_folders(created)
    return out


def _missing_folders(out) -> list:
    """The folders that creating ``out`` would make, deepest first (empty when it exists)."""
    def absent(path):
        try:
            return not (path.exists() or path.is_symlink())
        except OSError:              # cannot even look (permissions): not ours to remove
            return False

    missing, path = [], Path(out)
    while absent(path) and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


def _remove_empty_folders(folders):
    """Remove ``folders`` (deepest first) while each is empty; stop at the first that is not."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


# the files a run leaves in its folder: any of them means the folder is taken
RUN_FILES = ("last.npz", "best.npz", "metrics.jsonl", "config.json", "summary.json", "curves.png")


def refuse_earlier_run(out):
    """Raise FileExistsError when ``out`` holds any file of an earlier run (a new run would
    overwrite its checkpoints or append to its metrics); nothing is touched."""
    earlier = [name for name in RUN_FILES if (Path(out) / name).exists()]
    if earlier:
        raise FileExistsError(f"{out} holds an earlier run ({', '.join(earlier)}): choose another "
                              f"run folder (--out), or continue it (--resume "
                              f"{Path(out) / 'last.npz'}); nothing was overwritten")


def _write_json_atomic(path: Path, value):
    text = json.dumps(value, indent=2) + "\n"
    files.write_atomically(path, lambda f: f.write(text.encode("utf-8")), what="run file")


def _write_metrics(path: Path, history):
    text = "".join(json.dumps(row) + "\n" for row in history)
    files.write_atomically(path, lambda f: f.write(text.encode("utf-8")), what="metrics")


def plot_curves(history, path) -> bool:
    """Loss and accuracy per epoch to ``path`` (PNG); False when matplotlib is not installed.

    Draws on a ``matplotlib.figure.Figure`` (the Agg canvas behind ``savefig``), never through
    pyplot: the host's backend and pyplot's figures (a notebook's inline plots) are untouched.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return False
    epochs = [row["epoch"] for row in history]
    fig = Figure(figsize=(10, 4), layout="tight")
    ax_loss, ax_acc = fig.subplots(1, 2)
    for split in ("train", "val", "test"):
        if history and f"{split}_loss" in history[0]:
            ax_loss.plot(epochs, [r[f"{split}_loss"] for r in history], label=split)
            ax_acc.plot(epochs, [100 * r[f"{split}_acc"] for r in history], label=split)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    files.write_atomically(path, lambda f: fig.savefig(f, format="png", dpi=100),
                                what="curves")
    return True


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

    The run stops there and saves nothing of the diverged state: a training step with a
    non-finite loss does not touch the weights, and non-finite weights are never written
    to ``last.npz`` or ``best.npz``, so the last checkpoint written is intact.
    """


class Callback:
    """Hooks into the loop; override what you need. ``trainer`` exposes model, optimizer,
    scheduler, config, epoch (0-based), batch (steps done in this epoch), global_step, out."""

    def on_train_begin(self, trainer):
        """Called once by ``Trainer.run()`` before the first step (also when resuming)."""

    def on_after_backward(self, trainer):
        """After ``loss.backward()``, before the optimizer step: every ``.grad`` is this step's."""

    def on_step_end(self, trainer, loss: float):
        """Called after each optimizer and schedule step with that step's mean training loss."""

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


class Trainer:
    """The state of one run and the loop over it; ``fit()`` builds one and calls ``run()``."""

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
        # last, after every check above: a run that cannot start leaves no new folder
        self.out = None if out is None else check_writable(out)

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
            raise NonFiniteLossError(
                f"the training loss is {value} at epoch {self.epoch + 1}, step {self.batch + 1} "
                f"(iteration {self.global_step}, lr {self.optimizer.param_groups[0]['lr']:.4g}); "
                f"stopping before this step changes the weights; {self._intact()}. "
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
        self._refuse_divergence(row, "the weights are not finite", self.non_finite_state())
        start = time.perf_counter()
        for split_name, split in self.eval_splits.items():
            views = evaluate_views(self.model, split, max(self.config.batch_size, 256),
                                   self.config.device, flip=self.config.flip_eval and last_epoch)
            row[f"{split_name}_loss"], row[f"{split_name}_acc"] = views[False]
            if True in views:
                row[f"{split_name}_flip_loss"], row[f"{split_name}_flip_acc"] = views[True]
        self._refuse_divergence(row, "the loss is not finite",
                                [f"{k} {v}" for k, v in row.items()
                                 if k.endswith("_loss") and not math.isfinite(v)])
        row.update(lr=self.last_lr, epoch_time=p["time"],
                   eval_time=time.perf_counter() - start,
                   img_per_s=p["seen"] / max(p["time"], 1e-9))
        self.history.append(row)
        score = row.get(f"{self.best_split}_acc")
        improved = score is not None and (self.best["acc"] is None or score > self.best["acc"])
        if improved:
            self.best.update(acc=score, epoch=self.epoch + 1)
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

    def _refuse_divergence(self, row, what, bad):
        """Raise NonFiniteLossError (nothing of this epoch saved) when ``bad`` lists anything."""
        if bad:
            raise NonFiniteLossError(
                f"{what} at the end of epoch {row['epoch']} (iteration {self.global_step}, "
                f"train loss {row['train_loss']:.4g}): {_some(bad)}. Nothing of this epoch was "
                f"saved; {self._intact()}. A lower --lr or a longer warm-up usually helps.")

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
    callbacks: ``Callback`` objects (see its methods).
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
        refuse_earlier_run(out)
    new_folders = [] if out is None else _missing_folders(out)
    try:
        trainer = Trainer(model, data, config, out=out, callbacks=callbacks, progress=progress,
                          verbose=verbose)
        if resume is not None:
            trainer.load(checkpoint.load(resume))
    except BaseException:
        _remove_empty_folders(new_folders)       # a run that cannot start leaves no empty folder
        raise
    if resume is not None and trainer.out is not None:
        _write_metrics(trainer.out / "metrics.jsonl", trainer.history)
    if trainer.out is not None:
        _write_json_atomic(trainer.out / "config.json", {
            **dataclasses.asdict(config), "minires_version": _version(),
            "resumed_from": None if resume is None else str(resume)})
    with speed.scoped(speed_settings, config.threads):
        return trainer.run(handle_signals=handle_signals)


def _version():
    from .. import __version__
    return __version__


