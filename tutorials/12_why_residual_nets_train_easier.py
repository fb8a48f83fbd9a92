# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Lesson 12 — Why residual networks are easier to train
#
# **Goal.** Lesson 05's shipped three-seed run showed a deep plain network training
# worse than a shallow one, while the deep residual network trained as well as the
# shallow one (not better: their gap was within its spread); lesson 06 showed that the
# plain network's gradients do not vanish. So what makes the residual network easier to
# optimise? Li et al. (2018, "Visualizing the loss landscape of neural nets") looked at
# the training loss around the trained weights, along random directions, and found the
# 56-layer plain net's surface chaotic and the residual one's smooth and nearly convex.
# We measure that on the deep nets of lesson 05, with their method (filter-normalised
# directions), and look at a second view: how much each residual block changes what it
# is given (feature reuse).
#
# A word on what is claimed. Guides often say residual nets have "fewer local minima".
# A random 2-D slice cannot count minima in a space of 850,000 dimensions, and we do
# not claim it. What we measure: the loss along two random directions through one
# point, with batch norm's running statistics fixed (Li et al.'s convention) and with
# batch statistics; the share of points of a small grid where that 2-D surface curves
# *down* in some direction (non-convex), measured with a step much smaller than the
# grid's; how bumpy the 1-D slices are; and the loss along the straight line from the
# initial to the trained weights.
#
# **Budget without fast mode:** if lesson 05 ran in full mode before, its trained
# plain56 and resnet56 are loaded (8x8 images, 600 iterations); otherwise the two
# nets are trained here first with lesson 05's recipe (about 4 minutes on the 2-core
# Xeon). The
# measurements add a few minutes. Fast mode: plain14 and resnet14 on synthetic 8x8
# images, seconds.

# %%
import numpy as np
from lesson_utils import (
    FAST,
    fast_or_full,
    load_degradation_data,
    mode_line,
    new_figure,
    out_dir,
    save_figure,
)

import minires as mr
from minires.experiments.curvature import grid_step_nonconvex_share, nonconvex_share
from minires.experiments.data import balanced_subset
from minires.experiments.degradation import PRESETS
from minires.experiments.feature_reuse import block_statistics
from minires.experiments.loss_landscape import (
    ParameterShifter,
    batch_stat_loss,
    filter_normalised_direction,
    slice_tv_ratio,
)
from minires.experiments.nets import build, initial_net
from minires.experiments.training import train_net
from minires.experiments.weights import net_from, save_weights
from minires.train import evaluate

OUT = out_dir("12_why_residual_nets_train_easier")
print(mode_line())
PLAIN, RESNET = fast_or_full(("plain14", "resnet14"), ("plain56", "resnet56"))
SEED = 0                                       # lesson 05 trains with this seed too
RECIPE = PRESETS["laptop"]                     # lesson 05's recipe (the degradation experiment's)
STEPS = fast_or_full(30, 600)                  # lesson 05's budget
data = load_degradation_data(n_train=RECIPE["train_images"], size=RECIPE["input_size"])
probe = balanced_subset(data.train, fast_or_full(200, 500))
print(f"loss measured on {len(probe)} training images of "
      f"{probe.images.shape[-1]}x{probe.images.shape[-1]}")

# %% [markdown]
# ## 1. The trained deep nets
#
# Lesson 05 saves its four nets in its output folder. We load the deep pair from
# there, or train them here with the same recipe, data, order and budget.

# %%
NETS05 = out_dir("05_degradation_problem") / "nets"
nets, inits = {}, {}
for name in (PLAIN, RESNET):
    if (NETS05 / f"{name}.npz").is_file():
        model, meta, path = net_from(NETS05, name)
        inits[name] = meta["net"]                  # how lesson 05 initialised it
        print(f"{name}: loaded from lesson 05 ({path})")
    else:
        model, inits[name] = build(name, SEED), name     # lesson 05's seed and init (He et al.)
        train_net(model, data.train, None, steps=STEPS, batch_size=fast_or_full(32, 128),
              lr=RECIPE["lr"], nesterov=RECIPE["nesterov"], weight_decay=RECIPE["weight_decay"],
              warmup_frac=RECIPE["warmup_frac"], augment=RECIPE["augment"] and not FAST,
              crop_padding=RECIPE["input_size"] // 8, seed=SEED, log_every=STEPS,
              eval_every_epoch=False, label=name)
        model.eval()
        save_weights(model, OUT / f"{name}.npz", meta={"model": name, "seed": SEED,
                                                       "init": "paper"})
        print(f"{name}: trained here ({STEPS} iterations)")
    nets[name] = model
    loss, acc = evaluate(model, probe)
    err = 1 - acc
    print(f"  training error {err:.3f}, loss {loss:.3f} (eval mode, {len(probe)} images)")

