"""Train a ResNet on CIFAR-10: ``python -m minires.train cifar``, and ``fit()``, the loop it wraps.

    python -m minires.train cifar                     # `fast` recipe: resnet20, 47-81 min, 2 cores
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

The package reads in five files: ``recipes.py`` (the ``fast`` and ``paper`` recipes,
``TrainConfig`` -- each setting declared once, with its help text and range -- and the model,
optimiser and schedule a config builds), ``loop.py`` (``fit``, the ``Trainer``, the callback
contract: ``Callback`` and ``StepStats``), ``evaluation.py`` (``evaluate``, ``evaluate_views``),
``run_folder.py`` (the checks before a run, config.json, metrics.jsonl, summary.json,
curves.png) and ``cli.py`` (the command line, built from ``TrainConfig``'s declarations, a thin
layer over ``fit``).
"""
from .cli import build_parser, main
from .evaluation import evaluate, evaluate_views
from .loop import Callback, FitResult, NonFiniteLossError, StepStats, Trainer, fit
from .recipes import (
    FAST_EPOCHS,
    OPTIMIZERS,
    RECIPES,
    SCHEDULES,
    TrainConfig,
    build_model,
    build_optimizer,
    build_schedule,
    recipe_config,
)
from .run_folder import check_writable, plot_curves

__all__ = ["FAST_EPOCHS", "OPTIMIZERS", "RECIPES", "SCHEDULES", "Callback", "FitResult",
           "NonFiniteLossError", "StepStats", "TrainConfig", "Trainer", "build_model",
           "build_optimizer", "build_parser", "build_schedule", "check_writable", "evaluate",
           "evaluate_views", "fit", "main", "plot_curves", "recipe_config"]
