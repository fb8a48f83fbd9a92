"""The loss landscape's non-convexity measures on cases whose answer is known.

Two measures (minires.experiments.curvature, used by loss_landscape):
- ``nonconvex_share``: the small-step curvature of a 2-D surface f(a, b), here on synthetic
  surfaces -- steep convex ones must give 0, saddles the analytic share;
- ``hessian_extremes`` / ``model_hessian_extremes``: Li et al.'s lambda_min / lambda_max of
  the full Hessian by Lanczos on finite-difference Hessian-vector products, here on
  operators and losses with known spectra (negative eigenvalues included) and on small
  models whose Hessian is computed independently.
"""
import copy

import numpy as np
import pytest

import minires as mr
from minires.experiments import curvature as ll
from minires.experiments.__main__ import main
from minires.experiments.curvature import (
    FlatParameters,
    curvature_map,
    grid_step_nonconvex_share,
    hessian_extremes,
    lanczos_extremes,
    loss_and_gradient,
    model_hessian_extremes,
    nonconvex_points,
    nonconvex_share,
)
from minires.experiments.data import loader, synthetic_split

GRID = np.linspace(-1, 1, 11)           # the landscape's default grid over [-1, 1]^2
H = 0.01                                # its default curvature step (span / 100)
K = 5627 - 1.98                         # a radial bowl through plain56's 1.98 and 5,627

CONVEX = {
    "exp(8(a^2+b^2))": lambda a, b: np.exp(8 * (a * a + b * b)),
    "cosh(8a)cosh(8b)": lambda a, b: np.cosh(8 * a) * np.cosh(8 * b),
    "bowl r^1": lambda a, b: 1.98 + K * np.hypot(a, b),
    "bowl r^2": lambda a, b: 1.98 + K * np.hypot(a, b) ** 2,
    "bowl r^4": lambda a, b: 1.98 + K * np.hypot(a, b) ** 4,
    "bowl r^16": lambda a, b: 1.98 + K * np.hypot(a, b) ** 16,
    "quadratic": lambda a, b: a * a + 2 * b * b + 0.5 * a * b,
    "plane": lambda a, b: 3 + a - 2 * b,                  # flat: within the rounding floor
}


# --- the small-step curvature of a 2-D surface ----------------------------------------------------
@pytest.mark.parametrize("name", list(CONVEX))
def test_steep_convex_surfaces_have_no_nonconvex_point(name):
    assert nonconvex_share(CONVEX[name], GRID, H) == 0.0


def test_the_grid_step_measure_calls_steep_convex_surfaces_nonconvex():
    """The referee's finding, kept as a reason: differences over the grid step (0.2) make
    lambda_min of a steep bowl negative. The small-step measure on the same surfaces is 0."""
    A, B = np.meshgrid(GRID, GRID, indexing="ij")
    step = GRID[1] - GRID[0]
    for name, referee in (("exp(8(a^2+b^2))", 0.74), ("cosh(8a)cosh(8b)", 0.79),
                          ("bowl r^16", 0.79)):
        assert grid_step_nonconvex_share(CONVEX[name](A, B), step) == pytest.approx(referee,
                                                                                    abs=0.01)
        assert nonconvex_share(CONVEX[name], GRID, H) == 0.0


def test_a_saddle_is_nonconvex_everywhere():
    assert nonconvex_share(lambda a, b: a * a - b * b, GRID, H) == 1.0
    assert nonconvex_share(lambda a, b: -(a * a) - b * b, GRID, H) == 1.0       # a cap


def test_monkey_saddle_is_nonconvex_except_at_its_flat_centre():
    # H = [[6a, -6b], [-6b, -6a]]: eigenvalues +-6 r, a saddle at every point but the origin,
    # where H = 0 (flat, not counted)
    share = nonconvex_share(lambda a, b: a ** 3 - 3 * a * b * b, GRID, H)
    assert share == pytest.approx((GRID.size ** 2 - 1) / GRID.size ** 2)


