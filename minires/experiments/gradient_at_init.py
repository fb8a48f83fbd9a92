"""Gradients at initialisation: per-layer norms, and how correlated they are between nearby inputs.

Two measurements on freshly initialised plain and residual networks (no training):

1. **Gradient norm per layer** (``minires.inspect.gradient_flow`` on one batch in train
   mode, i.e. exactly the first step of training): in a deep plain network the
   gradient changes by orders of magnitude from the last layer to the first; in a
   residual network it stays nearly flat.

2. **Shattered gradients** (Balduzzi et al. 2017). Walk a straight line from one test
   image to another in ``--points`` steps, and at each point take the gradient of one
   logit (the first image's class) with respect to the input image. For a smooth
   function, gradients at neighbouring points are strongly correlated; Balduzzi et
   al. showed that in deep plain networks they decorrelate towards white noise as
   depth grows, and that skip connections keep them correlated. We report the mean
   Pearson correlation between the gradients at points ``lag`` steps apart, and, as
   the "unrelated" reference, the correlation between gradients at different test images.
   Batch norm runs in eval mode with running statistics calibrated on a real batch (so
   each input goes through the same fixed function; train-mode statistics computed on
   a batch of near-identical points would be meaningless).

3. **How many digits the first/last ratio has.** The same batch again, each pixel
   multiplied by ``1 + scale * z`` (z standard normal, ``--perturbation`` = 1e-7 by
   default, below float32's resolution), ``--perturbations`` times. A function whose
   gradients are smooth in its input moves by about ``scale``; a deep plain net at
   initialisation moves by percent (plain56 in float64: 252.5-259.3 over 5 such draws, in
   minires and PyTorch alike: benchmarks/gradient_digits.py). So float32 runs that add in
   another order -- another BLAS, another block size -- give other figures within that
   range, and the printed range says which digits to trust.
"""
from __future__ import annotations

import numpy as np

import minires as mr
from minires.backend import to_numpy

from ..files import new_figure
from .data import first_batch, load_splits
from .nets import build, calibrate_batch_norm
from .options import ExperimentError, depth_list
from .results import Timer, environment, finish, output_folder

NAME = "gradient-at-init"
DESCRIPTION = ("Gradient norm per layer, and shattered gradients, at initialisation.\n"
               "Plain and residual nets of several depths; the correlation of input gradients "
               "between\nnearby inputs follows Balduzzi et al. 2017.")


def add_arguments(parser):
    parser.add_argument("--depths", default=None, help="comma-separated depths 6n+2 "
                        "(default: 20,56,110; with --tiny 8,14)")
    parser.add_argument("--families", default="plain,resnet", help="model families, built as "
                        "FAMILY + DEPTH with minires.models.get_model (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=64, help="images in the batch for "
                        "the per-layer gradient norms (default: %(default)s)")
    parser.add_argument("--perturbations", type=int, default=4, help="re-measure first/last on "
                        "the batch perturbed this many times (default: %(default)s; 0: not)")
    parser.add_argument("--perturbation", type=float, default=1e-7, help="relative size of each "
                        "perturbation (default: %(default)s)")
    parser.add_argument("--points", type=int, default=64, help="points on the line between two "
                        "test images for the gradient correlation (default: %(default)s)")


