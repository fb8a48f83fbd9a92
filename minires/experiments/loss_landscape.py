"""Loss landscapes of a plain and a residual net (Li et al. 2018, arXiv:1712.09913).

Around the trained weights theta of each net, the training loss is measured along
random directions:

    L(a, b) = loss(theta + a * d1 + b * d2)

Each direction is drawn from a Gaussian and then *filter-normalised*: every filter of
a direction (one output channel of a convolution, one row of the fc weight) is
rescaled to the norm of the matching filter of theta. Scale-invariant networks (BN
after every conv) would otherwise look flat or sharp only because their weights are
large or small. Entries of BN scales and shifts and of biases are set to zero: those
are not moved. The loss is the mean cross-entropy on a fixed class-balanced set of
training images, evaluated without recording a graph.

Batch norm, two ways. Li et al. evaluate in eval mode: BN uses the *fixed running
statistics* of the trained net. Then moving a filter changes the function more than the
filter alone would, because BN no longer re-normalises that filter's output (an untrained
plain56's logit std went from 0.23 to 2.7e4 at a = 0.5). So every slice is measured twice:
with the running statistics (the main numbers, as Li et al.) and with BN on *batch
statistics* (train-mode normalisation over each batch of ``--batch-size`` images, running
statistics left unchanged): ``batch_stats`` in the results. The grid is measured with
batch statistics too under ``--batch-stat-grid``.

Measured, per net (keys of results.json ``models[name]``):
- ``slice_d1``, ``slice_d2`` (a in [-span, span]) and ``surface`` (the 2-D grid over
  (a, b)), running statistics; ``batch_stats.slice_d1`` etc. with batch statistics;
- ``edge_rise``: the mean loss increase from the centre to a = +-span over both slices
  (how sharp), for each BN mode (``batch_stats.edge_rise``);
- ``slice_tv_ratio``: along a slice, the total variation of L divided by the rise from
  its lowest point to both ends -- 1 for a single basin, more for each extra bump;
- ``nonconvex_share`` (with the map in ``curvature``): the curvature of the 2-D surface
  itself. At every ``--curvature-stride``-th grid point the 2x2 Hessian of L(a, b) is
  taken by central differences with a *small* step h (``--curvature-step``, default
  span / 100) from 8 extra evaluations; the share counts the points where
  lambda_min < -max(rel_tol * ||H||, rounding floor), rel_tol = ``--curvature-tol`` and
  the floor set by the float32 loss's rounding (measured against float64 at the centre):
  where the surface clearly curves down in some direction of the (d1, d2) plane. 0 for a
  convex surface, however steep, whose curvature changes over lengths above ~3% of the
  span. (The earlier measure took differences with the grid step itself, 0.2; on steep
  convex surfaces its truncation error made lambda_min negative: it called
  exp(8 (a^2 + b^2)) 74% non-convex. It survives only as ``grid_step_nonconvex_share``,
  used by nothing reported.) Negative curvature of L(a, b) at a point implies that the
  full Hessian there has a negative eigenvalue (the 2-D Hessian is D^T H D with
  D = [d1 d2]); the converse does not hold -- a convex slice says little about the net.
  Li et al.'s 2-D plots are read the same way;
- ``hessian``: Li et al.'s own measure, |lambda_min / lambda_max| of the *full* Hessian
  of the loss with respect to *every* parameter (BN scales and shifts and biases
  included), at the trained weights and at points along d1 (``--hessian-points``), by
  Lanczos on finite-difference Hessian-vector products in float64 (``hessian_extremes``),
  on a class-balanced subset of ``--hessian-images`` of the images. Li et al. map this
  ratio over the whole 2-D plane (near 0 = convex, large = strong negative curvature);
  at 2 gradients per Lanczos iteration it is taken here at a few points only. Lanczos
  Ritz values lie inside the spectrum: the reported lambda_min is >= the true one, so
  the ratio is a lower bound once lambda_max has converged; ``residual_min`` /
  ``residual_max`` bound the distance to a true eigenvalue;
- the linear interpolation from the initial to the trained weights (Goodfellow et al.
  2015), theta(alpha) = (1 - alpha) theta_0 + alpha theta, with BN using batch
  statistics (eval-mode statistics belong to the trained weights only).

What it does not measure: "fewer local minima" is not something a 2-D slice can count
(a minimum of L(a, b) need not be one of the net, and the net's minima need not lie in
the plane). These numbers describe a random 2-D cross-section through one point, and
the full Hessian at a few points of it.
"""
from __future__ import annotations

