"""Loss landscapes of a plain and a residual net (Li et al. 2018, arXiv:1712.09913).

Around the trained weights theta of each net, the training loss is measured along
random directions:

    L(a, b) = loss(theta + a * d1 + b * d2)

Each direction is drawn from a Gaussian and then *filter-normalised*: every filter of
a direction (one output channel of a convolution, one row of the fc weight) is
rescaled to the norm of the matching filter of theta. Scale-invariant networks (BN
after every conv) would otherwise look flat or sharp only because their weights are
large or small. Entries of BN scales and shifts and of biases are set to zero: those
are not moved. The loss is the cross-entropy in eval mode (fixed BN statistics) on a
fixed class-balanced set of training images, evaluated without recording a graph.

Measured, per net:
- 1-D slices along d1 and d2 (a in [-span, span]) and a 2-D grid over (a, b);
- ``nonconvex_share``: the share of interior grid points where the finite-difference
  Hessian of L(a, b) has a clearly negative eigenvalue (lambda_min < -1e-3 * |lambda_max|):
  0 for a bowl, large for a chaotic surface;
- ``slice_tv_ratio``: along a slice, the total variation of L divided by the rise from
  its lowest point to both ends -- 1 for a single basin, more for each extra bump;
- ``edge_rise``: the mean loss increase from the centre to a = +-span (how sharp);
- the linear interpolation from the initial to the trained weights (Goodfellow et al.
  2015), theta(alpha) = (1 - alpha) theta_0 + alpha theta, with BN using batch
  statistics (eval-mode statistics belong to the trained weights only).

What it does not measure: "fewer local minima" is not something a 2-D slice can count.
These numbers describe a random 2-D cross-section through one point.
"""
from __future__ import annotations

import numpy as np

import minires as mr

from .common import (
    Timer,
    balanced_subset,
    build,
    environment,
    evaluate,
    finish,
    input_size_of,
    load_splits,
    loader,
    model_names,
    net_from,
    new_figure,
    output_folder,
    save_json,
    train,
)

NAME = "loss-landscape"
DESCRIPTION = ("Loss along filter-normalised random directions around trained plain and residual\n"
               "nets (Li et al. 2018), a roughness number, and init-to-final interpolation.")


def add_arguments(parser):
    parser.add_argument("--from", dest="from_dir", default=None, help="a degradation run folder "
                        "holding the nets (required, except with --tiny)")
    parser.add_argument("--models", default=None, help="comma-separated nets (default: the deep "
                        "pair plain56,resnet56; with --tiny plain14,resnet14)")
    parser.add_argument("--images", type=int, default=1000, help="training images the loss is "
                        "measured on (default: %(default)s)")
    parser.add_argument("--grid", type=int, default=11, help="grid points per axis of the 2-D "
                        "surface (default: %(default)s)")
    parser.add_argument("--slice-points", type=int, default=31, help="points of each 1-D slice "
                        "(default: %(default)s)")
    parser.add_argument("--span", type=float, default=1.0, help="the slices and grid cover "
                        "[-span, span] in each direction (default: %(default)s)")
    parser.add_argument("--interp-points", type=int, default=15, help="points of the "
                        "initial-to-final interpolation, alpha in [-0.2, 1.2] (default: "
                        "%(default)s; 0 skips it)")
    parser.add_argument("--batch-size", type=int, default=500, help="images per forward pass "
                        "(default: %(default)s)")


# --- directions ---------------------------------------------------------------------------------
def filter_normalised_direction(model, rng):
    """{name: array} -- a Gaussian direction, each filter rescaled to its weight filter's norm.

    A filter is the slice of one output channel: weight[o] of a conv (O, I, KH, KW) or of a
    linear layer (out, in). Parameters with fewer than two axes (BN scale/shift, biases) get
    a zero direction.
    """
    direction = {}
    for name, p in model.named_parameters():
        w = mr.backend.to_numpy(p.data).astype(np.float64)
        if w.ndim < 2:
            direction[name] = np.zeros_like(w)
            continue
        d = rng.standard_normal(w.shape)
        axes = tuple(range(1, w.ndim))                             # all but the filter axis O
        w_norm = np.sqrt((w ** 2).sum(axis=axes, keepdims=True))   # (O, 1, ...)
        d_norm = np.sqrt((d ** 2).sum(axis=axes, keepdims=True))
        direction[name] = d * (w_norm / (d_norm + 1e-10))
    return direction


