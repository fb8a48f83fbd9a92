"""Winograd F(2x2, 3x3) (minires/functional/winograd.py) against the reference convolution.

- The loop-based winograd_reference, the fast forward_winograd and conv2d_naive agree on
  drawn shapes (odd and even H and W, tiny channels, batch 1..3, padding 0..2 given as
  an int or a pair), in float64 to 1e-10 and in float32 (which stays float32) to 1e-4,
  with one chunk and with one image per chunk.
- backward_winograd's dx and dW equal the reference conv2d's gradients, for every
  combination of gradients asked for; and a finite-difference check in float64 through
  a Function that runs Winograd forward and backward.
- The transform matrices are F(2x2, 3x3)'s: A^T [(G g) * (B^T d)] is the 1-D filter.
- Bad inputs (stride 2, a 5x5 kernel, dilation, groups, padding 3) give a ValueError
  naming the function.
- The switch conv_fast.use_winograd, the policy's choice of Winograd (and F.conv2d through
  it equal to the reference), and identical results on 1 and 2 threads.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minires as mr
import minires.functional as F
from minires.autograd import Function
from minires.functional import conv_fast as cf
from minires.functional import parallel
from minires.functional import winograd as wg
from minires.functional.conv import conv2d_naive
from minires.functional.windows import conv_settings
from tests.helpers import t64
from tests.strategies import pair


@st.composite
def winograd_cases(draw, max_batch=3, max_channels=3):
    """A 3x3, stride-1 convolution Winograd handles: padding 0..2 (an int or a pair), H and
    W odd or even, from the smallest that fits the kernel to a few tiles."""
    padding = draw(st.one_of(st.integers(0, 2), st.tuples(st.integers(0, 2), st.integers(0, 2))))
    ph, pw = pair(padding)
    H = draw(st.integers(max(1, 3 - 2 * ph), 7))
    W = draw(st.integers(max(1, 3 - 2 * pw), 7))
    N, C, K = (draw(st.integers(1, m)) for m in (max_batch, max_channels, max_channels))
    return dict(x_shape=(N, C, H, W), w_shape=(K, C, 3, 3), padding=padding,
                seed=draw(st.integers(0, 2**31)))


def case_arrays(case, dtype=np.float64):
    """x, weight and a gradient of y for a case, from its seed."""
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal(case["x_shape"]).astype(dtype)
    w = (rng.standard_normal(case["w_shape"]) * 0.5).astype(dtype)
    N, K, (H, W), (ph, pw) = x.shape[0], w.shape[0], x.shape[2:], pair(case["padding"])
    gy = rng.standard_normal((N, K, H + 2 * ph - 2, W + 2 * pw - 2)).astype(dtype)
    return x, w, gy


# --- the forward ------------------------------------------------------------------------
@given(case=winograd_cases(), small_chunks=st.booleans())
def test_winograd_forward_equals_the_reference_in_float64(case, small_chunks):
    x, w, _ = case_arrays(case)
    want = conv2d_naive(x, w, padding=case["padding"])
    np.testing.assert_allclose(wg.winograd_reference(x, w, case["padding"]), want,
                               rtol=1e-10, atol=1e-10)
    s = conv_settings(1, case["padding"])
    got = wg.forward_winograd(x, w, s, chunk_bytes=64 if small_chunks else None)
    assert got.dtype == np.float64 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


@given(case=winograd_cases(), small_chunks=st.booleans())
def test_winograd_forward_in_float32(case, small_chunks):
    x, w, _ = case_arrays(case, np.float32)
    want = conv2d_naive(x.astype(np.float64), w.astype(np.float64), padding=case["padding"])
    got = wg.forward_winograd(x, w, conv_settings(1, case["padding"]),
                              chunk_bytes=64 if small_chunks else None)
    assert got.dtype == np.float32, "float32 in, float32 out (no hidden upcast)"
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert wg.winograd_weights(w).dtype == np.float32


def test_winograd_float32_error_on_a_resnet_sized_layer():
    """On a realistic layer (64 channels, 8x8) Winograd's float32 error stays at the level
    of float32 rounding of a 576-term sum: well under 1e-5 of the output's scale."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 64, 8, 8)).astype(np.float32)
    w = (rng.standard_normal((64, 64, 3, 3)) * 0.05).astype(np.float32)
    s = conv_settings(1, 1)
    want = cf.forward_side_by_side(x.astype(np.float64), w.astype(np.float64), s)
    got = wg.forward_winograd(x, w, s)
    assert np.abs(got - want).max() / np.abs(want).max() < 1e-5