def test_sin_sin_share_matches_the_analytic_one_point_by_point():
    # f = sin(3a) sin(3b): laa = lbb = -9 sin3a sin3b, lab = 9 cos3a cos3b, so
    # lambda_min = -9 max(cos 3(a-b), -cos 3(a+b)), lambda_max = -9 min(...)
    A, B = np.meshgrid(GRID, GRID, indexing="ij")
    u, w = np.cos(3 * (A - B)), -np.cos(3 * (A + B))
    exact_min, exact_max = -9 * np.maximum(u, w), -9 * np.minimum(u, w)
    exact = nonconvex_points(exact_min, exact_max, np.ones_like(A), H)
    c = curvature_map(lambda a, b: np.sin(3 * a) * np.sin(3 * b), GRID, H)
    np.testing.assert_allclose(c["lambda_min"], exact_min, atol=1e-2)
    np.testing.assert_allclose(c["lambda_max"], exact_max, atol=1e-2)
    measured = nonconvex_points(c["lambda_min"], c["lambda_max"], c["f_scale"], H)
    np.testing.assert_array_equal(measured, exact)
    assert 0.5 < exact.mean() < 1.0                          # a mixed case: 97 of 121 points
    assert nonconvex_share(lambda a, b: np.sin(3 * a) * np.sin(3 * b), GRID, H) == exact.mean()


def test_the_rounding_floor_keeps_a_noisy_flat_surface_convex():
    # a flat surface whose values carry relative noise 1e-9 (as a float32 loss carries
    # ~1e-7): without the floor the noise's second differences count as curvature
    def noisy(a, b):
        seed = int(abs(hash((round(a, 9), round(b, 9)))) % 2 ** 32)
        return 2.0 * (1 + 1e-9 * np.random.default_rng(seed).uniform(-1, 1))

    assert nonconvex_share(noisy, GRID, H, rel_noise=1e-9) == 0.0
    assert nonconvex_share(noisy, GRID, H, rel_noise=0.0) > 0.3


# --- the full Hessian: Lanczos and finite-difference products -------------------------------------
def _symmetric(eigenvalues, seed=0):
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((len(eigenvalues),) * 2))
    return (q * eigenvalues) @ q.T


def test_lanczos_finds_both_extremes_including_a_negative_one():
    rng = np.random.default_rng(1)
    eigenvalues = np.concatenate([[12.0, -3.0], rng.uniform(-0.5, 4.0, 198)])
    A = _symmetric(eigenvalues)
    r = lanczos_extremes(lambda v: A @ v, 200, 40, np.random.default_rng(2))
    assert r["lambda_max"] == pytest.approx(12.0, abs=1e-6)
    assert r["lambda_min"] == pytest.approx(-3.0, abs=1e-6)
    assert r["residual_max"] < 1e-5 and r["residual_min"] < 1e-5 and r["iterations"] == 40


def test_lanczos_in_the_whole_space_is_exact_and_stops():
    eigenvalues = np.array([-2.0, -1.0, 0.5, 3.0, 7.0])
    r = lanczos_extremes(lambda v: _symmetric(eigenvalues) @ v, 5, 30, np.random.default_rng(0))
    assert r["iterations"] == 5
    assert (r["lambda_min"], r["lambda_max"]) == pytest.approx((-2.0, 7.0), abs=1e-10)


def test_hessian_extremes_of_a_nonquadratic_loss_from_its_gradient():
    # f = 1/2 x'Ax + sum c_i cos x_i: H(x0) = A - diag(c cos x0), indefinite
    rng = np.random.default_rng(3)
    A = _symmetric(rng.uniform(-1, 6, 40), seed=4)
    c = rng.uniform(0.5, 2.0, 40)
    x0 = rng.uniform(-2, 2, 40)
    exact = np.linalg.eigvalsh(A - np.diag(c * np.cos(x0)))
    r = hessian_extremes(lambda x: A @ x - c * np.sin(x), x0, iters=40,
                         rng=np.random.default_rng(5))
    assert exact[0] < -1
    assert r["lambda_min"] == pytest.approx(exact[0], abs=1e-4)
    assert r["lambda_max"] == pytest.approx(exact[-1], abs=1e-4)
    assert r["abs_ratio"] == pytest.approx(abs(exact[0] / exact[-1]), rel=1e-4)
    assert r["retries"] == 0


def test_a_kink_next_to_theta_is_stepped_around(monkeypatch):
    # f = 1/2 x'Ax + 50 sum relu(x_i - k_i) with kinks k just above x0 in three coordinates,
    # closer than the finite-difference step: the almost-everywhere Hessian at x0 is A
    n = 30
    A = _symmetric(np.linspace(-2, 5, n), seed=6)
    x0 = np.random.default_rng(7).uniform(-1, 1, n)
    eps = ll.HESSIAN_REL_EPS * np.linalg.norm(x0)
    kinks = np.full(n, np.inf)
    kinks[:3] = x0[:3] + 0.05 * eps

    def gradient(x):
        return A @ x + 50.0 * (x > kinks)

    r = hessian_extremes(gradient, x0, iters=n, rng=np.random.default_rng(8))
    assert r["retries"] > 0
    assert (r["lambda_min"], r["lambda_max"]) == pytest.approx((-2.0, 5.0), abs=1e-3)
    monkeypatch.setattr(ll, "KINK_GAP", np.inf)              # without the check: nonsense
    r = hessian_extremes(gradient, x0, iters=n, rng=np.random.default_rng(8))
    assert r["lambda_max"] > 1e6