class Mover:
    """Sets a model's parameters to theta + sum(coef * direction) in place; ``restore`` undoes."""

    def __init__(self, model):
        self.params = dict(model.named_parameters())
        self.theta = {n: p.data.copy() for n, p in self.params.items()}

    def move(self, *terms):
        """``terms``: (coefficient, {name: array}) pairs."""
        for name, p in self.params.items():
            w = self.theta[name].astype(np.float64)
            for coef, d in terms:
                w = w + coef * d[name]
            p.data[...] = w.astype(p.data.dtype)

    def restore(self):
        for name, p in self.params.items():
            p.data[...] = self.theta[name]


# --- roughness ------------------------------------------------------------------------------------
def nonconvex_share(surface, step, rel_tol=1e-3):
    """Share of interior grid points whose finite-difference Hessian has a clearly negative
    eigenvalue. ``surface``: (G, G) losses on a square grid with spacing ``step``."""
    L = np.asarray(surface, dtype=np.float64)
    c = L[1:-1, 1:-1]
    laa = (L[2:, 1:-1] - 2 * c + L[:-2, 1:-1]) / step ** 2
    lbb = (L[1:-1, 2:] - 2 * c + L[1:-1, :-2]) / step ** 2
    lab = (L[2:, 2:] - L[2:, :-2] - L[:-2, 2:] + L[:-2, :-2]) / (4 * step ** 2)
    mean, diff = (laa + lbb) / 2, np.sqrt(((laa - lbb) / 2) ** 2 + lab ** 2)
    lam_min, lam_max = mean - diff, mean + diff
    scale = np.maximum(np.abs(lam_max), np.abs(lam_min))
    return float(np.mean(lam_min < -rel_tol * scale)) if c.size else 0.0


def slice_tv_ratio(losses):
    """Total variation of a 1-D slice over the rise from its minimum to both ends (1 = one basin)."""
    L = np.asarray(losses, dtype=np.float64)
    low = L.min()
    rise = (L[0] - low) + (L[-1] - low)
    return float(np.abs(np.diff(L)).sum() / rise) if rise > 0 else 1.0


# --- measuring -----------------------------------------------------------------------------------
class LossProbe:
    """The loss of a model on fixed images, counted: ``probe()`` -> loss; ``images_per_second``."""

    def __init__(self, model, split, batch_size, device):
        self.model, self.split, self.batch_size, self.device = model, split, batch_size, device
        self.images, self.seconds = 0, 0.0

    def __call__(self):
        clock = Timer()
        loss, _acc = evaluate(self.model, self.split, batch_size=self.batch_size,
                              device=self.device)
        self.seconds += clock.seconds
        self.images += len(self.split)
        return loss

    @property
    def images_per_second(self):
        return self.images / self.seconds if self.seconds else 0.0


def batch_stat_loss(model, split, batch_size, device):
    """Loss with BN on batch statistics (train mode), leaving the running statistics unchanged."""
    buffers = {n: b.data.copy() for n, b in model.named_buffers()}
    total = 0.0
    model.train()
    try:
        with mr.no_grad():
            for x, y in loader(split, batch_size):
                out = model(mr.tensor(x, device=device))
                total += float(mr.functional.cross_entropy(out, y, reduction="sum").item())
    finally:
        for n, b in model.named_buffers():
            b.data[...] = buffers[n]
        model.eval()
    return total / len(split)