import argparse
import copy

import numpy as np

import minires as mr

from ..files import new_figure
from ..train import evaluate
from .curvature import HESSIAN_REL_EPS, curvature_map, model_hessian_extremes, nonconvex_points
from .data import balanced_subset, load_splits, loader
from .nets import build
from .options import ExperimentError, model_names
from .results import Timer, environment, finish, output_folder, save_results
from .training import train_net
from .weights import input_size_of, nets_from

NAME = "loss-landscape"
DESCRIPTION = ("Loss along filter-normalised random directions around trained plain and residual\n"
               "nets (Li et al. 2018) with BN on running and on batch statistics, the surface's\n"
               "small-step curvature, the full Hessian's |lambda_min/lambda_max| at a few points,\n"
               "and init-to-final interpolation.")


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
    parser.add_argument("--batch-size", type=int, default=500, help="images per forward pass; "
                        "with batch statistics, the images BN normalises over (default: "
                        "%(default)s)")
    parser.add_argument("--batch-stat-grid", action="store_true", help="measure the 2-D grid "
                        "with BN on batch statistics as well (the slices always are)")
    parser.add_argument("--curvature-stride", type=int, default=None, help="the small-step "
                        "curvature of the surface is taken at every S-th grid point, counted "
                        "from the centre; 8 extra evaluations each (default: 2; 5 with --tiny; "
                        "1 = every grid point; 0 skips it)")
    parser.add_argument("--curvature-step", type=float, default=None, help="finite-difference "
                        "step h of that curvature (default: span / 100)")
    parser.add_argument("--curvature-tol", type=float, default=1e-2, help="a point is "
                        "non-convex where lambda_min < -tol * ||H|| (default: %(default)s)")
    parser.add_argument("--hessian-iters", type=int, default=None, help="Lanczos iterations "
                        "for the extreme eigenvalues of the full Hessian, 2 gradients each "
                        "(default: 20; 6 with --tiny; 0 skips it)")
    parser.add_argument("--hessian-images", type=int, default=None, help="class-balanced "
                        "subset of the landscape's images the Hessian is taken on (default: "
                        "250; 60 with --tiny)")
    parser.add_argument("--hessian-points", type=_float_list, default=(0.0, -0.5, 0.5),
                        help="positions a along d1 where the Hessian is taken, comma-separated "
                        "(default: 0,-0.5,0.5; write --hessian-points=-0.5,0 when the list "
                        "starts with a minus)")
    parser.add_argument("--hessian-eps", type=float, default=HESSIAN_REL_EPS, help="finite-"
                        "difference step of the Hessian-vector products (float64), relative to "
                        "||theta|| (default: %(default)s)")


def _float_list(text):
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") \
            from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one number")
    return values


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


class ParameterShifter:
    """Shifts a model's parameters, in place, to theta + sum(coef * direction) (theta: their
    values when the shifter was made); ``restore`` puts theta back."""

    def __init__(self, model):
        self.params = dict(model.named_parameters())
        self.theta = {n: p.data.copy() for n, p in self.params.items()}

    def shift(self, *terms):
        """``terms``: (coefficient, {name: array}) pairs."""
        for name, p in self.params.items():
            w = self.theta[name].astype(np.float64)
            for coef, d in terms:
                w = w + coef * d[name]
            p.data[...] = w.astype(p.data.dtype)

    def restore(self):
        for name, p in self.params.items():
            p.data[...] = self.theta[name]


# --- roughness of a slice -------------------------------------------------------------------------
def slice_tv_ratio(losses):
    """Total variation of a 1-D slice over the rise from its minimum to both ends (1 = one
    basin)."""
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


def float64_loss(model, split, batch_size, device):
    """The eval-mode loss computed in float64 on a copy of ``model``: the reference that
    tells how far the float32 loss of the landscape is off by rounding."""
    work = copy.deepcopy(model).to(dtype=np.float64)
    work.eval()
    total = 0.0
    with mr.no_grad():
        for x, y in loader(split, batch_size):
            out = work(mr.tensor(x.astype(np.float64), device=device))
            total += float(mr.functional.cross_entropy(out, mr.backend.to_device(y, device),
                                                       reduction="sum").item())
    return total / len(split)