# --- the backward -------------------------------------------------------------------------
@given(case=winograd_cases(), small_chunks=st.booleans())
def test_winograd_backward_equals_the_reference(case, small_chunks):
    x_np, w_np, gy = case_arrays(case)
    x, w = t64(x_np), t64(w_np)
    with F.conv_implementation("reference"):
        F.conv2d(x, w, padding=case["padding"]).backward(mr.tensor(gy, dtype=np.float64))
    s, limit = conv_settings(1, case["padding"]), 64 if small_chunks else None
    for need_x, need_w in [(True, True), (True, False), (False, True), (False, False)]:
        gx, gw = cf.backward_winograd(gy, x_np, w_np, s, need_x, need_w, chunk_bytes=limit)
        for name, got, want, needed in (("dx", gx, x.grad, need_x), ("dW", gw, w.grad, need_w)):
            if not needed:
                assert got is None, name
                continue
            np.testing.assert_allclose(got, mr.backend.to_numpy(want), rtol=1e-10, atol=1e-10,
                                       err_msg=name)


class WinogradConv2d(Function):
    """conv2d (no bias) through Winograd's forward and backward, whatever the policy says."""

    def __init__(self, padding):
        super().__init__()
        self.settings = conv_settings(1, padding)

    def forward(self, x, weight):
        self.save_for_backward(x, weight)
        return wg.forward_winograd(x, weight, self.settings)

    def backward(self, gy):
        x, weight = self.saved
        return cf.backward_winograd(gy, x, weight, self.settings, *self.needs_input_grad)


@given(case=winograd_cases(max_batch=2, max_channels=2))
def test_winograd_gradcheck(case):
    """Central finite differences in float64 on every element of x and the weight, through
    a random projection of y (mr.gradcheck)."""
    x_np, w_np, _ = case_arrays(case)
    x, w = t64(x_np), t64(w_np)
    assert mr.gradcheck(lambda a, b: WinogradConv2d(case["padding"])(a, b), x, w)


# --- the matrices -------------------------------------------------------------------------
def test_the_1d_transforms_compute_the_3_tap_filter():
    """F(2, 3): A^T [(G g) * (B^T d)] = (d0 g0 + d1 g1 + d2 g2, d1 g0 + d2 g1 + d3 g2)."""
    rng = np.random.default_rng(0)
    for _ in range(5):
        d, g = rng.standard_normal(4), rng.standard_normal(3)
        want = [d[0] * g[0] + d[1] * g[1] + d[2] * g[2], d[1] * g[0] + d[2] * g[1] + d[3] * g[2]]
        np.testing.assert_allclose(wg.A_T @ ((wg.G @ g) * (wg.B_T @ d)), want, rtol=1e-12)


def test_tile_counts_and_transposed_weight():
    assert wg.tile_counts(8, 8) == (4, 4)
    assert wg.tile_counts(7, 1) == (4, 1)
    w = np.arange(2 * 3 * 9, dtype=np.float64).reshape(2, 3, 3, 3)
    wt = wg.transposed_weight(w)
    assert wt.shape == (3, 2, 3, 3)
    assert wt[1, 0, 0, 0] == w[0, 1, 2, 2] and wt[2, 1, 0, 2] == w[1, 2, 2, 0]


# --- bad inputs -----------------------------------------------------------------------------
@pytest.mark.parametrize("w_shape, settings", [
    ((2, 2, 3, 3), conv_settings(2, 1)),                 # stride 2
    ((2, 2, 5, 5), conv_settings(1, 2)),                 # a 5x5 kernel
    ((2, 2, 3, 3), conv_settings(1, 1, dilation=2)),
    ((2, 1, 3, 3), conv_settings(1, 1, groups=2)),
    ((2, 2, 3, 3), conv_settings(1, 3)),                 # padding 3: dx would need padding -1
])
def test_winograd_refuses_what_it_does_not_compute(w_shape, settings):
    x, w = np.zeros((1, 2, 6, 6)), np.zeros(w_shape)
    with pytest.raises(ValueError, match="forward_winograd: needs a 3x3 kernel, stride 1"):
        wg.forward_winograd(x, w, settings)
    with pytest.raises(ValueError, match="backward_winograd: needs a 3x3 kernel, stride 1"):
        cf.backward_winograd(np.zeros((1, 2, 4, 4)), x, w, settings)


def test_winograd_refuses_an_input_smaller_than_the_kernel():
    with pytest.raises(ValueError, match="forward_winograd: kernel 3x3 is larger"):
        wg.forward_winograd(np.zeros((1, 1, 1, 5)), np.zeros((1, 1, 3, 3)), conv_settings(1, 0))
    with pytest.raises(ValueError, match="winograd_reference: weight must be"):
        wg.winograd_reference(np.zeros((1, 2, 4, 4)), np.zeros((1, 2, 5, 5)))


