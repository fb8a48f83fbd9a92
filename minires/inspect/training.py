"""Gradient norms during training: ``GradFlowLog`` writes them to ``gradflow.jsonl``.

The training loop calls the log right after ``loss.backward()`` and before the
optimiser step, when every parameter's ``.grad`` holds this step's gradient; the
log reads them (no extra forward or backward pass, nothing changed) every
``every`` steps and appends one JSON line:

    {"step": 200, "epoch": 1, "grad_norm": {"conv1": 0.41, "layer1.0.conv1": 0.22, ...}}

``plot_heatmap`` turns the file into a picture: one row per layer, one column per
logged step, colour = log10 of the gradient norm. ``GradFlowLog`` also has the methods
of a ``minires.train.Callback``, so ``fit(..., callbacks=[GradFlowLog(model, path, 50)])``
logs during training and draws ``gradflow.png`` at the end (what
``python -m minires.train cifar --inspect-every 50`` does).
"""
from __future__ import annotations

import json
import math
import os

from ..files import append_json_line, draw_optional, new_figure, save_figure
from .flow import leaf_layers, leaf_weight, norm


def layer_grad_norms(model) -> dict:
    """name -> norm of the weight gradient, for each layer (leaf module) with a weight that has one.

    Layers come in registration order, which for the models in ``minires.models`` is the
    forward order.
    """
    out = {}
    for name, module in leaf_layers(model):
        weight = leaf_weight(module)
        if weight is not None and weight.grad is not None:
            out[name] = norm(weight.grad)
    return out


class GradFlowLog:
    """Append the per-layer gradient norms to a JSON-lines file every ``every`` steps.

    ``model`` may be None when the log is a training callback: it then reads the trainer's.

    ``log(step, epoch)`` after ``loss.backward()``; it returns True when it wrote a line.
    Each line is written and flushed whole, so a crash leaves only complete lines.
    """

    def __init__(self, model, path, every):
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"GradFlowLog: every must be a positive int (steps), got {every!r}")
        self.model, self.path, self.every = model, os.fspath(path), every

    def __call__(self, step, epoch=None) -> bool:
        """Append a line of per-layer gradient norms when ``step`` is a multiple of ``every``.

        Call it after ``loss.backward()`` and before the optimizer step. Returns True when
        it wrote a line. ``log`` is the same method.
        """
        if step % self.every:
            return False
        if self.model is None:
            raise ValueError("GradFlowLog: no model to read gradients from (give one, or use the "
                             "log as a training callback)")
        record = {"step": int(step), "epoch": epoch, "grad_norm": layer_grad_norms(self.model)}
        with open(self.path, "a", encoding="utf-8") as f:
            append_json_line(f, record)
        return True

    log = __call__

    # -- as a minires.train callback (duck-typed: the loop calls these five methods) ------------
    def on_train_begin(self, trainer):
        """Callback hook: nothing to do at the start of training."""

    def on_after_backward(self, trainer):
        """Every ``.grad`` holds this step's gradient; the step's number is global_step + 1."""
        if self.model is None:
            self.model = trainer.model
        self(trainer.global_step + 1, epoch=trainer.epoch + 1)

    def on_step_end(self, trainer, loss):
        """Callback hook: nothing to do after a step (the log is written after backward)."""

    def on_epoch_end(self, trainer, metrics):
        """Callback hook: nothing to do at the end of an epoch."""

    def on_train_end(self, trainer, result):
        """Draw ``gradflow.png`` beside the log when steps were logged; without matplotlib,
        say in one line that it was not drawn (``minires.files.draw_optional``)."""
        if os.path.exists(self.path) and read_gradflow(self.path):
            draw_optional(lambda: plot_heatmap(self.path),
                          os.path.splitext(self.path)[0] + ".png")


def read_gradflow(path):
    """The records of a ``gradflow.jsonl`` file, as a list of dicts (a torn last line is
    skipped)."""
    records = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue        # a line cut short by a crash: the earlier ones are complete
    return records


def plot_heatmap(jsonl_path, png_path=None, title=None):
    """Heat map of log10 gradient norm, layers down, logged steps across; returns the Figure.

    Saved as a PNG at ``png_path`` when one is given. Needs matplotlib: without it,
    ``minires.files.MatplotlibMissing`` (an ``ImportError`` naming what to install).
    """
    records = read_gradflow(jsonl_path)
    if not records:
        raise ValueError(f"plot_heatmap: {jsonl_path} holds no gradient-norm records")
    layers = list(records[0]["grad_norm"])
    for r in records[1:]:
        layers += [name for name in r["grad_norm"] if name not in layers]
    grid = [[math.log10(r["grad_norm"][name]) if r["grad_norm"].get(name, 0) > 0 else float("nan")
             for r in records] for name in layers]
    steps = [r["step"] for r in records]
    fig = new_figure((9, max(3.0, 0.12 * len(layers) + 1.5)))
    ax = fig.subplots()
    image = ax.imshow(grid, aspect="auto", interpolation="nearest", cmap="viridis")
    fig.colorbar(image, ax=ax, label="log10 |grad of weight|")
    tick = max(1, len(steps) // 10)
    ax.set_xticks(range(0, len(steps), tick))
    ax.set_xticklabels([str(s) for s in steps[::tick]], fontsize=7)
    ax.set_xlabel("training step")
    row_tick = max(1, len(layers) // 40)
    ax.set_yticks(range(0, len(layers), row_tick))
    ax.set_yticklabels(layers[::row_tick], fontsize=6)
    ax.set_title(title or "gradient norm per layer during training")
    if png_path is not None:
        save_figure(fig, png_path)
    return fig
