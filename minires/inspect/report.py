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

The printed tables end with a footer that explains each column (``LAYER_LEGEND``,
``BLOCK_LEGEND``, ``COMPARE_LEGEND``); in Jupyter the same tables and legends show as
HTML (``_repr_html_``).
"""
from __future__ import annotations

import csv
import html
import textwrap

from ..files import new_figure, save_figure, to_json, write_text
from . import tables

LAYER_FIELDS = ("name", "kind", "shape", "params", "weight_norm", "grad_norm", "grad_weight_ratio",
                "act_mean", "act_std", "out_grad_norm", "dead_frac")
BLOCK_FIELDS = ("name", "kind", "has_skip", "skip_grad_norm", "branch_grad_norm", "total_grad_norm",
                "cosine", "skip_share")


# What each column of the printed tables shows, exactly as flow.py computes it: (the
# column's heading, its explanation). The footers of the text tables and of the HTML
# tables are made from these, so a column and its explanation cannot drift apart.
LAYER_LEGEND = (
    ("layer", "the layer's name in the model (name#2: its second call in this pass)"),
    ("|grad|", ("Euclidean norm of the gradient of the loss with respect to the layer's "
                "weight (BatchNorm: its scale gamma; a layer without `weight`: its first "
                "parameter), over all its elements")),
    ("grad/W", ("|grad| / |W|, the norm of that gradient over the norm of the weight itself "
                "('-' when W is all zeros)")),
    ("act mean", ("mean of the layer's output over all its elements (examples, channels, "
                  "positions)")),
    ("act std", "standard deviation of the same elements (divided by n, not n - 1)"),
    ("dead", ("ReLUs only: the fraction of output units (a channel at a position) that are 0 "
              "for every example in the batch")),
    ("log10 |grad|", ("a bar whose length grows with log10 |grad|; '-' in a column: does not "
                      "apply to this layer")),
)
BLOCK_LEGEND = (
    ("block", ("a module with a `fork` submodule, which hands the block's input to the "
               "residual branch and to the skip path")),
    ("skip", ("|g_skip|: norm of the gradient reaching the block's input through the skip "
              "path (0: a plain block, which does not use it)")),
    ("branch", ("|g_branch|: norm of the gradient reaching the block's input through the "
                "residual branch")),
    ("total", "|g_skip + g_branch|: norm of the whole gradient at the block's input"),
    ("cos", ("cosine of the angle between g_skip and g_branch ('-': no skip path, or one of "
             "the two is zero)")),
    ("skip share", ("|g_skip| / (|g_skip| + |g_branch|), a ratio of norms (the vectors can "
                    "partly cancel)")),
    ("log10 |total|", "a bar whose length grows with log10 of total"),
)
COMPARE_LEGEND = (
    ("model", "the name given to compare()"),
    ("layers", ("weight layers: convolutions and linear layers (weights of 2+ axes), "
                "BatchNorm left out")),
    ("blocks", "modules with a `fork` submodule (residual or plain blocks)"),
    ("loss", "the loss on the batch (loss_fn; default: mean cross-entropy)"),
    ("|g| first", "norm of the weight gradient of the first weight layer (input side)"),
    ("|g| last", "norm of the weight gradient of the last weight layer (output side)"),
    ("first/last", ("|g| first / |g| last: far below 1, the gradient fades on its way to the "
                    "input; far above 1, it grows")),
    ("skip share", ("the mean over blocks of |g_skip| / (|g_skip| + |g_branch|) at each "
                    "block's input")),
)


def legend_text(legend, notes=()) -> str:
    """A footer explaining each column: its heading, then its explanation wrapped to fit
    the table's width; ``notes`` are extra lines (the bar's scale) added at the end."""
    pad = max(len(head) for head, _ in legend) + 2
    lines = []
    for head, text in legend:
        lines += textwrap.wrap(text, tables.WIDTH, initial_indent=head.ljust(pad),
                               subsequent_indent=" " * pad)
    return "\n".join(lines + list(notes))


def _html_table(columns, rows, legend, caption=None, notes=(), bar=True) -> str:
    """A plain HTML table (every text escaped) followed by its legend as a definition list.

    Names (the first column) and, with ``bar``, the bars (the last) are left-aligned, numbers
    right-aligned.
    """
    esc = html.escape
    parts = ["<table>"]
    if caption:
        parts.append(f"<caption style=\"text-align:left\">{esc(caption)}</caption>")
    parts.append("<thead><tr>" + "".join(f"<th>{esc(c)}</th>" for c in columns)
                 + "</tr></thead><tbody>")
    for row in rows:
        cells = []
        for i, value in enumerate(row):
            align = "left" if i == 0 or (bar and i == len(row) - 1) else "right"
            cells.append(f"<td style=\"text-align:{align}\"><code>{esc(str(value).strip())}"
                         f"</code></td>")
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</tbody></table>")
    parts.append("<dl style=\"font-size:smaller\">" + "".join(
        f"<dt><code>{esc(head)}</code></dt><dd>{esc(text)}</dd>" for head, text in legend)
        + "</dl>")
    parts += [f"<p style=\"font-size:smaller\">{esc(note)}</p>" for note in notes]
    return "\n".join(parts)


class FlowReport:
    """Per-layer and per-block gradient statistics of one forward/backward pass.

    ``print(report)`` shows two aligned tables with log-scale bars, each with a footer
    explaining its columns; in Jupyter the report shows as HTML tables; ``to_dict()``,
    ``to_csv(path)`` and ``plot(path=None)`` give the same numbers in other forms.
    ``model_name`` is what the header calls the model.
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
        text = to_json(self.to_dict(), indent)
        if path is not None:
            write_text(path, text + "\n", what="report")
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
        write_text(path, lines.text, what="report")
        return path

    # -- the text tables ---------------------------------------------------------------------
    def header(self) -> str:
        """One line naming the model, batch size, loss, train/eval mode and device."""
        return (f"gradient flow of {self.model_name}: batch {self.batch_size}, "
                f"loss {self.loss:.4g}, {self.mode} mode, {self.device}")

    _LAYER_HEAD = (f"{'layer':<22} {'|grad|':>8} {'grad/W':>8} {'act mean':>8} {'act std':>7} "
                   f"{'dead':>5} log10 |grad|")
    _BLOCK_HEAD = (f"{'block':<16} {'skip':>8} {'branch':>8} {'total':>8} {'cos':>6} "
                   f"{'skip share':>10} log10 |total|")

    def _layer_cells(self):
        """The cells of the per-layer table, one list per layer (the bar last)."""
        scale = tables.log_range([r["grad_norm"] for r in self.layers])
        width = tables.WIDTH - len(self._LAYER_HEAD) + len("log10 |grad|")
        rows = [[tables.clip_name(r["name"], 22), tables.fmt(r["grad_norm"]),
                 tables.fmt(r["grad_weight_ratio"]), tables.fmt(r["act_mean"]),
                 tables.fmt(r["act_std"], 7),
                 tables.fmt_pct(r["dead_frac"]), tables.bar(r["grad_norm"], scale, width)]
                for r in self.layers]
        return rows, _bar_note("|grad|", scale, width)

    def _block_cells(self):
        """The cells of the per-block table, one list per block (the bar last)."""
        scale = tables.log_range([r["total_grad_norm"] for r in self.blocks])
        width = tables.WIDTH - len(self._BLOCK_HEAD) + len("log10 |total|")
        rows = [[tables.clip_name(r["name"], 16), tables.fmt(r["skip_grad_norm"]),
                 tables.fmt(r["branch_grad_norm"]), tables.fmt(r["total_grad_norm"]),
                 tables.fmt_signed(r["cosine"]), tables.fmt_pct(r["skip_share"], 10),
                 tables.bar(r["total_grad_norm"], scale, width)]
                for r in self.blocks]
        return rows, _bar_note("total", scale, width)

    def layers_table(self, legend=True) -> str:
        """The per-layer table as text: weight-gradient norm, grad/weight ratio, activation
        statistics, dead ReLU fraction, and a log-scale bar; with ``legend``, a footer that
        explains each column."""
        rows, note = self._layer_cells()
        lines = [self._LAYER_HEAD, "-" * tables.WIDTH] + [" ".join(r).rstrip() for r in rows]
        if legend:
            lines += ["-" * tables.WIDTH, legend_text(LAYER_LEGEND, [note])]
        return "\n".join(lines)

    def blocks_table(self, legend=True) -> str:
        """The per-block table as text: skip, branch and total gradient norms at each block's
        input, their cosine, the skip share and a log-scale bar; with ``legend``, a footer
        that explains each column."""
        if not self.blocks:
            return "no residual blocks (no module with a `fork` submodule)"
        rows, note = self._block_cells()
        lines = [self._BLOCK_HEAD, "-" * tables.WIDTH] + [" ".join(r).rstrip() for r in rows]
        if legend:
            lines += ["-" * tables.WIDTH, legend_text(BLOCK_LEGEND, [note])]
        return "\n".join(lines)

    def __repr__(self):
        return f"{self.header()}\n\n{self.layers_table()}\n\n{self.blocks_table()}"

    __str__ = __repr__

    def _repr_html_(self):
        """The report as HTML for Jupyter: the header, then the two tables, each with the
        legend that explains its columns (all text escaped)."""
        layer_rows, layer_note = self._layer_cells()
        parts = [f"<div class=\"minires-gradient-flow\"><p><b>{html.escape(self.header())}</b></p>",
                 _html_table([h for h, _ in LAYER_LEGEND],
                             [[r["name"]] + cells[1:] for r, cells in
                              zip(self.layers, layer_rows)], LAYER_LEGEND, "per layer",
                             [layer_note])]
        if self.blocks:
            block_rows, block_note = self._block_cells()
            parts.append(_html_table([h for h, _ in BLOCK_LEGEND],
                                     [[r["name"]] + cells[1:] for r, cells in
                                      zip(self.blocks, block_rows)], BLOCK_LEGEND, "per block",
                                     [block_note]))
        else:
            parts.append(f"<p>{html.escape(self.blocks_table())}</p>")
        return "\n".join(parts) + "\n</div>"

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

        Returns the matplotlib ``Figure`` (Jupyter shows it); also saves it to ``path`` when
        given, in the format its suffix names (.png, .pdf, .svg). Without matplotlib:
        ``minires.files.MatplotlibMissing``, an ``ImportError`` that says what to install.
        """
        fig = new_figure((9, 6.5))
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
        if path is not None:
            save_figure(fig, path)
        return fig


def _bar_note(of, scale, width):
    """The footer line that gives a bar's scale."""
    if scale is None:
        return f"bar: none ({of} is zero everywhere)"
    return (f"bar scale: one '#' for {of} {scale[0]:.1e} (or less), {width} for "
            f"{scale[1]:.1e}; no bar for 0")


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
    """Several ``FlowReport``s of models given the same batch, side by side.

    ``print(comparison)`` shows one summary row per model (footer: what each column is)
    and a one-line gradient profile per model; in Jupyter the summary shows as HTML.
    """

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
        write_text(path, lines.text, what="report")
        return path

    def _title(self):
        sizes = ", ".join(map(str, sorted({r.batch_size for r in self.reports.values()})))
        return f"gradient flow compared on the same batch ({sizes} examples)"

    def _cells(self):
        """One list of cells per model, in the columns of COMPARE_LEGEND."""
        rows = []
        for name, report in self.reports.items():
            s = report.summary()
            rows.append([tables.clip_name(name, 14), f"{s['layers']:>6}", f"{s['blocks']:>6}",
                         tables.fmt(s["loss"], 7), tables.fmt(s["first_grad_norm"], 9),
                         tables.fmt(s["last_grad_norm"], 9), tables.fmt(s["first_over_last"], 10),
                         tables.fmt_pct(s["mean_skip_share"], 10)])
        return rows

    def __repr__(self):
        head = (f"{'model':<14} {'layers':>6} {'blocks':>6} {'loss':>7} {'|g| first':>9} "
                f"{'|g| last':>9} {'first/last':>10} {'skip share':>10}")
        lines = [self._title(), head, "-" * tables.WIDTH]
        lines += [" ".join(cells) for cells in self._cells()]
        lines += ["-" * tables.WIDTH, legend_text(COMPARE_LEGEND)]
        # One character per layer: how large each layer's weight gradient is, on a scale shared by
        # all models, so a vanishing (or exploding) gradient shows as a ramp.
        all_norms = [v for r in self.reports.values() for v in r.weight_grad_norms()[1]]
        scale = tables.log_range(all_norms)
        length = tables.WIDTH - 16 - 2
        lines.append("")
        lines.append(f"|grad| per layer, input side first; log scale {tables.scale_text(scale)}")
        lines.append(f"  ('{tables.RAMP[1:]}' from low to high, '_' zero)")
        for name, report in self.reports.items():
            norms = report.weight_grad_norms()[1]
            bars = tables.profile(norms, scale, min(length, max(len(norms), 1)))
            lines.append(f"{tables.clip_name(name, 14)}  [{bars}]")
        return "\n".join(lines)

    __str__ = __repr__

    def _repr_html_(self):
        """The comparison as an HTML table for Jupyter, with the legend of its columns (all
        text escaped)."""
        rows = [[name] + cells[1:] for name, cells in zip(self.reports, self._cells())]
        table = _html_table([h for h, _ in COMPARE_LEGEND], rows, COMPARE_LEGEND, self._title(),
                            bar=False)
        return f"<div class=\"minires-gradient-flow\">\n{table}\n</div>"

    def plot(self, path=None):
        """Gradient norm per layer against relative depth, and total block gradient, per model.

        Returns the matplotlib ``Figure``; also saves it to ``path`` when given (format from
        the suffix: .png, .pdf, .svg).
        Without matplotlib: ``minires.files.MatplotlibMissing`` (an ``ImportError``).
        """
        fig = new_figure((9, 6.5))
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
        if path is not None:
            save_figure(fig, path)
        return fig
