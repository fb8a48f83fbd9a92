"""Curvature measures for loss landscapes: the small-step Hessian of a 2-D surface and
the extreme eigenvalues of a network's full Hessian (Li et al. 2018's |lambda_min/lambda_max|).

Pure functions first, each tested on synthetic surfaces and losses whose answer is known
(tests/test_landscape_measures.py): ``nonconvex_share`` on any callable f(a, b),
``lanczos_extremes`` / ``hessian_extremes`` on any gradient; then the adapters to a model
(``FlatParameters``, ``loss_and_gradient``, ``model_hessian_extremes``).
``minires.experiments.loss_landscape`` uses them on trained nets.
"""
from __future__ import annotations

import copy

import numpy as np

import minires as mr

from .data import loader

# --- curvature of the 2-D surface ---------------------------------------------------------------
# Why a small step: the second difference (f(a+s) - 2 f(a) + f(a-s)) / s^2 is f'' plus
# (s^2 / 12) f'''' + ...  With the grid step s = 0.2, a steep convex surface such as
# exp(8 (a^2 + b^2)) or cosh(8a) cosh(8b) has a truncation error larger than its smaller
# curvature, and the estimate of lambda_min comes out negative. With h = span / 100 the
# relative truncation error is about (h / l)^2 / 12, where l = sqrt(|f''| / |f''''|) is the
# length over which the curvature changes: below 1e-2 unless l < 0.03 span (exp(8 r^2) has
# l ~ 0.045 at the corners of [-1, 1]^2, error ~ 4e-3). Hence rel_tol = 1e-2. Measured:
# 0 on 1.98 + k r^p (5,627 at r = 1) for every p up to 20; from p ~ 30 (l = r / p < 0.03)
# a few points of the steep rim count -- a smaller --curvature-step would fix that, at the
# price of a higher rounding floor for the float32 loss.
ROUNDING_BOUND = 5.0   # |error of each eigenvalue| <= 5 delta / h^2 when |error of f| <= delta


def surface_hessian(f, a, b, h):
    """The 2x2 Hessian (laa, lbb, lab) of ``f(a, b)`` by central differences with step ``h``,
    and the largest |f| the stencil saw.

    Eight extra evaluations: the four axis neighbours for laa and lbb, the four diagonal
    ones for lab = [f(+,+) - f(+,-) - f(-,+) + f(-,-)] / (4 h^2). All three are exact to
    O(h^2), and the stencil is symmetric under a -> -a and b -> -b: at a flat point of an
    even surface (the bottom of k r^p, p > 2) lab is 0, not the h^(p-2) artefact that a
    6-point stencil with only the (+,+) and (-,-) diagonals gives there.
    """
    f0 = f(a, b)
    fpa, fma, fpb, fmb = f(a + h, b), f(a - h, b), f(a, b + h), f(a, b - h)
    fpp, fpm, fmp, fmm = f(a + h, b + h), f(a + h, b - h), f(a - h, b + h), f(a - h, b - h)
    laa = (fpa - 2 * f0 + fma) / h ** 2
    lbb = (fpb - 2 * f0 + fmb) / h ** 2
    lab = (fpp - fpm - fmp + fmm) / (4 * h ** 2)
    scale = max(abs(v) for v in (f0, fpa, fma, fpb, fmb, fpp, fpm, fmp, fmm))
    return laa, lbb, lab, scale


def curvature_map(f, points, h):
    """Eigenvalues of the small-step Hessian of ``f`` at every (a, b) in points x points.

    Returns {"lambda_min", "lambda_max", "f_scale"}: (P, P) arrays, [i, j] at
    (points[i], points[j]); ``f_scale`` is the largest |f| of each stencil (for the
    rounding floor).
    """
    points = np.asarray(points, dtype=np.float64)
    shape = (len(points), len(points))
    lam_min, lam_max, f_scale = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    for i, a in enumerate(points):
        for j, b in enumerate(points):
            laa, lbb, lab, scale = surface_hessian(f, float(a), float(b), h)
            mean, half = (laa + lbb) / 2, np.hypot((laa - lbb) / 2, lab)
            lam_min[i, j], lam_max[i, j], f_scale[i, j] = mean - half, mean + half, scale
    return {"lambda_min": lam_min, "lambda_max": lam_max, "f_scale": f_scale}