class SurfaceFunction:
    """L(a, b) = loss(theta + a d1 + b d2) as a callable of two floats, for ``curvature_map``.

    Remembers every value it measured, so the small-step stencils reuse the grid's values
    at their centres; ``evaluations`` counts the forward passes over the images.
    """

    def __init__(self, shifter, probe, d1, d2):
        self.shifter, self.probe, self.d1, self.d2 = shifter, probe, d1, d2
        self.values = {}

    def __call__(self, a, b):
        key = (round(float(a), 12), round(float(b), 12))
        if key not in self.values:
            self.shifter.shift((a, self.d1), (b, self.d2))
            self.values[key] = self.probe()
        return self.values[key]

    @property
    def evaluations(self):
        return len(self.values)


def curvature_points(grid_a, stride):
    """Every ``stride``-th grid coordinate, counted from the centre (which is always in)."""
    centre = len(grid_a) // 2
    return np.asarray([a for i, a in enumerate(grid_a) if (i - centre) % stride == 0])


def _edge_rise(slices, centre):
    """Mean loss increase from the centre to both ends, over the slices."""
    return float(np.mean([(s[0] + s[-1]) / 2 - centre for s in slices]))


def landscape(model, split, args, rng):
    """Slices (fixed running statistics and batch statistics), grid, the surface's small-step
    curvature and the full Hessian's extreme eigenvalues for one trained model.
    ``args`` as ``run`` checked and completed them (``resolve_options``)."""
    probe = LossProbe(model, split, args.batch_size, args.device)
    shifter = ParameterShifter(model)
    d1, d2 = filter_normalised_direction(model, rng), filter_normalised_direction(model, rng)
    slice_a = np.linspace(-args.span, args.span, args.slice_points)
    grid_a = np.linspace(-args.span, args.span, args.grid)
    surface_at = SurfaceFunction(shifter, probe, d1, d2)
    out = {"slice_a": slice_a.tolist(), "grid_a": grid_a.tolist()}
    batch = {}                                   # the same, BN on batch statistics
    seconds = {}

    def batch_loss():
        return batch_stat_loss(model, split, args.batch_size, args.device)

    try:
        clock = Timer()
        out["center_loss"] = probe()
        batch["center_loss"] = batch_loss()
        for key, d in (("slice_d1", d1), ("slice_d2", d2)):
            fixed, batched = [], []
            for a in slice_a:
                shifter.shift((a, d))
                fixed.append(probe())
                batched.append(batch_loss())
            out[key], batch[key] = fixed, batched
        surface = np.array([[surface_at(a, b) for b in grid_a] for a in grid_a])
        out["surface"] = surface.tolist()
        seconds["slices_and_grid"] = clock.seconds
        if args.batch_stat_grid:
            clock = Timer()
            batched = np.zeros_like(surface)
            for i, a in enumerate(grid_a):
                for j, b in enumerate(grid_a):
                    shifter.shift((a, d1), (b, d2))
                    batched[i, j] = batch_loss()
            batch["surface"] = batched.tolist()
            seconds["batch_stat_grid"] = clock.seconds
        if args.curvature_stride:
            clock = Timer()
            shifter.restore()
            # the float32 loss's rounding, measured at the centre against float64, sets the
            # floor below which a curvature is not told from noise (x10 for other points)
            reference = float64_loss(model, split, args.batch_size, args.device)
            rounding = abs(out["center_loss"] - reference) / max(abs(reference), 1e-300)
            rel_noise = 10 * max(rounding, float(np.finfo(np.float32).eps))
            points = curvature_points(grid_a, args.curvature_stride)
            before = surface_at.evaluations
            c = curvature_map(surface_at, points, args.curvature_step)
            mask = nonconvex_points(c["lambda_min"], c["lambda_max"], c["f_scale"],
                                    args.curvature_step, args.curvature_tol, rel_noise)
            out["curvature"] = {
                "a": points.tolist(), "h": args.curvature_step, "rel_tol": args.curvature_tol,
                "loss_rounding": rounding, "rel_noise": rel_noise,
                "lambda_min": c["lambda_min"].tolist(), "lambda_max": c["lambda_max"].tolist(),
                "nonconvex": mask.tolist(), "evaluations": surface_at.evaluations - before}
            out["nonconvex_share"] = float(mask.mean())
            seconds["curvature"] = clock.seconds
        else:
            out["nonconvex_share"] = None
        if args.hessian_iters:
            clock = Timer()
            images = balanced_subset(split, min(args.hessian_images, len(split)))
            lanczos_rng = np.random.default_rng([args.seed, 11])
            points = []
            for a in args.hessian_points:
                at = Timer()
                shifter.shift((a, d1))
                r = model_hessian_extremes(model, images, args.hessian_iters, args.batch_size,
                                           args.device, args.hessian_eps, lanczos_rng)
                points.append({"a": a, "direction": "d1", **r, "seconds": at.seconds})
            out["hessian"] = {"images": len(images), "iterations": args.hessian_iters,
                              "rel_eps": args.hessian_eps, "points": points}
            seconds["hessian"] = clock.seconds
    finally:
        shifter.restore()
    slices = (out["slice_d1"], out["slice_d2"])
    out["slice_tv_ratio"] = float(np.mean([slice_tv_ratio(s) for s in slices]))
    out["edge_rise"] = _edge_rise(slices, out["center_loss"])
    batch_slices = (batch["slice_d1"], batch["slice_d2"])
    batch["slice_tv_ratio"] = float(np.mean([slice_tv_ratio(s) for s in batch_slices]))
    batch["edge_rise"] = _edge_rise(batch_slices, batch["center_loss"])
    out["batch_stats"] = batch
    out["evaluations"] = probe.images // max(len(split), 1)
    out["images_per_second"] = probe.images_per_second
    out["seconds"] = seconds
    return out