# %% [markdown]
# ## 2. Filter-normalised directions
#
# A direction $d$ has one entry per weight. Drawn from a Gaussian as it is, it would
# move the large filters of a net by a small fraction and the small ones by a lot. So
# Li et al. rescale every *filter* of the direction (one output
# channel of a convolution: `d[o]` of shape (I, KH, KW); one row of the linear
# layer) to the norm of the same filter of the trained weights:
#
# $$ d_{o} \leftarrow \frac{d_{o}}{\lVert d_{o} \rVert} \lVert \theta_{o} \rVert $$
#
# Batch-norm scales and shifts and biases get a zero direction: they stay put. Here it
# is in five lines, checked against the version the experiment uses.
#
# A caution that matters for everything below. It is often said that with batch norm
# after every convolution a filter's *scale* does not change the function. That holds
# when BN normalises with the statistics of the batch (training mode). The landscape is
# evaluated in evaluation mode, with the running statistics fixed at the trained
# weights' values (Li et al. do the same): there, scaling a filter by 2 doubles that
# channel's output after BN, and over 56 layers such changes compound. Part of the
# "walls" of a filter-normalised plot are stale statistics, not the loss of the
# function the moved weights would compute with their own statistics. Section 3 shows
# both.

# %%
def my_direction(model, rng):
    d = {}
    for name, p in model.named_parameters():
        w = p.data.astype(np.float64)
        if w.ndim < 2:
            d[name] = np.zeros_like(w)
            continue
        g = rng.standard_normal(w.shape)
        axes = tuple(range(1, w.ndim))                            # all but the filter axis O
        g_norm = np.sqrt((g ** 2).sum(axis=axes, keepdims=True))   # (O, 1, ...)
        w_norm = np.sqrt((w ** 2).sum(axis=axes, keepdims=True))   # (O, 1, ...)
        d[name] = g / g_norm * w_norm
    return d


mine = my_direction(nets[RESNET], np.random.default_rng(1))
library = filter_normalised_direction(nets[RESNET], np.random.default_rng(1))
assert all(np.allclose(mine[k], library[k], rtol=1e-6, atol=1e-12) for k in mine)
print("my_direction == minires.experiments.loss_landscape.filter_normalised_direction")

# %% [markdown]
# ## 3. One-dimensional slices
#
# $L(a) = \mathrm{loss}(\theta + a\,d)$ for $a \in [-1, 1]$: at $a = \pm 1$ every filter
# has moved by its own norm. Both nets get directions drawn from the same seed. We
# print two numbers per slice: the **edge rise** (how much higher the loss is at the
# ends than at the trained weights: sharpness) and the **TV ratio**, the total up-and-
# down of the curve over the rise from its lowest point to both ends (1 for a single
# basin, more for every extra bump).

# %%
alphas = np.linspace(-1, 1, fast_or_full(11, 21))


def loss_at(model):
    return evaluate(model, probe, batch_size=500)[0]                # the mean loss


slices, batch_slices, directions = {}, {}, {}
for name, model in nets.items():
    rng = np.random.default_rng([SEED, 7])
    directions[name] = (filter_normalised_direction(model, rng),
                        filter_normalised_direction(model, rng))
    shifter = ParameterShifter(model)
    curves = []
    for d in directions[name]:
        values = []
        for a in alphas:
            shifter.shift((a, d))
            values.append(loss_at(model))
        curves.append(values)
    shifter.restore()
    slices[name] = curves
    batch_stats = []                     # the same slice along d1, BN on batch statistics
    for a in alphas:
        shifter.shift((a, directions[name][0]))
        batch_stats.append(batch_stat_loss(model, probe, 500, "cpu"))
    shifter.restore()
    batch_slices[name] = batch_stats
    centre = loss_at(model)
    rises = [(c[0] + c[-1]) / 2 - centre for c in curves]
    tvs = [slice_tv_ratio(c) for c in curves]
    print(f"{name}: loss {centre:.3f} at the trained weights; edge rise {np.mean(rises):.2f} "
          f"with fixed BN statistics, "
          f"{(batch_stats[0] + batch_stats[-1]) / 2 - batch_stats[len(alphas) // 2]:.2f} "
          f"along d1 with batch statistics; TV ratio {np.mean(tvs):.2f}")