def landscape(model, split, args, rng):
    """Slices, grid and roughness numbers for one trained model."""
    probe = LossProbe(model, split, args.batch_size, args.device)
    mover = Mover(model)
    d1, d2 = filter_normalised_direction(model, rng), filter_normalised_direction(model, rng)
    slice_a = np.linspace(-args.span, args.span, args.slice_points)
    grid_a = np.linspace(-args.span, args.span, args.grid)
    out = {"slice_a": slice_a.tolist(), "grid_a": grid_a.tolist()}
    try:
        out["center_loss"] = probe()
        for key, d in (("slice_d1", d1), ("slice_d2", d2)):
            values = []
            for a in slice_a:
                mover.move((a, d))
                values.append(probe())
            out[key] = values
        surface = np.zeros((len(grid_a), len(grid_a)))
        for i, a in enumerate(grid_a):
            for j, b in enumerate(grid_a):
                mover.move((a, d1), (b, d2))
                surface[i, j] = probe()
        out["surface"] = surface.tolist()
    finally:
        mover.restore()
    step = grid_a[1] - grid_a[0] if len(grid_a) > 1 else 1.0
    out["nonconvex_share"] = nonconvex_share(surface, step)
    out["slice_tv_ratio"] = float(np.mean([slice_tv_ratio(out[k]) for k in ("slice_d1",
                                                                          "slice_d2")]))
    out["edge_rise"] = float(np.mean([(s[0] + s[-1]) / 2 - out["center_loss"]
                                      for s in (out["slice_d1"], out["slice_d2"])]))
    out["evaluations"] = probe.images // max(len(split), 1)
    out["images_per_second"] = probe.images_per_second
    return out


def interpolation(model, initial, split, args):
    """Loss along (1 - alpha) theta_0 + alpha theta, BN on batch statistics."""
    alphas = np.linspace(-0.2, 1.2, args.interp_points)
    final = dict(model.named_parameters())
    start = dict(initial.named_parameters())
    mover = Mover(model)
    delta = {n: mover.theta[n].astype(np.float64) - mr.backend.to_numpy(start[n].data)
             for n in final}
    losses = []
    try:
        for alpha in alphas:
            mover.move((alpha - 1.0, delta))          # theta + (alpha - 1)(theta - theta_0)
            losses.append(batch_stat_loss(model, split, args.batch_size, args.device))
    finally:
        mover.restore()
    return {"alpha": alphas.tolist(), "loss": losses}


def _tiny_nets(args, names, train_split):
    nets = {}
    for name in names:
        model = build(name, args.seed, args.device)
        train(model, train_split, None, steps=16, batch_size=32, lr=0.05, seed=args.seed,
              device=args.device, log_every=8, eval_every_epoch=False, label=name)
        model.eval()
        meta = {"model": name, "seed": args.seed, "zero_init_residual": False,
                "data": {"input_size": 8, "train_images": len(train_split)}}
        nets[name] = (model, meta, "trained here (--tiny)")
    return nets


