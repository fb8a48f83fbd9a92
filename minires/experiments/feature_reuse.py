"""Feature reuse: how much does each block change what it is given?

For every block of a residual net, out = relu(F(x) + shortcut(x)); for a plain net's
block, out = relu(F(x)). Measured on fixed images in eval mode, per block:

- ``branch_ratio`` = mean over images of ||F(x)|| / ||x||: how large the block's own
  contribution is next to its input. A residual net whose blocks add small corrections
  (ratio well below 1) reuses the features it is given and refines them;
- ``cosine`` = mean over images of cos(x, out), for blocks whose output has the input's
  shape: near 1 when the block passes its input on nearly unchanged, near 0 when it
  replaces it with something new.

Both at initialisation (the nets' seed and init) and after training (``--from`` a
degradation run, or a checkpoint of ``python -m minires.train``). At initialisation BN's
running statistics are first calibrated on 256 training images: uncalibrated (mean 0,
variance 1) they do not normalise, and ||F(x)||/||x|| would measure that instead.
"""
from __future__ import annotations

import numpy as np

import minires as mr

from ..files import new_figure
from ..inspect import residual_blocks
from .data import first_batch, load_splits
from .nets import initial_net, observe
from .options import model_names
from .results import Timer, environment, finish, output_folder
from .weights import input_size_of, nets_from

NAME = "feature-reuse"
DESCRIPTION = ("||F(x)||/||x|| and cos(input, output) of every block, residual vs plain, at\n"
               "initialisation and trained.")


def add_arguments(parser):
    parser.add_argument("--from", dest="from_dir", default=None, help="a degradation run folder "
                        "(or a checkpoint file) with the trained nets; without it only "
                        "initialisation is measured")
    parser.add_argument("--models", default=None, help="comma-separated nets (default: "
                        "plain56,resnet56; with --tiny plain14,resnet14)")
    parser.add_argument("--images", type=int, default=256, help="test images measured "
                        "(default: %(default)s)")


def _flat_norms(a):
    a = mr.backend.to_numpy(a).reshape(len(a), -1).astype(np.float64)   # (N, C*H*W)
    return a, np.sqrt((a ** 2).sum(axis=1))


def block_statistics(model, x, device="cpu"):
    """[{block, branch_ratio, cosine (or None)}] for every block, in order, in eval mode."""
    rows = []

    def hook(block, inputs, output, name):
        with mr.no_grad():
            f = block.branch(inputs[0])
        x_in, n_in = _flat_norms(inputs[0].data)
        f_flat, n_f = _flat_norms(f.data)
        row = {"block": name, "branch_ratio": float(np.mean(n_f / (n_in + 1e-12))),
               "cosine": None}
        if output.shape == inputs[0].shape:
            out, n_out = _flat_norms(output.data)
            row["cosine"] = float(np.mean((x_in * out).sum(axis=1) / (n_in * n_out + 1e-12)))
        rows.append(row)

    observe(model, x, [(block, lambda b, i, o, name=name: hook(b, i, o, name))
                       for name, block in residual_blocks(model)], device)
    return rows


def run(args):
    names = model_names(args.models, "plain14,resnet14" if args.tiny else "plain56,resnet56")
    if args.images < 1:
        raise ValueError(f"--images: must be >= 1, got {args.images}")
    trained = nets_from(args.from_dir, names, args.device) if args.from_dir else {}
    out_dir = output_folder(args)
    clock = Timer()
    train_split, test = load_splits(args, limit_train=256, limit_test=args.images,
                                    input_size=input_size_of(trained))
    x, _ = first_batch(test, min(args.images, len(test)))
    calibration, _ = first_batch(train_split, len(train_split))
    results = {"experiment": NAME, "environment": environment(args), "images": len(x),
               "calibration_images": len(calibration), "models": {}}
    for name in names:
        meta = trained[name][1] if name in trained else {"seed": args.seed, "net": name}
        r = {"init": block_statistics(initial_net(meta["net"], meta.get("seed", args.seed),
                                                  calibration, args.device), x, args.device)}
        if name in trained:
            r["trained"] = block_statistics(trained[name][0], x, args.device)
            r["weights"] = str(trained[name][2])
        for when in ("init", "trained"):
            if when in r:
                ratios = [row["branch_ratio"] for row in r[when]]
                cosines = [row["cosine"] for row in r[when] if row["cosine"] is not None]
                r[f"{when}_mean_branch_ratio"] = float(np.mean(ratios))
                r[f"{when}_mean_cosine"] = float(np.mean(cosines)) if cosines else None
                print(f"{name} ({when}): mean ||F(x)||/||x|| {np.mean(ratios):.3f}, mean "
                      f"cos(x, out) {np.mean(cosines) if cosines else float('nan'):.3f}",
                      flush=True)
        results["models"][name] = r
    return finish(results, out_dir, NAME, plot, clock.seconds)


def plot(results):
    fig = new_figure((11, 4))
    ax1, ax2 = fig.subplots(1, 2)
    for i, (name, r) in enumerate(results["models"].items()):
        for when, style in (("init", ":"), ("trained", "-")):
            if when not in r:
                continue
            rows = r[when]
            ax1.plot([row["branch_ratio"] for row in rows], style, color=f"C{i}", lw=1,
                     label=f"{name} {when}")
            idx = [k for k, row in enumerate(rows) if row["cosine"] is not None]
            ax2.plot(idx, [rows[k]["cosine"] for k in idx], style, color=f"C{i}", lw=1,
                     label=f"{name} {when}")
    ax1.set_yscale("symlog", linthresh=1e-2)   # zero-initialised branches start at exactly 0
    ax1.set_ylabel("||F(x)|| / ||x||")
    ax2.set_ylabel("cos(block input, block output)")
    for ax in (ax1, ax2):
        ax.set_xlabel("block")
        ax.legend(fontsize=7)
    ax1.set_title(f"size of each block's own contribution ({results['images']} test images)",
                  fontsize=9)
    ax2.set_title("how much of its input a block passes on", fontsize=9)
    return fig