def interpolation(model, initial, split, args):
    """Loss along (1 - alpha) theta_0 + alpha theta, BN on batch statistics."""
    alphas = np.linspace(-0.2, 1.2, args.interp_points)
    final = dict(model.named_parameters())
    start = dict(initial.named_parameters())
    shifter = ParameterShifter(model)
    delta = {n: shifter.theta[n].astype(np.float64) - mr.backend.to_numpy(start[n].data)
             for n in final}
    losses = []
    try:
        for alpha in alphas:
            shifter.shift((alpha - 1.0, delta))          # theta + (alpha - 1)(theta - theta_0)
            losses.append(batch_stat_loss(model, split, args.batch_size, args.device))
    finally:
        shifter.restore()
    return {"alpha": alphas.tolist(), "loss": losses}


def _tiny_nets(args, names, train_split):
    nets = {}
    for name in names:
        model = build(name, args.seed, args.device)
        train_net(model, train_split, None, steps=16, batch_size=32, lr=0.05, seed=args.seed,
                  device=args.device, log_every=8, eval_every_epoch=False, label=name)
        model.eval()
        meta = {"model": name, "net": name, "init": "paper", "seed": args.seed,
                "zero_init_residual": False,
                "data": {"input_size": 8, "train_images": len(train_split)}}
        nets[name] = (model, meta, "trained here (--tiny)")
    return nets


