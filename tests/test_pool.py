"""Pooling (minires/functional/pool.py): max_pool2d, avg_pool2d, adaptive_avg_pool2d.

- backward against finite differences in float64 on every element; max pooling's
  input has no ties (distinct values spaced far beyond the finite-difference step),
  so the arg-max is unambiguous and the check exact;
- forward against the naive loop references;
- ties: the gradient goes to the FIRST maximum in window order, checked against a
  loop that does exactly that (and against PyTorch, which does the same);
- avg pooling counts zero padding in the mean (count_include_pad=True);
- bad input raises errors that name the op.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minires as mr
import minires.functional as F
from minires.backend import to_numpy
from minires.functional.pool import avg_pool2d_naive, max_pool2d_naive
from tests.helpers import assert_forward, t32, t64


@st.composite
def pool_cases(draw):
    """A small pooling problem: kernel, stride (None = kernel), padding <= kernel // 2, input."""
    kernel = draw(st.one_of(st.integers(1, 3), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    KH, KW = (kernel, kernel) if isinstance(kernel, int) else kernel
    stride = draw(
        st.one_of(st.none(), st.integers(1, 3), st.tuples(st.integers(1, 3), st.integers(1, 3)))
    )
    ph, pw = draw(st.integers(0, KH // 2)), draw(st.integers(0, KW // 2))
    padding = ph if ph == pw and draw(st.booleans()) else (ph, pw)
    H = draw(st.integers(max(1, KH - 2 * ph), KH + 4))
    W = draw(st.integers(max(1, KW - 2 * pw), KW + 4))
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), H, W)
    return dict(
        shape=shape,
        kernel_size=kernel,
        stride=stride,
        padding=padding,
        seed=draw(st.integers(0, 2**31)),
    )


def distinct_values(shape, seed):
    """Values without ties: a shuffled grid 0.1 apart (far more than gradcheck's 1e-6 step)."""
    rng = np.random.default_rng(seed)
    return (rng.permutation(int(np.prod(shape))).reshape(shape) - np.prod(shape) / 2) * 0.1


def pool_args(case):
    return case["kernel_size"], case["stride"], case["padding"]


@given(case=pool_cases())
def test_max_pool2d_backward(device, case):
    x = t64(distinct_values(case["shape"], case["seed"]), device)
    assert mr.gradcheck(lambda t: F.max_pool2d(t, *pool_args(case)), x)


@given(case=pool_cases())
def test_avg_pool2d_backward(device, case):
    x = t64(np.random.default_rng(case["seed"]).standard_normal(case["shape"]), device)
    assert mr.gradcheck(lambda t: F.avg_pool2d(t, *pool_args(case)), x)


@given(case=pool_cases())
def test_pool_forward_matches_naive(device, case):
    x = np.random.default_rng(case["seed"]).standard_normal(case["shape"]).astype(np.float32)
    assert_forward(
        F.max_pool2d(t32(x, device), *pool_args(case)),
        max_pool2d_naive(x, *pool_args(case)),
        rtol=0,
        atol=0,
    )
    assert_forward(
        F.avg_pool2d(t32(x, device), *pool_args(case)),
        avg_pool2d_naive(x, *pool_args(case)),
        rtol=1e-6,
        atol=1e-6,
    )


def max_pool_backward_first_max(x, gy, kernel, stride, padding):
    """The tie rule written as loops: each window sends its gradient to its first maximum
    (row by row within the window), the order ``np.argmax`` uses on the flattened window."""
    (KH, KW), (sh, sw), (ph, pw) = kernel, stride, padding
    x_pad = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=-np.inf)
    gx_pad = np.zeros_like(x_pad)
    N, C, OH, OW = gy.shape
    for n in range(N):
        for c in range(C):
            for i in range(OH):
                for j in range(OW):
                    window = x_pad[n, c, i * sh : i * sh + KH, j * sw : j * sw + KW]
                    kh, kw = np.unravel_index(np.argmax(window), window.shape)
                    gx_pad[n, c, i * sh + kh, j * sw + kw] += gy[n, c, i, j]
    return gx_pad[:, :, ph : ph + x.shape[2], pw : pw + x.shape[3]]


@pytest.mark.parametrize(
    "kernel,stride,padding",
    [
        ((2, 2), (2, 2), (0, 0)),
        ((3, 3), (1, 1), (1, 1)),
        ((3, 3), (2, 2), (1, 1)),
        ((2, 3), (1, 2), (1, 0)),
    ],
)
def test_max_pool2d_ties_go_to_the_first_maximum(device, kernel, stride, padding):
    rng = np.random.default_rng(7)
    x_np = rng.integers(0, 3, size=(2, 2, 6, 7)).astype(np.float64)  # full of ties
    x = t64(x_np, device)
    y = F.max_pool2d(x, kernel, stride, padding)
    gy = rng.standard_normal(y.shape)
    y.backward(mr.tensor(gy, dtype=np.float64, device=device))
    expected = max_pool_backward_first_max(x_np, gy, kernel, stride, padding)
    np.testing.assert_allclose(to_numpy(x.grad), expected, rtol=1e-12, atol=1e-12)


def test_max_pool2d_all_equal_window():
    x = t64(np.ones((1, 1, 2, 2)))
    F.max_pool2d(x, 2).sum().backward()
    np.testing.assert_array_equal(x.grad, [[[[1.0, 0.0], [0.0, 0.0]]]])


def test_max_pool2d_padding_never_wins():
    """Padding is -inf: an all-negative input still pools to its own values."""
    x = -np.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    y = F.max_pool2d(t64(x), 3, stride=1, padding=1)
    assert y.numpy().max() == -1.0 and np.isfinite(y.numpy()).all()


def test_avg_pool2d_counts_padding():
    """count_include_pad=True: a corner window of ones with padding 1 averages 4 ones over 9."""
    y = F.avg_pool2d(t64(np.ones((1, 1, 4, 4))), 3, stride=1, padding=1).numpy()
    assert y[0, 0, 0, 0] == pytest.approx(4 / 9) and y[0, 0, 1, 1] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "in_hw,out_size",
    [((4, 6), 1), ((4, 6), (2, 3)), ((4, 6), (4, 2)), ((6, 6), 3), ((4, 6), (None, 2))],
)
def test_adaptive_avg_pool2d(device, in_hw, out_size):
    rng = np.random.default_rng(8)
    x_np = rng.standard_normal((2, 3) + in_hw)
    assert mr.gradcheck(lambda t: F.adaptive_avg_pool2d(t, out_size), t64(x_np, device))
    OH, OW = (out_size, out_size) if isinstance(out_size, int) else out_size
    OH, OW = OH or in_hw[0], OW or in_hw[1]
    kernel = (in_hw[0] // OH, in_hw[1] // OW)
    expected = avg_pool2d_naive(x_np.astype(np.float32), kernel)
    assert_forward(
        F.adaptive_avg_pool2d(t32(x_np, device), out_size), expected, rtol=1e-6, atol=1e-6
    )


def test_global_average_pool_is_the_mean():
    x = np.random.default_rng(9).standard_normal((3, 4, 5, 5)).astype(np.float32)
    y = F.adaptive_avg_pool2d(t32(x), 1)
    assert_forward(y, x.mean(axis=(2, 3), keepdims=True), rtol=1e-6, atol=1e-6)


def test_pools_keep_float32(device):
    x = t32(np.random.default_rng(10).standard_normal((2, 3, 6, 6)), device, requires_grad=True)
    for y in (F.max_pool2d(x, 3, 2, 1), F.avg_pool2d(x, 2), F.adaptive_avg_pool2d(x, 1)):
        x.grad = None
        y.sum().backward()
        assert y.dtype == np.float32 and x.grad.dtype == np.float32


# --- bad input --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "call,error,match",
    [
        (
            lambda x: F.max_pool2d(x, 2, padding=2),
            ValueError,
            r"max_pool2d: padding \(2, 2\) must be at most half the kernel size \(2, 2\)",
        ),
        (
            lambda x: F.avg_pool2d(x, 3, padding=2),
            ValueError,
            r"avg_pool2d: padding .* at most half",
        ),
        (
            lambda x: F.max_pool2d(x, 7),
            ValueError,
            r"max_pool2d: kernel 7x7 is larger than the padded input 6x6",
        ),
        (lambda x: F.max_pool2d(x, 0), ValueError, r"max_pool2d: kernel_size must be >= 1"),
        (lambda x: F.avg_pool2d(x, 2, stride=0), ValueError, r"avg_pool2d: stride must be >= 1"),
        (
            lambda x: F.max_pool2d(x, 2.5),
            TypeError,
            r"max_pool2d: kernel_size must be an int or a pair",
        ),
        (
            lambda x: F.max_pool2d(x[0], 2),
            ValueError,
            r"max_pool2d: input must be 4-D \(N, C, H, W\)",
        ),
        (
            lambda x: F.adaptive_avg_pool2d(x, 4),
            ValueError,
            r"adaptive_avg_pool2d: output size \(4, 4\) must divide the input size \(6, 6\)",
        ),
        (
            lambda x: F.adaptive_avg_pool2d(x, (3, 5)),
            ValueError,
            r"adaptive_avg_pool2d: output size \(3, 5\)",
        ),
        (
            lambda x: F.adaptive_avg_pool2d(x, 0),
            ValueError,
            r"adaptive_avg_pool2d: output_size must be",
        ),
        (
            lambda x: F.adaptive_avg_pool2d(x, "1"),
            ValueError,
            r"adaptive_avg_pool2d: output_size must be",
        ),
        (
            lambda x: F.adaptive_avg_pool2d(x[0], 1),
            ValueError,
            r"adaptive_avg_pool2d: input must be 4-D",
        ),
    ],
)
def test_pool_errors(call, error, match):
    with pytest.raises(error, match=match):
        call(t32(np.zeros((2, 3, 6, 6))))