def nonconvex_points(lam_min, lam_max, f_scale, h, rel_tol=1e-2, rel_noise=0.0):
    """Boolean map: lambda_min < -max(rel_tol * ||H||, 5 rel_noise |f| / h^2).

    ||H|| = max(|lambda_min|, |lambda_max|): the finite-difference error of *both*
    eigenvalues scales with it, so a point is non-convex only where its negative
    curvature stands out of that error. The second term is the rounding floor: if each
    value of f is off by at most rel_noise * |f| = delta, laa and lbb are off by at most
    4 delta / h^2 and lab by delta / h^2, so each eigenvalue by at most 5 delta / h^2
    (Gershgorin on the 2x2 error). A flat patch (both eigenvalues within the floor) is not
    counted.
    """
    lam_min, lam_max = np.asarray(lam_min, float), np.asarray(lam_max, float)
    norm = np.maximum(np.abs(lam_min), np.abs(lam_max))
    floor = ROUNDING_BOUND * rel_noise * np.asarray(f_scale, float) / h ** 2
    return lam_min < -np.maximum(rel_tol * norm, floor)


def nonconvex_share(f, points, h, rel_tol=1e-2, rel_noise=1e-14):
    """Share of the points (a, b) in points x points where the surface ``f(a, b)`` clearly
    curves down: its small-step Hessian (step ``h``, ``surface_hessian``) has
    lambda_min < -max(rel_tol * ||H||, rounding floor) (``nonconvex_points``).

    ``f`` is any callable of two floats: a synthetic surface, or the loss of a net moved
    to theta + a d1 + b d2. ``rel_noise`` bounds the relative error of one value of f: by
    default ~50 float64 epsilons (the rounding of f, of a + h and of the differences); the
    landscape passes the float32 loss's, measured.
    """
    c = curvature_map(f, points, h)
    return float(np.mean(nonconvex_points(c["lambda_min"], c["lambda_max"], c["f_scale"], h,
                                          rel_tol, rel_noise)))


def grid_step_nonconvex_share(surface, step, rel_tol=1e-3):
    """The earlier measure, kept to show what is wrong with it -- NOT used in any output.

    Share of interior grid points whose Hessian, by central differences *with the grid
    step itself*, has lambda_min < -rel_tol * ||H||. With a coarse grid (step 0.2 on
    [-1, 1]) the truncation error, (step^2 / 12) f'''' per entry, exceeds the smaller
    curvature of any steep convex surface: it gives 0.74 for exp(8 (a^2 + b^2)) and 0.79
    for cosh(8a) cosh(8b), both convex everywhere. Use ``nonconvex_share``.
    """
    L = np.asarray(surface, dtype=np.float64)
    c = L[1:-1, 1:-1]
    laa = (L[2:, 1:-1] - 2 * c + L[:-2, 1:-1]) / step ** 2
    lbb = (L[1:-1, 2:] - 2 * c + L[1:-1, :-2]) / step ** 2
    lab = (L[2:, 2:] - L[2:, :-2] - L[:-2, 2:] + L[:-2, :-2]) / (4 * step ** 2)
    mean, diff = (laa + lbb) / 2, np.sqrt(((laa - lbb) / 2) ** 2 + lab ** 2)
    lam_min, lam_max = mean - diff, mean + diff
    scale = np.maximum(np.abs(lam_max), np.abs(lam_min))
    return float(np.mean(lam_min < -rel_tol * scale)) if c.size else 0.0


