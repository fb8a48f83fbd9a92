"""Residual networks as ensembles of paths (Veit et al. 2016): which path lengths carry the
gradient?

A residual network with n blocks can be unrolled into 2**n paths: at each block a
path goes either through the residual branch or along the skip. A path's *length*
is the number of branches it goes through, so the lengths follow a binomial
distribution, Binomial(n, 1/2): most paths have length near n/2.

Veit et al. measured how much gradient each length carries, by sampling: run the
batch forward through the whole network; then, in the backward pass, choose k blocks
at random and let the gradient pass only through their branches, and only through
the skip in the other n - k blocks. Exactly one path of length k is then open, and
the norm of the gradient at the input of the first block is that path's gradient
magnitude. Repeat for every k. The total magnitude carried by length k is that
magnitude times the number of such paths, C(n, k). Their finding: the gradient
comes almost entirely from short paths (5-17 of 54 blocks in ResNet-110), far
shorter than the typical path.

minires does this with public hooks only: a forward hook on each ``block.fork`` puts
a tensor hook on both of its outputs; the hook returns zeros for the closed path.
The forward graph is kept (``retain_graph=True``) and reused for every sample.
Weights are frozen for the measurement (only the input gradient is computed). BN uses
batch statistics (train mode), as when the network trains, so an untrained net needs no
calibration. With trained weights, the same net at its initialisation (same seed and
init) is measured too, side by side: what is short *because of training* is the learned
effect; what is short already at initialisation comes from the architecture and init.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

import minires as mr
from minires import functional as F
from minires.backend import get_array_module

from ..files import new_figure
from ..inspect import residual_blocks
from .data import first_batch, load_splits
from .nets import build
from .results import Timer, environment, finish, output_folder
from .training import train_net
from .weights import net_from, save_weights

NAME = "path-lengths"
DESCRIPTION = ("Which path lengths carry the gradient in a residual net (Veit et al. 2016).\n"
               "Path-length distribution and gradient per length, estimated by sampling paths.")


def add_arguments(parser):
    parser.add_argument("--model", default=None, help="a residual model from minires.models "
                        "(default: resnet56, with --tiny resnet14; Veit et al. used resnet110)")
    parser.add_argument("--checkpoint", "--from", dest="checkpoint", default=None,
                        help="trained weights: a minires checkpoint (e.g. python -m "
                        "minires.train's best.npz) or a degradation run folder; default: at "
                        "initialisation")
    parser.add_argument("--epochs", type=int, default=0, help="train this many epochs first "
                        "(default: %(default)s = measure at initialisation)")
    parser.add_argument("--limit-train", type=int, default=None, help="train on the first N "
                        "training images only")
    parser.add_argument("--batch-size", type=int, default=32, help="images in the measured batch "
                        "(default: %(default)s)")
    parser.add_argument("--samples", type=int, default=10, help="random paths sampled per path "
                        "length (default: %(default)s)")


class PathSelector:
    """Hooks that let the gradient through one chosen path of residual blocks.

    ``selector.open_branches = {i, j, ...}``: the gradient passes through the branch of
    those blocks and through the skip of all others. ``selector.input_grad`` is then the
    gradient that reached the first block's input in the last backward pass.
    """

    def __init__(self, model):
        self.blocks = residual_blocks(model)
        if not self.blocks:
            raise ValueError(f"path-lengths: {type(model).__name__} has no residual blocks "
                             f"(no module that minires.nn.is_residual_block accepts)")
        plain = [name for name, b in self.blocks if not b.shortcut]
        if plain:
            raise ValueError(f"path-lengths: blocks {plain[:3]} have no shortcut; use a residual "
                             f"model")
        self.open_branches = set()
        self.input_grad = None
        self.handles = [b.fork.register_forward_hook(self._on_fork(i))
                        for i, (_, b) in enumerate(self.blocks)]

    def _on_fork(self, index):
        def hook(fork, inputs, output):
            x_branch, x_skip = output
            x_branch.register_hook(self._gate(index, "branch"))
            x_skip.register_hook(self._gate(index, "skip"))
        return hook

    def _gate(self, index, path):
        def gate(grad):
            is_open = (index in self.open_branches) == (path == "branch")
            if not is_open:
                grad = get_array_module(grad).zeros_like(grad)
            if index == 0:      # the two paths of the first block add up to its input gradient
                self.input_grad = grad if self.input_grad is None else self.input_grad + grad
            return grad
        return gate

    def remove(self):
        for h in self.handles:
            h.remove()


def sample_path_gradients(model, x, y, samples, rng, device="cpu"):
    """For each length k = 0..n: the gradient norms of ``samples`` random single paths of
    length k."""
    selector = PathSelector(model)
    n = len(selector.blocks)
    model.requires_grad_(False)         # only the gradient with respect to activations is needed
    try:
        xt = mr.tensor(x, requires_grad=True, device=device)
        loss = F.cross_entropy(model(xt), y)
        norms = []
        for k in range(n + 1):
            row = []
            for _ in range(samples if 0 < k < n else 1):    # k = 0 and k = n: a single path
                selector.open_branches = set(rng.choice(n, size=k, replace=False).tolist())
                selector.input_grad = None
                loss.backward(retain_graph=True)
                row.append(mr.inspect.norm(selector.input_grad))
            norms.append(row)
    finally:
        selector.remove()
        model.requires_grad_(True)
    return n, norms


def summarise(n, norms):
    ks = list(range(n + 1))
    counts = [math.comb(n, k) for k in ks]
    mean = [float(np.mean(r)) for r in norms]
    total = [c * m for c, m in zip(counts, mean)]
    share = [t / sum(total) for t in total] if sum(total) > 0 else [0.0] * len(total)
    cumulative = list(np.cumsum(share))

    def reach(q):
        return next(k for k, c in zip(ks, cumulative) if c >= q)

    # The baseline: every path carrying the same gradient, so the shares are the path
    # counts alone. Half of the paths already have length <= n/2, so "50% within <= n/2"
    # is what no effect looks like; a finding is a distance below these figures.
    equal = list(np.cumsum(counts) / 2 ** n)

    def equal_reach(q):
        return next(k for k, c in zip(ks, equal) if c >= q)

    return {"blocks": n, "lengths": ks, "path_fraction": [c / 2 ** n for c in counts],
            "single_path_grad_norm": mean,
            "single_path_grad_norm_std": [float(np.std(r)) for r in norms],
            "samples": [len(r) for r in norms], "total_grad_magnitude": total,
            "grad_share": share, "cumulative_grad_share": cumulative,
            "typical_path_length": n / 2,
            "length_reaching_50pct": reach(0.5), "length_reaching_90pct": reach(0.9),
            "mean_length": float(np.dot(ks, share)),
            "equal_gradients": {"length_reaching_50pct": equal_reach(0.5),
                                "length_reaching_90pct": equal_reach(0.9)}}


def run(args):
    clock = Timer()
    model_name = args.model or ("resnet14" if args.tiny else "resnet56")
    size = None
    initial = None
    if args.checkpoint:
        model, meta, path = net_from(args.checkpoint, None if Path(args.checkpoint).is_file()
                                     else model_name, args.device)
        model_name, size = meta["net"], meta["data"]["input_size"]
        trained = f"checkpoint {path}"
        initial = build(model_name, meta.get("seed", args.seed), args.device)
    else:
        model = build(model_name, args.seed, args.device)
        trained = "initialisation"
    epochs = min(args.epochs, 1) if args.tiny else args.epochs
    n_batch = min(args.batch_size, 16) if args.tiny else args.batch_size
    out_dir = output_folder(args)
    train_split, test = load_splits(args, limit_train=args.limit_train if epochs else 8,
                                    limit_test=n_batch, input_size=size)
    if epochs:
        train_net(model, train_split, None, epochs=epochs, seed=args.seed, device=args.device,
                  eval_every_epoch=False, label=model_name)
        save_weights(model, out_dir / f"{model_name}.npz",
                     meta={"model": model_name, "seed": args.seed, "epochs": epochs,
                           "data": {"input_size": int(train_split.images.shape[-1])}})
        trained = f"{epochs} epochs on {len(train_split)} images"
    x, y = first_batch(test, n_batch)
    model.train()   # batch statistics, as when the network trains
    samples = min(args.samples, 2) if args.tiny else args.samples
    rng = np.random.default_rng(args.seed)
    n, norms = sample_path_gradients(model, x, y, samples, rng, args.device)
    s = summarise(n, norms)
    results = {"experiment": NAME, "environment": environment(args), "model": model_name,
               "weights": trained, "batch_size": n_batch, **s}
    if initial is not None:
        initial.train()
        results["init"] = summarise(*sample_path_gradients(initial, x, y, samples,
                                                           np.random.default_rng(args.seed),
                                                           args.device))
    eq = s["equal_gradients"]
    for when, r in (("", s), (" at initialisation", results.get("init"))):
        if r is not None:
            print(f"{model_name}{when} ({trained if not when else 'same seed and init'}): {n} "
                  f"blocks, 2^{n} paths, typical length {n / 2:g}; paths of length <= "
                  f"{r['length_reaching_50pct']} carry 50% of the gradient magnitude, "
                  f"<= {r['length_reaching_90pct']} carry 90% (<= {eq['length_reaching_50pct']} "
                  f"and <= {eq['length_reaching_90pct']} if every path carried the same "
                  f"gradient); gradient-weighted mean length {r['mean_length']:.2f} against "
                  f"{n / 2:g}   ({clock.seconds:.0f}s)")
    return finish(results, out_dir, NAME, plot, clock.seconds)


def plot(r):
    fig = new_figure((12, 3.8))
    ax1, ax2, ax3 = fig.subplots(1, 3)
    ks = r["lengths"]
    ax1.bar(ks, r["path_fraction"], color="C0")
    ax1.set_xlabel("path length (branches passed)")
    ax1.set_ylabel("fraction of all paths")
    ax1.set_title(f"path lengths, {r['model']} ({r['blocks']} blocks)")
    mean, std = np.array(r["single_path_grad_norm"]), np.array(r["single_path_grad_norm_std"])
    ax2.errorbar(ks, mean, yerr=std, fmt=".-", color="C1", ms=3, lw=1)
    ax2.set_yscale("log")
    ax2.set_xlabel("path length")
    ax2.set_ylabel("|grad| at first block input")
    ax2.set_title("gradient of one path")
    ax3.bar(ks, r["grad_share"], color="C2", label="trained" if "init" in r else None)
    if "init" in r:
        ax3.step(ks, r["init"]["grad_share"], where="mid", color="k", lw=1,
                 label="at initialisation")
        ax2.plot(ks, r["init"]["single_path_grad_norm"], ":", color="k", lw=1)
    ax3.axvline(r["length_reaching_90pct"] + 0.5, color="k", ls=":", lw=1,
                label=f"90% from length <= {r['length_reaching_90pct']}")
    ax3.set_xlabel("path length")
    ax3.set_ylabel("share of total gradient magnitude")
    ax3.set_title(f"total gradient per length ({r['weights']})", fontsize=9)
    ax3.legend(fontsize=7)
    return fig