def resolve_options(args):
    """Check the options (a ValueError names the one at fault) and fill in the defaults that
    depend on --tiny and --span. Returns ``args``."""
    if args.hessian_iters is None:
        args.hessian_iters = 6 if args.tiny else 20
    if args.hessian_images is None:
        args.hessian_images = 60 if args.tiny else 250
    if args.curvature_stride is None:
        args.curvature_stride = 5 if args.tiny else 2
    if args.curvature_step is None:
        args.curvature_step = args.span / 100
    grid_step = 2 * args.span / (args.grid - 1) if args.grid > 1 else args.span
    checks = [
        (args.grid >= 3, f"--grid: need at least 3 points, got {args.grid}"),
        (args.slice_points >= 3, f"--slice-points: need at least 3, got {args.slice_points}"),
        (args.images >= 10, f"--images: need at least 10 (one per class), got {args.images}"),
        (args.span > 0, f"--span: must be > 0, got {args.span}"),
        (args.batch_size >= 1, f"--batch-size: must be >= 1, got {args.batch_size}"),
        (args.interp_points >= 0, f"--interp-points: must be >= 0, got {args.interp_points}"),
        (args.curvature_stride >= 0, f"--curvature-stride: must be >= 0 (0 skips), got "
                                     f"{args.curvature_stride}"),
        # a step near the grid's would bring back the truncation error it is there to avoid
        (0 < args.curvature_step <= grid_step / 4, f"--curvature-step: must be in (0, "
                                                    f"{grid_step / 4:.3g}] (a quarter of the grid "
                                                    f"step), got {args.curvature_step}"),
        (0 <= args.curvature_tol < 1, f"--curvature-tol: must be in [0, 1), got "
                                      f"{args.curvature_tol}"),
        (args.hessian_iters >= 0, f"--hessian-iters: must be >= 0 (0 skips), got "
                                  f"{args.hessian_iters}"),
        (args.hessian_images >= 10, f"--hessian-images: need at least 10 (one per class), got "
                                    f"{args.hessian_images}"),
        (0 < args.hessian_eps < 1e-3, f"--hessian-eps: must be in (0, 1e-3), got "
                                      f"{args.hessian_eps}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)
    return args


def _summary(name, r):
    """The printed line for one net."""
    share = ("skipped" if r["nonconvex_share"] is None else
             f"{r['nonconvex_share']:.2f} of {np.size(r['curvature']['nonconvex'])} points")
    bs = r["batch_stats"]
    lines = [f"{name}: loss {r['center_loss']:.3f} at the trained weights "
             f"({bs['center_loss']:.3f} with batch statistics); edge rise {r['edge_rise']:.3g} "
             f"(batch statistics {bs['edge_rise']:.3g}), slice TV ratio "
             f"{r['slice_tv_ratio']:.2f} ({bs['slice_tv_ratio']:.2f}); small-step non-convex "
             f"share of the surface {share}"]
    for p in r.get("hessian", {}).get("points", []):
        ratio = "n/a" if p["abs_ratio"] is None else f"{p['abs_ratio']:.3g}"
        lines.append(f"  full Hessian at a = {p['a']:+.2f} d1: |lambda_min/lambda_max| {ratio} "
                     f"(lambda_max {p['lambda_max']:.4g} +- {p['residual_max']:.2g}, lambda_min "
                     f"{p['lambda_min']:.4g} +- {p['residual_min']:.2g}; {p['retries']} "
                     f"products retaken at a kink; {p['seconds']:.0f}s)")
    lines.append(f"  {r['evaluations']} evaluations at {r['images_per_second']:.0f} images/s; "
                 + ", ".join(f"{k} {v:.0f}s" for k, v in r["seconds"].items()))
    return "\n".join(lines)


def run(args):
    resolve_options(args)
    if not args.from_dir and not args.tiny:
        raise ExperimentError("loss-landscape: needs trained nets: give --from a degradation run "
                              "folder (python -m minires.experiments degradation)")
    names = model_names(args.models, "plain14,resnet14" if args.tiny else "plain56,resnet56")
    if args.from_dir:
        nets = nets_from(args.from_dir, names, args.device)     # one seed for all
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
            initial = build(meta["net"], meta["seed"], args.device)
            r["interpolation"] = interpolation(model, initial, images, args)
        results["models"][name] = r
        print(f"{_summary(name, r)}   {clock.seconds:.0f}s", flush=True)
        save_results(out_dir / "results.json", results)
    return finish(results, out_dir, NAME, plot, clock.seconds)


def _contours(ax, a, log_surface, levels, title):
    cs = ax.contour(a, a, log_surface.T, levels=levels, linewidths=0.8)
    ax.clabel(cs, cs.levels[::3], fontsize=6, fmt=lambda v: f"{10 ** v:.3g}")
    ax.plot(0, 0, "k+")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("d1")
    ax.set_ylabel("d2")


def _log_levels(surfaces):
    """log10 of each surface and 25 levels shared by all: a plain net's surface can span four
    orders of magnitude more than a residual net's, and linear levels would hide one."""
    logs = {k: np.log10(np.maximum(np.array(s, dtype=float), 1e-12)) for k, s in surfaces.items()}
    return logs, np.linspace(min(v.min() for v in logs.values()),
                             max(v.max() for v in logs.values()), 25)


def plot(results):
    models = results["models"]
    batch_grids = {n: r["batch_stats"]["surface"] for n, r in models.items()
                   if "surface" in r.get("batch_stats", {})}
    rows = 2 + bool(batch_grids)
    fig = new_figure((4.2 * len(models) + 8, 3.8 * rows))
    axes = fig.subplots(rows, len(models) + 2, squeeze=False)
    # row 0: the surface with fixed running statistics (Li et al.'s), slices, interpolation
    logs, levels = _log_levels({n: r["surface"] for n, r in models.items()})
    for ax, (name, r) in zip(axes[0], models.items()):
        share = r.get("nonconvex_share")
        _contours(ax, np.array(r["grid_a"]), logs[name], levels,
                  f"{name}, running BN statistics" +
                  ("" if share is None else f"\nsmall-step non-convex share {share:.2f}"))
    for ax, (source, label) in ((axes[0][len(models)], ("running statistics", None)),
                                (axes[1][len(models)], ("batch statistics", "batch_stats"))):
        for i, (name, r) in enumerate(models.items()):
            data = r if label is None else r.get(label, {})
            for key, style in (("slice_d1", "-"), ("slice_d2", "--")):
                if key in data:
                    ax.plot(r["slice_a"], data[key], style, color=f"C{i}", lw=1,
                            label=f"{name} {key[-2:]}")
        ax.set_xlabel("distance along a filter-normalised direction")
        ax.set_ylabel(f"training loss (BN: {source})")
        ax.set_yscale("log")
        ax.set_title(f"1-D slices, BN on {source}", fontsize=9)
        ax.legend(fontsize=7)
    ax = axes[0][-1]
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
    # row 1: the surface's small-step curvature, lambda_min / ||H|| (-1 = curves only down,
    # 0 = flat in one direction, > 0 = a bowl), non-convex points marked
    for ax, (name, r) in zip(axes[1], models.items()):
        c = r.get("curvature")
        if c is None:
            ax.set_axis_off()
            continue
        lam_min, lam_max = np.array(c["lambda_min"]), np.array(c["lambda_max"])
        norm = np.maximum(np.maximum(np.abs(lam_min), np.abs(lam_max)), 1e-300)
        a = np.array(c["a"])
        image = ax.pcolormesh(a, a, (lam_min / norm).T, cmap="coolwarm_r", vmin=-1, vmax=1,
                              shading="nearest")
        bad = np.array(c["nonconvex"])
        A, B = np.meshgrid(a, a, indexing="ij")
        ax.plot(A[bad], B[bad], "kx", ms=4, label="non-convex")
        ax.set_title(f"{name}: lambda_min/||H|| of L(a, b), h = {c['h']:.3g}", fontsize=9)
        ax.set_xlabel("d1")
        ax.set_ylabel("d2")
        fig.colorbar(image, ax=ax, shrink=0.8)
    # Li et al.'s measure: |lambda_min / lambda_max| of the full Hessian along d1
    ax = axes[1][-1]
    drawn = False
    for i, (name, r) in enumerate(models.items()):
        points = r.get("hessian", {}).get("points", [])
        if points:
            ax.plot([p["a"] for p in points], [p["abs_ratio"] or np.nan for p in points], "o",
                    color=f"C{i}", label=name)
            drawn = True
    ax.set_xlabel("a along d1")
    ax.set_ylabel("|lambda_min / lambda_max|, full Hessian")
    ax.set_title("full Hessian (Li et al.), a lower bound", fontsize=9)
    if drawn:
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    # row 2, under --batch-stat-grid: the surface with BN on batch statistics
    if batch_grids:
        logs, levels = _log_levels(batch_grids)
        for ax, name in zip(axes[2], models):
            if name in logs:
                _contours(ax, np.array(models[name]["grid_a"]), logs[name], levels,
                          f"{name}, batch BN statistics")
            else:
                ax.set_axis_off()
        for ax in axes[2][len(models):]:
            ax.set_axis_off()
    fig.suptitle(f"loss on {results['images']} training images "
                 f"({results['input_size']}x{results['input_size']})", fontsize=9)
    return fig