def _images(n, size):
    split = synthetic_split(n, size=size, seed=9)
    x, y = next(iter(loader(split, n)))
    return split, x.reshape(n, -1).astype(np.float64), y


def test_a_linear_models_hessian_matches_the_analytic_one():
    # logits z = W x + b, mean cross-entropy: H = mean_i J_i' (diag p_i - p_i p_i') J_i,
    # J_i = d z / d (W, b). Adding a constant to every logit changes nothing: lambda_min = 0
    split, x, y = _images(40, 2)
    mr.manual_seed(0)
    model = mr.nn.Sequential(mr.nn.Flatten(), mr.nn.Linear(12, 10)).to(dtype=np.float64)
    W, b = (p.data for _, p in model.named_parameters())
    logits = x @ W.T + b
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    n = W.size + b.size
    hessian = np.zeros((n, n))
    for xi, pi in zip(x, p):
        J = np.zeros((10, n))
        for c in range(10):
            J[c, c * 12:(c + 1) * 12] = xi                  # weight rows, then the bias
            J[c, W.size + c] = 1.0
        hessian += J.T @ (np.diag(pi) - np.outer(pi, pi)) @ J
    exact = np.linalg.eigvalsh(hessian / len(x))
    before = copy.deepcopy(model.state_dict())
    r = model_hessian_extremes(model, split, iters=n, batch_size=16,
                               rng=np.random.default_rng(0))
    assert r["parameters"] == n
    assert r["lambda_max"] == pytest.approx(exact[-1], rel=1e-5)
    assert abs(r["lambda_min"]) < 1e-5 * exact[-1] and abs(exact[0]) < 1e-12
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])           # the model is left as it was


def test_a_relu_nets_extremes_match_its_dense_hessian():
    # a small ReLU MLP has negative curvature; its dense Hessian column by column
    # (differences of the same gradients) must have the extremes Lanczos finds
    split, _, _ = _images(30, 2)
    mr.manual_seed(1)
    model = mr.nn.Sequential(mr.nn.Flatten(), mr.nn.Linear(12, 6), mr.nn.ReLU(),
                             mr.nn.Linear(6, 10)).to(dtype=np.float64)
    flat = FlatParameters(model)
    theta = flat.get()

    def gradient(t):
        flat.set(t)
        return loss_and_gradient(model, split, 30, "cpu")[1]

    step = 1e-7
    columns = [(gradient(theta + step * e) - gradient(theta - step * e)) / (2 * step)
               for e in np.eye(theta.size)]
    flat.set(theta)
    exact = np.linalg.eigvalsh((np.array(columns) + np.array(columns).T) / 2)
    r = model_hessian_extremes(model, split, iters=theta.size, batch_size=30,
                               rng=np.random.default_rng(0))
    assert exact[0] < -1e-3 * exact[-1]                      # a genuine negative eigenvalue
    assert r["lambda_min"] == pytest.approx(exact[0], rel=1e-3)
    assert r["lambda_max"] == pytest.approx(exact[-1], rel=1e-4)


def test_the_hessian_covers_every_parameter_bn_included():
    split = synthetic_split(20, seed=2)
    mr.manual_seed(3)
    model = mr.models.get_model("resnet8")
    model.eval()
    before = {n: p.data.copy() for n, p in model.named_parameters()}
    r = model_hessian_extremes(model, split, iters=2, batch_size=20)
    assert r["parameters"] == sum(w.size for w in before.values())
    assert any("bn" in n for n in before)
    for n, p in model.named_parameters():
        assert p.data.dtype == np.float32
        np.testing.assert_array_equal(p.data, before[n])


# --- the options -----------------------------------------------------------------------------
@pytest.mark.parametrize("option, value", [("--curvature-step", "0.2"), ("--hessian-iters", "-1"),
                                           ("--hessian-images", "5"), ("--curvature-stride", "-2"),
                                           ("--hessian-eps", "0")])
def test_bad_option_values_are_refused_by_name(tmp_path, capsys, option, value):
    out = str(tmp_path / "ll")
    assert main(["loss-landscape", "--tiny", "--out", out, f"{option}={value}"]) == 2
    assert option in capsys.readouterr().err