# --- the policy and its switch --------------------------------------------------------------
def test_use_winograd_returns_the_previous_value_and_rejects_bad_values():
    default = cf.use_winograd(False)
    try:
        assert default is True
        assert cf.use_winograd(False) is False
    finally:
        cf.use_winograd(default)
    for bad in (0, 1, None, "yes"):
        with pytest.raises(ValueError, match="use_winograd: on must be True or False"):
            cf.use_winograd(bad)
    assert cf.use_winograd(default) is default


def test_the_policy_picks_winograd_where_the_docstring_says():
    """C_in and C_out >= 64 with a 16x16 output, or >= 128 with 8x8; 3x3 stride 1 on the
    CPU: the forward, and dx when dW is not wanted; with dW, twice the output side; never
    when switched off."""
    s = conv_settings(1, 1)
    x, w = np.zeros((2, 64, 16, 16)), np.zeros((64, 64, 3, 3))
    x128, w128 = np.zeros((2, 128, 8, 8)), np.zeros((128, 128, 3, 3))
    assert cf.forward_path(x, w, s) is wg.forward_winograd
    assert cf.forward_path(x128, w128, s) is wg.forward_winograd
    assert cf.backward_path(x, w, s, need_x=True, need_w=False) is cf.backward_winograd
    assert cf.backward_path(x, w, s, need_x=True) is cf.backward_transposed_side_by_side
    assert cf.backward_path(x, w, s, need_x=False) is cf.backward_columns
    x32 = np.zeros((2, 64, 32, 32))                     # dx and dW: twice the output side
    assert cf.backward_path(x32, w, s, need_x=True) is cf.backward_winograd
    assert cf.backward_path(x128, w128, s, need_x=True) is cf.backward_transposed_side_by_side
    sbs = cf.forward_side_by_side
    assert cf.forward_path(x[:, :, :8, :8], w, s) is sbs                 # ResNet-20's layer3
    rows = cf.forward_kernel_rows                            # <= 32 output channels
    assert cf.forward_path(x[:, :32], w[:32, :32], s) is rows            # 32 channels
    assert cf.forward_path(x[:, :, :15], w, s) is sbs                    # a 15x16 output
    assert cf.forward_path(x128[:, :, :4, :4], w128, s) is sbs           # 4x4
    assert cf.forward_path(x, w[:32], s) is rows                         # C_out 32
    assert cf.forward_path(x, w, conv_settings(2, 1)) is cf.forward_grid  # stride 2
    assert cf.forward_path(x, w, conv_settings(1, 3)) is cf.forward_grid  # padding 3
    previous = cf.use_winograd(False)
    try:
        assert cf.forward_path(x, w, s) is sbs
        assert cf.backward_path(x, w, s, True, False) is cf.backward_transposed_side_by_side
    finally:
        cf.use_winograd(previous)


@pytest.mark.parametrize("need_w", [True, False])
def test_conv2d_with_winograd_equals_the_reference(need_w):
    """F.conv2d (the fast implementation) on a shape the policy gives to Winograd, forward
    and backward, with a bias: y, dx and (when wanted) dW and db equal the reference's."""
    rng = np.random.default_rng(7)
    arrays = [rng.standard_normal((2, 64, 32, 33)), rng.standard_normal((64, 64, 3, 3)) * 0.1,
              rng.standard_normal(64)]
    gy = mr.tensor(rng.standard_normal((2, 64, 32, 33)), dtype=np.float64)
    s = conv_settings(1, 1)
    assert cf.forward_path(arrays[0], arrays[1], s) is wg.forward_winograd
    assert cf.backward_path(arrays[0], arrays[1], s, True, need_w) is cf.backward_winograd
    results = []
    for implementation in ("reference", "fast"):
        x, w, b = t64(arrays[0]), t64(arrays[1], requires_grad=need_w), t64(arrays[2])
        with F.conv_implementation(implementation):
            y = F.conv2d(x, w, b, padding=1)
            y.backward(gy)
        results.append([y.numpy(), x.grad, b.grad] + ([w.grad] if need_w else []))
    for want, got in zip(*results, strict=True):
        np.testing.assert_allclose(mr.backend.to_numpy(got), mr.backend.to_numpy(want),
                                   rtol=1e-10, atol=1e-10)


def test_winograd_threads_give_the_same_result():
    """Each chunk writes only its own images: 1 and 2 threads give identical results."""
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal((7, 3, 6, 5)), rng.standard_normal((4, 3, 3, 3))
    s, before = conv_settings(1, 1), parallel.num_threads()
    try:
        parallel.set_num_threads(1)
        serial = wg.forward_winograd(x, w, s, chunk_bytes=64)
        parallel.set_num_threads(2)
        threaded = wg.forward_winograd(x, w, s, chunk_bytes=64)
    finally:
        parallel.set_num_threads(before)
    np.testing.assert_array_equal(serial, threaded)
