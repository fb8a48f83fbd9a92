"""What ``gradient_flow`` and ``compare`` return: the numbers, as a table, a CSV and a figure.

A ``FlowReport`` holds two lists of rows (plain dicts of Python numbers and strings):

``layers``  one row per layer, in the order the forward pass called them
    name, kind, shape (of the weight), params, weight_norm, grad_norm (of the weight),
    grad_weight_ratio, act_mean, act_std (of the layer's output), out_grad_norm (the
    gradient reaching the layer's output), dead_frac (ReLUs only: the fraction of units
    that are zero for every example in the batch)
``blocks``  one row per residual block (or plain block), in forward order
    name, kind, has_skip, skip_grad_norm, branch_grad_norm, total_grad_norm, cosine,
    skip_share (= skip / (skip + branch) norms)

Norms are Euclidean norms over the whole batch. ``None`` means "does not apply"
(a ReLU has no weight; the cosine with a zero vector is undefined).
"""
from __future__ import annotations

import csv
import json
import os
import tempfile

from . import _format as tf

LAYER_FIELDS = ("name", "kind", "shape", "params", "weight_norm", "grad_norm", "grad_weight_ratio",
                "act_mean", "act_std", "out_grad_norm", "dead_frac")
BLOCK_FIELDS = ("name", "kind", "has_skip", "skip_grad_norm", "branch_grad_norm", "total_grad_norm",
                "cosine", "skip_share")