# --- the full Hessian (Li et al.'s measure) -------------------------------------------------------
def lanczos_extremes(matvec, n, iters, rng):
    """The extreme eigenvalues of a symmetric operator from ``iters`` Lanczos steps.

    ``matvec(v)`` -> H v for float64 vectors of length ``n``. Every new Lanczos vector is
    orthogonalised against all earlier ones, in two Gram-Schmidt passes (one pass loses
    orthogonality in floating point): plain three-term Lanczos loses it as soon as an
    eigenvalue converges, and then repeats that eigenvalue as spurious copies.
    Returns {"lambda_max", "lambda_min", "residual_max", "residual_min", "iterations"}:
    the extreme Ritz values and ||H y - lambda y|| of their Ritz vectors (= |beta| times the
    last entry of the eigenvector of the tridiagonal matrix); a true eigenvalue lies within
    the residual of each. Ritz values lie inside the spectrum, so the reported lambda_min
    is >= the true one and lambda_max <= the true one.
    """
    iters = min(int(iters), n)
    Q = np.zeros((iters + 1, n))
    q = rng.standard_normal(n)
    Q[0] = q / np.linalg.norm(q)
    alphas, betas = [], []
    for k in range(iters):
        w = np.asarray(matvec(Q[k]), dtype=np.float64)
        alphas.append(float(Q[k] @ w))
        for _ in range(2):                                  # full reorthogonalisation
            w -= Q[:k + 1].T @ (Q[:k + 1] @ w)
        beta = float(np.linalg.norm(w))
        betas.append(beta)
        scale = max(np.abs(alphas).max(), max(betas[:-1], default=0.0))
        if beta <= 1e-10 * scale:
            break                                           # an invariant subspace: exact
        Q[k + 1] = w / beta
    m = len(alphas)
    T = np.diag(alphas) + np.diag(betas[:m - 1], 1) + np.diag(betas[:m - 1], -1)
    values, vectors = np.linalg.eigh(T)
    residuals = abs(betas[m - 1]) * np.abs(vectors[-1])
    return {"lambda_max": float(values[-1]), "lambda_min": float(values[0]),
            "residual_max": float(residuals[-1]), "residual_min": float(residuals[0]),
            "iterations": m}


# Why the step is tiny and the products are checked: a ReLU net's loss is smooth only
# piecewise. Where theta +- eps v puts a unit of one image on the other side of its kink,
# the gradient jumps, and the jump divided by 2 eps swamps H v (on an 8x8 resnet8, eps =
# 1e-5 ||theta|| gave ||Hv|| = 7.7 against 0.059 for every eps from 1e-6 to 1e-10). The
# chance of a crossing falls with eps, and in float64 the rounding stays far below H v down
# to eps ~ 1e-11 ||theta|| (relative error 1e-6 at 1e-10). So eps = 1e-10 ||theta||, and
# each product is taken as the mean of the forward and the backward difference around
# g(theta): where the two disagree by more than KINK_GAP times the largest ||H v|| seen (a
# kink on one side: its jump / eps is huge), the product is taken again with eps / 10, up
# to three times. This is the almost-everywhere Hessian,
# the one autograd's double backward gives and Li et al. used.
KINK_GAP = 1e-3
HESSIAN_REL_EPS = 1e-10