fig = new_figure((11, 4))
if fig is not None:
    ax, ax2 = fig.subplots(1, 2, sharey=True)
    for i, (name, curves) in enumerate(slices.items()):
        for k, c in enumerate(curves):
            ax.plot(alphas, c, "-" if k == 0 else "--", color=f"C{i}", label=f"{name} d{k + 1}")
        ax2.plot(alphas, batch_slices[name], "-", color=f"C{i}", label=f"{name} d1")
    ax.set(xlabel="a (filter-normalised units)", ylabel="training loss", yscale="log",
           title="eval mode: BN statistics fixed (Li et al.)")
    ax2.set(xlabel="a (filter-normalised units)", title="BN on batch statistics")
    for a_ in (ax, ax2):
        a_.legend(fontsize=8)
save_figure(fig, OUT / "slices.png")

# %% [markdown]
# ## 4. A small two-dimensional surface
#
# $L(a, b) = \mathrm{loss}(\theta + a\,d_1 + b\,d_2)$ on a grid. At a point, the 2-D
# Hessian of $L(a, b)$ has two eigenvalues; where the smaller one is clearly negative
# the surface curves down in some direction there. The Hessian must be taken with a
# step much *smaller* than the grid's: with the grid step itself (0.25 here) the
# finite differences of a steep bowl are dominated by their truncation error, and
# exp(8(a² + b²)) — convex everywhere — comes out "non-convex" on three quarters of
# the grid. `nonconvex_share` takes each point's Hessian from 8 extra evaluations at
# distance h = 0.01 (checked on such synthetic surfaces by the tests).