def _atomic_write_text(path, text):
    """Write ``text`` to ``path`` through a temporary file and ``os.replace`` (never half-written)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "w", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _new_figure(figsize):
    """A matplotlib Figure without pyplot (no global state, no GUI), or a clear ImportError."""
    try:
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError("plot() needs matplotlib, which is not installed: "
                          "pip install 'minires[plot]' (or pip install matplotlib)") from err
    return Figure(figsize=figsize, layout="constrained")


def _finish_figure(fig, path):
    if path is not None:
        fig.savefig(os.fspath(path), dpi=120)
    return fig


class FlowReport:
    """Per-layer and per-block gradient statistics of one forward/backward pass.

    ``print(report)`` shows two aligned tables with log-scale bars; ``to_dict()``,
    ``to_csv(path)`` and ``plot(path=None)`` give the same numbers in other forms.
    """

    def __init__(self, model_name, layers, blocks, loss, batch_size, mode, device):
        self.model_name = model_name
        self.layers = layers
        self.blocks = blocks
        self.loss = loss
        self.batch_size = batch_size
        self.mode = mode
        self.device = device

    # -- plain data ---------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Everything as plain JSON-able data: model, loss, batch_size, mode, device and the
        layer and block rows."""
        return {"model": self.model_name, "loss": self.loss, "batch_size": self.batch_size,
                "mode": self.mode, "device": self.device,
                "layers": [dict(r) for r in self.layers], "blocks": [dict(r) for r in self.blocks]}

    def to_json(self, path=None, indent=1):
        """``to_dict()`` as a JSON string; also written (atomically) to ``path`` when one is
        given."""
        text = json.dumps(self.to_dict(), indent=indent)
        if path is not None:
            _atomic_write_text(path, text + "\n")
        return text

    def to_csv(self, path):
        """One CSV with a ``table`` column ("layer" or "block") and the fields of both kinds of row.

        Fields that do not apply are left empty; a weight shape is written as 16x3x3x3.
        """
        fields = ("table",) + LAYER_FIELDS + tuple(f for f in BLOCK_FIELDS if f not in LAYER_FIELDS)
        rows = [dict(r, table="layer") for r in self.layers] + \
               [dict(r, table="block") for r in self.blocks]
        lines = _CsvText()
        writer = csv.DictWriter(lines, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            row = {k: ("x".join(map(str, v)) if isinstance(v, (list, tuple)) else v)
                   for k, v in row.items()}
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in fields})
        _atomic_write_text(path, lines.text)
        return path

    # -- the text tables ---------------------------------------------------------------------
    def header(self) -> str:
        """One line naming the model, batch size, loss, train/eval mode and device."""
        return (f"gradient flow of {self.model_name}: batch {self.batch_size}, loss {self.loss:.4g}, "
                f"{self.mode} mode, {self.device}")

    def layers_table(self) -> str:
        """The per-layer table as text: weight-gradient norm, grad/weight ratio, activation
        statistics, dead ReLU fraction, and a log-scale bar."""
        scale = tf.log_range([r["grad_norm"] for r in self.layers])
        head = (f"{'layer':<22} {'|grad|':>8} {'grad/W':>8} {'act mean':>8} {'act std':>7} "
                f"{'dead':>5} log10 |grad|")
        width = tf.WIDTH - len(head) + len("log10 |grad|")
        lines = [head, "-" * tf.WIDTH]
        for r in self.layers:
            lines.append(f"{tf.clip_name(r['name'], 22)} {tf.fmt(r['grad_norm'])} "
                         f"{tf.fmt(r['grad_weight_ratio'])} {tf.fmt(r['act_mean'])} "
                         f"{tf.fmt(r['act_std'], 7)} {tf.fmt_pct(r['dead_frac'])} "
                         f"{tf.bar(r['grad_norm'], scale, width)}".rstrip())
        lines.append(f"|grad|: norm of the weight's gradient; bar scale {tf.scale_text(scale)}")
        return "\n".join(lines)

    def blocks_table(self) -> str:
        """The per-block table as text: skip, branch and total gradient norms at each block's
        input, their cosine, and a log-scale bar."""
        if not self.blocks:
            return "no residual blocks (no module with a `fork` submodule)"
        scale = tf.log_range([r["total_grad_norm"] for r in self.blocks])
        head = (f"{'block':<16} {'skip':>8} {'branch':>8} {'total':>8} {'cos':>6} "
                f"log10 |total grad|")
        width = tf.WIDTH - 16 - 3 * 9 - 7 - 1
        lines = [head, "-" * tf.WIDTH]
        for r in self.blocks:
            lines.append(f"{tf.clip_name(r['name'], 16)} {tf.fmt(r['skip_grad_norm'])} "
                         f"{tf.fmt(r['branch_grad_norm'])} {tf.fmt(r['total_grad_norm'])} "
                         f"{tf.fmt_signed(r['cosine'])} "
                         f"{tf.bar(r['total_grad_norm'], scale, width)}".rstrip())
        lines.append(f"skip, branch, total: |grad| reaching the block input; bar {tf.scale_text(scale)}")
        return "\n".join(lines)

    def __repr__(self):
        return f"{self.header()}\n\n{self.layers_table()}\n\n{self.blocks_table()}"

    __str__ = __repr__

    # -- summary figures (also used by compare) ----------------------------------------------
    def weight_grad_norms(self):
        """(names, grad norms) of the convolution and linear layers (weights of 2+ axes), in
        forward order -- the layers that count in a network's depth (batch-norm scales left out)."""
        rows = [r for r in self.layers if r["grad_norm"] is not None and len(r["shape"]) >= 2]
        return [r["name"] for r in rows], [r["grad_norm"] for r in rows]

    def summary(self) -> dict:
        """A dict of headline numbers: layer and block counts, loss, the first and last
        layer's weight-gradient norms and their ratio, the first and last block's total
        gradient norm, and the mean skip share over blocks.
        """
        names, norms = self.weight_grad_norms()
        first, last = (norms[0], norms[-1]) if norms else (None, None)
        totals = [r["total_grad_norm"] for r in self.blocks]
        shares = [r["skip_share"] for r in self.blocks if r["skip_share"] is not None]
        return {
            "layers": len(names), "blocks": len(self.blocks), "loss": self.loss,
            "first_layer": names[0] if names else None, "last_layer": names[-1] if names else None,
            "first_grad_norm": first, "last_grad_norm": last,
            "first_over_last": (first / last) if first is not None and last else None,
            "first_block_grad_norm": totals[0] if totals else None,
            "last_block_grad_norm": totals[-1] if totals else None,
            "mean_skip_share": (sum(shares) / len(shares)) if shares else None,
        }

    # -- the figure ---------------------------------------------------------------------
    def plot(self, path=None):
        """Two panels: weight-gradient norm per layer, and skip/branch/total per block.

        Returns the matplotlib ``Figure`` (Jupyter shows it); also saves it when ``path`` is given.
        """
        fig = _new_figure((9, 6.5))
        ax1, ax2 = fig.subplots(2, 1)
        names, norms = self.weight_grad_norms()
        ax1.semilogy(range(len(norms)), [v if v and v > 0 else float("nan") for v in norms],
                     marker=".", lw=1)
        ax1.set_xlabel("layer (forward order)")
        ax1.set_ylabel("|grad of weight|")
        ax1.set_title(f"{self.model_name}: gradient norm per layer (loss {self.loss:.3g})")
        if names:
            step = max(1, len(names) // 12)
            ax1.set_xticks(range(0, len(names), step))
            ax1.set_xticklabels(names[::step], rotation=45, ha="right", fontsize=7)
        _plot_blocks(ax2, self.blocks)
        return _finish_figure(fig, path)


def _positive_or_nan(values):
    return [v if v is not None and v > 0 else float("nan") for v in values]


def _plot_blocks(ax, blocks, label_prefix=""):
    if not blocks:
        ax.text(0.5, 0.5, "no residual blocks", ha="center", va="center", transform=ax.transAxes)
        return
    idx = range(len(blocks))
    ax.semilogy(idx, _positive_or_nan([r["total_grad_norm"] for r in blocks]), "k.-",
                label=f"{label_prefix}total")
    ax.semilogy(idx, _positive_or_nan([r["branch_grad_norm"] for r in blocks]), "--",
                label=f"{label_prefix}through the branch")
    if any(r["has_skip"] for r in blocks):
        ax.semilogy(idx, _positive_or_nan([r["skip_grad_norm"] for r in blocks]), ":",
                    label=f"{label_prefix}through the skip")
    step = max(1, len(blocks) // 16)
    ax.set_xticks(list(idx)[::step])
    ax.set_xticklabels([r["name"] for r in blocks][::step], rotation=45, ha="right", fontsize=7)
    ax.set_xlabel("block (forward order)")
    ax.set_ylabel("|grad at block input|")
    ax.legend(fontsize=8)


class _CsvText:
    """A tiny file-like object for csv.writer that collects the text."""

    def __init__(self):
        self.parts = []

    def write(self, s):
        self.parts.append(s)

    @property
    def text(self):
        return "".join(self.parts)


class Comparison:
    """Several ``FlowReport``s of models given the same batch, side by side."""

    def __init__(self, reports: dict):
        self.reports = dict(reports)

    def __getitem__(self, name):
        return self.reports[name]

    def to_dict(self) -> dict:
        """``{"summary": {model: summary()}, "reports": {model: to_dict()}}`` for every model
        compared."""
        return {"summary": {k: r.summary() for k, r in self.reports.items()},
                "reports": {k: r.to_dict() for k, r in self.reports.items()}}

    def to_csv(self, path):
        """The summary row of each model (first/last-layer gradient norms and their ratio ...)."""
        fields = ("model",) + tuple(next(iter(self.reports.values())).summary())
        lines = _CsvText()
        writer = csv.DictWriter(lines, fieldnames=fields)
        writer.writeheader()
        for name, report in self.reports.items():
            s = report.summary()
            writer.writerow({"model": name, **{k: ("" if v is None else v) for k, v in s.items()}})
        _atomic_write_text(path, lines.text)
        return path

    def __repr__(self):
        batch = {r.batch_size for r in self.reports.values()}
        head = (f"{'model':<14} {'layers':>6} {'blocks':>6} {'loss':>7} {'|g| first':>9} "
                f"{'|g| last':>9} {'first/last':>10} {'skip share':>10}")
        sizes = ", ".join(map(str, sorted(batch)))
        title = f"gradient flow compared on the same batch ({sizes} examples)"
        lines = [title, head, "-" * tf.WIDTH]
        for name, report in self.reports.items():
            s = report.summary()
            lines.append(f"{tf.clip_name(name, 14)} {s['layers']:>6} {s['blocks']:>6} "
                         f"{tf.fmt(s['loss'], 7)} {tf.fmt(s['first_grad_norm'], 9)} "
                         f"{tf.fmt(s['last_grad_norm'], 9)} {tf.fmt(s['first_over_last'], 10)} "
                         f"{tf.fmt_pct(s['mean_skip_share'], 10)}")
        lines.append("|g| first, last: norm of the weight gradient of the first and the last layer")
        lines.append("skip share: mean over blocks of |skip| / (|skip| + |branch|) at the block input")
        # One character per layer: how large each layer's weight gradient is, on a scale shared by
        # all models, so a vanishing (or exploding) gradient shows as a ramp.
        all_norms = [v for r in self.reports.values() for v in r.weight_grad_norms()[1]]
        scale = tf.log_range(all_norms)
        length = tf.WIDTH - 16 - 2
        lines.append("")
        lines.append(f"|grad| per layer, input side first; log scale {tf.scale_text(scale)}")
        lines.append(f"  ('{tf.RAMP[1:]}' from low to high, '_' zero)")
        for name, report in self.reports.items():
            norms = report.weight_grad_norms()[1]
            bars = tf.profile(norms, scale, min(length, max(len(norms), 1)))
            lines.append(f"{tf.clip_name(name, 14)}  [{bars}]")
        return "\n".join(lines)

    __str__ = __repr__

    def plot(self, path=None):
        """Gradient norm per layer against relative depth, and total block gradient, per model."""
        fig = _new_figure((9, 6.5))
        ax1, ax2 = fig.subplots(2, 1)
        for name, report in self.reports.items():
            _, norms = report.weight_grad_norms()
            depth = [i / max(1, len(norms) - 1) for i in range(len(norms))]
            ax1.semilogy(depth, _positive_or_nan(norms), ".-", lw=1, ms=3, label=name)
            blocks = report.blocks
            if blocks:
                pos = [i / max(1, len(blocks) - 1) for i in range(len(blocks))]
                ax2.semilogy(pos, _positive_or_nan([r["total_grad_norm"] for r in blocks]), ".-",
                             lw=1, ms=3, label=name)
        ax1.set_xlabel("relative depth of the layer (0 = input side)")
        ax1.set_ylabel("|grad of weight|")
        ax1.set_title("gradient norm per layer")
        ax1.legend(fontsize=8)
        ax2.set_xlabel("relative depth of the block")
        ax2.set_ylabel("|grad at block input|")
        ax2.legend(fontsize=8)
        return _finish_figure(fig, path)