# --- against PyTorch (skipped where torch is not installed) -------------------------------
@pytest.mark.parametrize(
    "op,kwargs",
    [
        ("max_pool2d", dict(kernel_size=3, stride=2, padding=1)),
        ("max_pool2d", dict(kernel_size=2)),
        ("max_pool2d", dict(kernel_size=(3, 2), stride=(1, 2), padding=(1, 1))),
        ("avg_pool2d", dict(kernel_size=3, stride=2, padding=1)),
        ("avg_pool2d", dict(kernel_size=(2, 3), stride=1, padding=(1, 0))),
        ("adaptive_avg_pool2d", dict(output_size=1)),
        ("adaptive_avg_pool2d", dict(output_size=(2, 4))),
    ],
)
@pytest.mark.parametrize("ties", [False, True])
def test_pools_match_torch(op, kwargs, ties):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    shape = (3, 4, 8, 8)
    x_np = (rng.integers(0, 4, size=shape) if ties else rng.standard_normal(shape)).astype(
        np.float32
    )
    tx = torch.tensor(x_np, requires_grad=True)
    ty = getattr(torch.nn.functional, op)(tx, **kwargs)
    gy = rng.standard_normal(tuple(ty.shape)).astype(np.float32)
    ty.backward(torch.tensor(gy))
    x = t32(x_np, requires_grad=True)
    y = getattr(F, op)(x, **kwargs)
    y.backward(gy)
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(x.grad, tx.grad.numpy(), rtol=1e-6, atol=1e-6)
