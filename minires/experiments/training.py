"""Training a net for an experiment: one recipe for every net, through ``minires.train.fit``.

``train_net`` trains a model with SGD and one schedule (warm-up and cosine, or He et al.'s
steps) and returns its history as He et al. plot it: the running training error of the last
iterations (the paper's thin curves) and, per epoch, the test error. ``trained_model``
builds, trains and saves a net with the options of ``options.add_training_arguments``.
"""
from __future__ import annotations

import math
from types import SimpleNamespace

from ..train import Callback, NonFiniteLossError, TrainConfig, fit
from .nets import build
from .results import Timer
from .weights import save_weights


class _IterationLog(Callback):
    """He et al.'s thin curves: the training error and loss of the last ``log_every``
    iterations as they were trained on, with the rate; and per epoch the test error."""

    def __init__(self, hist, log_every, label):
        self.hist, self.log_every, self.label = hist, log_every, label
        self.clock = Timer()
        self.window = []                             # the StepStats since the last log line

    def on_step_end(self, trainer, stats):
        # the window's numbers are read when it is logged, not at every step: on a GPU reading
        # a step's loss waits for the GPU (StepStats), once per window instead of per step
        self.window.append(stats)
        step = stats.step
        if step % self.log_every == 0 or step == trainer.total_steps:
            wrong = seen = 0
            loss_sum = 0.0
            for s in self.window:                    # sums over the window's batches
                wrong += s.examples - s.correct
                seen += s.examples
                loss_sum += s.loss * s.examples
            h = self.hist
            h["steps"].append(step)
            h["train_error"].append(wrong / seen)
            h["train_loss"].append(loss_sum / seen)
            h["lr"].append(stats.lr)
            print(f"{self.label} step {step}/{trainer.total_steps}  train error "
                  f"{wrong / seen:.3f}  loss {loss_sum / seen:.3f}  "
                  f"{self.clock.seconds:.0f}s", flush=True)
            self.window = []

    def on_epoch_end(self, trainer, metrics):
        if "test_acc" in metrics:
            h = self.hist
            h["epoch_steps"].append(metrics["step"])
            h["test_error"].append(1.0 - metrics["test_acc"])
            h["test_loss"].append(metrics["test_loss"])
            print(f"{self.label} epoch {metrics['epoch']}  test error "
                  f"{1.0 - metrics['test_acc']:.3f}", flush=True)


def train_net(model, train_split, test_split, *, epochs=None, steps=None, batch_size=128,
              lr=0.1, momentum=0.9, nesterov=False, weight_decay=1e-4, warmup_frac=0.05,
              milestones=None, augment=True, crop_padding=4, decay_bn_bias=False, seed=0,
              device="cpu", log_every=20, eval_every_epoch=True, label=""):
    """Train ``model`` in place: SGD with momentum and one schedule for every model, through
    ``minires.train.fit``; returns the history.

    The budget is ``epochs`` passes over ``train_split`` or, when ``steps`` is given, that
    many iterations (the last epoch is cut short; batches are always full with ``steps``).
    The schedule is a linear warm-up over ``warmup_frac`` of the budget then cosine decay to
    zero, or, with ``milestones`` (fractions of the budget), He et al.'s constant rate divided
    by 10 at each milestone. Weight decay skips BN and bias parameters unless
    ``decay_bn_bias`` (He et al. decay everything). ``augment`` is a random crop after
    ``crop_padding`` zero pixels of padding, and a horizontal flip.

    The history holds ``steps`` (iteration numbers), ``train_error`` (the error on the last
    ``log_every`` training batches as they were trained on, like He et al.'s thin curves),
    ``train_loss``, ``lr``, and per epoch ``test_error``/``test_loss``. A NaN or infinite loss
    stops this model and is recorded as ``diverged``.
    """
    if (epochs is None) == (steps is None):
        raise ValueError("train_net: give exactly one of epochs and steps")
    drop_last = steps is not None and len(train_split) >= batch_size
    per_epoch = (len(train_split) // batch_size if drop_last
                 else math.ceil(len(train_split) / batch_size))
    steps_total = max(1, steps if steps is not None else epochs * per_epoch)
    schedule = dict(schedule="step", milestones=[int(f * steps_total) for f in milestones],
                    warmup_steps=0) if milestones else \
        dict(schedule="cosine", warmup_steps=int(warmup_frac * steps_total))
    config = TrainConfig(epochs=epochs, max_steps=steps, batch_size=batch_size, lr=lr,
                         momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                         decay_bn_bias=decay_bn_bias, augment=augment, crop_padding=crop_padding,
                         drop_last=drop_last, seed=seed, device=device, prefetch=0, **schedule)
    hist = {"steps": [], "train_error": [], "train_loss": [], "lr": [], "epoch_steps": [],
            "test_error": [], "test_loss": [], "diverged": False, "steps_total": steps_total}
    log = _IterationLog(hist, log_every, label)
    data = SimpleNamespace(train=train_split, test=test_split if eval_every_epoch else None)
    try:
        fit(model, data, config, callbacks=[log], progress=False, verbose=False,
            handle_signals=False)
    except NonFiniteLossError as err:
        hist["diverged"] = True
        print(f"{label}: {str(err).split(';')[0]}; stopping this model")
    hist["seconds"] = log.clock.seconds
    return hist


def trained_model(name, args, out_dir, train_split, test_split):
    """``name`` trained with the shared recipe (weights saved to ``out_dir/NAME.npz``).

    Returns (model, history, a note saying where the weights came from).
    """
    model = build(name, args.seed, args.device)
    epochs = 1 if args.tiny else args.epochs
    hist = train_net(model, train_split, test_split, epochs=epochs,
                     batch_size=min(args.batch_size, 32) if args.tiny else args.batch_size,
                     lr=args.lr, seed=args.seed, device=args.device,
                     log_every=2 if args.tiny else args.log_every, label=name)
    save_weights(model, out_dir / f"{name}.npz",
                 meta={"model": name, "seed": args.seed, "epochs": epochs, "recipe": "experiments",
                       "data": {"input_size": int(train_split.images.shape[-1])}})
    return model, hist, f"trained here: {epochs} epochs on {len(train_split)} images"


__all__ = ["train_net", "trained_model"]