def run(args):
    if args.grid < 3 or args.slice_points < 3 or args.images < 10 or args.span <= 0 \
            or args.batch_size < 1 or args.interp_points < 0:
        raise ValueError("loss-landscape: need --grid >= 3, --slice-points >= 3, --images >= 10, "
                         "--span > 0, --batch-size >= 1, --interp-points >= 0")
    if not args.from_dir and not args.tiny:
        raise SystemExit("loss-landscape: needs trained nets: give --from a degradation run folder "
                         "(python -m minires.experiments degradation)")
    names = model_names(args.models, "plain14,resnet14" if args.tiny else "plain56,resnet56")
    if args.from_dir:
        nets = {n: net_from(args.from_dir, n, args.device) for n in names}
    out_dir = output_folder(args)
    clock = Timer()
    if not args.from_dir:                                  # --tiny only: train tiny nets here
        train_split, _ = load_splits(args, limit_train=256, limit_test=8)
        nets = _tiny_nets(args, names, train_split)
        size = 8
    else:
        size = input_size_of(nets)
        data = next(iter(nets.values()))[1]["data"]
        train_split, _ = load_splits(args, limit_train=data.get("train_images"), limit_test=8,
                                     input_size=size, balanced=True)
    images = balanced_subset(train_split, min(args.images, len(train_split)))
    results = {"experiment": NAME, "environment": environment(args), "images": len(images),
               "input_size": size, "span": args.span, "grid": args.grid, "models": {}}
    for name, (model, meta, source) in nets.items():
        rng = np.random.default_rng([args.seed, 7])       # the same draw for every net
        r = landscape(model, images, args, rng)
        r["weights"] = str(source)
        if args.interp_points and "seed" in meta:
            kwargs = {"zero_init_residual": True} if meta.get("zero_init_residual") else {}
            initial = build(name, meta["seed"], args.device, **kwargs)
            r["interpolation"] = interpolation(model, initial, images, args)
        results["models"][name] = r
        print(f"{name}: loss {r['center_loss']:.3f} at the trained weights; non-convex share "
              f"{r['nonconvex_share']:.2f}, slice TV ratio {r['slice_tv_ratio']:.2f}, edge rise "
              f"{r['edge_rise']:.2f}; {r['evaluations']} evaluations at "
              f"{r['images_per_second']:.0f} images/s   {clock.seconds:.0f}s", flush=True)
        save_json(out_dir / "results.json", results)
    return finish(results, out_dir, NAME, plot, clock.seconds)


def plot(results):
    models = results["models"]
    fig = new_figure((4.2 * len(models) + 8, 4))
    axes = fig.subplots(1, len(models) + 2)
    # log10 of the loss, with the same levels for every net: a plain net's surface can span
    # four orders of magnitude more than a residual net's, and linear levels would hide one
    logs = {name: np.log10(np.maximum(np.array(r["surface"]), 1e-12)) for name, r in models.items()}
    levels = np.linspace(min(v.min() for v in logs.values()), max(v.max() for v in logs.values()),
                         25)
    for ax, (name, r) in zip(axes, models.items()):
        a = np.array(r["grid_a"])
        cs = ax.contour(a, a, logs[name].T, levels=levels, linewidths=0.8)
        ax.clabel(cs, cs.levels[::3], fontsize=6, fmt=lambda v: f"{10 ** v:.3g}")
        ax.plot(0, 0, "k+")
        ax.set_title(f"{name}: non-convex share {r['nonconvex_share']:.2f}", fontsize=9)
        ax.set_xlabel("d1")
        ax.set_ylabel("d2")
    ax = axes[len(models)]
    for i, (name, r) in enumerate(models.items()):
        for key, style in (("slice_d1", "-"), ("slice_d2", "--")):
            ax.plot(r["slice_a"], r[key], style, color=f"C{i}", lw=1,
                    label=f"{name} {key[-2:]}")
    ax.set_xlabel("distance along a filter-normalised direction")
    ax.set_ylabel("training loss (eval mode)")
    ax.set_yscale("log")
    ax.set_title("1-D slices", fontsize=9)
    ax.legend(fontsize=7)
    ax = axes[-1]
    for i, (name, r) in enumerate(models.items()):
        if "interpolation" in r:
            ax.plot(r["interpolation"]["alpha"], r["interpolation"]["loss"], ".-", color=f"C{i}",
                    lw=1, label=name)
    ax.axvline(0, color="gray", ls=":", lw=1)
    ax.axvline(1, color="gray", ls=":", lw=1)
    ax.set_xlabel("alpha (0 = initial, 1 = trained)")
    ax.set_ylabel("training loss (batch statistics)")
    ax.set_yscale("log")
    ax.set_title("initial -> trained (Goodfellow et al. 2015)", fontsize=9)
    ax.legend(fontsize=7)
    fig.suptitle(f"loss on {results['images']} training images "
                 f"({results['input_size']}x{results['input_size']})", fontsize=9)
    return fig