# %%
grid = np.linspace(-1, 1, fast_or_full(5, 9))
surfaces, shares = {}, {}
for name, model in nets.items():
    shifter = ParameterShifter(model)
    d1, d2 = directions[name]
    surface = np.zeros((len(grid), len(grid)))
    for i, a in enumerate(grid):
        for j, b in enumerate(grid):
            shifter.shift((a, d1), (b, d2))
            surface[i, j] = loss_at(model)
    shifter.restore()
    surfaces[name] = surface

    def loss_surface(a, b, model=model, shifter=shifter, d1=d1, d2=d2):
        shifter.shift((a, d1), (b, d2))
        return loss_at(model)

    shares[name] = nonconvex_share(loss_surface, grid[::2], h=0.01, rel_noise=1e-6)
    shifter.restore()
    coarse = grid_step_nonconvex_share(surface, grid[1] - grid[0])
    print(f"{name}: non-convex share {shares[name]:.2f} "
          f"on {len(grid[::2])}x{len(grid[::2])} points "
          f"(small-step Hessian); the grid-step Hessian would say {coarse:.2f}")
    assert surface[len(grid) // 2, len(grid) // 2] == slices[name][0][len(alphas) // 2]

fig = new_figure((9, 4))
if fig is not None:
    axes = fig.subplots(1, 2)
    levels = np.linspace(min(s.min() for s in surfaces.values()),
                         max(np.percentile(s, 90) for s in surfaces.values()), 15)
    for ax, (name, surface) in zip(axes, surfaces.items()):
        cs = ax.contour(grid, grid, surface.T, levels=levels, linewidths=0.8)
        ax.clabel(cs, fontsize=6, fmt="%.1f")
        ax.set(xlabel="d1", ylabel="d2", title=f"{name}: non-convex share {shares[name]:.2f}")
save_figure(fig, OUT / "surfaces.png")

# %% [markdown]
# ## 5. From the initial to the trained weights
#
# Goodfellow et al. (2015) asked a simpler question: along the straight line
# $\theta(\alpha) = (1 - \alpha)\,\theta_0 + \alpha\,\theta$ from the initial weights to
# the trained ones, does the loss fall steadily, or is there a barrier to cross? Batch
# norm uses batch statistics here (the running statistics belong to the trained
# weights only) and its running buffers are restored afterwards.

# %%
line = np.linspace(0, 1, fast_or_full(5, 11))
paths = {}
for name, model in nets.items():
    initial = build(inits[name], SEED)           # the same seed and init as the trained net
    shifter = ParameterShifter(model)
    theta0 = dict(initial.named_parameters())
    delta = {k: shifter.theta[k].astype(np.float64) - theta0[k].data for k in shifter.theta}
    losses = []
    for alpha in line:
        shifter.shift((alpha - 1.0, delta))           # theta + (alpha - 1)(theta - theta_0)
        losses.append(batch_stat_loss(model, probe, 500, "cpu"))
    shifter.restore()
    paths[name] = losses
    rises = int(np.sum(np.diff(losses) > 0))
    print(f"{name}: loss {losses[0]:.2f} at init -> {losses[-1]:.3f} trained; it rises on "
          f"{rises} of {len(line) - 1} steps of the line")

fig = new_figure((6, 4))
if fig is not None:
    ax = fig.subplots()
    for name, losses in paths.items():
        ax.plot(line, losses, ".-", label=name)
    ax.set(xlabel="alpha (0 = initial, 1 = trained)", ylabel="training loss", yscale="log",
           title="the straight line from init to the trained weights")
    ax.legend()
save_figure(fig, OUT / "interpolation.png")

# %% [markdown]
# ## 6. Feature reuse
#
# A residual block computes $x + F(x)$. If the trained blocks keep $F(x)$ small next to
# $x$, each block *refines* the features it is given rather than replacing them: the
# net reuses features across many blocks, and deleting one block hurts less than
# deleting one layer of a plain net (lesson 11's lesion: fewer points of test error, and a
# much smaller share of what the net had learned above chance). We measure, for every
# block, $\lVert F(x) \rVert / \lVert x \rVert$ and the cosine between the block's input and
# output, on test images, at initialisation and trained. For the plain net, $F$ is the
# whole block. At
# initialisation, batch norm is first calibrated on 256 training images: with the
# running statistics an untrained net starts with (mean 0, variance 1), BN in
# evaluation mode would not normalise, and the ratio would measure that instead.

# %%
x_test, _ = next(iter(mr.data.DataLoader(data.test.images, data.test.labels, batch_size=128)))
x_calib, _ = next(iter(mr.data.DataLoader(data.train.images, data.train.labels, batch_size=256)))
reuse = {}
for name, model in nets.items():
    at_init = block_statistics(initial_net(inits[name], SEED, x_calib), x_test)
    trained = block_statistics(model, x_test)
    reuse[name] = (at_init, trained)
    for when, rows in (("init", at_init), ("trained", trained)):
        cos = [r["cosine"] for r in rows if r["cosine"] is not None]
        ratio = np.mean([r["branch_ratio"] for r in rows])
        print(f"{name:>9} {when:>7}: mean ||F(x)||/||x|| {ratio:.3f}"
              f", mean cos(x, out) {np.mean(cos):.3f}")
assert all(-1 - 1e-6 <= r["cosine"] <= 1 + 1e-6 for rows in reuse[RESNET] for r in rows
           if r["cosine"] is not None)

fig = new_figure((6, 4))
if fig is not None:
    ax = fig.subplots()
    for i, (name, (at_init, trained)) in enumerate(reuse.items()):
        ax.plot([r["branch_ratio"] for r in at_init], ":", color=f"C{i}", label=f"{name} init")
        ax.plot([r["branch_ratio"] for r in trained], "-", color=f"C{i}", label=f"{name} trained")
    ax.set(xlabel="block", ylabel="||F(x)|| / ||x||", title="feature reuse")
    ax.set_yscale("symlog", linthresh=1e-2)          # zero-initialised branches start at 0
    ax.legend(fontsize=8)
save_figure(fig, OUT / "feature_reuse.png")

# %% [markdown]
# ## 7. What this run shows
#
# The sentence below is computed from the numbers above. Li et al.'s finding would
# read: the plain net's surface has more non-convex points (and, in their measure, a
# larger |λmin/λmax| of the full Hessian — `python -m minires.experiments
# loss-landscape` computes that too). One pair of random directions through one point,
# a handful of grid points, one seed: a difference of a point or two says nothing.

# %%
n_points = len(grid[::2]) ** 2
gap = (shares[PLAIN] - shares[RESNET]) * n_points
verdict_word = (f"{PLAIN} has MORE" if gap >= 3 else f"{PLAIN} has FEWER" if gap <= -3
                else "no clear difference (2 points or fewer)")
print(f"Non-convex points in this run, {PLAIN} vs {RESNET}: {shares[PLAIN]:.2f} vs "
      f"{shares[RESNET]:.2f} of {n_points} points -> {verdict_word}.")
if FAST:
    print("(fast mode: tiny synthetic data and shallow nets; the numbers check the code)")

# %% [markdown]
# ## Try this
#
# 1. Draw new directions (another seed in `np.random.default_rng([SEED, 7])`): which
#    numbers move, and by how much?
# 2. Zero the filter normalisation (use the raw Gaussian direction): does the residual
#    net still look smoother? Why can the comparison now mislead?
# 3. Run the experiment on the degradation run's nets, with a finer grid:
#    `python -m minires.experiments loss-landscape --from runs/experiments/degradation
#    --grid 21`.
# 4. Compare `resnet56` and `resnet56-zero` from the experiment's `--ablation` run
#    (`python -m minires.experiments feature-reuse --from RUN --models
#    resnet56,resnet56-zero`): how do their ||F(x)||/||x|| differ at initialisation and
#    after training?

# %%
print("lesson 12 done: filter normalisation is asserted against the library; the landscape, "
      "the interpolation and feature reuse are reported as measured")