def hessian_extremes(gradient, theta, iters=20, rel_eps=HESSIAN_REL_EPS, rng=None):
    """lambda_max and lambda_min of the Hessian of a loss at ``theta``, from its gradient.

    ``gradient(theta)`` -> the gradient (float64 vectors). A Hessian-vector product, for a
    unit v, is (g(theta + eps v) - g(theta - eps v)) / 2 eps with eps = rel_eps *
    max(||theta||, 1) (relative to the weights' size, so one rel_eps suits any net), checked
    for kinks as the comment above says. The extremes come from ``lanczos_extremes``; the
    result also holds ``abs_ratio`` = |lambda_min / lambda_max| (Li et al.'s measure),
    ``eps``, ``retries`` (products taken again with a smaller step) and ``max_gap`` (the
    largest relative forward/backward disagreement among the products used).
    """
    theta = np.asarray(theta, dtype=np.float64)
    rng = np.random.default_rng(0) if rng is None else rng
    eps = rel_eps * max(float(np.linalg.norm(theta)), 1.0)
    g0 = gradient(theta)
    checks = {"retries": 0, "max_gap": 0.0}
    # the gap is measured against the largest ||H v|| so far, not this product's own: a v
    # near the null space has H v ~ 0, and its rounding-level gap is no kink
    scale = {"hv": 0.0}

    def hvp(v):
        step = eps
        for attempt in range(4):
            forward = (gradient(theta + step * v) - g0) / step
            backward = (g0 - gradient(theta - step * v)) / step
            product = (forward + backward) / 2
            size = max(scale["hv"], float(np.linalg.norm(product)), 1e-300)
            gap = float(np.linalg.norm(forward - backward)) / size
            if gap <= KINK_GAP or attempt == 3:
                break
            step /= 10
            checks["retries"] += 1
        scale["hv"] = max(scale["hv"], float(np.linalg.norm(product)))
        checks["max_gap"] = max(checks["max_gap"], gap)
        return product

    out = lanczos_extremes(hvp, theta.size, iters, rng)
    out["abs_ratio"] = abs(out["lambda_min"] / out["lambda_max"]) if out["lambda_max"] else None
    out.update(eps=eps, **checks)
    return out


class FlatParameters:
    """Every parameter of a model as one float64 vector (named_parameters order)."""

    def __init__(self, model):
        self.params = [p for _, p in model.named_parameters()]
        self.size = sum(int(p.data.size) for p in self.params)

    def get(self):
        return np.concatenate([mr.backend.to_numpy(p.data).astype(np.float64).ravel()
                               for p in self.params])

    def set(self, flat):
        start = 0
        for p in self.params:
            n = int(p.data.size)
            part = flat[start:start + n].reshape(p.data.shape).astype(p.data.dtype)
            p.data[...] = mr.backend.to_device(part, mr.backend.device_of(p.data))
            start += n

    def grad(self):
        return np.concatenate([np.zeros(int(p.data.size)) if p.grad is None else
                               mr.backend.to_numpy(p.grad).astype(np.float64).ravel()
                               for p in self.params])


def loss_and_gradient(model, split, batch_size, device):
    """Mean cross-entropy of ``model`` over ``split`` in its current mode, and the gradient
    w.r.t. every parameter as one float64 vector: ``evaluate``'s loss, with a graph. Images
    go in at the parameters' dtype."""
    flat = FlatParameters(model)
    dtype = flat.params[0].data.dtype
    model.zero_grad()
    total = 0.0
    for x, y in loader(split, batch_size):
        out = model(mr.tensor(x.astype(dtype), device=device))
        loss = mr.functional.cross_entropy(out, mr.backend.to_device(y, device),
                                           reduction="sum")
        loss.backward()                                     # .grad sums over the batches
        total += float(loss.item())
    grad = flat.grad() / len(split)
    model.zero_grad()
    return total / len(split), grad


def model_hessian_extremes(model, split, iters=20, batch_size=500, device="cpu",
                           rel_eps=HESSIAN_REL_EPS, rng=None):
    """Li et al.'s measure at the model's current weights: ``hessian_extremes`` of the mean
    cross-entropy over ``split`` (eval mode: fixed running BN statistics) w.r.t. *all*
    parameters -- conv and fc weights, biases, BN scales and shifts -- as Li et al. take the
    full Hessian, not only the coordinates the landscape moves. Weight decay is not part of
    the loss.

    Works on a float64 copy (the tiny steps need it; see ``hessian_extremes``); ``model`` is
    left as it was. The result also holds ``parameters`` (the Hessian's size).
    """
    work = copy.deepcopy(model).to(dtype=np.float64)
    work.eval()
    flat = FlatParameters(work)

    def gradient(theta):
        flat.set(theta)
        return loss_and_gradient(work, split, batch_size, device)[1]

    out = hessian_extremes(gradient, flat.get(), iters, rel_eps, rng)
    out["parameters"] = flat.size
    return out