def pearson_rows(a, b):
    """Pearson correlation of each row of ``a`` with the same row of ``b`` (float64)."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    denom = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(axis=1) / np.where(denom > 0, denom, np.inf)


def perturbed_first_over_last(model, x, y, count, scale, seed=0):
    """first/last (``FlowReport.summary``) on ``x * (1 + scale * z)``, z standard normal, for
    ``count`` draws of z: how far rounding-level changes of the input move the ratio."""
    if count < 0 or not scale >= 0:
        raise ValueError(f"perturbed_first_over_last: count must be >= 0 and scale >= 0, got "
                         f"count={count!r}, scale={scale!r}")
    rng = np.random.default_rng(seed)
    ratios = []
    for _ in range(count):
        z = rng.standard_normal(x.shape)
        x_moved = (x.astype(np.float64) * (1 + scale * z)).astype(x.dtype)
        ratios.append(mr.inspect.gradient_flow(model, x_moved, y).summary()["first_over_last"])
    return ratios


def input_gradients(model, x, cls, device):
    """Gradient of logit ``cls`` with respect to each input image; (N, C*H*W) float64."""
    xt = mr.tensor(x, requires_grad=True, device=device)
    out = model(xt)
    out[:, cls].sum().backward()   # eval mode: each row depends on its own input only
    return to_numpy(xt.grad).reshape(len(x), -1).astype(np.float64)


def shattering(model, line, others, cls, device):
    """Mean correlation of input gradients ``lag`` points apart on ``line``, and for unrelated
    images."""
    g = input_gradients(model, line, cls, device)
    lags = list(range(1, len(line)))
    corr = [float(np.mean(pearson_rows(g[:-lag], g[lag:]))) for lag in lags]
    g_other = input_gradients(model, others, cls, device)
    unrelated = float(np.mean(np.abs(pearson_rows(g_other[:-1], g_other[1:]))))
    return {"lags": lags, "correlation": corr, "unrelated_abs_correlation": unrelated}


def run(args):
    if args.perturbations < 0 or not 0 <= args.perturbation < 1:
        raise ExperimentError(f"{NAME}: --perturbations must be >= 0 and --perturbation in "
                              f"[0, 1), got {args.perturbations} and {args.perturbation}")
    out_dir = output_folder(args)
    clock = Timer()
    depths = depth_list(args.depths or ("8,14" if args.tiny else "20,56,110"))
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    n_batch = min(args.batch_size, 16) if args.tiny else args.batch_size
    n_points = min(args.points, 12) if args.tiny else args.points
    _, test = load_splits(args, limit_train=8, limit_test=max(n_batch, 16))
    x, y = first_batch(test, n_batch)
    # the line from test image 0 to test image 1, and 8 unrelated test images
    t = np.linspace(0.0, 1.0, n_points, dtype=np.float32).reshape(-1, 1, 1, 1)   # (P, 1, 1, 1)
    line = ((1 - t) * x[0:1] + t * x[1:2]).astype(np.float32)                 # (P, C, H, W)
    others = x[:8]
    cls = int(y[0])

    results = {"experiment": NAME, "environment": environment(args), "depths": depths,
               "families": families, "batch_size": n_batch, "points": n_points, "models": {}}
    for family in families:
        for depth in depths:
            name = f"{family}{depth}"
            model = build(name, args.seed, args.device)
            report = mr.inspect.gradient_flow(model, x, y)
            names, norms = report.weight_grad_norms()
            summary = report.summary()
            moved = perturbed_first_over_last(model, x, y, args.perturbations, args.perturbation,
                                              args.seed)
            calibrate_batch_norm(model, [mr.tensor(x, device=args.device)])
            shatter = shattering(model, line, others, cls, args.device)
            results["models"][name] = {
                "family": family, "depth": depth, "loss": report.loss,
                "layer_names": names, "grad_norms": norms,
                "block_total_grad_norms": [b["total_grad_norm"] for b in report.blocks],
                "block_skip_shares": [b["skip_share"] for b in report.blocks],
                "first_over_last": summary["first_over_last"],
                "first_over_last_perturbed": moved, **shatter}
            spread = (f" ({min(moved):.3g}-{max(moved):.3g} perturbed)" if moved else "")
            print(f"{name:<10} |grad| first/last layer {summary['first_over_last']:.3g}{spread}   "
                  f"gradient correlation at lag 1: {shatter['correlation'][0]:+.3f} "
                  f"(unrelated images: {shatter['unrelated_abs_correlation']:.3f})   "
                  f"{clock.seconds:.0f}s", flush=True)
    return finish(results, out_dir, NAME, plot, clock.seconds)


def plot(results):
    fig = new_figure((11, 4.2))
    ax1, ax2 = fig.subplots(1, 2)
    depths = results["depths"]
    colors = {d: f"C{i}" for i, d in enumerate(depths)}
    for name, r in results["models"].items():
        style = "-" if r["family"] != "plain" else "--"
        norms = r["grad_norms"]
        rel = [i / max(1, len(norms) - 1) for i in range(len(norms))]
        ax1.semilogy(rel, [v if v > 0 else np.nan for v in norms], style, color=colors[r["depth"]],
                     lw=1, label=name)
        lags = r["lags"][: max(1, len(r["lags"]) // 2)]
        ax2.plot(lags, r["correlation"][: len(lags)], style + "o", ms=2, color=colors[r["depth"]],
                 lw=1, label=name)
    ax1.set_xlabel("relative depth of the layer (0 = input side)")
    ax1.set_ylabel("|grad of weight| at init")
    ax1.set_title("gradient norm per layer at initialisation")
    ax1.legend(fontsize=7)
    ax2.axhline(0, color="gray", lw=0.5)
    ax2.set_xlabel(f"distance along the line between two images "
                   f"(steps of 1/{results['points'] - 1})")
    ax2.set_ylabel("correlation of input gradients")
    ax2.set_title("shattered gradients (dashed: plain, solid: residual)")
    ax2.legend(fontsize=7)
    return fig
